//! The S3 API of the artifact store, over a real loopback socket: `cairn_server::s3_service` served by
//! hyper in-process, driven by the `object_store` crate's S3 client (SigV4 with the tokens' key pairs) and,
//! for what it cannot reach (bucket operations, ListParts, aborts, error codes, headers), by raw requests
//! through reqwest to a server without tokens, which checks no signature.
//!
//! With `CAIRN_TEST_BACKEND=postgres` every test runs on the PostgreSQL backend's artifact store instead: a
//! fresh database of `cairn_pgcluster::Postgres::shared()` (the cluster `CAIRN_TEST_POSTGRES` names) for
//! the metadata, a temporary directory (`file://`) for the bytes.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cairn_server::backend::{ArtifactStore, PostgresArtifactOptions, PostgresArtifacts};
use cairn_server::{hash_token, Config, Role, TokenConfig};
use cairn_store::artifacts::{ArtifactOptions, Artifacts, MAX_KEY_LEN};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

/// A store, its artifact store and its S3 listener; stopped on drop.
struct S3Server {
    base: String,
    artifacts: ArtifactStore,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
    _postgres: Option<cairn_pgcluster::Postgres>,
}

/// Whether `CAIRN_TEST_BACKEND` asks for the PostgreSQL backend.
fn on_postgres() -> bool {
    std::env::var("CAIRN_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The tokens of the server with authentication: name, token, role, project.
const TOKENS: [(&str, &str, Role, Option<&str>); 5] = [
    ("admin", "admin-secret", Role::Admin, None),
    ("writer", "writer-secret", Role::Write, None),
    ("reader", "reader-secret", Role::Read, None),
    ("vision", "vision-secret", Role::Write, Some("vision")),
    ("nlp", "nlp-secret", Role::Write, Some("nlp")),
];

/// A configuration with `TOKENS`.
fn auth_config() -> Config {
    let tokens = TOKENS
        .iter()
        .map(|(name, token, role, project)| TokenConfig {
            name: (*name).to_owned(),
            sha256: hash_token(token),
            role: *role,
            project: project.map(str::to_owned),
        })
        .collect();
    Config { tokens, ..Config::default() }
}

impl S3Server {
    /// A server with `TOKENS` (`auth`), or without tokens (open mode).
    async fn start(auth: bool) -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let (artifacts, postgres): (ArtifactStore, _) = if on_postgres() {
            let pg = cairn_pgcluster::Postgres::shared();
            let url = tokio::task::block_in_place(|| pg.database());
            let objects = dir.path().join("objects");
            std::fs::create_dir_all(&objects).unwrap();
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&objects).unwrap();
            let opts = PostgresArtifactOptions {
                maintenance_interval: std::time::Duration::ZERO,
                ..PostgresArtifactOptions::new(&url)
            };
            let a = PostgresArtifacts::open(opts, Arc::new(fs), Path::default()).await.unwrap();
            (a.into(), Some(pg))
        } else {
            let store = cairn_store::Store::open(dir.path().join("data")).unwrap();
            (Artifacts::open(store, &dir.path().join("blobs"), ArtifactOptions::default()).unwrap().into(), None)
        };
        let config = if auth { auth_config() } else { Config::default() };
        let service = cairn_server::s3_service(artifacts.clone(), &config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(service.serve(listener, async move {
            let _ = stopped.await;
        }));
        S3Server { base, artifacts, _stop: stop, _dir: dir, _postgres: postgres }
    }

    /// An `object_store` client of `bucket` signing as the token `name`.
    fn client(&self, bucket: &str, name: &str) -> AmazonS3 {
        let token = TOKENS.iter().find(|t| t.0 == name).map_or("any", |t| t.1);
        AmazonS3Builder::new()
            .with_endpoint(&self.base)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(name)
            .with_secret_access_key(hash_token(token))
            .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
            // A busy server answers SlowDown (503); like the AWS SDKs, back off and retry for a while.
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig {
                    init_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 40,
                retry_timeout: Duration::from_secs(120),
            })
            .build()
            .unwrap()
    }

    /// Creates `bucket` in the artifact store directly, for `project`.
    async fn bucket(&self, bucket: &str, project: Option<&str>) {
        let (a, b, p) = (self.artifacts.clone(), bucket.to_owned(), project.map(str::to_owned));
        tokio::task::spawn_blocking(move || a.create_bucket(&b, p.as_deref())).await.unwrap().unwrap();
    }

    /// A raw request (no signature: for the open server).
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().request(method, format!("{}{path}", self.base))
    }
}

/// The text of the first `<tag>` element of `xml`.
fn xml<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}

/// Every `<tag>` element's text.
fn xml_all<'a>(body: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// Status and body of a raw request.
async fn send(req: reqwest::RequestBuilder) -> (StatusCode, String) {
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

/// Status and S3 error code of a raw request that should fail.
async fn error_code(req: reqwest::RequestBuilder) -> (u16, String) {
    let (status, body) = send(req).await;
    (status.as_u16(), xml(&body, "Code").unwrap_or_default().to_owned())
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn is_status(err: &object_store::Error, code: u16) -> bool {
    format!("{err:?}").contains(&code.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_put_get_range_head_copy_delete_through_object_store() {
    let s = S3Server::start(true).await;
    s.bucket("artifacts", None).await;
    let store = s.client("artifacts", "writer");
    let body = data(100_000, 1);
    let path = Path::from("runs/42/model.bin");
    let put = store.put(&path, PutPayload::from(body.clone())).await.unwrap();
    let etag = put.e_tag.unwrap();
    assert_eq!(etag, format!("\"{}\"", hex::encode(md5_of(&body))), "quoted hex MD5, as S3's");

    assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap(), body);
    assert_eq!(store.get_range(&path, 0..1).await.unwrap(), body[..1]);
    assert_eq!(store.get_range(&path, 99_990..100_000).await.unwrap(), body[99_990..]);
    assert_eq!(store.get_range(&path, 10..20_000).await.unwrap(), body[10..20_000]);
    let suffix = GetOptions { range: Some(GetRange::Suffix(7)), ..GetOptions::default() };
    assert_eq!(store.get_opts(&path, suffix).await.unwrap().bytes().await.unwrap(), body[100_000 - 7..]);
    let offset = GetOptions { range: Some(GetRange::Offset(99_000)), ..GetOptions::default() };
    assert_eq!(store.get_opts(&path, offset).await.unwrap().bytes().await.unwrap(), body[99_000..]);

    let head = store.head(&path).await.unwrap();
    assert_eq!((head.size, head.e_tag.as_deref()), (100_000, Some(etag.as_str())));

    let copy = Path::from("runs/43/model.bin");
    store.copy(&path, &copy).await.unwrap();
    assert_eq!(store.get(&copy).await.unwrap().bytes().await.unwrap(), body);

    store.delete(&path).await.unwrap();
    assert!(matches!(store.get(&path).await, Err(object_store::Error::NotFound { .. })));
    assert!(matches!(store.head(&path).await, Err(object_store::Error::NotFound { .. })));
    store.delete(&path).await.unwrap(); // deleting a missing object succeeds, as in S3
    assert_eq!(store.get(&copy).await.unwrap().bytes().await.unwrap(), body, "the copy outlives its source");
}

fn md5_of(data: &[u8]) -> Vec<u8> {
    use s3s::crypto::Checksum as _;
    s3s::crypto::Md5::checksum(data).as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_10000_keys_with_a_delimiter_pages_through_every_key() {
    let s = S3Server::start(true).await;
    s.bucket("many", None).await;
    let store = Arc::new(s.client("many", "writer"));
    // 9,000 keys at the top, 1,000 under two "directories".
    let keys: Vec<String> = (0..9000)
        .map(|i| format!("k{i:05}"))
        .chain((0..500).map(|i| format!("dir-a/{i:04}")))
        .chain((0..500).map(|i| format!("dir-b/x/{i:04}")))
        .collect();
    futures_util::stream::iter(keys.clone())
        .map(|k| {
            let store = store.clone();
            async move { store.put(&Path::from(k), PutPayload::from_static(b"x")).await.map(drop) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();

    let top = store.list_with_delimiter(None).await.unwrap();
    assert_eq!(top.objects.len(), 9000);
    let prefixes: Vec<String> = top.common_prefixes.iter().map(ToString::to_string).collect();
    assert_eq!(prefixes, ["dir-a", "dir-b"]);
    let all: BTreeSet<String> = store.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
    assert_eq!(all, keys.iter().cloned().collect());
    let under: Vec<_> = store.list(Some(&Path::from("dir-b"))).try_collect().await.unwrap();
    assert_eq!(under.len(), 500);

    // The same pages by hand: KeyCount, IsTruncated and the continuation token on each.
    let (status, _) = send(s.req(Method::GET, "/many?list-type=2")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the server with tokens refuses unsigned requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_by_hand_with_keycount_tokens_and_start_after() {
    let s = S3Server::start(false).await;
    s.bucket("pages", None).await;
    let store = Arc::new(s.client("pages", "anyone"));
    let keys: Vec<String> = (0..2500).map(|i| format!("a/{i:04}")).chain((0..5).map(|i| format!("b/{i}/x"))).collect();
    futures_util::stream::iter(keys.clone())
        .map(|k| {
            let store = store.clone();
            async move { store.put(&Path::from(k), PutPayload::from_static(b"y")).await.map(drop) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    let mut token: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let mut path = "/pages?list-type=2&prefix=a/&max-keys=1000".to_owned();
        if let Some(t) = &token {
            path += &format!("&continuation-token={t}");
        }
        let (status, body) = send(s.req(Method::GET, &path)).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        let keys = xml_all(&body, "Key");
        assert_eq!(xml(&body, "KeyCount").unwrap(), keys.len().to_string());
        seen.extend(keys.iter().map(|k| (*k).to_owned()));
        if xml(&body, "IsTruncated") == Some("false") {
            assert!(xml(&body, "NextContinuationToken").is_none());
            break;
        }
        token = Some(xml(&body, "NextContinuationToken").unwrap().to_owned());
    }
    assert_eq!((pages, seen.len()), (3, 2500));
    assert_eq!(seen, keys[..2500]);

    let (_, body) = send(s.req(Method::GET, "/pages?list-type=2&delimiter=/&prefix=b/")).await;
    assert_eq!(xml_all(&body, "Prefix")[1..], ["b/0/", "b/1/", "b/2/", "b/3/", "b/4/"]);
    assert_eq!(xml(&body, "KeyCount"), Some("5"));
    let (_, body) = send(s.req(Method::GET, "/pages?list-type=2&start-after=a/2497&max-keys=2")).await;
    assert_eq!(xml_all(&body, "Key"), ["a/2498", "a/2499"]);
    assert_eq!(xml(&body, "IsTruncated"), Some("true"));
    // ListObjects (v1): marker and NextMarker.
    let (_, body) = send(s.req(Method::GET, "/pages?marker=a/0997&max-keys=2")).await;
    assert_eq!(xml_all(&body, "Key"), ["a/0998", "a/0999"]);
    assert_eq!(xml(&body, "NextMarker"), Some("a/0999"));
    assert_eq!(error_code(s.req(Method::GET, "/pages?list-type=2&continuation-token=***")).await.1, "InvalidArgument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_small_puts() {
    let s = S3Server::start(true).await;
    s.bucket("small", None).await;
    let store = Arc::new(s.client("small", "writer"));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let body = format!("object number {i}");
                store.put(&Path::from(format!("o/{i:04}")), PutPayload::from(body.into_bytes())).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let listed: Vec<_> = store.list(Some(&Path::from("o"))).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1000);
    for i in [0, 57, 999] {
        let got = store.get(&Path::from(format!("o/{i:04}"))).await.unwrap().bytes().await.unwrap();
        assert_eq!(got, format!("object number {i}").as_bytes());
    }
    let a = s.artifacts.clone();
    let info = tokio::task::spawn_blocking(move || a.bucket("small")).await.unwrap().unwrap();
    assert_eq!(info.stats.objects, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_multipart_upload_reads_back_identical() {
    let s = S3Server::start(true).await;
    s.bucket("big", None).await;
    let store = s.client("big", "writer");
    let path = Path::from("checkpoints/epoch-10.pt");
    let mut upload = store.put_multipart(&path).await.unwrap();
    let mut sha = Sha256::new();
    const PART: usize = 8 << 20;
    for i in 0..8u8 {
        let part = data(PART, i);
        sha.update(&part);
        upload.put_part(PutPayload::from(part)).await.unwrap();
    }
    upload.complete().await.unwrap();
    let want = sha.finalize();
    let head = store.head(&path).await.unwrap();
    assert_eq!(head.size, 64 << 20);
    assert!(head.e_tag.unwrap().ends_with("-8\""), "a multipart ETag names its parts");
    let mut got = Sha256::new();
    let mut stream = store.get(&path).await.unwrap().into_stream();
    while let Some(chunk) = stream.next().await {
        got.update(chunk.unwrap());
    }
    assert_eq!(got.finalize(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_project_scopes_decide_what_a_key_may_do() {
    let s = S3Server::start(true).await;
    s.bucket("shared", None).await;
    s.bucket("vision-data", Some("vision")).await;
    s.bucket("nlp-data", Some("nlp")).await;
    s.client("shared", "writer").put(&Path::from("a"), PutPayload::from_static(b"1")).await.unwrap();

    // A read-only key reads and lists, and is refused every write.
    let reader = s.client("shared", "reader");
    assert_eq!(reader.get(&Path::from("a")).await.unwrap().bytes().await.unwrap().as_ref(), b"1");
    assert_eq!(reader.list_with_delimiter(None).await.unwrap().objects.len(), 1);
    let err = reader.put(&Path::from("b"), PutPayload::from_static(b"2")).await.unwrap_err();
    assert!(matches!(err, object_store::Error::PermissionDenied { .. }), "{err:?}");
    assert!(reader.delete(&Path::from("a")).await.is_err());
    assert!(reader.put_multipart(&Path::from("m")).await.is_err());

    // A project-scoped key works in its project's buckets and nowhere else.
    let vision = s.client("vision-data", "vision");
    vision.put(&Path::from("img"), PutPayload::from_static(b"v")).await.unwrap();
    for bucket in ["nlp-data", "shared"] {
        let other = s.client(bucket, "vision");
        let err = other.get(&Path::from("a")).await.unwrap_err();
        assert!(is_status(&err, 403), "{err:?}");
        let err = other.put(&Path::from("x"), PutPayload::from_static(b"x")).await.unwrap_err();
        assert!(matches!(err, object_store::Error::PermissionDenied { .. }), "{err:?}");
        assert!(other.list_with_delimiter(None).await.is_err());
    }
    let nlp = s.client("vision-data", "nlp");
    assert!(is_status(&nlp.get(&Path::from("img")).await.unwrap_err(), 403));
    assert!(nlp.copy(&Path::from("img"), &Path::from("stolen")).await.is_err());

    // Wrong secrets and unknown keys are refused.
    let forged = AmazonS3Builder::new()
        .with_endpoint(&s.base)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("shared")
        .with_access_key_id("writer")
        .with_secret_access_key("writer-secret")
        .build()
        .unwrap();
    assert!(is_status(&forged.get(&Path::from("a")).await.unwrap_err(), 403));
    let unknown = s.client("shared", "nobody");
    assert!(is_status(&unknown.get(&Path::from("a")).await.unwrap_err(), 403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_are_created_listed_and_deleted() {
    let s = S3Server::start(false).await;
    assert_eq!(send(s.req(Method::PUT, "/logs")).await.0, 200);
    assert_eq!(send(s.req(Method::PUT, "/models")).await.0, 200);
    assert_eq!(error_code(s.req(Method::PUT, "/logs")).await, (409, "BucketAlreadyOwnedByYou".into()));
    assert_eq!(error_code(s.req(Method::PUT, "/Bad_Name")).await.1, "InvalidBucketName");
    let (status, body) = send(s.req(Method::GET, "/")).await;
    assert_eq!(status, 200);
    assert_eq!(xml_all(&body, "Name"), ["logs", "models"]);
    assert_eq!(send(s.req(Method::HEAD, "/logs")).await.0, 200);
    assert_eq!(send(s.req(Method::HEAD, "/nothing")).await.0, 404);
    assert_eq!(send(s.req(Method::PUT, "/logs/one").body("1")).await.0, 200);
    assert_eq!(error_code(s.req(Method::DELETE, "/logs")).await, (409, "BucketNotEmpty".into()));
    assert_eq!(send(s.req(Method::DELETE, "/logs/one")).await.0, 204);
    assert_eq!(send(s.req(Method::DELETE, "/logs")).await.0, 204);
    assert_eq!(error_code(s.req(Method::DELETE, "/logs")).await, (404, "NoSuchBucket".into()));
    assert_eq!(error_code(s.req(Method::GET, "/logs/one")).await, (404, "NoSuchBucket".into()));
    let eu =
        "<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>";
    assert_eq!(error_code(s.req(Method::PUT, "/euw").body(eu)).await.1, "InvalidLocationConstraint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_metadata_checksums_and_error_codes() {
    let s = S3Server::start(false).await;
    s.bucket("bkt", None).await;
    let body = data(1000, 9);
    let sha = base64_of(&Sha256::digest(&body));
    let resp = s
        .req(Method::PUT, "/bkt/doc.json")
        .header("content-type", "application/json")
        .header("x-amz-meta-run", "42")
        .header("x-amz-meta-owner", "alice")
        .header("x-amz-checksum-sha256", &sha)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-amz-checksum-sha256"], sha.as_str());
    let resp = s.req(Method::HEAD, "/bkt/doc.json").header("x-amz-checksum-mode", "ENABLED").send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-amz-meta-run"], "42");
    assert_eq!(resp.headers()["x-amz-meta-owner"], "alice");
    assert_eq!(resp.headers()["x-amz-checksum-sha256"], sha.as_str());
    assert_eq!(resp.headers()["content-length"], "1000");
    let resp = s.req(Method::HEAD, "/bkt/doc.json").send().await.unwrap();
    assert!(resp.headers().get("x-amz-checksum-sha256").is_none(), "only when asked");

    // Ranges: 206 with Content-Range, at both ends; 416 past the end.
    let resp = s.req(Method::GET, "/bkt/doc.json").header("range", "bytes=0-9").send().await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 0-9/1000");
    assert_eq!(resp.bytes().await.unwrap(), body[..10]);
    let resp = s.req(Method::GET, "/bkt/doc.json").header("range", "bytes=-3").send().await.unwrap();
    assert_eq!(resp.headers()["content-range"], "bytes 997-999/1000");
    assert_eq!(resp.bytes().await.unwrap(), body[997..]);
    let resp = s.req(Method::GET, "/bkt/doc.json").header("range", "bytes=990-").send().await.unwrap();
    assert_eq!(resp.headers()["content-range"], "bytes 990-999/1000");
    assert_eq!(resp.bytes().await.unwrap(), body[990..]);
    let resp = s.req(Method::GET, "/bkt/doc.json").header("range", "bytes=995-5000").send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), body[995..], "the end is clamped to the size");
    assert_eq!(
        error_code(s.req(Method::GET, "/bkt/doc.json").header("range", "bytes=1000-")).await,
        (416, "InvalidRange".into())
    );

    // A bad checksum is refused and nothing is stored.
    let wrong = base64_of(&Sha256::digest(b"something else"));
    let put = s.req(Method::PUT, "/bkt/bad").header("x-amz-checksum-sha256", wrong).body(body.clone());
    assert_eq!(error_code(put).await, (400, "BadDigest".into()));
    let put = s.req(Method::PUT, "/bkt/bad").header("x-amz-checksum-crc32", "AAAAAA==").body(body.clone());
    assert_eq!(error_code(put).await, (400, "BadDigest".into()));
    let put = s.req(Method::PUT, "/bkt/bad").header("content-md5", base64_of(&[0u8; 16])).body(body.clone());
    assert_eq!(error_code(put).await, (400, "BadDigest".into()));
    assert_eq!(error_code(s.req(Method::GET, "/bkt/bad")).await, (404, "NoSuchKey".into()));
    let (_, listing) = send(s.req(Method::GET, "/bkt?list-type=2")).await;
    assert_eq!(xml_all(&listing, "Key"), ["doc.json"]);

    // Copies: COPY keeps the metadata, REPLACE sets new.
    let copy = s.req(Method::PUT, "/bkt/copy1").header("x-amz-copy-source", "/bkt/doc.json");
    let (status, out) = send(copy).await;
    assert_eq!(status, 200, "{out}");
    assert!(xml(&out, "ETag").is_some());
    let resp = s.req(Method::HEAD, "/bkt/copy1").send().await.unwrap();
    assert_eq!(
        (resp.headers()["x-amz-meta-run"].to_str().unwrap(), resp.headers()["content-type"].to_str().unwrap()),
        ("42", "application/json")
    );
    let copy = s
        .req(Method::PUT, "/bkt/copy2")
        .header("x-amz-copy-source", "bkt/doc.json")
        .header("x-amz-metadata-directive", "REPLACE")
        .header("content-type", "text/plain")
        .header("x-amz-meta-stage", "eval");
    assert_eq!(send(copy).await.0, 200);
    let resp = s.req(Method::HEAD, "/bkt/copy2").send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.headers()["x-amz-meta-stage"], "eval");
    assert!(resp.headers().get("x-amz-meta-run").is_none());
    let to_itself = s.req(Method::PUT, "/bkt/copy2").header("x-amz-copy-source", "/bkt/copy2");
    assert_eq!(error_code(to_itself).await.1, "InvalidRequest");
    let missing = s.req(Method::PUT, "/bkt/copy3").header("x-amz-copy-source", "/bkt/none");
    assert_eq!(error_code(missing).await, (404, "NoSuchKey".into()));

    // Conditional reads.
    let etag = s.req(Method::HEAD, "/bkt/doc.json").send().await.unwrap().headers()["etag"].clone();
    assert_eq!(
        s.req(Method::GET, "/bkt/doc.json").header("if-none-match", etag.clone()).send().await.unwrap().status(),
        304
    );
    assert_eq!(
        error_code(s.req(Method::GET, "/bkt/doc.json").header("if-match", "\"0000\"")).await,
        (412, "PreconditionFailed".into())
    );

    // DeleteObjects.
    let delete = "<Delete><Object><Key>copy1</Key></Object><Object><Key>copy2</Key></Object><Object><Key>absent</Key></Object></Delete>";
    let (status, out) = send(s.req(Method::POST, "/bkt?delete").body(delete)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(xml_all(&out, "Key"), ["copy1", "copy2", "absent"]);
    let (_, listing) = send(s.req(Method::GET, "/bkt?list-type=2")).await;
    assert_eq!(xml_all(&listing, "Key"), ["doc.json"]);

    // Keys: MAX_KEY_LEN bytes at most.
    let long = "k".repeat(MAX_KEY_LEN + 1);
    assert_eq!(error_code(s.req(Method::PUT, &format!("/bkt/{long}")).body("x")).await.1, "KeyTooLongError");
    assert_eq!(send(s.req(Method::PUT, &format!("/bkt/{}", &long[..MAX_KEY_LEN])).body("x")).await.0, 200);
    assert_eq!(error_code(s.req(Method::GET, "/bkt/absent")).await, (404, "NoSuchKey".into()));
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_are_listed_completed_and_aborted() {
    let s = S3Server::start(false).await;
    s.bucket("mpu", None).await;
    let (status, out) =
        send(s.req(Method::POST, "/mpu/big.bin?uploads").header("content-type", "application/x-tar")).await;
    assert_eq!(status, 200, "{out}");
    let upload = xml(&out, "UploadId").unwrap().to_owned();
    let part1 = data(5 << 20, 1);
    let part2 = data(1000, 2);
    let mut etags = Vec::new();
    for (n, part) in [(1, &part1), (2, &part2)] {
        let resp = s
            .req(Method::PUT, &format!("/mpu/big.bin?partNumber={n}&uploadId={upload}"))
            .body(part.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        etags.push(resp.headers()["etag"].to_str().unwrap().to_owned());
    }
    // A part whose checksum is wrong is refused and leaves the part list as it was.
    let bad = s
        .req(Method::PUT, &format!("/mpu/big.bin?partNumber=3&uploadId={upload}"))
        .header("x-amz-checksum-sha256", base64_of(&[1u8; 32]))
        .body("xyz");
    assert_eq!(error_code(bad).await, (400, "BadDigest".into()));

    let (_, parts) = send(s.req(Method::GET, &format!("/mpu/big.bin?uploadId={upload}"))).await;
    assert_eq!(xml_all(&parts, "PartNumber"), ["1", "2"]);
    assert_eq!(xml_all(&parts, "Size"), [(5 << 20).to_string(), "1000".to_owned()]);
    let (_, page) = send(s.req(Method::GET, &format!("/mpu/big.bin?uploadId={upload}&max-parts=1"))).await;
    assert_eq!((xml(&page, "IsTruncated"), xml(&page, "NextPartNumberMarker")), (Some("true"), Some("1")));
    let (_, uploads) = send(s.req(Method::GET, "/mpu?uploads")).await;
    assert_eq!(xml_all(&uploads, "UploadId"), [upload.as_str()]);

    let complete = |parts: &[(u32, &str)]| {
        let mut xml = "<CompleteMultipartUpload>".to_owned();
        for (n, e) in parts {
            xml += &format!("<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>");
        }
        xml + "</CompleteMultipartUpload>"
    };
    let url = format!("/mpu/big.bin?uploadId={upload}");
    let wrong_order = complete(&[(2, &etags[1]), (1, &etags[0])]);
    assert_eq!(error_code(s.req(Method::POST, &url).body(wrong_order)).await.1, "InvalidPartOrder");
    let wrong_etag = complete(&[(1, &etags[0]), (2, "\"00000000000000000000000000000000\"")]);
    assert_eq!(error_code(s.req(Method::POST, &url).body(wrong_etag)).await.1, "InvalidPart");
    let missing_part = complete(&[(1, &etags[0]), (3, &etags[1])]);
    assert_eq!(error_code(s.req(Method::POST, &url).body(missing_part)).await.1, "InvalidPart");
    let (status, out) = send(s.req(Method::POST, &url).body(complete(&[(1, &etags[0]), (2, &etags[1])]))).await;
    assert_eq!(status, 200, "{out}");
    assert!(xml(&out, "ETag").unwrap().ends_with("-2&quot;") || xml(&out, "ETag").unwrap().ends_with("-2\""));
    let resp = s.req(Method::GET, "/mpu/big.bin").send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-tar");
    let got = resp.bytes().await.unwrap();
    assert_eq!(got.len(), (5 << 20) + 1000);
    assert!(got[..5 << 20] == part1[..] && got[5 << 20..] == part2[..]);
    assert_eq!(error_code(s.req(Method::GET, &url)).await, (404, "NoSuchUpload".into()));

    // An aborted upload is gone; its id answers NoSuchUpload.
    let (_, out) = send(s.req(Method::POST, "/mpu/other?uploads")).await;
    let other = xml(&out, "UploadId").unwrap().to_owned();
    let mut small = Vec::new();
    for n in 1..=2 {
        let resp = s
            .req(Method::PUT, &format!("/mpu/other?partNumber={n}&uploadId={other}"))
            .body("tiny")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        small.push(resp.headers()["etag"].to_str().unwrap().to_owned());
    }
    let too_small = complete(&[(1, &small[0]), (2, &small[1])]);
    let (status, code) = error_code(s.req(Method::POST, &format!("/mpu/other?uploadId={other}")).body(too_small)).await;
    assert_eq!((status, code.as_str()), (400, "EntityTooSmall"));
    let out_of_range = s.req(Method::PUT, &format!("/mpu/other?partNumber=10001&uploadId={other}")).body("x");
    assert_eq!(error_code(out_of_range).await.1, "InvalidArgument");
    assert_eq!(send(s.req(Method::DELETE, &format!("/mpu/other?uploadId={other}"))).await.0, 204);
    assert_eq!(
        error_code(s.req(Method::DELETE, &format!("/mpu/other?uploadId={other}"))).await,
        (404, "NoSuchUpload".into())
    );
    let part = s.req(Method::PUT, &format!("/mpu/other?partNumber=2&uploadId={other}")).body("late");
    assert_eq!(error_code(part).await, (404, "NoSuchUpload".into()));
    let (_, uploads) = send(s.req(Method::GET, "/mpu?uploads")).await;
    assert!(xml_all(&uploads, "UploadId").is_empty());
    assert_eq!(error_code(s.req(Method::GET, "/mpu/other")).await.1, "NoSuchKey");
}

/// The artifact routes of the HTTP API, `/healthz` and `/metrics` over the same artifact store, in-process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_shows_buckets_stats_retention_and_blob_health() {
    use axum::body::Body;
    use tower::ServiceExt;

    let s = S3Server::start(false).await;
    s.bucket("figures", None).await;
    s.bucket("vision-only", Some("vision")).await;
    let store = s.client("figures", "anyone");
    for i in 0..3 {
        store.put(&Path::from(format!("f{i}")), PutPayload::from(vec![7u8; 1000])).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let records = cairn_store::Store::open(dir.path()).unwrap();
    let state = cairn_server::AppState::from_config(records.clone(), &config, stopped.clone()).unwrap();
    let app = cairn_server::app(state.with_artifacts(s.artifacts.clone()));
    let call = |method: &str, path: &str, token: &str, body: Option<&str>| {
        let mut req =
            axum::http::Request::builder().method(method).uri(path).header("content-type", "application/json");
        if !token.is_empty() {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).unwrap();
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            (status, String::from_utf8(bytes.to_vec()).unwrap())
        }
    };
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();

    let (status, body) = call("GET", "/v1/artifacts/buckets", "reader-secret", None).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<_> = json(&body)["buckets"].as_array().unwrap().iter().map(|b| b["name"].clone()).collect();
    assert_eq!(names, ["figures", "vision-only"]);
    let (_, body) = call("GET", "/v1/artifacts/buckets", "vision-secret", None).await;
    assert_eq!(json(&body)["buckets"].as_array().unwrap().len(), 1, "a scoped token sees its project's");
    let (status, body) = call("GET", "/v1/artifacts/buckets/figures", "reader-secret", None).await;
    assert_eq!((status, json(&body)["objects"].as_u64(), json(&body)["bytes"].as_u64()), (200, Some(3), Some(3000)));
    assert_eq!(call("GET", "/v1/artifacts/buckets/figures", "vision-secret", None).await.0, 404);
    assert_eq!(call("GET", "/v1/artifacts/buckets/none", "reader-secret", None).await.0, 404);

    let days = Some(r#"{"days": 30}"#);
    assert_eq!(call("PUT", "/v1/artifacts/buckets/figures/retention", "writer-secret", days).await.0, 403);
    let (status, body) = call("PUT", "/v1/artifacts/buckets/figures/retention", "admin-secret", days).await;
    assert_eq!((status, json(&body)["retention_days"].as_u64()), (200, Some(30)), "{body}");
    let forever = Some(r#"{"days": null}"#);
    let (_, body) = call("PUT", "/v1/artifacts/buckets/figures/retention", "admin-secret", forever).await;
    assert!(json(&body)["retention_days"].is_null());
    let zero = Some(r#"{"days": 0}"#);
    assert_eq!(call("PUT", "/v1/artifacts/buckets/figures/retention", "admin-secret", zero).await.0, 400);

    let (status, body) = call("GET", "/v1/artifacts/stats", "reader-secret", None).await;
    let stats = json(&body);
    assert_eq!((status, stats["buckets"].as_u64(), stats["objects"].as_u64()), (200, Some(2), Some(3)), "{body}");
    assert_eq!(stats["bytes"].as_u64(), Some(3000));
    assert_eq!(stats["blobs"]["healthy"], true);
    assert_eq!(call("GET", "/v1/artifacts/stats", "vision-secret", None).await.0, 403);

    let (_, body) = call("GET", "/healthz", "", None).await;
    let health = json(&body);
    assert_eq!(health["blobs"]["healthy"], true, "{body}");
    if !on_postgres() {
        // The PostgreSQL backend's figures of the stored bytes are those of its last collection.
        assert!(health["blobs"]["files"].as_u64().unwrap() >= 1);
    }
    let (_, text) = call("GET", "/metrics", "admin-secret", None).await;
    for gauge in ["cairn_blob_files ", "cairn_blob_disk_bytes ", "cairn_blob_live_bytes ", "cairn_blob_gc_error 0"] {
        assert!(text.contains(gauge), "{gauge} missing from {text}");
    }

    // The artifact store's collections are written through the S3 API only, whatever the token.
    let doc = Some(r#"{"segments": [[1, 0, 5]]}"#);
    for (method, path, body) in [
        ("PUT", "/v1/collections/_artifact_objects/records/figures%2Fx", doc),
        ("DELETE", "/v1/collections/_artifact_buckets/records/figures", None),
        ("POST", "/v1/collections/_artifact_uploads/claim", Some(r#"{"set": {"a": 1}}"#)),
        ("POST", "/v1/collections", Some(r#"{"name": "_artifact_parts", "indexes": []}"#)),
        (
            "POST",
            "/v1/transactions",
            Some(r#"{"operations": [{"op": "put", "collection": "_artifact_buckets", "id": "x", "document": {}}]}"#),
        ),
    ] {
        let (status, body) = call(method, path, "admin-secret", body).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body.contains("written through the S3 API only"), "{body}");
    }

    // Garbage collection on demand: admin tokens only; what it reclaimed, and the health after.
    store.delete(&Path::from("f0")).await.unwrap();
    assert_eq!(call("POST", "/v1/artifacts/gc", "writer-secret", None).await.0, 403);
    assert_eq!(call("POST", "/v1/artifacts/gc", "vision-secret", None).await.0, 403);
    let (status, body) = call("POST", "/v1/artifacts/gc", "admin-secret", None).await;
    let gc = json(&body);
    assert_eq!((status, gc["expired"].as_u64()), (200, Some(0)), "{body}");
    assert!(gc["files_removed"].is_u64() && gc["bytes_reclaimed"].is_u64(), "{body}");
    assert!(gc["blobs"]["last_gc_ms"].is_i64(), "{body}");
    assert_eq!(gc["blobs"]["live_bytes"].as_u64(), Some(2000), "{body}");

    // Without an artifact store (the PostgreSQL backend's case) the routes answer 501.
    let bare = cairn_server::app(cairn_server::AppState::from_config(records, &config, stopped).unwrap());
    let req = axum::http::Request::get("/v1/artifacts/buckets")
        .header("authorization", "Bearer admin-secret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(bare.oneshot(req).await.unwrap().status(), 501);
}

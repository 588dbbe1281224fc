//! The artifact store on the PostgreSQL backend (`PostgresArtifacts`), where only it can be tested: several
//! servers on one database, the bucket statistics under their concurrent writes, garbage collection of
//! stored bytes no row refers to (as a server that failed between writing the bytes and committing the row
//! leaves them), and bytes in a real S3 server (moto's) rather than a directory. Each test makes a fresh
//! database in `cairn_pgcluster::Postgres::shared()` (the cluster `CAIRN_TEST_POSTGRES` names, or one of
//! its own). The S3 conformance suite (`s3.rs`) runs on this backend with `CAIRN_TEST_BACKEND=postgres`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cairn_server::backend::{ArtifactApi, ArtifactStore, PostgresArtifactOptions, PostgresArtifacts};
use cairn_server::Config;
use cairn_store::artifacts::{ListRequest, PutOptions};
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use reqwest::{Method, StatusCode};

mod fresh_database;
use fresh_database::database;

/// One server's artifact store and its S3 listener (open mode: no tokens), stopped on drop.
struct Node {
    base: String,
    artifacts: PostgresArtifacts,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Node {
    /// A server over the database `url`, its bytes in `store` under `prefix`, collecting garbage older than
    /// `grace`.
    async fn start(url: &str, store: Arc<dyn ObjectStore>, prefix: Path, grace: Duration) -> Node {
        let opts = PostgresArtifactOptions {
            gc_grace: grace,
            maintenance_interval: Duration::ZERO,
            pool_size: 4,
            ..PostgresArtifactOptions::new(url)
        };
        let artifacts = PostgresArtifacts::open(opts, store, prefix).await.unwrap();
        let service = cairn_server::s3_service(artifacts.clone(), &Config::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(service.serve(listener, async move {
            let _ = stopped.await;
        }));
        Node { base, artifacts, _stop: stop }
    }

    /// A raw request (open mode checks no signature).
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().request(method, format!("{}{path}", self.base))
    }

    /// Runs a call of the artifact store on the blocking pool, as the server does.
    async fn call<R: Send + 'static>(&self, f: impl FnOnce(&dyn ArtifactApi) -> R + Send + 'static) -> R {
        let store = ArtifactStore::from(self.artifacts.clone());
        tokio::task::spawn_blocking(move || f(&*store)).await.unwrap()
    }
}

/// A directory (created if missing) as an object store.
fn directory(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    std::fs::create_dir_all(dir).unwrap();
    Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap())
}

/// Every stored object under `prefix`.
async fn stored(store: &Arc<dyn ObjectStore>, prefix: &Path) -> BTreeSet<String> {
    let listed: Vec<_> = store.list(Some(prefix)).try_collect().await.unwrap();
    listed.into_iter().map(|m| m.location.to_string()).collect()
}

async fn status(req: reqwest::RequestBuilder) -> StatusCode {
    req.send().await.unwrap().status()
}

async fn body(req: reqwest::RequestBuilder) -> (StatusCode, Vec<u8>) {
    let resp = req.send().await.unwrap();
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The text of the first `<tag>` element of `xml`.
fn xml<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_serve_the_same_buckets_and_objects() {
    let (_pg, url) = database();
    let dir = tempfile::tempdir().unwrap();
    let store = directory(dir.path());
    let a = Node::start(&url, store.clone(), Path::from("cairn"), Duration::from_secs(3600)).await;
    let b = Node::start(&url, store.clone(), Path::from("cairn"), Duration::from_secs(3600)).await;

    assert_eq!(status(a.req(Method::PUT, "/shared")).await, 200);
    assert_eq!(status(b.req(Method::PUT, "/shared")).await, 409, "the bucket exists for the other server too");
    let (_, listing) = body(b.req(Method::GET, "/")).await;
    assert!(String::from_utf8(listing).unwrap().contains("<Name>shared</Name>"));

    let small = data(1000, 1);
    assert_eq!(status(a.req(Method::PUT, "/shared/dir/small").body(small.clone())).await, 200);
    let (code, got) = body(b.req(Method::GET, "/shared/dir/small")).await;
    assert_eq!((code, got), (StatusCode::OK, small.clone()));
    let (code, got) = body(b.req(Method::GET, "/shared/dir/small").header("range", "bytes=10-19")).await;
    assert_eq!((code, got.as_slice()), (StatusCode::PARTIAL_CONTENT, &small[10..20]));
    // A body of more than one object-store part (8 MiB): streamed to the store in parts.
    let large = data(9 << 20, 2);
    assert_eq!(status(b.req(Method::PUT, "/shared/dir/large").body(large.clone())).await, 200);
    let (_, got) = body(a.req(Method::GET, "/shared/dir/large")).await;
    assert!(got == large, "the large object reads back identical through the other server");

    // A multipart upload started on one server, a part uploaded through each, completed on the first.
    let (_, created) = body(a.req(Method::POST, "/shared/mp?uploads")).await;
    let created = String::from_utf8(created).unwrap();
    let upload = xml(&created, "UploadId").unwrap().to_owned();
    let (p1, p2) = (data(5 << 20, 3), data(1234, 4));
    let e1 = a.req(Method::PUT, &format!("/shared/mp?partNumber=1&uploadId={upload}")).body(p1.clone());
    let e1 = e1.send().await.unwrap().headers()["etag"].to_str().unwrap().to_owned();
    let e2 = b.req(Method::PUT, &format!("/shared/mp?partNumber=2&uploadId={upload}")).body(p2.clone());
    let e2 = e2.send().await.unwrap().headers()["etag"].to_str().unwrap().to_owned();
    let (_, parts) = body(b.req(Method::GET, &format!("/shared/mp?uploadId={upload}"))).await;
    assert_eq!(String::from_utf8(parts).unwrap().matches("<PartNumber>").count(), 2);
    let complete = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{e1}</ETag></Part>\
         <Part><PartNumber>2</PartNumber><ETag>{e2}</ETag></Part></CompleteMultipartUpload>"
    );
    let done = a.req(Method::POST, &format!("/shared/mp?uploadId={upload}")).body(complete);
    assert_eq!(status(done).await, 200);
    let (_, got) = body(b.req(Method::GET, "/shared/mp")).await;
    assert!(got == [p1, p2].concat(), "the completed object is its parts in order");

    // A copy through one server shares the bytes; a deletion through the other is seen by both.
    let copy = b.req(Method::PUT, "/shared/copy").header("x-amz-copy-source", "/shared/dir/small");
    assert_eq!(status(copy).await, 200);
    assert_eq!(status(b.req(Method::DELETE, "/shared/dir/small")).await, 204);
    assert_eq!(status(a.req(Method::HEAD, "/shared/dir/small")).await, 404);
    let (_, got) = body(a.req(Method::GET, "/shared/copy")).await;
    assert_eq!(got, small, "the copy keeps the bytes its source no longer refers to");
    let (_, listing) = body(a.req(Method::GET, "/shared?list-type=2&delimiter=/")).await;
    let listing = String::from_utf8(listing).unwrap();
    assert!(listing.contains("<Prefix>dir/</Prefix>") && listing.contains("<Key>copy</Key>"), "{listing}");
    let info = a.call(|s| s.bucket("shared")).await.unwrap();
    assert_eq!((info.stats.objects, info.stats.bytes), (3, (9 << 20) + (5 << 20) + 1234 + 1000));
    assert_eq!(status(a.req(Method::DELETE, "/shared")).await, 409, "not empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_stay_right_under_concurrent_puts_and_deletes_from_two_servers() {
    let (_pg, url) = database();
    let dir = tempfile::tempdir().unwrap();
    let store = directory(dir.path());
    let a = Arc::new(Node::start(&url, store.clone(), Path::default(), Duration::from_secs(3600)).await);
    let b = Arc::new(Node::start(&url, store.clone(), Path::default(), Duration::from_secs(3600)).await);
    assert_eq!(status(a.req(Method::PUT, "/stats")).await, 200);
    // 8 writers (4 per server) on 40 shared keys: puts of varying sizes, overwrites and deletes interleaved.
    let tasks: Vec<_> = (0..8u8)
        .map(|w| {
            let node = if w % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for i in 0..30usize {
                    let key = format!("/stats/k{:02}", (i * 7 + usize::from(w) * 3) % 40);
                    let req = if i % 4 == 3 {
                        node.req(Method::DELETE, &key)
                    } else {
                        node.req(Method::PUT, &key).body(data(100 + (i * 37 + usize::from(w) * 11) % 2000, w))
                    };
                    let code = status(req).await;
                    assert!(code.is_success(), "{key}: {code}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (info, page) = a
        .call(|s| {
            let req = ListRequest { max_keys: 1000, ..ListRequest::default() };
            (s.bucket("stats").unwrap(), s.list_objects("stats", &req).unwrap())
        })
        .await;
    let bytes: u64 = page.objects.iter().map(|o| o.size).sum();
    assert!(!page.objects.is_empty());
    assert_eq!((info.stats.objects, info.stats.bytes), (page.objects.len() as u64, bytes), "figures = the objects");
    let totals = b.call(|s| s.totals()).await.unwrap();
    assert_eq!((totals.objects, totals.bytes), (info.stats.objects, info.stats.bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_removes_unreferenced_bytes_past_the_grace_period_only() {
    let (_pg, url) = database();
    let dir = tempfile::tempdir().unwrap();
    let store = directory(dir.path());
    let grace = Duration::from_secs(2);
    let a = Node::start(&url, store.clone(), Path::from("p"), grace).await;
    let b = Node::start(&url, store.clone(), Path::from("p"), grace).await;
    let prefix = a.artifacts.object_store().1;
    assert_eq!(prefix, Path::from("p/objects"));
    assert_eq!(status(a.req(Method::PUT, "/sweep")).await, 200);
    for key in ["kept", "deleted", "overwritten"] {
        assert_eq!(status(a.req(Method::PUT, &format!("/sweep/{key}")).body(data(3000, 1))).await, 200);
    }
    assert_eq!(status(a.req(Method::PUT, "/sweep/overwritten").body(data(10, 2))).await, 200);
    assert_eq!(status(a.req(Method::DELETE, "/sweep/deleted")).await, 204);
    // An aborted multipart upload leaves its part's bytes; a live one keeps them referenced.
    for (key, abort) in [("aborted", true), ("pending", false)] {
        let (_, created) = body(a.req(Method::POST, &format!("/sweep/{key}?uploads"))).await;
        let upload = xml(&String::from_utf8(created).unwrap(), "UploadId").unwrap().to_owned();
        let part = a.req(Method::PUT, &format!("/sweep/{key}?partNumber=1&uploadId={upload}")).body(data(500, 3));
        assert_eq!(status(part).await, 200);
        if abort {
            assert_eq!(status(a.req(Method::DELETE, &format!("/sweep/{key}?uploadId={upload}"))).await, 204);
        }
    }
    // A server that failed after writing an upload's bytes and before committing its row left these.
    let crashed = prefix.child("ff").child("crashed-before-commit");
    store.put(&crashed, PutPayload::from(vec![9u8; 700])).await.unwrap();
    // Bad input stores nothing: a body whose Content-MD5 differs is refused before it is written.
    let before = stored(&store, &prefix).await;
    let bad = a.req(Method::PUT, "/sweep/bad").header("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==").body("not empty");
    assert_eq!(status(bad).await, 400);
    assert_eq!(stored(&store, &prefix).await, before);
    assert_eq!(before.len(), 7, "kept, deleted, overwritten twice, two parts, crashed: {before:?}");

    // Young: nothing is collected, referenced or not.
    let report = a.call(|s| s.collect_garbage()).await.unwrap();
    assert_eq!(report.files_removed, 0);
    tokio::time::sleep(grace + Duration::from_millis(500)).await;
    // Written after the grace period started: an upload in flight on another server, not yet committed.
    let young = prefix.child("fe").child("in-flight");
    store.put(&young, PutPayload::from(vec![1u8; 10])).await.unwrap();

    // Unreferenced and old enough: marked, not yet deleted, so that a read of a deleted object in flight
    // has the grace period to finish. Both servers collect at once: one at a time does.
    let (ra, rb) = tokio::join!(a.call(|s| s.collect_garbage()), b.call(|s| s.collect_garbage()));
    assert_eq!(ra.unwrap().files_removed + rb.unwrap().files_removed, 0);
    assert_eq!(a.call(|s| s.collect_garbage()).await.unwrap().files_removed, 0, "marks wait the grace period");
    assert_eq!(stored(&store, &prefix).await.len(), 8);
    tokio::time::sleep(grace + Duration::from_millis(500)).await;

    // Marked a grace period ago: deleted, each once, whichever server collects.
    let (ra, rb) = tokio::join!(a.call(|s| s.collect_garbage()), b.call(|s| s.collect_garbage()));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let again = a.call(|s| s.collect_garbage()).await.unwrap();
    assert_eq!(ra.files_removed + rb.files_removed + again.files_removed, 4, "deleted, overwritten, aborted, crashed");
    assert_eq!(ra.bytes_reclaimed + rb.bytes_reclaimed + again.bytes_reclaimed, 3000 + 3000 + 500 + 700);
    let left = stored(&store, &prefix).await;
    assert_eq!(left.len(), 4, "kept, overwritten's new bytes, the pending part, the young orphan: {left:?}");
    assert!(left.contains(young.as_ref()) && !left.contains(crashed.as_ref()));
    let health = a.call(|s| s.health()).await;
    assert_eq!((health.files, health.live_bytes), (4, 3000 + 10 + 500), "{health:?}");
    assert!(health.last_gc_ms.is_some() && health.last_error.is_none());
    for (key, len) in [("kept", 3000), ("overwritten", 10)] {
        let (code, got) = body(b.req(Method::GET, &format!("/sweep/{key}"))).await;
        assert_eq!((code, got.len()), (StatusCode::OK, len), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_a_deleted_object_finishes_while_collections_run() {
    let (_pg, url) = database();
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(1500);
    let a = Node::start(&url, directory(dir.path()), Path::default(), grace).await;
    assert_eq!(status(a.req(Method::PUT, "/reads")).await, 200);
    // Two parts, two stored objects: a read opens the second only once it has read the first.
    let (_, created) = body(a.req(Method::POST, "/reads/x?uploads")).await;
    let upload = xml(&String::from_utf8(created).unwrap(), "UploadId").unwrap().to_owned();
    let (p1, p2) = (data(5 << 20, 7), data(1000, 8));
    let mut parts = String::new();
    for (n, part) in [(1, &p1), (2, &p2)] {
        let resp = a.req(Method::PUT, &format!("/reads/x?partNumber={n}&uploadId={upload}")).body(part.clone());
        let etag = resp.send().await.unwrap().headers()["etag"].to_str().unwrap().to_owned();
        parts.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"));
    }
    let complete = format!("<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>");
    assert_eq!(status(a.req(Method::POST, &format!("/reads/x?uploadId={upload}")).body(complete)).await, 200);
    let bytes = [p1, p2].concat();
    tokio::time::sleep(grace + Duration::from_millis(200)).await;
    let (got, removed) = a
        .call(move |s| {
            let (_, mut reader) = s.get_object("reads", "x", None).unwrap();
            let mut got = vec![0u8; 1000];
            reader.read_exact(&mut got).unwrap();
            // Deleted, and its bytes (older than the grace period) found unreferenced twice, mid-read.
            assert!(s.delete_object("reads", "x").unwrap());
            let removed = s.collect_garbage().unwrap().files_removed + s.collect_garbage().unwrap().files_removed;
            reader.read_to_end(&mut got).unwrap();
            (got, removed)
        })
        .await;
    assert_eq!(removed, 0);
    assert!(got == bytes, "the read gets every byte");
    tokio::time::sleep(grace + Duration::from_millis(200)).await;
    assert_eq!(a.call(|s| s.collect_garbage()).await.unwrap().files_removed, 2, "then the bytes go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_expires_rows_and_their_figures() {
    let (_pg, url) = database();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(&url, directory(dir.path()), Path::default(), Duration::from_secs(3600)).await;
    assert_eq!(status(a.req(Method::PUT, "/old")).await, 200);
    assert_eq!(status(a.req(Method::PUT, "/old/x").body("12345")).await, 200);
    // Backdated by a day and a bit, as if written then.
    let client = cairn_pgcluster_connect(&url).await;
    client.execute("UPDATE cairn_artifact_objects SET modified_ms = modified_ms - 90000000", &[]).await.unwrap();
    assert_eq!(status(a.req(Method::PUT, "/old/y").body("fresh")).await, 200);
    let info = a.call(|s| s.set_retention("old", Some(1))).await.unwrap();
    assert_eq!(info.retention_days, Some(1));
    assert_eq!(a.call(|s| s.expire()).await.unwrap(), 1);
    let info = a.call(|s| s.bucket("old")).await.unwrap();
    assert_eq!((info.stats.objects, info.stats.bytes), (1, 5));
    assert_eq!(status(a.req(Method::HEAD, "/old/x")).await, 404);
    assert!(a.call(|s| s.set_retention("old", Some(0))).await.is_err());
}

/// A plain connection to the database `url`.
async fn cairn_pgcluster_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// moto's S3 server on a free loopback port; killed on drop (`scripts/test.sh` puts `moto_server` on PATH).
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = cairn_pgcluster::free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server not found: python3 -m pip install 'moto[server]'");
        cairn_pgcluster::wait_for_port(port, "moto_server");
        Moto { child, port }
    }

    /// Creates a bucket (moto accepts the unsigned request).
    fn create_bucket(&self, name: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"), "create bucket: {reply}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bytes_live_in_an_s3_server() {
    let moto = Moto::start();
    moto.create_bucket("cairn-bytes");
    let location = cairn_sync::ObjectLocation::new("s3://cairn-bytes/artifacts")
        .endpoint(Some(format!("http://127.0.0.1:{}", moto.port)))
        .credentials("testing", "testing")
        .region("us-east-1")
        .max_retries(2)
        .open()
        .unwrap();
    let (store, prefix) = location.opened().unwrap();
    let (_pg, url) = database();
    let a = Node::start(&url, store.clone(), prefix, Duration::ZERO).await;
    let objects = a.artifacts.object_store().1;
    assert_eq!(objects, Path::from("artifacts/objects"));

    assert_eq!(status(a.req(Method::PUT, "/models")).await, 200);
    let small = data(4096, 5);
    let put = a.req(Method::PUT, "/models/small").header("content-type", "text/plain").header("x-amz-meta-run", "7");
    assert_eq!(status(put.body(small.clone())).await, 200);
    // More than one object-store part: a multipart upload in moto.
    let large = data((8 << 20) + 12345, 6);
    assert_eq!(status(a.req(Method::PUT, "/models/large").body(large.clone())).await, 200);
    let resp = a.req(Method::GET, "/models/small").send().await.unwrap();
    assert_eq!(resp.headers()["x-amz-meta-run"], "7");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), small);
    let (code, got) = body(a.req(Method::GET, "/models/large").header("range", "bytes=8388600-8388700")).await;
    assert_eq!((code, got.as_slice()), (StatusCode::PARTIAL_CONTENT, &large[8_388_600..=8_388_700]));
    let (_, got) = body(a.req(Method::GET, "/models/large")).await;
    assert!(got == large);
    assert_eq!(stored(&store, &objects).await.len(), 2, "one stored object per upload, under the prefix");

    let opts = PutOptions { expected_sha256: Some([0u8; 32]), ..PutOptions::default() };
    let refused = a.call(move |s| s.put_object("models", "bad", opts, &mut &b"bytes"[..])).await;
    assert!(refused.is_err());
    assert_eq!(stored(&store, &objects).await.len(), 2, "a refused body leaves nothing");

    assert_eq!(status(a.req(Method::DELETE, "/models/large")).await, 204);
    // The first collection marks the large object's bytes, the next deletes them (no grace period here).
    assert_eq!(a.call(|s| s.collect_garbage()).await.unwrap().files_removed, 0);
    let report = a.call(|s| s.collect_garbage()).await.unwrap();
    assert_eq!((report.files_removed, report.bytes_reclaimed), (1, large.len() as u64));
    let (code, got) = body(a.req(Method::GET, "/models/small")).await;
    assert_eq!((code, got), (StatusCode::OK, small));
}

/// A listing's page as compared across the two stores: keys, common prefixes, whether truncated, and where
/// the next page starts.
type Compared = (Vec<String>, Vec<String>, bool, Option<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_as_the_embedded_store_does() {
    let (_pg, url) = database();
    let dir = tempfile::tempdir().unwrap();
    let pg =
        Node::start(&url, directory(&dir.path().join("objects")), Path::default(), Duration::from_secs(3600)).await;
    let records = cairn_store::Store::open(dir.path().join("data")).unwrap();
    let opts = cairn_store::artifacts::ArtifactOptions::default().maintenance_interval(Duration::ZERO);
    let embedded: ArtifactStore =
        cairn_store::artifacts::Artifacts::open(records, &dir.path().join("blobs"), opts).unwrap().into();
    let pg: ArtifactStore = pg.artifacts.clone().into();
    let keys = [
        "a",
        "a/",
        "a//x",
        "a/b",
        "a/b/c",
        "a/b/d",
        "a/c",
        "ab/c",
        "b/x",
        "b/\u{10ffff}x",
        "b/\u{10ffff}",
        "b-c/d",
        "é/1",
        "é/2",
        "z",
        "zz/top/1",
        "zz/top/2",
    ];
    let pages = tokio::task::spawn_blocking(move || {
        for store in [&embedded, &pg] {
            store.create_bucket("listing", None).unwrap();
            for key in keys {
                store.put_object("listing", key, PutOptions::default(), &mut key.as_bytes()).unwrap();
            }
        }
        let mut compared = 0;
        for prefix in ["", "a", "a/", "b/", "é", "zz/", "nothing"] {
            for delimiter in [None, Some("/"), Some("b"), Some("/c"), Some("\u{10ffff}")] {
                for start_after in
                    [None, Some("a"), Some("a/"), Some("a/b"), Some("b/"), Some("b/\u{10ffff}"), Some("zz")]
                {
                    for max_keys in [1, 2, 3, 1000] {
                        let mut req = ListRequest {
                            prefix: prefix.to_owned(),
                            delimiter: delimiter.map(str::to_owned),
                            start_after: start_after.map(str::to_owned),
                            max_keys,
                        };
                        // Every page to the end, through next_start_after, from both stores.
                        loop {
                            let [e, p]: [Compared; 2] = [&embedded, &pg].map(|s| {
                                let page = s.list_objects("listing", &req).unwrap();
                                let keys = page.objects.iter().map(|o| o.key.clone()).collect();
                                (keys, page.common_prefixes, page.truncated, page.next_start_after)
                            });
                            assert_eq!(e, p, "{req:?}");
                            compared += 1;
                            match e.3 {
                                Some(next) if e.2 => req.start_after = Some(next),
                                _ => break,
                            }
                        }
                    }
                }
            }
        }
        compared
    })
    .await
    .unwrap();
    assert!(pages > 1000, "{pages} pages compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_the_other_way_round_between_two_buckets_queue_instead_of_deadlocking() {
    let (_pg, url) = database();
    let dir = tempfile::tempdir().unwrap();
    let store = directory(dir.path());
    let a = Arc::new(Node::start(&url, store.clone(), Path::default(), Duration::from_secs(3600)).await);
    let b = Arc::new(Node::start(&url, store, Path::default(), Duration::from_secs(3600)).await);
    for bucket in ["/left", "/right"] {
        assert_eq!(status(a.req(Method::PUT, bucket)).await, 200);
        assert_eq!(status(a.req(Method::PUT, &format!("{bucket}/x")).body(bucket.to_owned())).await, 200);
    }
    for _ in 0..25 {
        let there = a.req(Method::PUT, "/right/x").header("x-amz-copy-source", "/left/x");
        let back = b.req(Method::PUT, "/left/x").header("x-amz-copy-source", "/right/x");
        let (there, back) = tokio::join!(status(there), status(back));
        assert_eq!((there, back), (StatusCode::OK, StatusCode::OK));
    }
    let info = a.call(|s| s.totals()).await.unwrap();
    assert_eq!(info.objects, 2);
}

//! The server as a real process, for what needs one: SIGTERM with requests in flight and the data checked on
//! reopen and across a restart, refusing to bind a public address without tokens, configuration errors at
//! startup, and `hash-token`. The HTTP contract itself is tested in-process in `http.rs`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use cairn_store::artifacts::{blob_dir, ArtifactOptions, Artifacts, PutOptions};

use std::time::Duration;

use common::{json, Server};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn sha(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Declares `jobs` with the scheduler's indexes.
async fn declare_jobs(s: &Server) {
    let spec = json!({"name": "jobs", "indexes": [
        {"name": "status_priority", "fields": ["status", "priority"]},
        {"name": "owner", "fields": ["owner"]},
        {"name": "project", "fields": ["project"]},
    ]});
    let (status, _) = json(s.req(Method::POST, "/v1/collections").json(&spec).send().await.unwrap()).await;
    assert_eq!(status, 201);
}

fn job(priority: i64, status: &str, project: &str) -> Value {
    json!({"name": "train", "owner": "alice", "project": project, "status": status, "priority": priority})
}

#[tokio::test]
async fn sigterm_drains_and_the_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start_on(&data, None, dir.path());
    declare_jobs(&s).await;
    let writers: Vec<_> = (0..20)
        .map(|i| {
            s.req(Method::PUT, &format!("/v1/collections/jobs/records/j{i}")).json(&job(i, "PENDING", "p1")).send()
        })
        .collect();
    let answers = futures_util::future::join_all(writers).await;
    assert!(answers.iter().all(|r| r.as_ref().unwrap().status() == 201));
    // A request in flight when SIGTERM arrives (a long-poll waiting for changes) still gets its answer.
    let seq = json(s.req(Method::GET, "/healthz").send().await.unwrap()).await.1["last_sequence"].as_u64().unwrap();
    let waiting = tokio::spawn(s.req(Method::GET, &format!("/v1/changes?since={seq}&wait_ms=15000")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let status = s.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown ended the wait");
    let (code, page) = json(waiting.await.unwrap().unwrap()).await;
    assert_eq!((code, &page["changes"]), (200, &json!([])));

    let store = cairn_store::Store::open(&data).unwrap();
    let jobs = store.collection_dyn("jobs").unwrap();
    assert_eq!(jobs.count(&cairn_store::Query::new()).unwrap(), 20);
    store.check_indexes().unwrap();
    store.db().clone().close().unwrap();

    let s = Server::start_on(&data, None, dir.path());
    let (status, rec) = json(s.req(Method::GET, "/v1/collections/jobs/records/j7").send().await.unwrap()).await;
    assert_eq!((status, &rec["document"]["priority"]), (200, &json!(7)));
}

#[test]
fn refuses_a_public_address_without_tokens_and_bad_configs() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"), "{}", String::from_utf8_lossy(&out.stderr));
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[limits]\nmax_page = 0\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("d"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_page"));
}

/// The S3 API on the PostgreSQL backend needs an object store for the bytes (`--artifact-objects`): asked for
/// without one, the server refuses to start (before connecting) and says why. Over a data directory, where
/// the bytes live in `<data dir>/blobs`, `--artifact-objects` is refused.
#[test]
fn the_s3_api_on_the_postgres_backend_needs_an_object_store() {
    for extra in [&["--s3-listen", "127.0.0.1:0"][..], &[][..]] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--backend", "postgres://cairn@127.0.0.1:1/none"]).args(extra);
        if extra.is_empty() {
            let config = dir.path().join("s3.toml");
            std::fs::write(&config, "[s3]\nenabled = true\n").unwrap();
            cmd.arg("--config").arg(config);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("the S3 API on the PostgreSQL backend needs an object store"), "{stderr}");
        assert!(stderr.contains("--artifact-objects"), "{stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--artifact-objects", "file:///tmp/cairn-never"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is for the PostgreSQL backend"), "{stderr}");
}

#[test]
fn hash_token_prints_the_sha256() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), sha("s3cret"));
}

/// `cairn backup` and `cairn check` on a store a running server holds: `--data` is refused with a hint (the
/// directory is locked), `--server` goes through the admin routes; after the server stops, `--data` works.
#[tokio::test]
async fn backup_and_check_of_a_store_the_server_holds() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let config = format!("[[tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n", sha("admin-token"));
    // Artifacts in the store: backups carry their blob files, checks read them. (The index entries checked
    // below are the 10 jobs' and the artifact bucket's.)
    let objects: Vec<(String, Vec<u8>)> =
        (0..3u8).map(|i| (format!("ckpt-{i}"), vec![i; if i == 0 { 2 << 20 } else { 5000 }])).collect();
    {
        let store = cairn_store::Store::open(&data).unwrap();
        let opts = ArtifactOptions::default().maintenance_interval(std::time::Duration::ZERO);
        let artifacts = Artifacts::open(store, &blob_dir(&data), opts).unwrap();
        artifacts.create_bucket("models", None).unwrap();
        for (key, bytes) in &objects {
            artifacts.put_object("models", key, PutOptions::default(), &mut bytes.as_slice()).unwrap();
        }
    }
    let mut s = Server::start_on(&data, Some(&config), scratch.path());
    let spec = json!({"name": "jobs", "indexes": [{"name": "status", "fields": ["status"]}]});
    let r = s.req(Method::POST, "/v1/collections").bearer_auth("admin-token").json(&spec);
    assert_eq!(json(r.send().await.unwrap()).await.0, 201);
    for i in 0..10 {
        let r = s.req(Method::PUT, &format!("/v1/collections/jobs/records/j{i}")).bearer_auth("admin-token");
        assert_eq!(r.json(&job(i, "PENDING", "p1")).send().await.unwrap().status(), 201);
    }
    // The server is another process: waiting for the command line here blocks nothing it needs.
    let cairn = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .env("CAIRN_TOKEN", "admin-token")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let path = |name: &str| scratch.path().join(name).to_str().unwrap().to_owned();
    let data_arg = data.to_str().unwrap();
    let (ok, _, err) = cairn(&["backup", "--data", data_arg, "--to", &path("b0")]);
    assert!(!ok && err.contains("use `cairn backup --server URL`"), "{err}");
    let (ok, _, err) = cairn(&["check", "--data", data_arg]);
    assert!(!ok && err.contains("use --server"), "{err}");

    let (ok, out, err) = cairn(&["backup", "--server", &s.base, "--to", &path("b1")]);
    assert!(ok, "{err}");
    assert!(out.contains("checked: healthy") && out.contains("11 index entries"), "{out}");
    assert!(out.contains("blob files"), "{out}");
    let (ok, out, err) = cairn(&["check", "--server", &s.base, "--json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((report["healthy"].as_bool(), report["index_entries"].as_u64()), (Some(true), Some(11)));

    assert!(s.terminate().success());
    let (ok, out, err) = cairn(&["backup", "--data", data_arg, "--to", &path("b2")]);
    assert!(ok && out.contains("checked: healthy"), "{out} {err}");
    for copy in ["b1", "b2"] {
        let (ok, out, err) = cairn(&["check", "--data", &path(copy)]);
        assert!(ok && out.contains("11 index entries agree"), "{copy}: {out} {err}");
        assert!(out.contains("3 artifact blobs"), "{copy}: {out}");
        let store = cairn_store::Store::open(path(copy)).unwrap();
        let opts = ArtifactOptions::default().maintenance_interval(std::time::Duration::ZERO);
        let artifacts = Artifacts::open(store, &blob_dir(std::path::Path::new(&path(copy))), opts).unwrap();
        for (key, bytes) in &objects {
            let (_, mut reader) = artifacts.get_object("models", key, None).unwrap();
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut got).unwrap();
            assert!(got == *bytes, "{copy}: {key} differs");
        }
    }
}

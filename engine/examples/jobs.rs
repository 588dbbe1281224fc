//! Cairn embedded in a program: store compute jobs, read them back, scan them, read a snapshot.
//!
//! ```text
//! cargo run -p cairn --example jobs -- ./data
//! ```

use cairn_engine::{Db, WriteBatch};

fn main() -> Result<(), cairn_engine::Error> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "./data".to_owned());
    let db = Db::open(&dir)?;

    // A job record and its status-index entry go in one batch: after a crash, both or neither are there.
    let jobs = [
        (1, "train-resnet50", "alice", "RUNNING", 700),
        (2, "eval-bert-base", "bob", "PENDING", 950),
        (3, "sweep-xgboost", "alice", "PENDING", 300),
    ];
    let mut batch = WriteBatch::new();
    for (id, name, owner, status, priority) in jobs {
        let record =
            format!(r#"{{"id":{id},"name":"{name}","owner":"{owner}","status":"{status}","priority":{priority}}}"#);
        batch.put(format!("job/{id:08}"), record);
        batch.put(format!("idx/status/{status}/{priority:04}/{id:08}"), b"");
    }
    db.write(batch)?;

    // Point read.
    if let Some(job) = db.get("job/00000002")? {
        println!("job 2: {}", String::from_utf8_lossy(&job));
    }

    // Range scan over every job, in key order.
    for pair in db.range("job/".."job0")? {
        let (key, value) = pair?;
        println!("{} => {}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
    }

    // The pending job of highest priority: the index sorts by priority, so read it backwards.
    if let Some(pair) = db.prefix_rev("idx/status/PENDING/")?.next() {
        println!("next to schedule: {}", String::from_utf8_lossy(&pair?.0));
    }

    // A snapshot keeps seeing the data as it was, whatever is written afterwards.
    let before = db.snapshot();
    let mut batch = WriteBatch::new();
    batch
        .put("job/00000001", r#"{"id":1,"name":"train-resnet50","owner":"alice","status":"COMPLETED","priority":700}"#);
    batch.delete("idx/status/RUNNING/0700/00000001");
    batch.put("idx/status/COMPLETED/0700/00000001", b"");
    db.write(batch)?;
    let then = before.get("job/00000001")?.unwrap_or_default();
    let now = db.get("job/00000001")?.unwrap_or_default();
    println!("snapshot sees: {}", String::from_utf8_lossy(&then));
    println!("latest sees:   {}", String::from_utf8_lossy(&now));

    drop(before);
    db.close()?;
    Ok(())
}

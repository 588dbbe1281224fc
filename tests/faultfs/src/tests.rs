//! The file system mounted for real: the kernel's view of sync semantics across a power cut and reboot.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::fs::{self, File, OpenOptions};
use std::io::Write;

use super::*;

fn mounted() -> Option<(tempfile::TempDir, FaultFs)> {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::mount_or_skip(dir.path()).unwrap()?;
    Some((dir, fs))
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn fsync_and_directory_fsync_decide_what_survives_a_cut() {
    let Some((_dir, mut fs)) = mounted() else { return };
    let root = fs.path().to_path_buf();
    let mut a = File::create(root.join("a")).unwrap();
    a.write_all(b"synced").unwrap();
    a.sync_data().unwrap();
    sync_dir(&root);
    a.write_all(b" and not").unwrap();
    let mut b = File::create(root.join("b")).unwrap();
    b.write_all(b"file synced, name not").unwrap();
    b.sync_all().unwrap();
    assert_eq!(fs::read(root.join("a")).unwrap(), b"synced and not");
    drop((a, b));
    assert!(fs.has_pending());
    fs.cut(CutMode::Drop, 1);
    assert_eq!(fs::read(root.join("a")).unwrap_err().raw_os_error(), Some(libc::EIO), "frozen after the cut");
    fs.reboot().unwrap();
    assert_eq!(fs::read(root.join("a")).unwrap(), b"synced");
    assert!(!root.join("b").exists(), "a name never synced is lost");
    assert!(!fs.has_pending());
}

#[test]
fn rename_is_atomic_across_a_cut() {
    let Some((_dir, mut fs)) = mounted() else { return };
    let root = fs.path().to_path_buf();
    fs::write(root.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
    File::open(root.join("CURRENT")).unwrap().sync_all().unwrap();
    sync_dir(&root);
    let mut seen = std::collections::HashSet::new();
    for seed in 0..12 {
        let mut tmp = File::create(root.join("CURRENT.tmp")).unwrap();
        tmp.write_all(format!("MANIFEST-{:06}\n", seed + 2).as_bytes()).unwrap();
        tmp.sync_data().unwrap();
        drop(tmp);
        fs::rename(root.join("CURRENT.tmp"), root.join("CURRENT")).unwrap();
        let before = fs::read(root.join("CURRENT")).unwrap();
        fs.cut(CutMode::ALL[seed as usize % 3], seed);
        fs.reboot().unwrap();
        let after = fs::read(root.join("CURRENT")).unwrap();
        assert!(after.starts_with(b"MANIFEST-") && after.len() == 16, "whole: {after:?}");
        seen.insert(after == before);
        if after == before {
            assert!(!root.join("CURRENT.tmp").exists());
        }
        // Make the outcome durable before the next round.
        sync_dir(&root);
    }
    assert_eq!(seen.len(), 2, "an unsynced rename sometimes survives, sometimes not");
    fs::rename(root.join("CURRENT"), root.join("CURRENT.old")).unwrap();
    sync_dir(&root);
    fs.cut(CutMode::Drop, 0);
    fs.reboot().unwrap();
    assert!(root.join("CURRENT.old").exists() && !root.join("CURRENT").exists(), "a synced rename is kept");
}

#[test]
fn torn_and_subset_cuts_keep_a_mix_of_unsynced_writes() {
    let Some((_dir, mut fs)) = mounted() else { return };
    let root = fs.path().to_path_buf();
    let path = root.join("wal");
    File::create(&path).unwrap();
    sync_dir(&root);
    let mut lens = std::collections::HashSet::new();
    for seed in 0..20 {
        let mut f = OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
        f.sync_all().unwrap();
        for i in 0..8u8 {
            f.write_all(&[b'a' + i; 100]).unwrap();
        }
        drop(f);
        let mode = if seed % 2 == 0 { CutMode::Tear } else { CutMode::Subset };
        fs.cut(mode, seed);
        fs.reboot().unwrap();
        let got = fs::read(&path).unwrap();
        assert!(got.len() <= 800);
        for (i, &byte) in got.iter().enumerate() {
            let want = b'a' + (i / 100) as u8;
            match mode {
                CutMode::Tear => assert_eq!(byte, want, "a torn cut keeps a prefix"),
                _ => assert!(byte == want || byte == 0, "a subset cut keeps whole writes, holes are zeros"),
            }
        }
        lens.insert(got.len());
    }
    assert!(lens.len() > 5, "{lens:?}");
}

#[test]
fn truncate_and_directories_work_through_the_kernel() {
    let Some((_dir, mut fs)) = mounted() else { return };
    let root = fs.path().to_path_buf();
    fs::create_dir_all(root.join("d/e")).unwrap();
    let f = OpenOptions::new().write(true).create(true).truncate(true).open(root.join("d/e/x")).unwrap();
    f.set_len(4096).unwrap();
    f.sync_all().unwrap();
    drop(f);
    sync_dir(&root.join("d/e"));
    sync_dir(&root.join("d"));
    sync_dir(&root);
    let mut names: Vec<_> = fs::read_dir(root.join("d")).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["e"]);
    fs.cut(CutMode::Drop, 3);
    fs.reboot().unwrap();
    assert_eq!(fs::metadata(root.join("d/e/x")).unwrap().len(), 4096);
    fs::remove_file(root.join("d/e/x")).unwrap();
    fs::remove_dir(root.join("d/e")).unwrap();
    assert!(fs::read_dir(root.join("d")).unwrap().next().is_none());
}

#[test]
fn an_armed_cut_fires_before_the_chosen_change() {
    let Some((_dir, mut fs)) = mounted() else { return };
    let root = fs.path().to_path_buf();
    fs.arm(2, CutMode::Drop, 0);
    let mut f = File::create(root.join("a")).unwrap();
    f.write_all(b"first").unwrap();
    assert!(fs.cut_report().is_none());
    let err = f.sync_data().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "the third change meets the cut");
    assert!(fs.cut_report().is_some());
    drop(f);
    fs.reboot().unwrap();
    assert!(fs.cut_report().is_none());
    assert!(!root.join("a").exists(), "neither the name nor the bytes were synced");
}

#[test]
fn unmounts_when_dropped() {
    let Some((dir, fs)) = mounted() else { return };
    assert!(is_mounted(dir.path()));
    drop(fs);
    assert!(!is_mounted(dir.path()));
}

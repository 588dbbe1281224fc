//! File names inside a data directory.
//!
//! | name              | what                                              |
//! |-------------------|---------------------------------------------------|
//! | `LOCK`            | held with an exclusive advisory lock by the owner  |
//! | `CURRENT`         | names the live manifest, e.g. `MANIFEST-000004\n`  |
//! | `MANIFEST-NNNNNN` | the manifest log                                   |
//! | `NNNNNN.wal`      | a write-ahead log                                  |
//! | `NNNNNN.sst`      | a sorted table                                     |
//! | `*.tmp`           | a file being written; removed at open              |
//!
//! Blob files live in a directory of their own (`crate::blob`), beside its `LOCK`:
//!
//! | name              | what                                              |
//! |-------------------|---------------------------------------------------|
//! | `NNNNNN.blob`     | a blob file                                       |

use std::path::{Path, PathBuf};

pub(crate) const LOCK: &str = "LOCK";
pub(crate) const CURRENT: &str = "CURRENT";

/// A file that belongs to the engine, recognised from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Wal(u64),
    Table(u64),
    Manifest(u64),
    Temp,
}

pub(crate) fn wal(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.wal"))
}

pub(crate) fn table(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.sst"))
}

pub(crate) fn blob(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.blob"))
}

/// The number of a blob file's name, `NNNNNN.blob` spelled exactly as [`blob`] writes it.
pub(crate) fn parse_blob(name: &str) -> Option<u64> {
    number(name.strip_suffix(".blob")?)
}

pub(crate) fn manifest_name(number: u64) -> String {
    format!("MANIFEST-{number:06}")
}

/// A file number exactly as the engine writes it: at least six decimal digits, zero-padded.
fn number(digits: &str) -> Option<u64> {
    let n: u64 = digits.parse().ok()?;
    (digits.bytes().all(|b| b.is_ascii_digit()) && format!("{n:06}") == digits).then_some(n)
}

pub(crate) fn parse(name: &str) -> Option<FileKind> {
    if name.ends_with(".tmp") {
        return Some(FileKind::Temp);
    }
    if let Some(n) = name.strip_prefix("MANIFEST-") {
        return number(n).map(FileKind::Manifest);
    }
    if let Some(n) = name.strip_suffix(".wal") {
        return number(n).map(FileKind::Wal);
    }
    if let Some(n) = name.strip_suffix(".sst") {
        return number(n).map(FileKind::Table);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        let dir = Path::new("/d");
        assert_eq!(wal(dir, 7), PathBuf::from("/d/000007.wal"));
        assert_eq!(parse("000007.wal"), Some(FileKind::Wal(7)));
        assert_eq!(parse("1234567.sst"), Some(FileKind::Table(1_234_567)));
        assert_eq!(parse(&manifest_name(3)), Some(FileKind::Manifest(3)));
        assert_eq!(parse("CURRENT.tmp"), Some(FileKind::Temp));
        assert_eq!(parse("LOCK"), None);
        assert_eq!(parse("x.wal"), None);
        assert_eq!(parse("7.wal"), None);
        assert_eq!(parse("+00007.wal"), None);
        assert_eq!(parse("0000007.wal"), None);
        assert_eq!(blob(dir, 12), PathBuf::from("/d/000012.blob"));
        assert_eq!(parse_blob("000012.blob"), Some(12));
        assert_eq!(parse_blob("1234567.blob"), Some(1_234_567));
        assert_eq!(parse_blob("12.blob"), None);
        assert_eq!(parse_blob("000012.wal"), None);
        assert_eq!(parse("000012.blob"), None, "blob files are not a database directory's");
    }
}

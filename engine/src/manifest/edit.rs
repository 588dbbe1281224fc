//! Version edits: the records of the manifest.
//!
//! An edit is a sequence of tagged fields; tags never change meaning. See `docs/format/manifest.md`.
//!
//! | tag | field          | body                                                                  |
//! |-----|----------------|-----------------------------------------------------------------------|
//! | 1   | log number     | u64: WALs numbered below it are obsolete                              |
//! | 2   | next file      | u64: next unused file number                                          |
//! | 3   | last sequence  | u64                                                                   |
//! | 4   | add table      | level u8, number u64, size u64, entries u64, min_seq u64, max_seq u64, smallest (u32 len + bytes), largest (u32 len + bytes) |
//! | 5   | remove table   | level u8, number u64                                                  |

#![deny(clippy::indexing_slicing)]

use crate::format::coding::{put_len_prefixed, put_u64, Cursor, DecodeError};
use crate::version::{TableMeta, NUM_LEVELS};

const TAG_LOG_NUMBER: u8 = 1;
const TAG_NEXT_FILE: u8 = 2;
const TAG_LAST_SEQUENCE: u8 = 3;
const TAG_ADD_TABLE: u8 = 4;
const TAG_REMOVE_TABLE: u8 = 5;

/// One record of the manifest: a change to the version set's counters and to the live tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VersionEdit {
    pub log_number: Option<u64>,
    pub next_file: Option<u64>,
    pub last_sequence: Option<u64>,
    pub added: Vec<(usize, TableMeta)>,
    pub removed: Vec<(usize, u64)>,
}

impl VersionEdit {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, v) in [
            (TAG_LOG_NUMBER, self.log_number),
            (TAG_NEXT_FILE, self.next_file),
            (TAG_LAST_SEQUENCE, self.last_sequence),
        ] {
            if let Some(v) = v {
                out.push(tag);
                put_u64(&mut out, v);
            }
        }
        for (level, m) in &self.added {
            out.push(TAG_ADD_TABLE);
            out.push(*level as u8);
            for v in [m.number, m.size, m.entries, m.min_seq, m.max_seq] {
                put_u64(&mut out, v);
            }
            put_len_prefixed(&mut out, &m.smallest);
            put_len_prefixed(&mut out, &m.largest);
        }
        for (level, number) in &self.removed {
            out.push(TAG_REMOVE_TABLE);
            out.push(*level as u8);
            put_u64(&mut out, *number);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(bytes);
        let mut edit = VersionEdit::default();
        while !c.is_empty() {
            let at = c.pos();
            match c.u8("tag")? {
                TAG_LOG_NUMBER => edit.log_number = Some(c.u64("log number")?),
                TAG_NEXT_FILE => edit.next_file = Some(c.u64("next file")?),
                TAG_LAST_SEQUENCE => edit.last_sequence = Some(c.u64("last sequence")?),
                TAG_ADD_TABLE => {
                    let level = level(&mut c)?;
                    let meta = TableMeta {
                        number: c.u64("table number")?,
                        size: c.u64("table size")?,
                        entries: c.u64("table entries")?,
                        min_seq: c.u64("table min sequence")?,
                        max_seq: c.u64("table max sequence")?,
                        smallest: c.len_prefixed("table smallest key")?.to_vec(),
                        largest: c.len_prefixed("table largest key")?.to_vec(),
                    };
                    edit.added.push((level, meta));
                }
                TAG_REMOVE_TABLE => {
                    let level = level(&mut c)?;
                    edit.removed.push((level, c.u64("table number")?));
                }
                _ => return Err(DecodeError::new(at, "unknown tag")),
            }
        }
        Ok(edit)
    }
}

fn level(c: &mut Cursor<'_>) -> Result<usize, DecodeError> {
    let at = c.pos();
    let level = c.u8("level")? as usize;
    if level >= NUM_LEVELS {
        return Err(DecodeError::new(at, "level out of range"));
    }
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncations() {
        let edit = VersionEdit {
            log_number: Some(4),
            next_file: Some(9),
            last_sequence: Some(1000),
            added: vec![(
                1,
                TableMeta {
                    number: 7,
                    size: 4096,
                    entries: 10,
                    min_seq: 1,
                    max_seq: 10,
                    smallest: b"a".to_vec(),
                    largest: b"z".to_vec(),
                },
            )],
            removed: vec![(0, 5), (0, 6)],
        };
        let bytes = edit.encode();
        assert_eq!(VersionEdit::decode(&bytes).unwrap(), edit);
        for cut in 1..bytes.len() {
            // A cut inside a field fails; a cut between fields decodes to a prefix, which the record
            // checksum of the manifest guards against.
            let _ = VersionEdit::decode(&bytes[..cut]);
        }
        assert!(VersionEdit::decode(&[99]).is_err());
        assert!(VersionEdit::decode(&[TAG_REMOVE_TABLE, 7, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}

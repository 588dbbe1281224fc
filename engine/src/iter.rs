//! Iteration: sources of internal entries, their merge, and the user-facing iterator that resolves versions
//! at a snapshot.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

use crate::error::StorageError;
use crate::format::key::{self, ValueKind};
use crate::memtable::{MemCursor, Memtable};

/// A cursor over internal entries in one direction, fixed when it is made.
pub(crate) trait Source: Send {
    /// Forward: positions at the first entry `>= target` (the first entry if `None`).
    /// Reverse: positions at the last entry `<= target` (the last entry if `None`).
    fn seek(&mut self, target: Option<&[u8]>) -> Result<(), StorageError>;
    /// Starts loading what a forward [`Source::seek`] to `target` reads first, without waiting for any of it.
    /// A merge asks every source before it seeks any, so that their cache misses overlap instead of coming
    /// one source after another.
    fn prepare_seek(&self, _target: &[u8]) {}
    /// Moves one entry on in the cursor's direction.
    fn advance(&mut self) -> Result<(), StorageError>;
    /// The current internal key, or `None` when exhausted.
    fn key(&self) -> Option<&[u8]>;
    /// The current value (empty when exhausted).
    fn value(&self) -> &[u8];
}

/// A cursor over a memtable, reading its entries in place.
pub(crate) struct MemSource {
    cursor: MemCursor,
    reverse: bool,
}

impl MemSource {
    pub fn new(mem: Arc<Memtable>, reverse: bool) -> Self {
        Self { cursor: MemCursor::new(mem), reverse }
    }
}

impl Source for MemSource {
    fn seek(&mut self, target: Option<&[u8]>) -> Result<(), StorageError> {
        if self.reverse {
            self.cursor.seek_le(target);
        } else {
            self.cursor.seek_ge(target);
        }
        Ok(())
    }

    fn prepare_seek(&self, target: &[u8]) {
        if !self.reverse {
            self.cursor.prepare_seek(target);
        }
    }

    fn advance(&mut self) -> Result<(), StorageError> {
        self.cursor.step(!self.reverse);
        Ok(())
    }

    fn key(&self) -> Option<&[u8]> {
        self.cursor.key()
    }

    fn value(&self) -> &[u8] {
        self.cursor.value()
    }
}

/// Merges sources into one ordered stream. Sources are few (memtables, level-0 tables, one per deeper
/// level), so the smallest is found by a scan.
pub(crate) struct MergingIter {
    sources: Vec<Box<dyn Source>>,
    reverse: bool,
    current: Option<usize>,
}

impl MergingIter {
    pub fn new(sources: Vec<Box<dyn Source>>, reverse: bool) -> Self {
        Self { sources, reverse, current: None }
    }

    fn pick(&mut self) {
        let mut best: Option<(usize, &[u8])> = None;
        for (i, s) in self.sources.iter().enumerate() {
            let Some(k) = s.key() else { continue };
            let better = match best {
                None => true,
                Some((_, b)) => {
                    let ord = key::compare(k, b);
                    if self.reverse {
                        ord == Ordering::Greater
                    } else {
                        ord == Ordering::Less
                    }
                }
            };
            if better {
                best = Some((i, k));
            }
        }
        self.current = best.map(|b| b.0);
    }

    pub fn seek(&mut self, target: Option<&[u8]>) -> Result<(), StorageError> {
        if let (Some(t), false) = (target, self.reverse) {
            for s in &self.sources {
                s.prepare_seek(t);
            }
        }
        for s in &mut self.sources {
            s.seek(target)?;
        }
        self.pick();
        Ok(())
    }

    pub fn advance(&mut self) -> Result<(), StorageError> {
        if let Some(i) = self.current {
            if let Some(s) = self.sources.get_mut(i) {
                s.advance()?;
            }
        }
        self.pick();
        Ok(())
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.sources.get(self.current?)?.key()
    }

    pub fn value(&self) -> &[u8] {
        self.current.and_then(|i| self.sources.get(i)).map(|s| s.value()).unwrap_or_default()
    }
}

/// A key and its value, as iterators yield them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A key and its value borrowed from the iterator that read them (see [`Iter::next_ref`]).
pub type KeyValueRef<'a> = (&'a [u8], &'a [u8]);

/// Iterator over the live key-value pairs of a range, at a fixed sequence number, in key order or in
/// reverse. Made by [`Db::range`](crate::Db::range) and friends.
///
/// As an [`Iterator`] it yields owned pairs; [`Iter::next_ref`] yields the same pairs borrowed from the
/// iterator, without copying them. The iterator holds the tables and memtables it started with, so it sees
/// a consistent state however long it lives; it does not pin a snapshot against compaction of newer data.
pub struct Iter {
    merge: MergingIter,
    seq: u64,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    reverse: bool,
    started: bool,
    done: bool,
    /// Forward: the merge still sits on the pair returned last, to be stepped past on the next call.
    step_first: bool,
    /// The user key of the pair returned last (forward: of the last key passed, whose older versions are
    /// skipped; empty before the first, as no key is empty).
    key: Vec<u8>,
    /// Reverse only: the value of the pair returned last (the merge has moved on past it).
    value: Vec<u8>,
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter").field("seq", &self.seq).field("reverse", &self.reverse).finish_non_exhaustive()
    }
}

fn below(lower: &Bound<Vec<u8>>, k: &[u8]) -> bool {
    match lower {
        Bound::Included(l) => k < l.as_slice(),
        Bound::Excluded(l) => k <= l.as_slice(),
        Bound::Unbounded => false,
    }
}

fn above(upper: &Bound<Vec<u8>>, k: &[u8]) -> bool {
    match upper {
        Bound::Included(u) => k > u.as_slice(),
        Bound::Excluded(u) => k >= u.as_slice(),
        Bound::Unbounded => false,
    }
}

impl Iter {
    pub(crate) fn new(
        merge: MergingIter,
        seq: u64,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Self {
        Self {
            merge,
            seq,
            lower,
            upper,
            reverse,
            started: false,
            done: false,
            step_first: false,
            key: Vec::new(),
            value: Vec::new(),
        }
    }

    /// The next pair, as [`Iterator::next`] returns it, but borrowed: the key and value stay valid until
    /// the iterator is used again. A scan that only looks at its pairs (sums them, decodes them, compares
    /// them) reads them in place, with no allocation per pair.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let db = cairn_engine::Db::open(dir.path())?;
    /// db.put(b"a", b"1")?;
    /// db.put(b"b", b"22")?;
    /// let mut iter = db.range(b"a".as_slice()..)?;
    /// let mut bytes = 0;
    /// while let Some(pair) = iter.next_ref() {
    ///     let (key, value) = pair?;
    ///     bytes += key.len() + value.len();
    /// }
    /// assert_eq!(bytes, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_ref(&mut self) -> Option<Result<KeyValueRef<'_>, StorageError>> {
        if self.done {
            return None;
        }
        let found = self.position();
        if !matches!(found, Ok(true)) {
            self.done = true;
        }
        match found {
            Ok(true) if self.reverse => Some(Ok((&self.key, &self.value))),
            Ok(true) => Some(Ok((&self.key, self.merge.value()))),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Moves to the next live pair; `false` at the end of the range.
    fn position(&mut self) -> Result<bool, StorageError> {
        if !self.started {
            self.start()?;
        }
        if self.reverse {
            self.next_reverse()
        } else {
            self.next_forward()
        }
    }

    /// Seeks the merge to the range's first bound in its direction. The internal key sought is built in
    /// `self.key`, empty before the first pair, whose allocation then holds the pairs' keys.
    fn start(&mut self) -> Result<(), StorageError> {
        self.started = true;
        let bound = if self.reverse {
            match &self.upper {
                Bound::Included(u) => Some((u, 0)),
                Bound::Excluded(u) => Some((u, u64::MAX)),
                Bound::Unbounded => None,
            }
        } else {
            match &self.lower {
                Bound::Included(l) | Bound::Excluded(l) => Some((l, u64::MAX)),
                Bound::Unbounded => None,
            }
        };
        let Some((user_key, trailer)) = bound else { return self.merge.seek(None) };
        key::append_internal_key(&mut self.key, user_key, trailer);
        let sought = self.merge.seek(Some(&self.key));
        self.key.clear();
        sought
    }

    /// Leaves the merge on the newest visible version of the next live key, that key in `self.key`.
    fn next_forward(&mut self) -> Result<bool, StorageError> {
        if std::mem::take(&mut self.step_first) {
            self.merge.advance()?;
        }
        loop {
            let Some(ikey) = self.merge.key() else { return Ok(false) };
            let (ukey, trailer) = key::split(ikey);
            if above(&self.upper, ukey) {
                return Ok(false);
            }
            let skip = key::trailer_seq(trailer) > self.seq
                || below(&self.lower, ukey)
                || (!self.key.is_empty() && ukey == self.key.as_slice());
            if skip {
                self.merge.advance()?;
                continue;
            }
            self.key.clear();
            self.key.extend_from_slice(ukey);
            if key::trailer_kind(trailer) == Some(ValueKind::Put) {
                self.step_first = true;
                return Ok(true);
            }
            self.merge.advance()?;
        }
    }

    /// In reverse, the versions of a key arrive oldest first: keep the newest visible one until the key
    /// changes. Leaves the pair in `self.key` and `self.value`.
    fn next_reverse(&mut self) -> Result<bool, StorageError> {
        // Whether `self.key` holds a key of this call, and whether its newest visible version is a value.
        let mut pending: Option<bool> = None;
        while let Some(ikey) = self.merge.key() {
            let (ukey, trailer) = key::split(ikey);
            if below(&self.lower, ukey) {
                break;
            }
            if pending.is_some() && self.key.as_slice() != ukey {
                if pending == Some(true) {
                    return Ok(true);
                }
                pending = None;
                continue;
            }
            if key::trailer_seq(trailer) <= self.seq && !above(&self.upper, ukey) {
                let is_put = key::trailer_kind(trailer) == Some(ValueKind::Put);
                if pending.is_none() {
                    self.key.clear();
                    self.key.extend_from_slice(ukey);
                }
                if is_put {
                    self.value.clear();
                    self.value.extend_from_slice(self.merge.value());
                }
                pending = Some(is_put);
            }
            self.merge.advance()?;
        }
        self.done = true;
        Ok(pending == Some(true))
    }
}

impl Iterator for Iter {
    type Item = Result<KeyValue, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref().map(|pair| pair.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }
}

/// The smallest key greater than every key starting with `prefix`, if any.
pub(crate) fn prefix_upper_bound(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

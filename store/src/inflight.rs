//! Records that a claim of this store is taking right now, so that concurrent claimers try other
//! candidates first instead of racing for the same one: of several claimers that pick the head of a queue,
//! one wins and the others lose only after a read, an update and a commit attempt each. Only a preference:
//! the claim's version check still decides, and a claimer whose candidates are all taken tries them anyway.

use std::collections::HashSet;

use parking_lot::Mutex;

/// The record keys being claimed.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    keys: Mutex<HashSet<Vec<u8>>>,
}

/// A record being claimed; it stops being one when this is dropped.
#[derive(Debug)]
pub(crate) struct Taking<'a> {
    set: &'a InFlight,
    key: Vec<u8>,
}

impl InFlight {
    pub fn contains(&self, record_key: &[u8]) -> bool {
        self.keys.lock().contains(record_key)
    }

    /// Marks `record_key` as being claimed until the returned guard is dropped; `None` if it already is.
    pub fn enter(&self, record_key: Vec<u8>) -> Option<Taking<'_>> {
        let inserted = self.keys.lock().insert(record_key.clone());
        inserted.then(|| Taking { set: self, key: record_key })
    }
}

impl Drop for Taking<'_> {
    fn drop(&mut self) {
        self.set.keys.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_in_flight_until_its_guard_drops() {
        let set = InFlight::default();
        let a = set.enter(b"a".to_vec()).unwrap();
        assert!(set.contains(b"a") && !set.contains(b"b"));
        assert!(set.enter(b"a".to_vec()).is_none(), "one claimer at a time");
        let b = set.enter(b"b".to_vec()).unwrap();
        drop(a);
        assert!(!set.contains(b"a") && set.contains(b"b"));
        drop(b);
        assert!(set.keys.lock().is_empty());
    }
}

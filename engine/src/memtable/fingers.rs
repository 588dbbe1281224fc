//! Fingers: the memtable's nodes in a sorted array of their windows and addresses, rebuilt by the flush
//! thread as the memtable grows, so that a seek binary-searches a compact array instead of descending the
//! skip list.
//!
//! A skip-list seek reads a node per step, and in a large memtable the last levels' nodes are scattered
//! over the arena, out of the CPU's caches: a seek in a list of 100,000 entries costs some 600 ns, about
//! the seek of a 10-pair scan in a table. The fingers' windows take 8 bytes a node, and a search reads
//! first every sixteenth of them (about 50 KiB at 100,000 entries, which stays in the CPU's caches), then the two
//! lines of one run of sixteen; the node it lands before is a step or two away on level 0.
//!
//! The array is a snapshot: nodes inserted after it was built are not in it. A search starts from the
//! last node of the snapshot before its target, which is before the target in the live list too (nodes
//! are never removed), and walks level 0 from there over the nodes inserted since
//! ([`SkipList::walk`]); past [`MAX_WALK`] of them it gives up, and the caller descends the list.

use std::cmp::Ordering;

use super::skiplist::{Node, SkipList, Target};
use crate::prefetch::prefetch;

/// Nodes a search walks on level 0 from its finger before it descends the list instead.
pub(super) const MAX_WALK: usize = 16;
/// Windows per run that [`Fingers::tops`] samples: two cache lines.
const RUN: usize = 16;
/// Nodes a build walks between two asks whether to stop.
const STOP_EVERY: usize = 4096;

/// Nodes after the one found whose lines [`Fingers::first_not_before`] asks for: a scan's next steps, which
/// would otherwise each wait for the node before them to name the next. A range read of ten pairs with a
/// third of its keys in the memtable takes about three (range reads at 200,000 keys some 7% faster).
const SCAN_AHEAD: usize = 3;

/// Every `stride`-th node of a skip list, in key order (see the module's documentation).
pub(super) struct Fingers {
    /// Each node's [`Target`] window: unequal windows order two keys without reading either.
    windows: Box<[u64]>,
    /// The first window of each run of [`RUN`]: a search finds its run in this array, a sixteenth the
    /// size of `windows` and so mostly in the CPU's caches, then reads the two lines of that run.
    tops: Box<[u64]>,
    nodes: Box<[Node]>,
    /// The list's length when every one of its nodes is a finger, `usize::MAX` otherwise (a stride, or
    /// an insert that finished during the build). While the list is still that long, the node after a
    /// search's finger is the answer itself ([`Fingers::first_not_before`]).
    complete_at: usize,
}

impl std::fmt::Debug for Fingers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fingers").field("len", &self.len()).finish()
    }
}

impl Fingers {
    /// Every `stride`-th node of `list`, from a walk of its level 0 (concurrent inserts may or may not be
    /// in it: every node taken is in order all the same); `None` if `stop`, asked every [`STOP_EVERY`]
    /// nodes, says to give up.
    pub fn build(list: &SkipList, stride: usize, stop: impl Fn() -> bool) -> Option<Self> {
        let stride = stride.max(1);
        // Inserts count a node once it is linked: every node counted now is in the walk.
        let len = list.len();
        let capacity = len / stride + 1;
        let (mut windows, mut nodes) = (Vec::with_capacity(capacity), Vec::with_capacity(capacity));
        let mut next = list.first();
        let mut at = 0usize;
        while let Some(node) = next {
            // SAFETY: `node` is a published node of `list`, alive while it is borrowed.
            unsafe { node.prefetch_successor() };
            if at.is_multiple_of(stride) {
                windows.push(node.window());
                nodes.push(node);
            }
            at += 1;
            if at.is_multiple_of(STOP_EVERY) && stop() {
                return None;
            }
            // SAFETY: as above.
            next = unsafe { node.successor() };
        }
        let tops = windows.iter().step_by(RUN).copied().collect();
        let complete = stride == 1 && nodes.len() == len && list.len() == len;
        let complete_at = if complete { len } else { usize::MAX };
        Some(Self { windows: windows.into_boxed_slice(), tops, nodes: nodes.into_boxed_slice(), complete_at })
    }

    /// The first index of the run of [`RUN`] windows where the first window not below `window` lies (or
    /// that of the next run's first), from the sampled windows alone; `None` if it is the first window.
    fn run_of(&self, window: u64) -> Option<usize> {
        // Runs whose first window is below `window`: the first window not below it is in the last of them
        // or is the first of the next.
        let runs = self.tops.partition_point(|&w| w < window);
        runs.checked_sub(1).map(|run| run * RUN)
    }

    /// Asks for the lines a search for `window` reads after the sampled windows: its run's windows and the
    /// addresses of its nodes (and of the first node of the next run), without waiting for them.
    pub fn prepare(&self, window: u64) {
        let Some(start) = self.run_of(window) else { return };
        for at in [start, start + RUN / 2] {
            prefetch(self.windows.as_ptr().wrapping_add(at));
        }
        self.prefetch_nodes(start);
    }

    /// Asks for the lines of the addresses of the nodes of the run from `start` and of the next run's first.
    fn prefetch_nodes(&self, start: usize) {
        for at in [start, start + RUN / 2, start + RUN] {
            prefetch(self.nodes.as_ptr().wrapping_add(at));
        }
    }

    /// The index of the first window not below `window` (`len()` if none).
    fn lower_bound(&self, window: u64) -> usize {
        let Some(start) = self.run_of(window) else { return 0 };
        // The node a search reads next is one of the run's (or the first of the next run): ask for their
        // addresses' lines now, so that their miss overlaps the search of the run's windows.
        self.prefetch_nodes(start);
        let windows = self.windows.get(start..(start + RUN).min(self.windows.len())).unwrap_or_default();
        start + windows.partition_point(|&w| w < window)
    }

    /// How many windows from `at` on equal `window` (galloping, so that a long run of ties costs a search
    /// of its own length, and no ties a single read).
    fn tied_from(&self, at: usize, window: u64) -> usize {
        let tied = |i: usize| self.windows.get(i).is_some_and(|&w| w == window);
        if !tied(at) {
            return 0;
        }
        let mut step = 1;
        while tied(at + step) {
            step *= 2;
        }
        // Windows `at..at + step / 2` tie and `at + step` does not (or is past the end).
        let rest = self.windows.get(at + step / 2..(at + step).min(self.windows.len())).unwrap_or_default();
        step / 2 + rest.partition_point(|&w| w == window)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The last node whose key is before `target`, `None` if no node is (found as
    /// [`Fingers::count_before`] counts them).
    ///
    /// # Safety
    /// The list these fingers were built from is alive.
    pub unsafe fn before(&self, target: &Target<'_>) -> Option<Node> {
        // SAFETY: the caller's contract.
        let below = unsafe { self.count_before(target) };
        below.checked_sub(1).and_then(|i| self.nodes.get(i).copied())
    }

    /// The first node whose key is not before `target` (`None` if none is), if these fingers hold every
    /// node of the list, whose length is `list_len` now: `None` if they may not.
    ///
    /// A node being inserted, linked but not yet counted, is left out: its sequence is above that of every
    /// reader that may see it, and a reader's cursor skips such versions anyway.
    ///
    /// Asks for the lines of the node found and of the [`SCAN_AHEAD`] nodes that follow it, without waiting
    /// for any: the caller's cursor reads the first when the scan compares it with the tables' keys.
    ///
    /// # Safety
    /// As for [`Fingers::before`].
    pub unsafe fn first_not_before(&self, target: &Target<'_>, list_len: usize) -> Option<Option<Node>> {
        if list_len != self.complete_at {
            return None;
        }
        // SAFETY: the caller's contract.
        let at = unsafe { self.count_before(target) };
        for next in self.nodes.get(at..).unwrap_or_default().iter().take(1 + SCAN_AHEAD) {
            next.prefetch();
        }
        Some(self.nodes.get(at).copied())
    }

    /// How many fingers have keys before `target`: windows decide, and the keys of the nodes whose window
    /// ties the target's are read in a binary search of their own.
    ///
    /// # Safety
    /// As for [`Fingers::before`].
    unsafe fn count_before(&self, target: &Target<'_>) -> usize {
        let lo = self.lower_bound(target.window());
        let tied = self.nodes.get(lo..lo + self.tied_from(lo, target.window())).unwrap_or_default();
        // SAFETY: the caller's contract.
        lo + tied.partition_point(|&n| unsafe { target.order(n) } == Ordering::Less)
    }

    /// Bytes of memory the arrays hold.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        (self.windows.len() + self.tops.len()) * size_of::<u64>() + self.nodes.len() * size_of::<Node>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::key::{self, make_trailer, ValueKind};

    fn list_of(keys: &[&[u8]]) -> SkipList {
        let list = SkipList::new();
        let mut inserter = list.inserter();
        for (i, k) in keys.iter().enumerate() {
            inserter.insert(k, make_trailer(i as u64 + 1, ValueKind::Put), b"v");
        }
        drop(inserter);
        list
    }

    /// The key of `node`, or `None`.
    fn key_of(node: Option<Node>) -> Option<Vec<u8>> {
        // SAFETY: every list in these tests outlives the check.
        node.map(|n| key::user_key(unsafe { n.key() }).to_vec())
    }

    #[test]
    fn before_finds_the_last_node_before_the_target_through_tied_windows() {
        // Keys that share their first eight bytes tie on windows and are told apart by their keys.
        let keys: [&[u8]; 6] = [b"a", b"prefix--1", b"prefix--3", b"prefix--5", b"prefix--7", b"z"];
        let list = list_of(&keys);
        let fingers = Fingers::build(&list, 1, || false).expect("built");
        assert_eq!(fingers.len(), 6);
        let find = |user: &[u8]| {
            let target = Target::new(user, key::seek_trailer(100));
            // SAFETY: `list` is alive.
            key_of(unsafe { fingers.before(&target) })
        };
        assert_eq!(find(b"0"), None);
        assert_eq!(find(b"a"), None, "an equal key is not before the target");
        assert_eq!(find(b"b"), Some(b"a".to_vec()));
        assert_eq!(find(b"prefix--0"), Some(b"a".to_vec()));
        assert_eq!(find(b"prefix--4"), Some(b"prefix--3".to_vec()));
        assert_eq!(find(b"prefix--7"), Some(b"prefix--5".to_vec()));
        assert_eq!(find(b"prefix--9"), Some(b"prefix--7".to_vec()));
        assert_eq!(find(b"zz"), Some(b"z".to_vec()));
    }

    #[test]
    fn a_stride_takes_every_nth_node_in_order() {
        let keys: Vec<Vec<u8>> = (0..100u32).map(|i| format!("k{i:03}").into_bytes()).collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let list = list_of(&refs);
        let fingers = Fingers::build(&list, 7, || false).expect("built");
        assert_eq!(fingers.len(), 15);
        let taken: Vec<Option<Vec<u8>>> = fingers.nodes.iter().map(|&n| key_of(Some(n))).collect();
        let want: Vec<Option<Vec<u8>>> = keys.iter().step_by(7).cloned().map(Some).collect();
        assert_eq!(taken, want);
        assert_eq!(fingers.bytes(), 15 * 16 + 8);
        let target = Target::new(b"k050", key::seek_trailer(1000));
        // SAFETY: `list` is alive.
        assert_eq!(key_of(unsafe { fingers.before(&target) }), Some(b"k049".to_vec()));
    }

    proptest::proptest! {
        /// The two-step search and the galloping count of ties agree with a plain search of the windows.
        #[test]
        fn runs_and_ties_are_found_as_a_plain_search_finds_them(
            mut windows in proptest::collection::vec(0u64..40, 0..300),
            probe in 0u64..42,
        ) {
            windows.sort_unstable();
            let tops = windows.iter().step_by(RUN).copied().collect();
            let fingers = Fingers {
                windows: windows.clone().into_boxed_slice(),
                tops,
                nodes: Box::new([]),
                complete_at: usize::MAX,
            };
            let lo = windows.partition_point(|&w| w < probe);
            proptest::prop_assert_eq!(fingers.lower_bound(probe), lo);
            let ties = windows[lo..].iter().take_while(|&&w| w == probe).count();
            proptest::prop_assert_eq!(fingers.tied_from(lo, probe), ties);
            // The run whose lines a seek's preparation asks for holds the answer, or is followed by it.
            match fingers.run_of(probe) {
                Some(start) => proptest::prop_assert!(start <= lo && lo <= start + RUN, "{start} {lo}"),
                None => proptest::prop_assert_eq!(lo, 0),
            }
            fingers.prepare(probe);
        }
    }

    #[test]
    fn a_build_told_to_stop_gives_up() {
        let keys: Vec<Vec<u8>> = (0..2 * STOP_EVERY as u32).map(|i| format!("k{i:05}").into_bytes()).collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let list = list_of(&refs);
        let asked = std::cell::Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            asked.get() == 2
        };
        assert!(Fingers::build(&list, 1, stop).is_none());
        assert_eq!(asked.get(), 2, "asked once per {STOP_EVERY} nodes");
        let built = Fingers::build(&list, 1, || false).expect("built");
        assert_eq!(built.len(), 2 * STOP_EVERY);
    }

    #[test]
    fn an_empty_list_has_no_fingers() {
        let list = SkipList::new();
        let fingers = Fingers::build(&list, 1, || false).expect("built");
        assert_eq!(fingers.len(), 0);
        // SAFETY: `list` is alive.
        assert_eq!(unsafe { fingers.before(&Target::new(b"a", 0)) }, None);
    }
}

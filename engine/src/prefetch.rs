//! Hints that start loading memory into the CPU's cache before a read needs it.
//!
//! Reads of tables and memtables are bound by cache misses: a scan touches entries scattered over an arena
//! or spread over a decoded block. A prefetch lets the misses of the next steps overlap the work of this
//! one. These are hints: they never fault and never change what a read returns.

/// Bytes of one cache line on the CPUs Cairn is tuned for.
pub(crate) const LINE: usize = 64;

/// Starts loading the cache line holding `p` (nothing for null). A no-op but on x86-64. Public for the
/// layers above, whose own structures (the store's record cache) are read the same way.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Starts loading every cache line of the first `max` bytes of `bytes`.
#[inline(always)]
pub(crate) fn prefetch_bytes(bytes: &[u8], max: usize) {
    for at in line_offsets(bytes.as_ptr().addr(), bytes.len().min(max)) {
        prefetch(bytes.as_ptr().wrapping_add(at));
    }
}

/// Offsets from `addr`, one in each cache line that the `len` bytes at `addr` touch.
#[inline(always)]
fn line_offsets(addr: usize, len: usize) -> impl Iterator<Item = usize> {
    let first = addr - addr % LINE;
    let lines = if len == 0 { 0 } else { (addr + len - 1) / LINE - first / LINE + 1 };
    (0..lines).map(move |k| (first + k * LINE).max(addr) - addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Every line the bytes touch is asked for once, and no other line.
        #[test]
        fn the_lines_asked_for_are_the_lines_touched(addr in 1usize..1 << 20, len in 0usize..1000) {
            let asked: Vec<usize> = line_offsets(addr, len).map(|at| (addr + at) / LINE).collect();
            let mut touched: Vec<usize> = (addr..addr + len).map(|a| a / LINE).collect();
            touched.dedup();
            proptest::prop_assert_eq!(asked, touched);
            proptest::prop_assert!(line_offsets(addr, len).all(|at| at < len.max(1)));
        }
    }
}

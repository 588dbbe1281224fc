//! Zeroed arrays for the memtable's key index and filter, each page mapped writable when the array is made.
//!
//! A large zeroed allocation comes from the allocator as fresh pages that the kernel has not mapped yet.
//! Left so, each page faults when it is first touched, in whichever thread touches it: for the index and
//! the filter, the writer that applies commits, or a reader. A load first maps the shared zero page, and a
//! store then faults again to replace it, which makes the kernel flush that page from every core's TLB (an
//! interrupt to each other core). So one store per page maps each page here, writable, once, when the memtable is
//! made (usually by the flush thread, ahead of the switch that needs it).

use std::alloc::Layout;

/// The smallest page size of the platforms Cairn runs on: one store per page maps it.
const PAGE_BYTES: usize = 4096;

/// A slice of `len` zeroed `T`s, every page of it mapped writable. `len` and `T`'s size are not zero.
///
/// # Safety
/// All-zero bytes are a valid `T`.
pub(super) unsafe fn zeroed_mapped<T>(len: usize) -> Box<[T]> {
    const { assert!(size_of::<T>() > 0, "an array of a zero-sized type needs no memory") };
    assert!(len > 0, "a memtable array has at least one element");
    let layout = Layout::array::<T>(len).expect("a memtable array fits in memory");
    // SAFETY: the layout's size is not zero (at least one element of a type that is not zero-sized).
    let bytes = unsafe { std::alloc::alloc_zeroed(layout) };
    if bytes.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `bytes` is a fresh allocation of `layout.size()` zero bytes that nothing else refers to.
    unsafe { map_pages(bytes, layout.size()) };
    // SAFETY: the global allocator made `bytes` with the layout of `len` `T`s, which is what the box frees it
    // with; all zeros is a valid `T` (the caller's contract).
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(bytes.cast::<T>(), len)) }
}

/// Stores a zero byte in every page of the `len` bytes at `start`, so that the kernel maps each page writable
/// now.
///
/// # Safety
/// The bytes are allocated, zero, and no one else reads or writes them meanwhile.
unsafe fn map_pages(start: *mut u8, len: usize) {
    let mut offset = 0;
    while offset < len {
        // SAFETY: `offset` is inside the bytes, which are the caller's. Volatile, so that the store is not
        // elided as writing the zero the byte already holds.
        unsafe { std::ptr::write_volatile(start.add(offset), 0) };
        // The first byte of the next page.
        offset = ((start.addr() + offset) | (PAGE_BYTES - 1)) + 1 - start.addr();
    }
}

/// Of the pages that the `len` bytes at `start` lie on, how many are mapped, and how many there are.
#[cfg(all(test, target_os = "linux"))]
pub(super) fn mapped_pages(start: *const u8, len: usize) -> (usize, usize) {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("a page size");
    let first = start.addr() & !(page - 1);
    let end = start.addr() + len;
    let mut resident = vec![0u8; (end - first).div_ceil(page)];
    // SAFETY: the range covers an allocation of the caller (rounded down to a page), and `resident` has a
    // byte per page of it.
    let rc = unsafe { libc::mincore(first as *mut libc::c_void, end - first, resident.as_mut_ptr()) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    (resident.iter().filter(|r| **r & 1 == 1).count(), resident.len())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn arrays_are_zero_of_the_length_asked_and_mapped() {
        for len in [1usize, 7, 512, 3 * PAGE_BYTES / 8 + 5, 1 << 19] {
            // SAFETY: all zeros is a valid `AtomicU64`.
            let a = unsafe { zeroed_mapped::<AtomicU64>(len) };
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|w| w.load(Ordering::Relaxed) == 0));
            let (mapped, pages) = mapped_pages(a.as_ptr().cast(), len * 8);
            assert_eq!(mapped, pages, "{len} words");
        }
    }
}

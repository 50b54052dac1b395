//! CPU prefetch hints for the DNS fast path: on a large table the time
//! goes to cache misses, and asking for the next lines early lets them
//! overlap (see `FastPath::answer_batch` and `service_cache`).
//!
//! Owns: the one `unsafe` intrinsic call. Must not: dereference anything;
//! a hint that points nowhere useful costs a little bandwidth, never a fault.

// The prefetch intrinsic: a hint that reads no memory.
#![allow(unsafe_code)]

/// A hint to load the cache line at `address`; never faults, whatever the
/// address, and does nothing on other architectures.
#[inline(always)]
pub(super) fn prefetch(address: *const u8) {
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is only a
    // hint: it dereferences nothing and cannot fault.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Prefetches the cache lines of `len` bytes from `start`, at most four.
#[inline]
pub(super) fn prefetch_lines(start: *const u8, len: usize) {
    for offset in (0..len.min(256)).step_by(64) {
        prefetch(start.wrapping_add(offset));
    }
}

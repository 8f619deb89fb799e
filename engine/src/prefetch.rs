//! A hint to start loading a cache line that will be needed soon. Ingest resolves and updates
//! about eight random rows per inference; asking for all of them first lets their cache misses
//! overlap instead of running one after another. A hint only: it never changes a result.

/// Starts loading the cache line that holds `value`.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch never faults or reads
        // memory into the program: any address, valid or not, is allowed.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

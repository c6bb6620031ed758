//! Process-wide allocator tuning for the batch commands (dataset makers, training).
//!
//! Why: glibc's malloc serves blocks above its mmap threshold (128 KiB at start,
//! adapting up to 32 MiB) with fresh `mmap`s and gives the top of the heap back to the
//! kernel beyond its trim threshold. A dataset maker allocates a few MB per recording
//! (the signals in µV, the preprocessed signals) and frees them a few milliseconds
//! later, so every recording paid for its memory again in page faults and page
//! clearing: about a third of the reader's time and 7 % of `make-dataset`'s CPU time
//! (BENCHMARKS.md "Dataset makers"). Keeping freed memory in the process for reuse
//! removes that; the cost is that the process keeps its peak heap until it exits,
//! which is what a batch command wants anyway. The daemon does not call this.

/// Keeps freed memory for reuse instead of returning it to the kernel (glibc; a
/// no-op elsewhere). Call once, early in `main`, before threads start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // The largest mmap threshold glibc accepts on 64-bit targets is 32 MiB
        // (`DEFAULT_MMAP_THRESHOLD_MAX`); a trim threshold of 1 GiB keeps the heap.
        // SAFETY: mallopt only sets two of malloc's parameters; it is called before
        // any thread of ours starts, and glibc serialises it with allocations anyway.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        };
        if !ok {
            tracing::debug!(
                "mallopt refused the allocator settings; running with glibc's defaults"
            );
        }
    }
}

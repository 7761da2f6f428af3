//! How the process asks the kernel for memory, set once at start by the
//! binary and by the benchmarks, so that both measure the same process.

/// Turns transparent huge pages off for this process.
///
/// mimalloc marks its arenas for huge pages. Each new thread's heap takes a
/// 64 KiB page per size class across them, so the first touch of a 2 MiB
/// region made the kernel zero all of it: the passes run on fresh worker
/// threads and the dispatcher's plugin calls on many, and zeroing was a
/// sixth of an incremental rescoring pass (README, *Memory and huge
/// pages*). With 4 KiB pages the kernel zeroes only what is touched.
///
/// Older kernels (before 3.15) and other systems leave huge pages as they
/// are, which is only slower. The daemon's tests read the flag off the
/// running process (`tests/daemon.rs`).
#[allow(unsafe_code)]
pub fn small_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and only sets
    // a flag on this process's memory map; a refusal changes nothing.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

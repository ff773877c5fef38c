//! Allocation accounting for the "bounded allocation" property.
//!
//! Every binary that links this crate (the libFuzzer targets and the replay test) allocates
//! through [`Counting`], which forwards to the system allocator and keeps, per thread, the bytes
//! live now and the highest value since the last [`measure`]. A decoder that trusts a length
//! read from its input (`Vec::with_capacity(n)` of a declared count, say) shows up as a peak
//! far above what the input could justify, and the target fails on it even when the machine
//! had the memory to spare. Per thread, so the test harness's other threads do not count.

#![allow(unsafe_code)] // A global allocator is an `unsafe impl`; this one only counts and forwards.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Signed: a block freed on another thread than the one that allocated it makes a thread's
    // own balance go below where it started.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator with per-thread byte counts.
#[derive(Debug)]
pub struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

fn grew(bytes: usize) {
    // `try_with`: the counters may already be gone while a thread's other locals are dropped.
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(bytes as isize);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(bytes as isize)));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only
// updates thread-local counters, which never allocate (const-initialised `Cell`s).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this type) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` is the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as the worst case: both blocks exist while the bytes are copied.
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}

/// Bytes currently allocated and not freed by this thread (relative to an arbitrary start).
pub fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Runs `f` and returns its result with the most bytes it had allocated at once, beyond what
/// was live when it started.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = live();
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, peak.saturating_sub(base).max(0) as usize)
}

/// Panics unless `f`'s peak allocation stays within `per_byte` bytes per input byte plus
/// `fixed`: a decoder may allocate in proportion to what it was given, never to what the input
/// claims.
pub fn bounded<R>(
    what: &str,
    input_len: usize,
    per_byte: usize,
    fixed: usize,
    f: impl FnOnce() -> R,
) -> R {
    let (r, peak) = measure(f);
    let limit = input_len.saturating_mul(per_byte).saturating_add(fixed);
    assert!(
        peak <= limit,
        "{what}: allocated {peak} bytes at once for {input_len} input bytes (limit {limit})"
    );
    r
}

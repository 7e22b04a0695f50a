//! An allocator counting the heap in use and its peak, for tests that bound what one piece of
//! work allocates. Each test binary including this file installs it itself, in plain sight:
//! `#[global_allocator] static ALLOCATOR: PeakCounter = PeakCounter;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, keeping [`CURRENT`] and [`PEAK`] up to date.
pub struct PeakCounter;

/// Bytes allocated and not yet freed.
pub static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// The most [`CURRENT`] has reached; a test resets it to `CURRENT` before the work it measures.
pub static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for PeakCounter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

//! Where long-lived allocations go. A held subscription's state (its reverse-index
//! entries, its list, its dialog) lives for hours; a request's buffers live for
//! microseconds, and a transaction's for 32 seconds. When both come from the same
//! allocator pages, the pages of the short-lived ones cannot go back to the kernel while
//! one long-lived block stays in each: at 100,000 held subscriptions, ~230 bytes a
//! subscription of pages held by watched lists among freed transaction buffers, and as
//! much where the reverse index's buckets had grown among them. Code that builds
//! long-lived state runs inside `long_lived`; the binary's allocator (`src/main.rs`) then
//! serves it from a heap of its own.
//!
//! This module only carries the hint: it allocates nothing and works with any allocator.

use std::cell::Cell;

thread_local! {
    static LONG_LIVED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with its allocations marked long-lived (nested calls stay marked).
pub fn long_lived<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let was = self.0;
            let _ = LONG_LIVED.try_with(|c| c.set(was));
        }
    }
    let _restore = Restore(LONG_LIVED.try_with(|c| c.replace(true)).unwrap_or(false));
    f()
}

/// Whether the current thread is inside `long_lived` (for the allocator: never panics,
/// allocates nothing).
pub fn is_long_lived() -> bool {
    LONG_LIVED.try_with(Cell::get).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_nest_and_end() {
        assert!(!is_long_lived());
        long_lived(|| {
            assert!(is_long_lived());
            long_lived(|| assert!(is_long_lived()));
            assert!(is_long_lived());
        });
        assert!(!is_long_lived());
        let caught = std::panic::catch_unwind(|| long_lived(|| panic!("inside")));
        assert!(caught.is_err());
        assert!(!is_long_lived(), "a panic inside ends the mark");
    }
}

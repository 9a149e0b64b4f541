//! Statics that large values are built in, in place, instead of on the boot stack: the IDT,
//! the parsed boot information and the plan. Each hands out its one `&mut` once.
//!
//! This is the `static_cell` crate's `StaticCell` in 30 lines; it is written here to keep the
//! stub's dependencies to reloc-core and x86_64.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A static value lent mutably at most once, for the rest of the program.
pub struct InPlace<T> {
    value: UnsafeCell<T>,
    taken: AtomicBool,
}

// SAFETY: the value is reachable only through the single `&'static mut` that `take` hands
// out (the flag makes a second `take` return `None`), so no two threads can share it.
unsafe impl<T: Send> Sync for InPlace<T> {}

impl<T> InPlace<T> {
    /// A static holding `value` (usually the type's `const fn empty()`).
    pub const fn new(value: T) -> Self {
        Self {
            value: UnsafeCell::new(value),
            taken: AtomicBool::new(false),
        }
    }

    /// The value, mutably, the first time; `None` after that.
    // A `&mut` from `&self` is the point: the flag makes it the only one.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the flag was clear, so this is the only reference ever made to the value,
        // and the static lives for the rest of the program.
        Some(unsafe { &mut *self.value.get() })
    }
}

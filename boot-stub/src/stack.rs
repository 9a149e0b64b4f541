//! The stack high-water mark of the relocation path alone (parse + select + plan + switch),
//! printed on every boot as `stack: high-water mark N bytes (parse + select + plan + switch)`
//! and checked by the tests against `reloc_core::STACK_BUDGET`.
//!
//! How it is measured, and why that is sound:
//! - [`repaint_unused`] runs in `stub_main` just before `run` (which parses, selects, plans
//!   and switches): it fills `[stack_bottom, rsp)` with the paint again, so whatever the
//!   serial set-up and earlier code wrote is forgotten, and returns `rsp` (the base). The
//!   target (`x86_64-unknown-none`) has no red zone, so nothing live lies below `rsp` while
//!   the asm writes there (interrupts are off).
//! - [`high_water`] runs right after the switch, before any check or print. The relocation
//!   copies the whole stack once and re-copies only `[rsp, stack_top)` at the switch, so a
//!   frame written below `rsp` between the bulk copy and the switch (apply's own calls) is
//!   only in the old copy, while what runs after the switch writes only the new one. The
//!   mark is the deeper of the two copies (the old through the directmap), measured from the
//!   base: `base - lowest overwritten qword`.
//! - It includes `run`'s own frame (its locals; the boot information and the plan are built
//!   in place in statics, not on the stack) and the formatting of the boot lines `run` prints
//!   while parsing, and the few
//!   bytes [`high_water`]'s caller uses below `run`'s frame (so it can over-state, never
//!   under-state). A qword the code writes that happens to equal the paint reads as unused.

use reloc_core::{DirectMap, PhysMemory};

use crate::layout::{STACK_PAINT, STACK_SIZE};

/// The paint as a qword.
const PAINT: u64 = (STACK_PAINT as u64) << 32 | STACK_PAINT as u64;

/// Repaints the unused boot stack `[stack_bottom, rsp)` and returns `rsp` (virtual), the base
/// the high-water mark is measured from.
#[inline(always)]
pub fn repaint_unused(stack_bottom: u64) -> u64 {
    let rsp: u64;
    // SAFETY: writes only `[stack_bottom, rsp)`, the boot stack below the live frames: the
    // target disables the red zone, so no live data lies below `rsp`, and interrupts are off
    // (the entry's `cli`), so nothing else uses it meanwhile. `stack_bottom` is 8-aligned (4
    // KiB in the entry's `.bss.boot_stack`) and below `rsp`. DF is clear (Rust's ABI).
    unsafe {
        core::arch::asm!(
            "mov {rsp}, rsp",
            "mov rcx, {rsp}",
            "sub rcx, rdi",
            "shr rcx, 3",
            "rep stosq",
            rsp = out(reg) rsp,
            inout("rdi") stack_bottom => _,
            in("rax") PAINT,
            out("rcx") _,
            options(nostack)
        );
    }
    rsp
}

/// Painted qwords from the bottom up of the stack copy whose lowest byte is at physical
/// `bottom` (read through `mem`), stopping at the first overwritten one: the part of the stack
/// nothing reached since it was last painted. `STACK_SIZE / 8` means untouched; 0 means use
/// reached the bottom (an overflow into the statics below).
pub fn untouched_qwords(mem: &DirectMap<'_>, bottom: u64) -> u64 {
    (0..STACK_SIZE as u64 / 8)
        .take_while(|i| mem.read_u64(bottom + i * 8) == PAINT)
        .count() as u64
}

/// Bytes of the stack used below `base` since [`repaint_unused`]: the deeper of the copies
/// whose stack bottoms are at physical `bottoms` (the old and the new image), read through
/// `mem`. `stack_bottom` is the stack's lowest virtual address.
pub fn high_water(mem: &DirectMap<'_>, bottoms: [u64; 2], stack_bottom: u64, base: u64) -> u64 {
    let untouched = bottoms
        .iter()
        .map(|&bottom| untouched_qwords(mem, bottom))
        .min()
        .unwrap_or(0);
    base.saturating_sub(stack_bottom + untouched * 8)
}

//! Fault injection `keep-pge`: reloc-core's switch without its CR4.PGE toggle, to show on a
//! CPU model whose TLB keeps global entries across a CR3 load (Bochs) that the toggle is
//! needed; and its control, `split-switch`, the same steps with the toggle.
//!
//! Both do what `reloc_core::switch::relocate` does, split in two so that code can run
//! between the copy and the switch, as code does in a real hypervisor: after the copy they
//! read a global through the image mapping (`probe`) and write the value back, which loads a
//! writable global TLB entry for its page. Without the toggle that translation to the *old* copy survives the CR3 load, and a
//! later write to the global lands in the old copy; the post-switch checks see it.
//!
//! Why the read is needed: a TLB indexed by linear-address bits 12 and up (Bochs' is
//! direct-mapped) gives each image page the same slot as its directmap alias, because the
//! image and the directmap differ by a multiple of 4 MiB. The copy reads every source page
//! and writes every destination page through the directmap, so by the end of the copy it has
//! evicted the image's global entries; only pages the code touches afterwards keep one.

use core::sync::atomic::{AtomicU64, Ordering};

use reloc_core::plan::ApplyReport;
use reloc_core::{DirectMap, RelocateError, SwitchParams};

/// Whether the split switch clears CR4.PGE around the CR3 load.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PgeToggle {
    /// Clear CR4.PGE, load CR3, restore CR4 (what reloc-core does): `split-switch`.
    Toggle,
    /// Load CR3 only: `keep-pge`.
    Keep,
}

/// `reloc_core::switch::relocate` in two steps with a read and write-back of `probe` between
/// the copy and the switch, and the CR4.PGE toggle as `toggle` says. Checks the directmap and the stack
/// pointer first (an `Err` leaves memory untouched). Returns the apply report and the value
/// `probe` held after the copy (through the old mapping: the copy must not have changed it).
///
/// # Safety
/// The contract of `reloc_core::switch::relocate`; `probe` lies in the image.
pub unsafe fn relocate_split<const N: usize>(
    params: &SwitchParams<'_, N>,
    mem: &mut DirectMap<'_>,
    probe: &AtomicU64,
    toggle: PgeToggle,
) -> Result<(ApplyReport, u64), RelocateError> {
    // SAFETY: an empty asm block without `nomem`: a compiler barrier, so every store made so
    // far reaches memory before the copy reads it.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
    if mem.layout() != params.directmap() {
        return Err(RelocateError::DirectMapMismatch {
            expected: params.directmap(),
            found: mem.layout(),
        });
    }
    let rsp: u64;
    // SAFETY: reads rsp into a register; touches no memory and no flags.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    params.check_rsp(rsp)?;
    let (frame, flags) = x86_64::registers::control::Cr3::read_raw();
    let cr3 = frame.start_address().as_u64() | u64::from(flags);
    let new_cr3 = params.plan().relocated_cr3(cr3);
    let report = params.plan().apply(mem);
    // A write, not only a read: a TLB entry filled by a read lacks write permission in
    // Bochs, whose next write then walks the (new) tables again. Same value: no change.
    let probed = probe.load(Ordering::SeqCst);
    probe.store(probed, Ordering::SeqCst);
    let stack_top = params.stack_top().as_u64();
    let offset = params.stack_copy_offset();
    // SAFETY (both blocks): as in reloc-core's switch: ring 0, `rsp` checked to lie in the
    // stack, so `[rsp, stack_top)` plus `offset` is the directmap alias of the stack in the
    // copy, mapped and writable; the new tables map this code at the same virtual address.
    // No `nostack` (nothing may live below rsp), no `nomem` (earlier stores land first).
    match toggle {
        PgeToggle::Toggle => unsafe {
            core::arch::asm!(
                "mov rcx, {top}",
                "sub rcx, rsp",
                "shr rcx, 3",
                "mov rsi, rsp",
                "mov rdi, rsp",
                "add rdi, {offset}",
                "rep movsq",
                "mov {cr4}, cr4",
                "mov {tmp}, {cr4}",
                "and {tmp}, -129", // ~CR4.PGE (bit 7)
                "mov cr4, {tmp}",
                "mov cr3, {cr3}",
                "mov cr4, {cr4}",
                top = in(reg) stack_top,
                offset = in(reg) offset,
                cr3 = in(reg) new_cr3,
                cr4 = out(reg) _,
                tmp = out(reg) _,
                out("rcx") _,
                out("rsi") _,
                out("rdi") _,
            );
        },
        PgeToggle::Keep => unsafe {
            core::arch::asm!(
                "mov rcx, {top}",
                "sub rcx, rsp",
                "shr rcx, 3",
                "mov rsi, rsp",
                "mov rdi, rsp",
                "add rdi, {offset}",
                "rep movsq",
                "mov cr3, {cr3}",
                top = in(reg) stack_top,
                offset = in(reg) offset,
                cr3 = in(reg) new_cr3,
                out("rcx") _,
                out("rsi") _,
                out("rdi") _,
            );
        },
    }
    Ok((report, probed))
}

/// The split switch the command line asks for: `keep-pge` (no toggle) or `split-switch` (the
/// control, with the toggle); `None` for reloc-core's own switch. Prints the choice.
pub fn requested<M: reloc_core::PhysMemory + ?Sized>(
    boot: &crate::boot::Boot,
    mem: &M,
) -> Option<PgeToggle> {
    if boot.cmdline_has_word(mem, "keep-pge") {
        crate::println!(
            "reloc: keep-pge requested: global rewritten after the copy, switch without the CR4.PGE toggle"
        );
        Some(PgeToggle::Keep)
    } else if boot.cmdline_has_word(mem, "split-switch") {
        crate::println!(
            "reloc: split-switch requested: global rewritten after the copy, switch with the CR4.PGE toggle"
        );
        Some(PgeToggle::Toggle)
    } else {
        None
    }
}

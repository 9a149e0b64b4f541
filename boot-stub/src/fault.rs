//! Fault injection `keep-pge`: reloc-core's switch without its CR4.PGE toggle, to show on a
//! CPU model whose TLB keeps global entries across a CR3 load (Bochs) that the toggle is
//! needed. The same steps as `reloc_core::switch::relocate`, minus clearing and restoring
//! CR4.PGE around the CR3 load: the image's global 2 MiB translations to the *old* copy then
//! survive the switch, and the post-switch checks see writes land in the old copy.

use reloc_core::plan::ApplyReport;
use reloc_core::{DirectMap, SwitchError, SwitchParams};

/// `reloc_core::switch::relocate` without the CR4.PGE toggle. Checks the directmap and the
/// stack pointer first (an `Err` leaves memory untouched), then copies, rebases, re-copies
/// the live stack and loads the new CR3.
///
/// # Safety
/// The contract of `reloc_core::switch::relocate`.
pub unsafe fn relocate_keeping_global_entries<const N: usize>(
    params: &SwitchParams<'_, N>,
    mem: &mut DirectMap<'_>,
) -> Result<ApplyReport, SwitchError> {
    // SAFETY: an empty asm block without `nomem`: a compiler barrier, so every store made so
    // far reaches memory before the copy reads it.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
    if mem.layout() != params.directmap() {
        return Err(SwitchError::DirectMapMismatch {
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
    // SAFETY: as in reloc-core's switch: ring 0, `rsp` checked to lie in the stack, so
    // `[rsp, stack_top)` plus the offset is the directmap alias of the stack in the copy,
    // mapped and writable; the new tables map this code at the same virtual address. No
    // `nostack` (nothing may live below rsp), no `nomem` (earlier stores land first).
    unsafe {
        core::arch::asm!(
            "mov rcx, {top}",
            "sub rcx, rsp",
            "shr rcx, 3",
            "mov rsi, rsp",
            "mov rdi, rsp",
            "add rdi, {offset}",
            "rep movsq",
            "mov cr3, {cr3}",
            top = in(reg) params.stack_top().as_u64(),
            offset = in(reg) params.stack_copy_offset(),
            cr3 = in(reg) new_cr3,
            out("rcx") _,
            out("rsi") _,
            out("rdi") _,
        );
    }
    Ok(report)
}

//! The switch to the new copy: stack re-copy, CR4.PGE off, CR3 load, CR4.PGE restored, in one
//! `asm!` block.
//!
//! # Why one block
//! From the start of the copy until CR3 points at the new tables, the CPU still runs on the
//! old image: every write through the old mapping (a global, the stack) lands in the old copy
//! and is lost at the switch. Rust code cannot promise not to write the stack: the compiler
//! may spill a temporary at any point and reload it after the switch, reading the stale
//! new-copy bytes. So the last stack re-copy, from the live `rsp` up to the stack top, has to
//! happen in the same instruction stream as the CR3 load, with no compiler-generated code in
//! between. That is what Xen's `move_xen()` does, and for the same reason.
//!
//! CR4.PGE is cleared around the CR3 load because a CR3 load keeps global TLB entries, and
//! the image is mapped with global pages: without the toggle, the old copy would stay
//! reachable through stale translations. (QEMU's TCG flushes them anyway and hides the bug;
//! reloc-sim's TLB does not.)

use core::fmt;

use crate::plan::Plan;
#[cfg(target_arch = "x86_64")]
use crate::{phys::PhysMemory, plan::ApplyReport};

/// Where the running image and the directmap live in the virtual address space, and where
/// the stack ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VirtualLayout {
    /// Virtual address of the image's first byte (the address `_start` is linked at).
    pub image_start: u64,
    /// Virtual address of physical address 0 in the directmap.
    pub directmap_base: u64,
    /// One past the highest stack byte in use by the caller and its callers (the boot
    /// stack's top), inside the image.
    pub stack_top: u64,
}

/// Why switch parameters were rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SwitchError {
    /// The stack top is not inside the image's virtual range (the stack must move with it).
    StackOutsideImage {
        /// As given.
        stack_top: u64,
        /// Virtual start of the image.
        image_start: u64,
        /// Virtual end of the image.
        image_end: u64,
    },
    /// The stack top is not 8-byte aligned.
    StackMisaligned {
        /// As given.
        stack_top: u64,
    },
    /// The directmap alias of the destination wraps past 2^64.
    DirectmapWraps {
        /// As given.
        directmap_base: u64,
    },
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::StackOutsideImage {
                stack_top,
                image_start,
                image_end,
            } => write!(
                f,
                "stack top {stack_top:#x} is outside the image's virtual range [{image_start:#x}, {image_end:#x}]"
            ),
            SwitchError::StackMisaligned { stack_top } => {
                write!(f, "stack top {stack_top:#x} is not 8-byte aligned")
            }
            SwitchError::DirectmapWraps { directmap_base } => write!(
                f,
                "directmap at {directmap_base:#x} cannot alias the destination"
            ),
        }
    }
}

/// Validated inputs of the switch, computed before the critical region so that nothing in it
/// can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SwitchParams {
    /// Address of the new top-level table.
    pub new_top_table: u64,
    /// CR3 bits kept from the current CR3 (PCID, PWT, PCD): everything outside the address.
    pub cr3_keep_mask: u64,
    /// Top of the stack, virtual.
    pub stack_top: u64,
    /// Added (wrapping) to a virtual stack address to get its directmap alias in the copy.
    pub stack_copy_offset: u64,
}

impl SwitchParams {
    /// Checks the layout against `plan`.
    pub fn new<const N: usize>(
        plan: &Plan<N>,
        layout: &VirtualLayout,
    ) -> Result<Self, SwitchError> {
        let image_len = plan.old_image().len();
        let image_end = layout.image_start.wrapping_add(image_len);
        if layout.stack_top <= layout.image_start
            || layout.stack_top > image_end
            || image_end < layout.image_start
        {
            return Err(SwitchError::StackOutsideImage {
                stack_top: layout.stack_top,
                image_start: layout.image_start,
                image_end,
            });
        }
        if !layout.stack_top.is_multiple_of(8) {
            return Err(SwitchError::StackMisaligned {
                stack_top: layout.stack_top,
            });
        }
        let new_alias = layout
            .directmap_base
            .checked_add(plan.new_image().start)
            .filter(|alias| alias.checked_add(image_len).is_some())
            .ok_or(SwitchError::DirectmapWraps {
                directmap_base: layout.directmap_base,
            })?;
        Ok(Self {
            new_top_table: plan.new_top_table().as_u64(),
            cr3_keep_mask: !plan.max_phys().address_mask(12),
            stack_top: layout.stack_top,
            stack_copy_offset: new_alias.wrapping_sub(layout.image_start),
        })
    }
}

/// Applies `plan` and switches to the copy: the whole critical region in one call.
///
/// Returns on the new copy, at the same virtual addresses, with the stack as it was.
///
/// # Safety
/// Ring 0, long mode, interrupts disabled (an interrupt would push onto, and a handler write
/// to, the old copy), and:
/// - `mem` writes the destination through a mapping that stays valid until the switch (the
///   directmap), and `params` came from [`SwitchParams::new`] for this `plan` with the real
///   virtual layout: the running code, its data and its whole stack lie in the image;
/// - nothing but this call runs between the start of the copy and the switch (other CPUs
///   included), and nothing writes the image's page tables after planning;
/// - the new tables map the code that executes right after the CR3 load at the same virtual
///   address (they do, when the image map maps the image's own code).
#[cfg(target_arch = "x86_64")]
pub unsafe fn relocate<M: PhysMemory + ?Sized, const N: usize>(
    plan: &Plan<N>,
    mem: &mut M,
    params: &SwitchParams,
) -> ApplyReport {
    let report = plan.apply(mem);
    // SAFETY: the caller upholds `switch`'s contract; the copy and rebase just happened.
    unsafe { switch(params) };
    report
}

/// Re-copies the live stack `[rsp, stack_top)` to its alias in the copy, then clears
/// CR4.PGE, loads CR3 with the new top-level table (keeping CR3's non-address bits) and
/// restores CR4 as it was. One asm block: see the module documentation.
///
/// # Safety
/// As for [`relocate`], with the copy and rebase already done by `Plan::apply` and nothing
/// but stack writes since.
#[cfg(target_arch = "x86_64")]
pub unsafe fn switch(params: &SwitchParams) {
    // SAFETY: the caller guarantees ring 0 and that `[rsp, stack_top)` plus
    // `stack_copy_offset` is the directmap alias of the stack in the copy, mapped and
    // writable; the new top-level table maps this code. DF is clear on entry to asm (Rust
    // guarantees it). No `nostack`: the compiler then keeps nothing live below rsp (red
    // zone), which the copy would miss. No `nomem`: every earlier store reaches memory first.
    unsafe {
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
            "mov {tmp}, cr3",
            "and {tmp}, {keep}",
            "or {tmp}, {table}",
            "mov cr3, {tmp}",
            "mov cr4, {cr4}",
            top = in(reg) params.stack_top,
            offset = in(reg) params.stack_copy_offset,
            keep = in(reg) params.cr3_keep_mask,
            table = in(reg) params.new_top_table,
            cr4 = out(reg) _,
            tmp = out(reg) _,
            out("rcx") _,
            out("rsi") _,
            out("rdi") _,
        );
    }
}

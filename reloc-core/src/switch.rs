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
//!
//! # Nothing to get wrong
//! [`SwitchParams`] can only be built by [`SwitchParams::new`], which borrows the [`Plan`],
//! checks the virtual layout against the tables the plan validated (the image start and the
//! whole stack, leaf by leaf), and records the directmap it was checked for; it fails with a
//! [`SwitchError`]. [`relocate`] takes those parameters and the [`DirectMap`] it will write
//! through, refuses a different directmap or a stack pointer outside the stack with a
//! [`RelocateError`], and only then starts the copy: from there on nothing can fail.
//!
//! ```no_run
//! # fn boot(plan: &reloc_core::Plan, directmap: &mut reloc_core::DirectMap<'_>,
//! #         layout: &reloc_core::VirtualLayout) -> Result<(), reloc_core::switch::SwitchError> {
//! use reloc_core::switch::{self, SwitchParams};
//! let params = SwitchParams::new(plan, directmap, layout)?;
//! // SAFETY (in a real boot path): ring 0, interrupts off, one CPU; see `relocate`.
//! let report = unsafe { switch::relocate(&params, directmap) };
//! # let _ = report;
//! # Ok(()) }
//! ```

use core::fmt;

use x86_64::PhysAddr;

use crate::paging::VirtAddr;

use crate::paging::PagingMode;
use crate::phys::{DirectMap, DirectMapLayout, PhysMemory, PhysRange};
#[cfg(target_arch = "x86_64")]
use crate::plan::ApplyReport;
use crate::plan::{Plan, DEFAULT_MAX_TABLES};

/// Where the running image and its stack live in the virtual address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VirtualLayout {
    /// Virtual address of the image's first byte (the address `_start` is linked at).
    pub image_start: VirtAddr,
    /// Lowest byte of the boot stack, inside the image.
    pub stack_bottom: VirtAddr,
    /// One past the highest stack byte in use by the caller and its callers (the boot
    /// stack's top), inside the image.
    pub stack_top: VirtAddr,
}

/// Why [`SwitchParams::new`] refused a virtual layout or a directmap. It only reads: memory
/// is untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SwitchError {
    /// The stack `[stack_bottom, stack_top)` is empty, or not inside the image's virtual
    /// range (the stack must move with the image).
    StackOutsideImage {
        /// The stack as given.
        stack: (VirtAddr, VirtAddr),
        /// The image's virtual range `[start, end)`; `end` saturates at 2^64 - 1.
        image: (VirtAddr, u64),
    },
    /// The stack top or bottom is not 8-byte aligned (the re-copy moves qwords).
    StackMisaligned {
        /// The stack as given.
        stack: (VirtAddr, VirtAddr),
    },
    /// Once the tables are switched, the image's first byte would not translate to its place
    /// in the copy: the virtual layout does not describe the image these tables map (a wrong
    /// `image_start`), or the image is not mapped there by an image map that moves.
    LayoutMismatch {
        /// The virtual address checked (the image start).
        virt: VirtAddr,
        /// Where it must translate after the switch.
        expected: PhysAddr,
        /// Where it would translate (`None`: not mapped by the validated tables).
        found: Option<PhysAddr>,
    },
    /// Once the tables are switched, this stack address would not translate to the place in
    /// the copy where the stack re-copy writes it (`stack address + stack_copy_offset` in the
    /// directmap): a leaf under part of the stack maps another page of the image, or does
    /// not move. A value spilled there in the critical region would be lost.
    StackMismatch {
        /// The first byte of the stack piece (one leaf's share of the stack) that is wrong.
        virt: VirtAddr,
        /// Where it must translate after the switch.
        expected: PhysAddr,
        /// Where it would translate (`None`: not mapped by the validated tables).
        found: Option<PhysAddr>,
    },
    /// The destination does not lie in the directmap the switch writes through.
    DestinationOutsideDirectMap {
        /// The destination.
        destination: PhysRange,
        /// The directmap's physical window.
        window: PhysRange,
    },
    /// The old image does not lie in the directmap the switch copies through: apply's copy
    /// would read nothing (or something else) there.
    ImageOutsideDirectMap {
        /// The old image.
        image: PhysRange,
        /// The directmap's physical window.
        window: PhysRange,
    },
    /// The stack shares memory with a page table: the re-copy of the live stack would write
    /// old entries over the rebased ones.
    StackOverlapsTable {
        /// The table (old image).
        table: PhysAddr,
        /// The stack's physical range (old image).
        stack: PhysRange,
    },
    /// A virtual address of the layout or the directmap's start is not canonical in the
    /// plan's paging mode, or the stack runs into the canonical hole (`virt` is then its first
    /// byte past the stack bottom's half).
    NonCanonical {
        /// The address.
        virt: VirtAddr,
    },
    /// The directmap's alias of a range apply reads or writes (the old image, or the
    /// destination) is not canonical in the plan's paging mode: it crosses the canonical
    /// hole (or starts in it), so apply would fault on its first access there.
    DirectMapAliasNonCanonical {
        /// The physical range (the old image or the destination).
        range: PhysRange,
        /// Its alias in the directmap, `[start, end)`.
        alias: (VirtAddr, u64),
        /// The first non-canonical address of the alias.
        virt: VirtAddr,
    },
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SwitchError::StackOutsideImage { stack, image } => write!(
                f,
                "stack [{:#x}, {:#x}) is empty or outside the image's virtual range [{:#x}, {:#x})",
                stack.0.as_u64(),
                stack.1.as_u64(),
                image.0.as_u64(),
                image.1
            ),
            SwitchError::StackMisaligned { stack } => write!(
                f,
                "stack [{:#x}, {:#x}) is not 8-byte aligned",
                stack.0.as_u64(),
                stack.1.as_u64()
            ),
            SwitchError::LayoutMismatch {
                virt,
                expected,
                found,
            } => {
                write!(
                    f,
                    "after the switch the image start {:#x} must translate to {:#x} in the copy, but ",
                    virt.as_u64(),
                    expected.as_u64()
                )?;
                write_found(f, found)
            }
            SwitchError::StackMismatch {
                virt,
                expected,
                found,
            } => {
                write!(
                    f,
                    "after the switch the stack address {:#x} must translate to {:#x}, where the stack re-copy writes it, but ",
                    virt.as_u64(),
                    expected.as_u64()
                )?;
                write_found(f, found)
            }
            SwitchError::DestinationOutsideDirectMap {
                destination,
                window,
            } => write!(
                f,
                "destination {destination} is outside the directmap window {window}"
            ),
            SwitchError::ImageOutsideDirectMap { image, window } => write!(
                f,
                "the old image {image} is not in the directmap window {window}"
            ),
            SwitchError::StackOverlapsTable { table, stack } => write!(
                f,
                "stack {stack} overlaps the page table at {:#x}",
                table.as_u64()
            ),
            SwitchError::NonCanonical { virt } => {
                write!(f, "virtual address {virt:#x} is not canonical")
            }
            SwitchError::DirectMapAliasNonCanonical { range, alias, virt } => write!(
                f,
                "the directmap alias [{:#x}, {:#x}) of {range} is not canonical from {virt:#x}",
                alias.0.as_u64(),
                alias.1
            ),
        }
    }
}

fn write_found(f: &mut fmt::Formatter<'_>, found: Option<PhysAddr>) -> fmt::Result {
    match found {
        Some(found) => write!(f, "would translate to {:#x}", found.as_u64()),
        None => f.write_str("is not mapped by the validated tables"),
    }
}

impl core::error::Error for SwitchError {}

/// Why [`relocate`] refused to start, before its first write: memory is untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RelocateError {
    /// [`relocate`] was given a directmap whose layout (virtual start or window) is not the
    /// one the parameters were checked for.
    DirectMapMismatch {
        /// The layout the parameters were checked for.
        expected: DirectMapLayout,
        /// The layout of the directmap given.
        found: DirectMapLayout,
    },
    /// The stack pointer at [`relocate`] is not inside the stack (or not 8-byte aligned): the
    /// re-copy `[rsp, stack_top)` would miss live frames or run backwards.
    RspOutsideStack {
        /// `rsp` as read.
        rsp: u64,
        /// The stack as validated.
        stack: (VirtAddr, VirtAddr),
    },
}

impl fmt::Display for RelocateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RelocateError::DirectMapMismatch { expected, found } => write!(
                f,
                "directmap of {} at {:#x} is not the one checked ({} at {:#x})",
                found.window,
                found.virt_start.as_u64(),
                expected.window,
                expected.virt_start.as_u64()
            ),
            RelocateError::RspOutsideStack { rsp, stack } => write!(
                f,
                "rsp {rsp:#x} is not an aligned address in the stack [{:#x}, {:#x}]",
                stack.0.as_u64(),
                stack.1.as_u64()
            ),
        }
    }
}

impl core::error::Error for RelocateError {}

/// Physical memory as the switch sees it: the memory the tables are read through, and the
/// layout of the directmap the copy will be written through.
///
/// [`DirectMap`] is both (its [`DirectMap::layout`]). A simulator, whose memory is not a real
/// directmap but which simulates one at some virtual address, wraps its memory in a
/// [`SimulatedDirectMap`].
pub trait DirectMapped {
    /// The memory planning read.
    type Memory: PhysMemory + ?Sized;
    /// The memory, to read the page tables through.
    fn memory(&self) -> &Self::Memory;
    /// Where the directmap puts that memory in the virtual address space.
    fn directmap_layout(&self) -> DirectMapLayout;
}

impl DirectMapped for DirectMap<'_> {
    type Memory = Self;
    fn memory(&self) -> &Self {
        self
    }
    fn directmap_layout(&self) -> DirectMapLayout {
        self.layout()
    }
}

/// Memory that is not reached through a real directmap, described by the directmap a
/// simulated CPU would use (reloc-sim's machine, a test's buffer with another layout).
/// [`SwitchParams::new`] reads the tables through the memory and records the layout;
/// nothing ties the two together, so the caller answers for `layout` describing where that
/// memory is mapped. [`relocate`] compares only layouts: it refuses a [`DirectMap`] with
/// another layout, not one over other memory.
#[derive(Clone, Copy, Debug)]
pub struct SimulatedDirectMap<'m, M: ?Sized> {
    memory: &'m M,
    layout: DirectMapLayout,
}

impl<'m, M: PhysMemory + ?Sized> SimulatedDirectMap<'m, M> {
    /// `memory`, seen through a directmap laid out as `layout`.
    pub fn new(memory: &'m M, layout: DirectMapLayout) -> Self {
        Self { memory, layout }
    }
}

impl<M: PhysMemory + ?Sized> DirectMapped for SimulatedDirectMap<'_, M> {
    type Memory = M;
    fn memory(&self) -> &M {
        self.memory
    }
    fn directmap_layout(&self) -> DirectMapLayout {
        self.layout
    }
}

/// Validated inputs of the switch, computed before the critical region so that nothing in it
/// can fail.
///
/// # Invariants
/// Built only by [`SwitchParams::new`] (the fields are private), so that a `SwitchParams`
/// always means:
/// - it belongs to exactly one [`Plan`], which it borrows: no other plan can be applied with
///   it;
/// - the image's first byte and every byte of the stack translate, through the tables the
///   plan validated and as they will be after the move, to their places in the copy;
/// - the stack `[stack_bottom, stack_top)` is 8-byte aligned, inside the image, and shares
///   no byte with a planned page table;
/// - the old image and the destination lie in the directmap recorded here, the directmap's aliases of the old
///   image and the destination are canonical, and the stack's alias in the copy is
///   `stack address + stack_copy_offset` in that directmap.
///
/// A struct literal cannot forge one:
/// ```compile_fail
/// # fn forge(plan: &reloc_core::Plan, d: reloc_core::DirectMapLayout, v: reloc_core::VirtAddr) {
/// let params = reloc_core::SwitchParams {
///     plan,
///     directmap: d,
///     stack_bottom: v,
///     stack_top: v,
///     stack_copy_offset: 0,
/// };
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SwitchParams<'p, const N: usize = DEFAULT_MAX_TABLES> {
    plan: &'p Plan<N>,
    directmap: DirectMapLayout,
    stack_bottom: VirtAddr,
    stack_top: VirtAddr,
    stack_copy_offset: u64,
}

impl<'p, const N: usize> SwitchParams<'p, N> {
    /// Checks `layout` against `plan` for a switch that writes the copy through `directmap`:
    /// the tables are read through its memory, and its layout is recorded (the one
    /// [`relocate`] must be given). Reads only.
    ///
    /// Checked, in this order, each refusal typed ([`SwitchError`]):
    /// - the layout's addresses and the directmap's start are canonical in the plan's paging
    ///   mode, and the whole stack is in one canonical half;
    /// - the stack is non-empty, inside the image's virtual range and 8-byte aligned;
    /// - after the move, the image's first byte translates to the copy's first byte, and every
    ///   byte of the stack to its place in the copy: the stack is walked leaf by leaf, its
    ///   bottom and every leaf boundary it crosses;
    /// - the destination and the old image lie in the directmap window, and the directmap's alias of the old
    ///   image and of the destination (all apply and the re-copy touch) is canonical;
    /// - the stack shares no byte with a planned page table.
    ///
    /// Reads only through `directmap`'s memory: one table walk for the image start and one
    /// per leaf the stack spans.
    ///
    /// # Stack
    /// About 500 bytes, no buffer (472 measured from the object code for the bare target
    /// over a [`DirectMap`], see [`crate::STACK_BUDGET`]).
    pub fn new<D: DirectMapped + ?Sized>(
        plan: &'p Plan<N>,
        directmap: &D,
        layout: &VirtualLayout,
    ) -> Result<Self, SwitchError> {
        let mem = directmap.memory();
        let directmap = directmap.directmap_layout();
        let image = plan.old_image();
        let stack = (layout.stack_bottom, layout.stack_top);
        let mode = plan.paging();
        for virt in [
            layout.image_start,
            layout.stack_bottom,
            directmap.virt_start,
        ] {
            if !mode.is_canonical(virt) {
                return Err(SwitchError::NonCanonical { virt });
            }
        }
        let (bottom, top) = (layout.stack_bottom.as_u64(), layout.stack_top.as_u64());
        // The stack's last byte must be canonical and in the bottom's half: a stack across the
        // canonical hole would pass the walk below (which indexes the tables with the
        // address's low bits) and fault in the re-copy.
        if let Some(last) = top.checked_sub(1).filter(|&last| last >= bottom) {
            if !mode.is_canonical(VirtAddr::new(last)) || (last >> 63) != (bottom >> 63) {
                // The first byte past the bottom's half: the hole's start for a lower-half
                // bottom, the stack's last byte (wrapped past 2^64) for an upper-half one.
                let virt = if bottom >> 63 == 0 {
                    1u64 << (mode.virt_bits() - 1)
                } else {
                    last
                };
                return Err(SwitchError::NonCanonical {
                    virt: VirtAddr::new(virt),
                });
            }
        }
        let image_virt = layout.image_start.as_u64();
        let image_virt_end = image_virt.checked_add(image.len());
        if bottom >= top || bottom < image_virt || image_virt_end.is_none_or(|end| top > end) {
            return Err(SwitchError::StackOutsideImage {
                stack,
                image: (layout.image_start, image_virt_end.unwrap_or(u64::MAX)),
            });
        }
        if !bottom.is_multiple_of(8) || !top.is_multiple_of(8) {
            return Err(SwitchError::StackMisaligned { stack });
        }
        // In the old image: the stack is `bottom - image_virt` bytes into it.
        let to_phys = |virt: u64| image.start + (virt - image_virt);
        let new_image = plan.new_image();
        // Where `virt` (in the image's virtual range) must translate after the move.
        let expected = |virt: u64| new_image.start + (virt - image_virt);
        let found = plan.translation_after_move(mem, image_virt);
        if found.map(|(phys, _)| phys) != Some(expected(image_virt)) {
            return Err(SwitchError::LayoutMismatch {
                virt: layout.image_start,
                expected: PhysAddr::new_truncate(expected(image_virt)),
                found: found.map(|(phys, _)| PhysAddr::new_truncate(phys)),
            });
        }
        // The re-copy writes every stack qword at its directmap alias in the copy, so every
        // byte of the stack must translate there after the switch. A leaf translates
        // linearly, so checking the first stack byte of each leaf checks them all.
        let mut virt = bottom;
        loop {
            let found = plan.translation_after_move(mem, virt);
            let Some((_, leaf_size)) = found.filter(|&(phys, _)| phys == expected(virt)) else {
                return Err(SwitchError::StackMismatch {
                    virt: VirtAddr::new(virt),
                    expected: PhysAddr::new_truncate(expected(virt)),
                    found: found.map(|(phys, _)| PhysAddr::new_truncate(phys)),
                });
            };
            match (virt | (leaf_size - 1)).checked_add(1) {
                Some(next_leaf) if next_leaf < top => virt = next_leaf,
                _ => break,
            }
        }
        // Apply copies from the old image to the destination through the directmap: both
        // must lie in its window, or `DirectMap::copy` would have nothing to copy.
        if !directmap.covers(new_image) {
            return Err(SwitchError::DestinationOutsideDirectMap {
                destination: new_image,
                window: directmap.window,
            });
        }
        if !directmap.covers(image) {
            return Err(SwitchError::ImageOutsideDirectMap {
                image,
                window: directmap.window,
            });
        }
        // `DirectMap::new`'s contract promises a mapped alias; what the engine can check is
        // that the alias of everything it touches is canonical, so that a broken promise
        // there cannot fault inside the critical region.
        for range in [image, new_image] {
            check_alias_canonical(&directmap, range, mode)?;
        }
        let stack_phys = PhysRange::new(to_phys(bottom), to_phys(top));
        if let Some(table) = plan
            .tables()
            .find(|t| stack_phys.overlaps(&PhysRange::new(t.addr.as_u64(), t.addr.as_u64() + 4096)))
        {
            return Err(SwitchError::StackOverlapsTable {
                table: table.addr,
                stack: stack_phys,
            });
        }
        // `covers` checked the alias of the whole destination exists.
        let bottom_alias = directmap.virt_of(expected(bottom)).unwrap_or(0);
        Ok(Self {
            plan,
            directmap,
            stack_bottom: layout.stack_bottom,
            stack_top: layout.stack_top,
            stack_copy_offset: bottom_alias.wrapping_sub(bottom),
        })
    }

    /// The plan these parameters belong to.
    pub fn plan(&self) -> &'p Plan<N> {
        self.plan
    }

    /// The directmap the copy is written through.
    pub fn directmap(&self) -> DirectMapLayout {
        self.directmap
    }

    /// The lowest byte of the stack.
    pub fn stack_bottom(&self) -> VirtAddr {
        self.stack_bottom
    }

    /// One past the stack's highest byte: the re-copy runs from `rsp` up to here.
    pub fn stack_top(&self) -> VirtAddr {
        self.stack_top
    }

    /// Added (wrapping) to a virtual stack address to get its directmap alias in the copy.
    pub fn stack_copy_offset(&self) -> u64 {
        self.stack_copy_offset
    }

    /// `Ok` when `rsp` is an 8-byte-aligned address in `[stack_bottom, stack_top]`: the
    /// re-copy `[rsp, stack_top)` then covers every live frame and cannot run backwards.
    pub fn check_rsp(&self, rsp: u64) -> Result<(), RelocateError> {
        let inside = self.stack_bottom.as_u64() <= rsp && rsp <= self.stack_top.as_u64();
        if inside && rsp.is_multiple_of(8) {
            Ok(())
        } else {
            Err(RelocateError::RspOutsideStack {
                rsp,
                stack: (self.stack_bottom, self.stack_top),
            })
        }
    }
}

/// Checks that the directmap's alias of `range` (which [`DirectMapLayout::covers`] accepted)
/// is canonical in `mode`: both ends canonical and in the same half, since the canonical hole
/// lies between the halves. A range without an alias is refused too.
fn check_alias_canonical(
    directmap: &DirectMapLayout,
    range: PhysRange,
    mode: PagingMode,
) -> Result<(), SwitchError> {
    let (Some(start), Some(last)) = (
        directmap.virt_of(range.start),
        directmap.virt_of(range.end - 1),
    ) else {
        // Unreachable after `covers`; refused rather than assumed.
        return Err(SwitchError::ImageOutsideDirectMap {
            image: range,
            window: directmap.window,
        });
    };
    let start_ok = mode.is_canonical(VirtAddr::new(start));
    if start_ok && mode.is_canonical(VirtAddr::new(last)) && (start >> 63) == (last >> 63) {
        return Ok(());
    }
    // The lower half ends at 2^(virt_bits - 1); a start in the lower half is followed by the
    // hole there.
    let first_bad = if start_ok {
        1u64 << (mode.virt_bits() - 1)
    } else {
        start
    };
    Err(SwitchError::DirectMapAliasNonCanonical {
        range,
        alias: (VirtAddr::new(start), last.saturating_add(1)),
        virt: VirtAddr::new(first_bad),
    })
}

/// Applies the plan and switches to the copy: the whole critical region in one call.
///
/// Before the first write it checks that `mem` has the layout (virtual start and window)
/// `params` were validated for ([`RelocateError::DirectMapMismatch`]) and that `rsp` lies in the stack
/// ([`RelocateError::RspOutsideStack`]): the last fallible steps, both before any write, so an
/// `Err` leaves memory untouched. From the copy on, nothing can fail. Returns on the new copy,
/// at the same virtual addresses, with the stack as it was.
///
/// # Stack
/// About 300 bytes (280 measured from the object code for the bare target, see
/// [`crate::STACK_BUDGET`]), the copy and the rebase included.
///
/// # Safety
/// Ring 0, long mode, and:
/// - interrupts disabled, and no NMI, SMI or machine check handled in between: an
///   interrupt would push onto, and a handler write to, the old copy, and an NMI cannot be
///   masked by `cli`, so the caller must not expect one (no NMI watchdog, no other CPU
///   sending NMIs);
/// - no CET shadow stack active (or the caller re-copies it): only the ordinary stack is
///   re-copied, and returning on a stale shadow stack raises #CP;
/// - `params` were built from this directmap's memory (`SwitchParams::new(plan, mem, ..)`,
///   or a [`SimulatedDirectMap`] over the same memory): the layout check cannot tell two
///   directmaps with the same layout apart;
/// - `mem` is valid for the whole destination until the switch (the directmap), and stays
///   mapped afterwards;
/// - nothing but this call runs between the start of the copy and the switch (other CPUs
///   included), and nothing but the CPU writes the image's page tables after planning (its
///   accessed and dirty bit updates are fine: apply copies the tables in an `asm!` block and
///   reads no decision from those bits; a bit set after its table was copied is not carried
///   into the copy);
/// - the new tables map the code that executes right after the CR3 load at the same virtual
///   address (they do when the image map maps the image's own code, which
///   [`SwitchParams::new`] checked for the image's first byte).
#[cfg(target_arch = "x86_64")]
pub unsafe fn relocate<const N: usize>(
    params: &SwitchParams<'_, N>,
    mem: &mut DirectMap<'_>,
) -> Result<ApplyReport, RelocateError> {
    // A compiler barrier, as Xen's `barrier()` before its copy: every store the caller made
    // (to a static, say) reaches memory before the copy reads it, instead of being moved past
    // the copy and lost with the old image.
    // SAFETY: an empty asm block; without `nomem` the compiler treats it as reading and
    // writing all memory, which is the point.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
    if mem.layout() != params.directmap {
        return Err(RelocateError::DirectMapMismatch {
            expected: params.directmap,
            found: mem.layout(),
        });
    }
    let rsp: u64;
    // SAFETY: reads rsp into a register; touches no memory and no flags.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    params.check_rsp(rsp)?;
    let cr3: u64;
    // SAFETY: ring 0 (the caller's contract); reading CR3 has no side effect.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags))
    };
    let new_cr3 = params.plan.relocated_cr3(cr3);

    let report = params.plan.apply(mem);
    // SAFETY: the caller upholds the contract above; the copy and rebase just happened and
    // `params` were validated for this plan and this directmap.
    unsafe { switch(params.stack_top.as_u64(), params.stack_copy_offset, new_cr3) };
    Ok(report)
}

/// Re-copies the live stack `[rsp, stack_top)` to `rsp + stack_copy_offset`, then clears
/// CR4.PGE, loads `new_cr3` and restores CR4 as it was. One asm block: see the module
/// documentation.
///
/// # Safety
/// As for [`relocate`], with the copy and rebase done and nothing but stack writes since;
/// `rsp <= stack_top`.
#[cfg(target_arch = "x86_64")]
unsafe fn switch(stack_top: u64, stack_copy_offset: u64, new_cr3: u64) {
    // SAFETY: the caller guarantees ring 0, `rsp <= stack_top`, and that
    // `[rsp, stack_top)` plus `stack_copy_offset` is the directmap alias of the stack in the
    // copy, mapped and writable; the new top-level table maps this code. DF is clear on
    // entry to asm (Rust guarantees it). No `nostack`: the compiler then keeps nothing live
    // below rsp (red zone), which the copy would miss. No `nomem`: every earlier store
    // reaches memory first.
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
            "mov cr3, {cr3}",
            "mov cr4, {cr4}",
            top = in(reg) stack_top,
            offset = in(reg) stack_copy_offset,
            cr3 = in(reg) new_cr3,
            cr4 = out(reg) _,
            tmp = out(reg) _,
            out("rcx") _,
            out("rsi") _,
            out("rdi") _,
        );
    }
}

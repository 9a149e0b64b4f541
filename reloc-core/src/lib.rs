#![doc = include_str!("../README.md")]
//! # The relocation, step by step
//! 1. [`select::select_target`] picks the destination from the firmware memory map.
//! 2. [`Plan::new`] walks the page tables reachable from the top-level table through a
//!    [`PhysMemory`] and either returns a [`Plan`] or a [`PlanError`] naming the table, the
//!    index and the raw entry at fault. It only reads.
//! 3. [`Plan::apply`] copies the image and rebases the copy; it cannot fail. On bare metal
//!    [`switch::relocate`] does that and the switch (stack re-copy, CR4.PGE toggle, CR3 load)
//!    in one call, so the critical region holds no fallible step.
//!
//! # Invariants
//! - Planning reads only: a rejected request leaves memory bit-identical.
//! - Apply writes only inside the destination; the old image is untouched.
//! - Each distinct table is rebased exactly once, however many entries point to it
//!   (shared tables, recursive slots); the walk terminates on cycles.
//! - What moves: pointer entries (PS clear) of every table reached at L2 or above, and present
//!   2 MiB leaves of the declared image maps. Leaves elsewhere (directmap, identity maps) and
//!   every L1 entry stay. Only address bits change: flags, PAT, protection keys, software bits
//!   and NX stay bit-identical.
//! - Every page table reachable from the top level lives in the image (Xen's premise).
//! - No allocation; the number of distinct tables is bounded by `Plan`'s `MAX_TABLES`.
//!
//! [`hvm`] parses the PVH boot information (`hvm_start_info`) a loader hands the image, and
//! [`multiboot2`] the multiboot2 boot information (the MBI GRUB hands it); both reduce to the
//! same boot data ([`boot::LoaderInfo`]), so one target-selection path serves both entries.
//!
//! `unsafe` lives only in [`phys::DirectMap`] and [`switch`].
//!
// Without a parser's feature its module does not exist: its link then points at the
// features section instead of breaking the docs of `--no-default-features`.
#![cfg_attr(not(feature = "hvm"), doc = "[`hvm`]: crate#features")]
#![cfg_attr(not(feature = "multiboot2"), doc = "[`multiboot2`]: crate#features")]
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod boot;
pub mod error;
#[cfg(feature = "hvm")]
pub mod hvm;
#[cfg(feature = "multiboot2")]
pub mod multiboot2;
#[cfg(feature = "notes")]
pub mod notes;
pub mod paging;
pub mod phys;
pub mod plan;
pub mod select;
pub mod switch;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use boot::{BootModule, LoaderInfo};
pub use boot::{MemoryRegion, E820_RAM};
pub use error::Error;
#[cfg(feature = "hvm")]
pub use hvm::{BootData, BootInfo, BootInfoError, HvmStartInfo};
#[cfg(feature = "multiboot2")]
pub use multiboot2::{Multiboot2Error, Multiboot2Info};
pub use paging::{Entry, EntryKind, Level, MaxPhysAddr, PagingMode, VirtAddr};
pub use phys::{DirectMap, DirectMapLayout, LentTable, MemoryFault, PhysMemory, PhysRange};
pub use plan::{
    ApplyReport, EntryLocation, PerLevel, Plan, PlanError, PlannedTable, RangeRole,
    RelocationRequest, TableRole, DEFAULT_MAX_TABLES, IMAGE_ALIGN,
};
pub use select::{select_target, select_target_for, SelectError, TargetRequest};
pub use switch::{
    DirectMapped, RelocateError, SimulatedDirectMap, SwitchError, SwitchParams, VirtualLayout,
};
pub use x86_64::PhysAddr;

/// The stack, in bytes, that the boot path through reloc-core may take at its deepest: parse
/// the boot information in place, select the target, plan in place, check the switch and
/// relocate (`BootInfo::parse_in_place` or `Multiboot2Info::parse_in_place`,
/// [`select_target_for`], [`Plan::new_in_place`], [`SwitchParams::new`],
/// [`switch::relocate`]), each called from the boot code's own frame, with the boot info and
/// the plan in a `static` or other storage off the stack, and memory that lends its tables
/// ([`DirectMap`]). The steps run one after another, so the deepest one sets the mark.
///
/// # How it is measured
/// - From the object code: `cargo build --release --target x86_64-unknown-none` of a crate
///   calling each entry point through [`DirectMap`], then `objdump -dr` and, per function,
///   8 bytes of return address, 8 per `push` and the prologue's `sub $N,%rsp`, summed along
///   the deepest chain of calls. On 2026-12-06 (rustc 1.95.0): [`Plan::new_in_place`]
///   1,360 bytes, [`select_target_for`] over a PVH `BootInfo` 1,312, [`select_target`] 392,
///   [`SwitchParams::new`] 472, [`switch::relocate`] 280 (its copy and rebase included);
///   the parsers' figures are in their `parse_in_place` docs. Memory that lends no table
///   ([`PhysMemory::table`] returns `None`) adds two 4 KiB snapshots to planning (9,664
///   bytes in all): the budget does not cover it.
/// - On real boots: boot-stub paints its stack at entry and prints the high-water mark of
///   the whole path (`stack: high-water mark N bytes (parse + select + plan + switch)`) on
///   every QEMU boot, and a test fails when `N` exceeds this budget.
pub const STACK_BUDGET: usize = 4096;

/// The `x86_64` crate whose types ([`PhysAddr`]) are part of this crate's API, re-exported so
/// that a kernel names exactly these types. A breaking `x86_64` release is adopted only in a
/// breaking reloc-core release.
pub use x86_64;

//! What relocation needs from a loader's boot information, whichever protocol delivered it.
//!
//! PVH ([`crate::hvm::BootInfo`]) and multiboot2 ([`crate::multiboot2::Multiboot2Info`]) both
//! reduce to the same boot data: a firmware memory map for [`crate::select::select_target`],
//! the boot modules, the command line, and the ranges a relocation target must not overlap.
//! [`LoaderInfo`] names that common shape so one target-selection path can serve both
//! entries. Both types keep their inherent methods of the same names; the trait only adds a
//! way to be generic over them.

use crate::hvm::{BootInfo, BootModule};
use crate::multiboot2::Multiboot2Info;
use crate::phys::PhysRange;
use crate::select::MemoryRegion;

/// True when `cmdline` holds `word` as a whitespace-separated token: the one rule both
/// loaders' `cmdline_has_word` follow.
pub(crate) fn has_word(cmdline: &[u8], word: &str) -> bool {
    cmdline
        .split(|b| b.is_ascii_whitespace())
        .any(|token| token == word.as_bytes())
}

/// Boot data a loader handed over, reduced to what relocation needs.
pub trait LoaderInfo {
    /// The most ranges [`LoaderInfo::avoid_ranges`] can yield.
    const MAX_AVOID_RANGES: usize;

    /// The memory map, in the loader's order, as [`crate::select::select_target`] takes it.
    fn memory_map(&self) -> &[MemoryRegion];

    /// The boot modules.
    fn modules(&self) -> &[BootModule];

    /// The kernel command line without its NUL (empty when absent).
    fn cmdline(&self) -> &[u8];

    /// True when the command line holds `word` as a whitespace-separated token.
    fn cmdline_has_word(&self, word: &str) -> bool {
        has_word(self.cmdline(), word)
    }

    /// Every non-empty range of boot data a relocation target must not overlap.
    fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_;
}

impl<const MAP: usize, const MODS: usize> LoaderInfo for BootInfo<MAP, MODS> {
    const MAX_AVOID_RANGES: usize = BootInfo::<MAP, MODS>::MAX_AVOID_RANGES;

    fn memory_map(&self) -> &[MemoryRegion] {
        BootInfo::memory_map(self)
    }

    fn modules(&self) -> &[BootModule] {
        BootInfo::modules(self)
    }

    fn cmdline(&self) -> &[u8] {
        BootInfo::cmdline(self)
    }

    fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        BootInfo::avoid_ranges(self)
    }
}

impl<const MAP: usize, const MODS: usize> LoaderInfo for Multiboot2Info<MAP, MODS> {
    const MAX_AVOID_RANGES: usize = Multiboot2Info::<MAP, MODS>::MAX_AVOID_RANGES;

    fn memory_map(&self) -> &[MemoryRegion] {
        Multiboot2Info::memory_map(self)
    }

    fn modules(&self) -> &[BootModule] {
        Multiboot2Info::modules(self)
    }

    fn cmdline(&self) -> &[u8] {
        Multiboot2Info::cmdline(self)
    }

    fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        Multiboot2Info::avoid_ranges(self)
    }
}

//! What relocation needs from a loader's boot information, whichever protocol delivered it.
//!
//! PVH ([`crate::hvm::BootInfo`]) and multiboot2 ([`crate::multiboot2::Multiboot2Info`]) both
//! reduce to the same boot data: a firmware memory map for [`crate::select::select_target`],
//! the boot modules, the command line, and the ranges a relocation target must not overlap.
//! [`LoaderInfo`] names that common shape so one target-selection path can serve both
//! entries. Both types keep their inherent methods of the same names; the trait only adds a
//! way to be generic over them.
//!
//! This module holds what both parsers share (the module record, the capacities, the word
//! rule) and imports neither parser: `hvm` and `multiboot2` import from here and never from
//! each other, and each implements [`LoaderInfo`] beside its own type.

use crate::phys::PhysRange;
use crate::select::MemoryRegion;

/// Default capacity for memory-map entries in a parsed boot information.
pub const DEFAULT_MEMMAP_CAPACITY: usize = 128;

/// Default capacity for modules in a parsed boot information.
pub const DEFAULT_MODULE_CAPACITY: usize = 16;

/// Longest command line (without its NUL) the parsers accept and copy.
pub const CMDLINE_CAPACITY: usize = 1024;

/// One boot module: where it is and where its command line is (empty when it has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BootModule {
    /// The module's bytes.
    pub range: PhysRange,
    /// Its command line, NUL included (empty when absent).
    pub cmdline: PhysRange,
}

impl BootModule {
    /// A module with no bytes and no command line (the value capacity slots start as).
    pub const EMPTY: Self = Self {
        range: PhysRange::new(0, 0),
        cmdline: PhysRange::new(0, 0),
    };
}

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

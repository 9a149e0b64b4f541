//! The boot information, from whichever entry the loader used (PVH's `hvm_start_info`), read
//! into the memory map and avoid list that target selection consumes: one selection path for
//! every entry. Also the boot-information fault injections the tests ask for on the command
//! line: each damages the loader's structure in RAM (outside the image) and parses it again.

use core::fmt;

use reloc_core::{BootInfo, BootInfoError, MemoryRegion, PhysMemory, PhysRange};

use crate::entry::ENTRY_PVH;
use crate::println;

/// Most boot-data ranges any entry's boot information yields for the avoid list.
pub const MAX_AVOID_RANGES: usize = <BootInfo>::MAX_AVOID_RANGES;

/// The parsed boot information.
pub enum Boot {
    /// Through the PVH note.
    Pvh(BootInfo),
}

/// Why the boot information was refused.
pub enum BootError {
    /// `hvm_start_info` is malformed.
    Pvh(BootInfoError),
    /// The entry code passed an entry number this code does not know.
    UnknownEntry(u32),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Pvh(e) => write!(f, "{e}"),
            BootError::UnknownEntry(entry) => write!(f, "unknown entry {entry}"),
        }
    }
}

/// Writes the 32-bit `value` at physical `addr` (any alignment within a qword), as the fault
/// injections do.
fn poke_u32<M: PhysMemory + ?Sized>(mem: &mut M, addr: u64, value: u32) {
    let qword = mem.read_u64(addr & !7);
    let shift = (addr & 7) * 8;
    let patched = (qword & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
    mem.write_u64(addr & !7, patched);
}

impl Boot {
    /// Parses the boot information `entry` (`entry::ENTRY_*`) left at `info_paddr` and prints
    /// what it holds; `loader_eax` is what the loader left in `%eax`.
    pub fn parse<M: PhysMemory + ?Sized>(
        mem: &mut M,
        entry: u32,
        loader_eax: u32,
        info_paddr: u64,
    ) -> Result<Self, BootError> {
        let _ = loader_eax;
        match entry {
            ENTRY_PVH => Self::parse_pvh(mem, info_paddr),
            other => Err(BootError::UnknownEntry(other)),
        }
    }

    fn parse_pvh<M: PhysMemory + ?Sized>(mem: &mut M, paddr: u64) -> Result<Self, BootError> {
        let boot: BootInfo = BootInfo::parse(mem, paddr).map_err(BootError::Pvh)?;
        let cmdline = core::str::from_utf8(boot.cmdline()).unwrap_or("<not UTF-8>");
        println!(
            "boot: hvm_start_info v{} flags {:#x} modules {} memmap entries {} cmdline \"{cmdline}\"",
            boot.header.version,
            boot.header.flags,
            boot.modules().len(),
            boot.memory_map().len(),
        );
        // Damage the magic or the version and parse again: the parser must reject it.
        for (word, offset, value) in [
            ("bad-magic", 0u64, 0xdead_beef_u32),
            ("start-info-v0", 4, 0),
        ] {
            if boot.cmdline_has_word(word) {
                let addr = paddr + offset;
                println!("boot: {word} requested: writing {value:#x} at {addr:#x}");
                poke_u32(mem, addr, value);
                <BootInfo>::parse(mem, paddr).map_err(BootError::Pvh)?;
            }
        }
        let boot = Boot::Pvh(boot);
        boot.print_memory_map();
        Ok(boot)
    }

    fn print_memory_map(&self) {
        for region in self.memory_map() {
            println!(
                "memmap: {:#x} {:#x} {}",
                region.start, region.len, region.kind
            );
        }
    }

    /// The memory map target selection reads.
    pub fn memory_map(&self) -> &[MemoryRegion] {
        match self {
            Boot::Pvh(boot) => boot.memory_map(),
        }
    }

    /// True when `word` is a whitespace-separated word of the command line.
    pub fn cmdline_has_word(&self, word: &str) -> bool {
        match self {
            Boot::Pvh(boot) => boot.cmdline_has_word(word),
        }
    }

    /// The loader's own structure (`hvm_start_info`), outside the image.
    pub fn info_range(&self) -> PhysRange {
        match self {
            Boot::Pvh(boot) => boot.start_info_range(),
        }
    }

    /// Every piece of boot data the target must not overlap.
    pub fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        match self {
            Boot::Pvh(boot) => boot.avoid_ranges(),
        }
    }
}

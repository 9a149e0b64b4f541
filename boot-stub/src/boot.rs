//! The boot information, from whichever entry the loader used (PVH's `hvm_start_info` or
//! multiboot2's MBI), read into the memory map and avoid list that target selection consumes:
//! one selection path for every entry ([`reloc_core::LoaderInfo`]). Also the boot-information
//! fault injections the tests ask for on the command line: each damages the loader's
//! structure in RAM (outside the image) and parses it again.

use core::fmt;

use reloc_core::multiboot2::{
    MemoryMapSource, BOOTLOADER_MAGIC, TAG_BASIC_MEMINFO, TAG_MEMORY_MAP,
};
use reloc_core::{
    BootInfo, BootInfoError, LoaderInfo, MemoryRegion, Multiboot2Error, Multiboot2Info, PhysMemory,
    PhysRange,
};

use crate::entry::{ENTRY_MULTIBOOT2, ENTRY_PVH};
use crate::println;

/// Most boot-data ranges any entry's boot information yields for the avoid list.
pub const MAX_AVOID_RANGES: usize = {
    let pvh = <BootInfo as LoaderInfo>::MAX_AVOID_RANGES;
    let mb2 = <Multiboot2Info as LoaderInfo>::MAX_AVOID_RANGES;
    if pvh > mb2 {
        pvh
    } else {
        mb2
    }
};

/// The parsed boot information.
// Both variants are ~5 KiB (copies of the map and strings) and there is no allocator to box
// one: the single value lives on the boot stack (`layout::STACK_SIZE`).
#[allow(clippy::large_enum_variant)]
pub enum Boot {
    /// Through the PVH note.
    Pvh(BootInfo),
    /// Through the multiboot2 header.
    Multiboot2(Multiboot2Info),
}

/// Why the boot information was refused.
pub enum BootError {
    /// `hvm_start_info` is malformed.
    Pvh(BootInfoError),
    /// The multiboot2 MBI is malformed.
    Multiboot2(Multiboot2Error),
    /// Entered through the multiboot2 header without the multiboot2 magic in `%eax`.
    Multiboot2Magic(u32),
    /// The entry code passed an entry number this code does not know.
    UnknownEntry(u32),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Pvh(e) => write!(f, "{e}"),
            BootError::Multiboot2(e) => write!(f, "{e}"),
            BootError::Multiboot2Magic(eax) => write!(
                f,
                "multiboot2 entry with %eax {eax:#x}, expected {BOOTLOADER_MAGIC:#x}"
            ),
            BootError::UnknownEntry(entry) => write!(f, "unknown entry {entry}"),
        }
    }
}

/// A tag type no multiboot2 loader defines: a hidden tag is skipped as unknown.
const HIDDEN_TAG_TYPE: u32 = 0x7fff_0000;

/// Physical address of the first tag of `tag_type` in the MBI at `mbi`, walking the tags by
/// their sizes up to `total_size` (the MBI was just parsed, so the walk is well-formed).
fn find_tag<M: PhysMemory + ?Sized>(mem: &M, mbi: PhysRange, tag_type: u32) -> Option<u64> {
    let mut tag = mbi.start + 8;
    while tag + 8 <= mbi.end {
        let header = mem.read_u64(tag);
        let (found, size) = (header as u32, (header >> 32) as u32);
        if found == tag_type {
            return Some(tag);
        }
        if found == 0 || size < 8 {
            return None;
        }
        tag += u64::from(size).next_multiple_of(8);
    }
    None
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
        info_paddr: u32,
    ) -> Result<Self, BootError> {
        match entry {
            ENTRY_PVH => Self::parse_pvh(mem, info_paddr),
            ENTRY_MULTIBOOT2 if loader_eax != BOOTLOADER_MAGIC => {
                Err(BootError::Multiboot2Magic(loader_eax))
            }
            ENTRY_MULTIBOOT2 => Self::parse_multiboot2(mem, info_paddr),
            other => Err(BootError::UnknownEntry(other)),
        }
    }

    fn parse_multiboot2<M: PhysMemory + ?Sized>(mem: &mut M, ebx: u32) -> Result<Self, BootError> {
        let info = Multiboot2Info::parse(mem, ebx).map_err(BootError::Multiboot2)?;
        let text = |bytes| core::str::from_utf8(bytes).unwrap_or("<not UTF-8>");
        let mbi = info.mbi_range();
        println!(
            "boot: multiboot2 MBI {mbi} loader \"{}\" modules {} memmap entries {} cmdline \"{}\"",
            text(info.bootloader_name()),
            info.modules().len(),
            info.memory_map().len(),
            text(info.cmdline()),
        );
        println!("boot: memory map from the {}", info.memory_map_source());
        for module in info.modules() {
            println!("module: {:#x} {:#x}", module.range.start, module.range.end);
        }
        // Hide the memory-map and basic-meminfo tags (their type becomes one nobody defines,
        // so the parser skips them), or make the first tag's size run past total_size; then
        // parse again.
        for (word, tag_type) in [
            ("mbi-no-memmap", TAG_MEMORY_MAP),
            ("mbi-no-meminfo", TAG_BASIC_MEMINFO),
        ] {
            if info.cmdline_has_word(mem, word) {
                if let Some(tag) = find_tag(mem, mbi, tag_type) {
                    println!("boot: {word} requested: tag type {tag_type} at {tag:#x} hidden");
                    poke_u32(mem, tag, HIDDEN_TAG_TYPE);
                }
            }
        }
        if info.cmdline_has_word(mem, "mbi-bad-tag-size") {
            let size = (mbi.len() as u32).wrapping_add(8);
            let at = mbi.start + 8 + 4;
            println!("boot: mbi-bad-tag-size requested: writing size {size} at {at:#x}");
            poke_u32(mem, at, size);
        }
        let info = if ["mbi-no-memmap", "mbi-no-meminfo", "mbi-bad-tag-size"]
            .iter()
            .any(|word| info.cmdline_has_word(mem, word))
        {
            let again = Multiboot2Info::parse(mem, ebx).map_err(BootError::Multiboot2)?;
            if let MemoryMapSource::BasicMeminfo { .. } = again.memory_map_source() {
                println!("boot: memory map now from basic meminfo");
            }
            again
        } else {
            info
        };
        let boot = Boot::Multiboot2(info);
        boot.print_memory_map();
        Ok(boot)
    }

    fn parse_pvh<M: PhysMemory + ?Sized>(mem: &mut M, ebx: u32) -> Result<Self, BootError> {
        let boot = BootInfo::parse(mem, ebx).map_err(BootError::Pvh)?;
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
            if boot.cmdline_has_word(mem, word) {
                let addr = u64::from(ebx) + offset;
                println!("boot: {word} requested: writing {value:#x} at {addr:#x}");
                poke_u32(mem, addr, value);
                BootInfo::parse(mem, ebx).map_err(BootError::Pvh)?;
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
            Boot::Multiboot2(info) => info.memory_map(),
        }
    }

    /// True when `word` is a whitespace-separated word of the whole command line (a line
    /// longer than the parsers' copy is read again through `mem`).
    pub fn cmdline_has_word<M: PhysMemory + ?Sized>(&self, mem: &M, word: &str) -> bool {
        match self {
            Boot::Pvh(boot) => boot.cmdline_has_word(mem, word),
            Boot::Multiboot2(info) => info.cmdline_has_word(mem, word),
        }
    }

    /// The loader's own structure (`hvm_start_info` or the MBI), outside the image.
    pub fn info_range(&self) -> PhysRange {
        match self {
            Boot::Pvh(boot) => boot.start_info_range(),
            Boot::Multiboot2(info) => info.mbi_range(),
        }
    }

    /// Every piece of boot data the target must not overlap.
    pub fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        let (pvh, mb2) = match self {
            Boot::Pvh(boot) => (Some(boot.avoid_ranges()), None),
            Boot::Multiboot2(info) => (None, Some(info.avoid_ranges())),
        };
        pvh.into_iter().flatten().chain(mb2.into_iter().flatten())
    }
}

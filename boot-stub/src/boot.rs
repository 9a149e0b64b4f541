//! The boot information, from whichever entry the loader used (PVH's `hvm_start_info` or
//! multiboot2's MBI), read into the memory map and avoid list that target selection consumes:
//! one selection path for every entry ([`reloc_core::LoaderInfo`]). Also the boot-information
//! fault injections the tests ask for on the command line: each damages the loader's
//! structure in RAM (outside the image) and parses it again.

use core::fmt;

use reloc_core::multiboot2::{
    efi_to_e820, BOOTLOADER_MAGIC, TAG_BASIC_MEMINFO, TAG_EFI_MEMORY_MAP, TAG_MEMORY_MAP,
};
use reloc_core::{
    select_target_for, BootInfo, BootInfoError, MemoryRegion, Multiboot2Error, Multiboot2Info,
    PhysAddr, PhysMemory, PhysRange, SelectError,
};

use reloc_core::select::E820_RAM;

use crate::entry::{ENTRY_MULTIBOOT2, ENTRY_PVH};
use crate::in_place::InPlace;
use crate::layout::IMAGE_PHYS;
use crate::println;

/// The parsed boot information, in a static: parsed in place there, never on the stack.
pub enum Boot {
    /// Through the PVH note.
    Pvh(&'static BootInfo),
    /// Through the multiboot2 header.
    Multiboot2(&'static Multiboot2Info),
}

/// Where `hvm_start_info` is parsed to (`BootInfo::parse_in_place`): about 5 KiB, which the
/// stack does not have to hold.
static PVH_INFO: InPlace<BootInfo> = InPlace::new(BootInfo::empty());
/// Where the multiboot2 MBI is parsed to (`Multiboot2Info::parse_in_place`).
static MULTIBOOT2_INFO: InPlace<Multiboot2Info> = InPlace::new(Multiboot2Info::empty());

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
    /// The boot information was parsed already (its static is taken).
    ParsedTwice,
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
            BootError::ParsedTwice => write!(f, "the boot information was parsed twice"),
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

/// Fault injection `image-not-ram`: in the loader's memory map (E820-style entries of u64
/// base, u64 length, u32 type at the physical addresses `entries`), the RAM entry holding the
/// image's first byte becomes reserved (type 2), as if the loader had put the image over
/// firmware memory. The caller parses the map again.
fn mark_image_reserved<M: PhysMemory + ?Sized>(mem: &mut M, entries: impl Iterator<Item = u64>) {
    for entry in entries {
        let (start, len) = (mem.read_u64(entry), mem.read_u64(entry + 8));
        let kind = mem.read_u64(entry + 16) as u32;
        if kind == 1 && start <= IMAGE_PHYS && IMAGE_PHYS - start < len {
            println!(
                "boot: image-not-ram requested: memory map entry at {entry:#x} ({start:#x}+{len:#x}) marked reserved"
            );
            poke_u32(mem, entry + 16, 2);
        }
    }
}

/// `EfiReservedMemoryType`: what `image-not-ram` turns the image's EFI descriptor into.
const EFI_RESERVED_MEMORY_TYPE: u32 = 0;

/// Fault injection `image-not-ram` for the EFI memory map (multiboot2 tag 17 at `tag`: u32
/// type, u32 size, u32 descriptor_size, u32 descriptor_version, then descriptors of u32 type,
/// u32 pad, u64 PhysicalStart, u64 VirtualStart, u64 NumberOfPages, u64 Attribute): every
/// descriptor reloc-core reads as RAM that holds the image's first byte becomes
/// `EfiReservedMemoryType`. The caller parses the MBI again.
fn mark_image_efi_reserved<M: PhysMemory + ?Sized>(mem: &mut M, tag: u64) {
    let size = mem.read_u64(tag) >> 32;
    let descriptor_size = u64::from(mem.read_u64(tag + 8) as u32);
    // A descriptor is 40 bytes at least (UEFI `EFI_MEMORY_DESCRIPTOR`); anything smaller is
    // malformed, and the parse just done would have refused it.
    if descriptor_size < 40 {
        return;
    }
    for entry in (tag + 16..tag + size).step_by(descriptor_size as usize) {
        if entry + 40 > tag + size {
            break;
        }
        let efi_type = mem.read_u64(entry) as u32;
        let start = mem.read_u64(entry + 8);
        let len = mem.read_u64(entry + 24).saturating_mul(4096);
        let attribute = mem.read_u64(entry + 32);
        if efi_to_e820(efi_type, attribute) == E820_RAM
            && start <= IMAGE_PHYS
            && IMAGE_PHYS - start < len
        {
            println!(
                "boot: image-not-ram requested: EFI memory descriptor at {entry:#x} (type {efi_type}, {start:#x}+{len:#x}) marked reserved"
            );
            poke_u32(mem, entry, EFI_RESERVED_MEMORY_TYPE);
        }
    }
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
        let info = MULTIBOOT2_INFO.take().ok_or(BootError::ParsedTwice)?;
        info.parse_in_place(mem, ebx)
            .map_err(BootError::Multiboot2)?;
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
        // Both maps a loader may hand over: the parser reads tag 6 when present and the EFI
        // memory map (tag 17) otherwise (`mbi-no-memmap` on UEFI firmware), so the image must
        // lie outside RAM in both for the check to see it.
        if info.cmdline_has_word(mem, "image-not-ram") {
            if let Some(tag) = find_tag(mem, mbi, TAG_MEMORY_MAP) {
                let header = mem.read_u64(tag);
                let entry_size = u64::from(mem.read_u64(tag + 8) as u32);
                let end = tag + (header >> 32);
                if entry_size >= 24 {
                    mark_image_reserved(mem, (tag + 16..end).step_by(entry_size as usize));
                }
            }
            if let Some(tag) = find_tag(mem, mbi, TAG_EFI_MEMORY_MAP) {
                mark_image_efi_reserved(mem, tag);
            }
        }
        if info.cmdline_has_word(mem, "mbi-bad-tag-size") {
            let size = (mbi.len() as u32).wrapping_add(8);
            let at = mbi.start + 8 + 4;
            println!("boot: mbi-bad-tag-size requested: writing size {size} at {at:#x}");
            poke_u32(mem, at, size);
        }
        if [
            "mbi-no-memmap",
            "mbi-no-meminfo",
            "mbi-bad-tag-size",
            "image-not-ram",
        ]
        .iter()
        .any(|word| info.cmdline_has_word(mem, word))
        {
            info.parse_in_place(mem, ebx)
                .map_err(BootError::Multiboot2)?;
            println!("boot: memory map now from the {}", info.memory_map_source());
        }
        let boot = Boot::Multiboot2(info);
        boot.print_memory_map();
        Ok(boot)
    }

    fn parse_pvh<M: PhysMemory + ?Sized>(mem: &mut M, ebx: u32) -> Result<Self, BootError> {
        let boot = PVH_INFO.take().ok_or(BootError::ParsedTwice)?;
        boot.parse_in_place(mem, ebx).map_err(BootError::Pvh)?;
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
                boot.parse_in_place(mem, ebx).map_err(BootError::Pvh)?;
            }
        }
        if boot.cmdline_has_word(mem, "image-not-ram") {
            let (base, count) = (boot.header.memmap_paddr, boot.header.memmap_entries);
            mark_image_reserved(mem, (0..u64::from(count)).map(|i| base + i * 24));
            boot.parse_in_place(mem, ebx).map_err(BootError::Pvh)?;
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

    /// The target for `image`: `reloc_core::select_target_for` on this boot information
    /// (avoiding the image and every piece of boot data).
    pub fn select_target(&self, image: PhysRange) -> Result<PhysAddr, SelectError> {
        match self {
            Boot::Pvh(boot) => select_target_for(*boot, image),
            Boot::Multiboot2(info) => select_target_for(*info, image),
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

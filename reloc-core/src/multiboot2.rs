//! Multiboot2 boot information (the MBI, multiboot2 specification 2.0, §3.6): a parser that
//! copies what relocation needs into the same boot data as PVH (`hvm::BootInfo`, behind the
//! `hvm` feature).
//!
//! A multiboot2 loader (GRUB) enters the image in 32-bit protected mode with `%eax` =
//! [`BOOTLOADER_MAGIC`] and `%ebx` = the physical address of the MBI: a `u32 total_size`, a
//! reserved `u32`, then tags, each `u32 type`, `u32 size` and a payload, each starting on an
//! 8-byte boundary, up to an end tag (type 0, size 8). The MBI sits in RAM the memory map
//! reports as usable, so [`Multiboot2Info::avoid_ranges`] names it, every module and every
//! string for target selection.
//!
//! # Rules
//! - The MBI address is 8-byte aligned; `total_size` is at least 16 (header and end tag); the
//!   `total_size` bytes (rounded up to a qword) must be readable and must not wrap.
//! - Tags are walked from offset 8 by their size, rounded up to 8, until the end tag. A tag
//!   smaller than its 8-byte header, or running past `total_size`, and an end tag whose size
//!   is not 8, are errors; so is running out of bytes before an end tag. Bytes after the end
//!   tag (within `total_size`) are ignored.
//! - Read: command line (type 1) and boot loader name (type 2), NUL-terminated within their
//!   tag, of any length (GRUB sets no limit on the command line): the first
//!   [`CMDLINE_CAPACITY`] / [`BOOTLOADER_NAME_CAPACITY`] bytes are copied, a longer string is
//!   accepted with its copy cut ([`Multiboot2Info::cmdline_truncated`]), and
//!   [`Multiboot2Info::cmdline_has_word`] searches the whole line in memory; every module (type 3: `u32 mod_start`, `u32 mod_end`, string); basic meminfo (type
//!   4: `mem_lower`/`mem_upper` in KiB); memory map (type 6: `u32 entry_size`, `u32
//!   entry_version`, entries); EFI memory map (type 17, below). For types 1, 2, 4, 6 and 17
//!   only the first tag is read; later ones and every other type are skipped by size.
//! - The memory map honours `entry_size` (at least 24, the version-0 entry; entries are read at
//!   that stride and the version-0 fields `u64 base`, `u64 length`, `u32 type` taken from
//!   each) and accepts any `entry_version`: the specification guarantees later versions are
//!   backward compatible. The entries must fill the tag exactly, and `base + length` must not
//!   wrap.
//! - The EFI memory map (type 17: `u32 descriptor_size`, `u32 descriptor_version`, then
//!   `EFI_MEMORY_DESCRIPTOR`s of `descriptor_size` bytes, GRUB-EFI's copy of the firmware's
//!   map) is read only when no type-6 tag holds an entry. `descriptor_size` must be at least
//!   40 ([`EFI_MEMORY_DESCRIPTOR_SIZE`]) and a multiple of 8, and the descriptors must fill
//!   the tag exactly; any `descriptor_version` is accepted. Each descriptor becomes an E820
//!   type as Xen's `efi_arch_process_memory_map` decides ([`efi_to_e820`]); zero-length
//!   descriptors are skipped, and one that continues the extent before it with the same type
//!   is merged into it while reading, so the capacity bounds extents, not descriptors. Where
//!   Xen drops the extents past its table's end, this parser refuses the map with
//!   [`TagProblem::TooManyMapEntries`] naming how many extents there are.
//! - The map is the type-6 tag when it holds an entry, else the type-17 tag when it holds a
//!   non-empty extent; otherwise basic meminfo becomes two RAM regions, `[0, mem_lower KiB)`
//!   and `[1 MiB, 1 MiB + mem_upper KiB)`; with none of them it is
//!   [`Multiboot2Error::MissingMemoryMap`].
//!
//! Every malformed input is a [`Multiboot2Error`] naming the tag type, its offset in the MBI
//! and what is wrong; nothing panics, and memory is only read.
//!
//! # Why not rust-osdev's `multiboot2` crate
//! The field's crate (0.28) builds for `x86_64-unknown-none` with `default-features = false`,
//! but it cannot read a loader's MBI safely on its own, and validating every tag before
//! handing it over would be this parser again:
//! - `MemoryMapTag`'s layout asserts `(size - 16) % 24 == 0` and
//!   `MemoryMapTag::memory_areas` asserts `entry_size == 24`: a map with a partial entry, or
//!   from a loader using the larger entries the specification allows, panics, and there is no
//!   way to read such a map through it;
//! - a type-6 or type-3 tag shorter than its fixed fields panics in its typed getter (the
//!   tag's `dst_len` asserts the size), and `ModuleTag::module_size` asserts `end >= start`;
//!   a type-4 tag shorter than its fields is read past its end, from the padding;
//! - `BootInformation::load` takes a raw pointer to the whole MBI: over [`PhysMemory`] that
//!   means copying the MBI into an 8-aligned buffer whose capacity bounds which MBIs boot
//!   (EFI memory maps and ELF section tags can make them several KiB), plus `unsafe`;
//! - its errors (`LoadError`) name neither the tag nor its offset.
//!
//! So this parser reads through [`PhysMemory`] like `hvm`, copies nothing but what
//! it keeps, and holds no `unsafe`. The crate serves the tests: its builder makes the MBIs
//! they parse and its reader cross-checks the result on well-formed ones (the
//! `multiboot2_crate_*` test shows each of these).

use core::fmt;

use crate::boot::{
    BootModule, LoaderInfo, MemoryRegion, CMDLINE_CAPACITY, DEFAULT_MEMMAP_CAPACITY,
    DEFAULT_MODULE_CAPACITY, E820_RAM,
};
use crate::phys::{MemoryFault, PhysMemory, PhysRange};

/// `%eax` at a multiboot2 entry.
pub const BOOTLOADER_MAGIC: u32 = 0x36d7_6289;

/// Tag type: end of the tags.
pub const TAG_END: u32 = 0;
/// Tag type: kernel command line.
pub const TAG_CMDLINE: u32 = 1;
/// Tag type: boot loader name.
pub const TAG_BOOTLOADER_NAME: u32 = 2;
/// Tag type: one boot module.
pub const TAG_MODULE: u32 = 3;
/// Tag type: basic memory information (`mem_lower`, `mem_upper`).
pub const TAG_BASIC_MEMINFO: u32 = 4;
/// Tag type: memory map.
pub const TAG_MEMORY_MAP: u32 = 6;
/// Tag type: the EFI memory map (`u32 descriptor_size`, `u32 descriptor_version`, then
/// `EFI_MEMORY_DESCRIPTOR`s), which GRUB-EFI passes.
pub const TAG_EFI_MEMORY_MAP: u32 = 17;

/// Size of an `EFI_MEMORY_DESCRIPTOR` as the UEFI specification lays it out: the least
/// `descriptor_size` accepted (firmware may use more, as OVMF's 48 does).
pub const EFI_MEMORY_DESCRIPTOR_SIZE: u32 = 40;

/// One `EFI_MEMORY_DESCRIPTOR` (UEFI specification, `GetMemoryMap()`): `u32 Type`, 4 bytes
/// of padding, `u64 PhysicalStart`, `u64 VirtualStart`, `u64 NumberOfPages` (4 KiB pages),
/// `u64 Attribute`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EfiMemoryDescriptor {
    /// `EFI_MEMORY_TYPE` (7 is `EfiConventionalMemory`).
    pub kind: u32,
    /// First byte.
    pub physical_start: u64,
    /// The firmware's virtual address for runtime services (not used here).
    pub virtual_start: u64,
    /// Length in 4 KiB pages.
    pub number_of_pages: u64,
    /// `EFI_MEMORY_*` attribute bits (`EFI_MEMORY_WB` = 0x8, `EFI_MEMORY_RUNTIME` = 1 << 63).
    pub attribute: u64,
}

impl EfiMemoryDescriptor {
    /// The descriptor's 40 bytes, little-endian, padding zero.
    pub fn to_bytes(&self) -> [u8; EFI_MEMORY_DESCRIPTOR_SIZE as usize] {
        let mut bytes = [0u8; EFI_MEMORY_DESCRIPTOR_SIZE as usize];
        bytes[0..4].copy_from_slice(&self.kind.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.physical_start.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.virtual_start.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.number_of_pages.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.attribute.to_le_bytes());
        bytes
    }
}

/// Size of the MBI's fixed header (`total_size`, reserved) and of a tag header (type, size).
pub const HEADER_SIZE: u32 = 8;

/// Size of a version-0 memory-map entry: the least `entry_size` accepted.
pub const MEMORY_MAP_ENTRY_V0_SIZE: u32 = 24;

/// Bytes of the boot loader name the parser copies; a longer name is accepted and its copy
/// cut ([`Multiboot2Info::bootloader_name_truncated`]).
pub const BOOTLOADER_NAME_CAPACITY: usize = 256;

/// Tag alignment inside the MBI, and the MBI's own.
const ALIGN: u64 = 8;

/// Bytes before the string in a module tag (header, `mod_start`, `mod_end`), and before the
/// entries in a memory-map tag (header, `entry_size`, `entry_version`).
const MODULE_FIXED: u32 = 16;
const MEMORY_MAP_FIXED: u32 = 16;
const BASIC_MEMINFO_SIZE: u32 = 16;

/// The tag-type name used in messages.
fn tag_name(tag_type: u32) -> &'static str {
    match tag_type {
        TAG_END => "end",
        TAG_CMDLINE => "command line",
        TAG_BOOTLOADER_NAME => "boot loader name",
        TAG_MODULE => "module",
        TAG_BASIC_MEMINFO => "basic meminfo",
        TAG_MEMORY_MAP => "memory map",
        TAG_EFI_MEMORY_MAP => "EFI memory map",
        _ => "unknown",
    }
}

/// What is wrong with one tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TagProblem {
    /// `size` is below the least a tag of this type holds.
    TooSmall {
        /// The tag's size.
        size: u32,
        /// The least size accepted.
        min: u32,
    },
    /// The tag's `size` bytes run past the MBI's `total_size`.
    PastEnd {
        /// The tag's size.
        size: u32,
        /// The MBI's `total_size`.
        total_size: u32,
    },
    /// An end tag whose size is not 8.
    EndTagSize {
        /// The size found.
        size: u32,
    },
    /// A string with no NUL before the tag ends.
    Unterminated,
    /// A memory-map `entry_size` below [`MEMORY_MAP_ENTRY_V0_SIZE`].
    EntrySizeTooSmall {
        /// The `entry_size` found.
        entry_size: u32,
    },
    /// The memory-map entries do not fill the tag exactly.
    PartialEntry {
        /// Bytes after the fixed fields.
        entry_bytes: u32,
        /// The tag's `entry_size`.
        entry_size: u32,
    },
    /// More memory-map entries than this parser holds.
    TooManyMapEntries {
        /// Entries the tag yields: a type-6 tag's entries, a type-17 tag's extents (its
        /// non-empty descriptors, contiguous ones of the same E820 kind merged), 2 for basic
        /// meminfo.
        count: u32,
        /// Entries this parser holds.
        capacity: usize,
    },
    /// More module tags than this parser holds.
    TooManyModules {
        /// Modules this parser holds.
        capacity: usize,
    },
    /// A module whose `mod_end` is below its `mod_start`.
    ModuleEndsBeforeStart {
        /// `mod_start`.
        start: u32,
        /// `mod_end`.
        end: u32,
    },
    /// An EFI memory-map `descriptor_size` below [`EFI_MEMORY_DESCRIPTOR_SIZE`].
    DescriptorSizeTooSmall {
        /// The `descriptor_size` found.
        descriptor_size: u32,
    },
    /// An EFI memory-map `descriptor_size` that is not a multiple of 8 (the UEFI
    /// specification keeps descriptors 8-byte aligned).
    DescriptorSizeMisaligned {
        /// The `descriptor_size` found.
        descriptor_size: u32,
    },
    /// An EFI memory descriptor whose `NumberOfPages` of 4 KiB from `PhysicalStart` pass
    /// 2^64.
    DescriptorWraps {
        /// The descriptor's index.
        index: u32,
        /// Its `PhysicalStart`.
        physical_start: u64,
        /// Its `NumberOfPages`.
        number_of_pages: u64,
    },
    /// A memory-map entry whose `base + length` passes 2^64.
    EntryWraps {
        /// The entry's index.
        index: u32,
        /// Its base.
        base: u64,
        /// Its length.
        length: u64,
    },
}

impl fmt::Display for TagProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagProblem::TooSmall { size, min } => {
                write!(f, "size {size} is below the {min} bytes this tag holds")
            }
            TagProblem::PastEnd { size, total_size } => {
                write!(f, "size {size} runs past the MBI's total_size {total_size}")
            }
            TagProblem::EndTagSize { size } => write!(f, "end tag size is {size}, not 8"),
            TagProblem::Unterminated => f.write_str("string has no NUL within the tag"),
            TagProblem::EntrySizeTooSmall { entry_size } => write!(
                f,
                "entry_size {entry_size} is below {MEMORY_MAP_ENTRY_V0_SIZE}"
            ),
            TagProblem::PartialEntry {
                entry_bytes,
                entry_size,
            } => write!(
                f,
                "{entry_bytes} bytes of entries are not a whole number of {entry_size}-byte entries"
            ),
            TagProblem::TooManyMapEntries { count, capacity } => write!(
                f,
                "{count} memory-map entries, more than the {capacity} supported"
            ),
            TagProblem::TooManyModules { capacity } => {
                write!(f, "more modules than the {capacity} supported")
            }
            TagProblem::ModuleEndsBeforeStart { start, end } => {
                write!(f, "mod_end {end:#x} is below mod_start {start:#x}")
            }
            TagProblem::DescriptorSizeTooSmall { descriptor_size } => write!(
                f,
                "descriptor_size {descriptor_size} is below {EFI_MEMORY_DESCRIPTOR_SIZE}"
            ),
            TagProblem::DescriptorSizeMisaligned { descriptor_size } => write!(
                f,
                "descriptor_size {descriptor_size} is not a multiple of 8"
            ),
            TagProblem::DescriptorWraps {
                index,
                physical_start,
                number_of_pages,
            } => write!(
                f,
                "descriptor {index} at {physical_start:#x} of {number_of_pages:#x} pages wraps past 2^64"
            ),
            TagProblem::EntryWraps {
                index,
                base,
                length,
            } => write!(
                f,
                "entry {index} at {base:#x} of {length:#x} bytes wraps past 2^64"
            ),
        }
    }
}

/// Why the multiboot2 boot information was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Multiboot2Error {
    /// The MBI address is not 8-byte aligned.
    Misaligned {
        /// The MBI address.
        paddr: u64,
    },
    /// Memory cannot serve the MBI (its header, or the qwords covering `total_size` bytes).
    Unreadable {
        /// The MBI address.
        paddr: u64,
        /// Bytes that were to be read.
        len: u64,
        /// What memory reported.
        fault: MemoryFault,
    },
    /// The MBI's bytes would pass 2^64.
    RangeWraps {
        /// The MBI address.
        paddr: u64,
        /// Bytes that were to be read.
        len: u64,
    },
    /// `total_size` has no room for the fixed header and an end tag.
    TotalSizeTooSmall {
        /// The `total_size` found.
        total_size: u32,
    },
    /// The tags run out before an end tag: fewer than 8 bytes left at `offset`.
    MissingEndTag {
        /// Where the next tag would start.
        offset: u64,
        /// The MBI's `total_size`.
        total_size: u32,
    },
    /// A malformed tag.
    Tag {
        /// Its type.
        tag_type: u32,
        /// Its offset from the start of the MBI.
        offset: u32,
        /// What is wrong.
        problem: TagProblem,
    },
    /// Neither a memory-map tag (type 6) with an entry, nor an EFI memory-map tag (type 17)
    /// with a non-empty extent, nor a basic meminfo tag (type 4): nothing to choose a
    /// relocation target from.
    MissingMemoryMap,
}

impl fmt::Display for Multiboot2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Multiboot2Error::Misaligned { paddr } => {
                write!(f, "multiboot2 MBI at {paddr:#x} is not 8-byte aligned")
            }
            Multiboot2Error::Unreadable { paddr, len, fault } => {
                write!(f, "multiboot2 MBI at {paddr:#x} ({len} bytes) is unreadable: {fault}")
            }
            Multiboot2Error::RangeWraps { paddr, len } => {
                write!(f, "multiboot2 MBI at {paddr:#x} of {len} bytes wraps past 2^64")
            }
            Multiboot2Error::TotalSizeTooSmall { total_size } => write!(
                f,
                "multiboot2 MBI total_size {total_size} is below 16 (header and end tag)"
            ),
            Multiboot2Error::MissingEndTag { offset, total_size } => write!(
                f,
                "multiboot2 MBI has no end tag: tags run out at offset {offset:#x} of total_size {total_size}"
            ),
            Multiboot2Error::Tag {
                tag_type,
                offset,
                problem,
            } => write!(
                f,
                "multiboot2 tag type {tag_type} ({}) at MBI offset {offset:#x}: {problem}",
                tag_name(*tag_type)
            ),
            Multiboot2Error::MissingMemoryMap => f.write_str(
                "multiboot2 MBI has no memory map: neither a memory-map tag (type 6) with entries nor basic meminfo (type 4) nor an EFI memory-map tag (type 17) with a non-empty extent",
            ),
        }
    }
}

impl core::error::Error for Multiboot2Error {}

/// Where [`Multiboot2Info::memory_map`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryMapSource {
    /// The memory-map tag (type 6).
    MemoryMapTag {
        /// Bytes per entry.
        entry_size: u32,
        /// The entry version.
        entry_version: u32,
    },
    /// The EFI memory-map tag (type 17), there being no memory-map tag with entries: its
    /// descriptors converted to E820 types and merged into extents as Xen's
    /// `efi_arch_process_memory_map` does.
    EfiMemoryMap {
        /// Bytes per descriptor.
        descriptor_size: u32,
        /// The descriptor version.
        descriptor_version: u32,
        /// Descriptors in the tag (each extent of the map merges one or more).
        descriptors: u32,
    },
    /// The basic meminfo tag (type 4), there being no memory map.
    BasicMeminfo {
        /// KiB of RAM from 0.
        mem_lower_kib: u32,
        /// KiB of RAM from 1 MiB to the first hole.
        mem_upper_kib: u32,
    },
}

impl fmt::Display for MemoryMapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryMapSource::MemoryMapTag {
                entry_size,
                entry_version,
            } => write!(
                f,
                "memory-map tag (entry_size {entry_size}, entry_version {entry_version})"
            ),
            MemoryMapSource::EfiMemoryMap {
                descriptor_size,
                descriptor_version,
                descriptors,
            } => write!(
                f,
                "EFI memory-map tag ({descriptors} descriptors, descriptor_size {descriptor_size}, descriptor_version {descriptor_version})"
            ),
            MemoryMapSource::BasicMeminfo {
                mem_lower_kib,
                mem_upper_kib,
            } => write!(
                f,
                "basic meminfo (mem_lower {mem_lower_kib} KiB, mem_upper {mem_upper_kib} KiB)"
            ),
        }
    }
}

/// What relocation needs from a multiboot2 MBI, copied out of firmware memory.
///
/// `MAP` and `MODS` bound the memory-map entries and modules held; more is a
/// [`TagProblem::TooManyMapEntries`] or [`TagProblem::TooManyModules`]. The MBI itself is not
/// copied: only the map, the module ranges, the command line and the boot loader name are.
#[derive(Clone, Debug)]
pub struct Multiboot2Info<
    const MAP: usize = DEFAULT_MEMMAP_CAPACITY,
    const MODS: usize = DEFAULT_MODULE_CAPACITY,
> {
    mbi: PhysRange,
    memmap: [MemoryRegion; MAP],
    memmap_len: usize,
    memmap_source: MemoryMapSource,
    modules: [BootModule; MODS],
    module_count: usize,
    cmdline_range: PhysRange,
    cmdline: [u8; CMDLINE_CAPACITY],
    cmdline_len: usize,
    cmdline_truncated: bool,
    name_range: PhysRange,
    name: [u8; BOOTLOADER_NAME_CAPACITY],
    name_len: usize,
    name_truncated: bool,
}

/// The MBI's bytes, read through [`PhysMemory`] in aligned qwords after one `check_range`
/// over all of them.
struct Mbi<'m, M: PhysMemory + ?Sized> {
    mem: &'m M,
    paddr: u64,
}

impl<M: PhysMemory + ?Sized> Mbi<'_, M> {
    /// The byte at `offset`, which the caller keeps inside the checked range.
    fn byte(&self, offset: u64) -> u8 {
        let addr = self.paddr + offset;
        (self.mem.read_u64(addr & !7) >> ((addr & 7) * 8)) as u8
    }

    /// The `N` bytes at `offset`, which the caller keeps inside the MBI.
    fn bytes<const N: usize>(&self, offset: u64) -> [u8; N] {
        let mut bytes = [0u8; N];
        for (i, byte) in (0u64..).zip(bytes.iter_mut()) {
            *byte = self.byte(offset + i);
        }
        bytes
    }

    /// The little-endian `u32` at `offset`; the caller keeps its 4 bytes inside the MBI.
    fn u32(&self, offset: u64) -> u32 {
        u32::from_le_bytes(self.bytes(offset))
    }

    /// The little-endian `u64` at `offset`; the caller keeps its 8 bytes inside the MBI.
    fn u64(&self, offset: u64) -> u64 {
        u64::from_le_bytes(self.bytes(offset))
    }

    /// The physical range of `len` bytes at `offset` (inside the MBI, so it cannot wrap).
    fn range(&self, offset: u64, len: u64) -> PhysRange {
        PhysRange::new(self.paddr + offset, self.paddr + offset + len)
    }
}

/// One tag as the walk found it: type, offset and size, all inside the MBI.
#[derive(Clone, Copy)]
struct TagAt {
    tag_type: u32,
    offset: u32,
    size: u32,
}

impl TagAt {
    fn error(&self, problem: TagProblem) -> Multiboot2Error {
        Multiboot2Error::Tag {
            tag_type: self.tag_type,
            offset: self.offset,
            problem,
        }
    }

    fn require_size(&self, min: u32) -> Result<(), Multiboot2Error> {
        if self.size < min {
            return Err(self.error(TagProblem::TooSmall {
                size: self.size,
                min,
            }));
        }
        Ok(())
    }

    /// The NUL-terminated string from `start` (an offset inside the tag) to the tag's end:
    /// its offset in the MBI and its length without the NUL. Its first `out.len()` bytes are
    /// copied into `out` when given; the result says how many.
    fn string<M: PhysMemory + ?Sized>(
        &self,
        mbi: &Mbi<'_, M>,
        start: u32,
        out: Option<&mut [u8]>,
    ) -> Result<TagString, Multiboot2Error> {
        let first = u64::from(self.offset) + u64::from(start);
        let end = u64::from(self.offset) + u64::from(self.size);
        let len = (first..end)
            .position(|offset| mbi.byte(offset) == 0)
            .ok_or(self.error(TagProblem::Unterminated))?;
        let mut copied = 0;
        if let Some(out) = out {
            for (offset, byte) in (first..first + len as u64).zip(out.iter_mut()) {
                *byte = mbi.byte(offset);
                copied += 1;
            }
        }
        Ok(TagString {
            range: mbi.range(first, len as u64 + 1),
            copied,
            truncated: copied < len,
        })
    }
}

/// A string inside a tag as [`TagAt::string`] found it.
struct TagString {
    /// Where it is in memory, NUL included.
    range: PhysRange,
    /// Bytes copied.
    copied: usize,
    /// Only the first `copied` bytes were copied (the caller asked for a copy).
    truncated: bool,
}

impl Multiboot2Info {
    /// Reads and validates the MBI at `ebx` (the register a multiboot2 entry hands over),
    /// with the default capacities ([`DEFAULT_MEMMAP_CAPACITY`],
    /// [`DEFAULT_MODULE_CAPACITY`]), copying the memory map, module ranges, command line and
    /// boot loader name.
    ///
    /// Returns the ~5 KiB `Multiboot2Info` by value: see [`Multiboot2Info::parse_in_place`]
    /// to fill a `static` or caller-provided storage instead.
    ///
    /// # Stack
    /// About 5.6 KiB (5,696 bytes measured): the returned value (4.9 KiB) lives in the
    /// caller's frame, plus [`Multiboot2Info::parse_in_place`]'s 0.7 KiB. (Measured: release build for
    /// `x86_64-unknown-none` over a [`crate::DirectMap`], the `sub $N,%rsp` of the function
    /// and its deepest callees in `objdump -d`.)
    pub fn parse<M: PhysMemory + ?Sized>(mem: &M, ebx: u32) -> Result<Self, Multiboot2Error> {
        Self::parse_with_capacity(mem, ebx)
    }
}

impl<const MAP: usize, const MODS: usize> Multiboot2Info<MAP, MODS> {
    /// The most ranges [`Multiboot2Info::avoid_ranges`] can yield: the MBI, the command line,
    /// the boot loader name, and each module with its string.
    pub const MAX_AVOID_RANGES: usize = 3 + 2 * MODS;

    /// A boot information holding nothing (no map, no modules, no strings), usable in a
    /// `static` as the storage [`Multiboot2Info::parse_in_place`] fills.
    pub const fn empty() -> Self {
        Self {
            mbi: PhysRange::new(0, 0),
            memmap: [EMPTY_REGION; MAP],
            memmap_len: 0,
            memmap_source: EMPTY_SOURCE,
            modules: [BootModule::EMPTY; MODS],
            module_count: 0,
            cmdline_range: PhysRange::new(0, 0),
            cmdline: [0; CMDLINE_CAPACITY],
            cmdline_len: 0,
            cmdline_truncated: false,
            name_range: PhysRange::new(0, 0),
            name: [0; BOOTLOADER_NAME_CAPACITY],
            name_len: 0,
            name_truncated: false,
        }
    }

    /// [`Multiboot2Info::parse`] with the capacities `MAP` and `MODS` of the type asked for.
    ///
    /// # Stack
    /// As [`Multiboot2Info::parse`], with the frame growing by the size of `Self`.
    pub fn parse_with_capacity<M: PhysMemory + ?Sized>(
        mem: &M,
        ebx: u32,
    ) -> Result<Self, Multiboot2Error> {
        let mut info = Self::empty();
        info.parse_in_place(mem, ebx)?;
        Ok(info)
    }

    /// Reads and validates the MBI at `ebx` into `self`, writing each field in place: no
    /// copy of the structure is made on the stack. On error `self` is left as
    /// [`Multiboot2Info::empty`].
    ///
    /// # Stack
    /// About 0.7 KiB (704 bytes measured: release build for `x86_64-unknown-none` over a
    /// [`crate::DirectMap`], the `sub $N,%rsp` and pushes of the function and its deepest
    /// callees in `objdump -d`), whatever `MAP` and `MODS` are.
    pub fn parse_in_place<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        ebx: u32,
    ) -> Result<(), Multiboot2Error> {
        self.clear();
        let read = self.read(mem, u64::from(ebx));
        if read.is_err() {
            self.clear();
        }
        read
    }

    /// Puts `self` back to [`Multiboot2Info::empty`] field by field (no temporary on the
    /// stack).
    fn clear(&mut self) {
        self.mbi = PhysRange::default();
        self.memmap.fill(EMPTY_REGION);
        self.memmap_len = 0;
        self.memmap_source = EMPTY_SOURCE;
        self.modules.fill(BootModule::EMPTY);
        self.module_count = 0;
        self.cmdline_range = PhysRange::default();
        self.cmdline.fill(0);
        self.cmdline_len = 0;
        self.cmdline_truncated = false;
        self.name_range = PhysRange::default();
        self.name.fill(0);
        self.name_len = 0;
        self.name_truncated = false;
    }

    fn read<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        mbi_paddr: u64,
    ) -> Result<(), Multiboot2Error> {
        if !mbi_paddr.is_multiple_of(ALIGN) {
            return Err(Multiboot2Error::Misaligned { paddr: mbi_paddr });
        }
        let total_size = read_total_size(mem, mbi_paddr)?;
        if total_size < 2 * HEADER_SIZE {
            return Err(Multiboot2Error::TotalSizeTooSmall { total_size });
        }
        let len = u64::from(total_size).next_multiple_of(ALIGN);
        let wraps = Multiboot2Error::RangeWraps {
            paddr: mbi_paddr,
            len,
        };
        mbi_paddr.checked_add(len).ok_or(wraps)?;
        mem.check_range(mbi_paddr, len)
            .map_err(|fault| Multiboot2Error::Unreadable {
                paddr: mbi_paddr,
                len,
                fault,
            })?;
        let mbi = Mbi {
            mem,
            paddr: mbi_paddr,
        };
        let info = self;
        info.mbi = mbi.range(0, u64::from(total_size));
        let mut seen_cmdline = false;
        let mut seen_name = false;
        let mut seen_map = false;
        let mut meminfo: Option<TagAt> = None;
        let mut efi_map: Option<TagAt> = None;

        let mut offset = u64::from(HEADER_SIZE);
        loop {
            let left = u64::from(total_size).saturating_sub(offset);
            if left < u64::from(HEADER_SIZE) {
                return Err(Multiboot2Error::MissingEndTag { offset, total_size });
            }
            let tag = TagAt {
                tag_type: mbi.u32(offset),
                // Below total_size, a u32.
                offset: offset as u32,
                size: mbi.u32(offset + 4),
            };
            tag.require_size(HEADER_SIZE)?;
            if u64::from(tag.size) > left {
                return Err(tag.error(TagProblem::PastEnd {
                    size: tag.size,
                    total_size,
                }));
            }
            match tag.tag_type {
                TAG_END => {
                    if tag.size != HEADER_SIZE {
                        return Err(tag.error(TagProblem::EndTagSize { size: tag.size }));
                    }
                    break;
                }
                TAG_CMDLINE if !seen_cmdline => {
                    seen_cmdline = true;
                    let line = tag.string(&mbi, HEADER_SIZE, Some(&mut info.cmdline))?;
                    info.cmdline_range = line.range;
                    info.cmdline_len = line.copied;
                    info.cmdline_truncated = line.truncated;
                }
                TAG_BOOTLOADER_NAME if !seen_name => {
                    seen_name = true;
                    let name = tag.string(&mbi, HEADER_SIZE, Some(&mut info.name))?;
                    info.name_range = name.range;
                    info.name_len = name.copied;
                    info.name_truncated = name.truncated;
                }
                TAG_MODULE => info.read_module(&mbi, tag)?,
                TAG_BASIC_MEMINFO if meminfo.is_none() => {
                    tag.require_size(BASIC_MEMINFO_SIZE)?;
                    meminfo = Some(tag);
                }
                TAG_MEMORY_MAP if !seen_map => {
                    seen_map = true;
                    info.read_memory_map(&mbi, tag)?;
                }
                TAG_EFI_MEMORY_MAP if efi_map.is_none() => efi_map = Some(tag),
                _ => {}
            }
            offset += u64::from(tag.size).next_multiple_of(ALIGN);
        }

        // Tag 17 is read only when no tag 6 gave entries, and basic meminfo only when
        // neither did.
        if let (0, Some(tag)) = (info.memmap_len, efi_map) {
            info.read_efi_memory_map(&mbi, tag)?;
        }
        if info.memmap_len == 0 {
            let tag = meminfo.ok_or(Multiboot2Error::MissingMemoryMap)?;
            info.use_basic_meminfo(&mbi, tag)?;
        }
        Ok(())
    }

    fn read_module<M: PhysMemory + ?Sized>(
        &mut self,
        mbi: &Mbi<'_, M>,
        tag: TagAt,
    ) -> Result<(), Multiboot2Error> {
        tag.require_size(MODULE_FIXED)?;
        let start = mbi.u32(u64::from(tag.offset) + 8);
        let end = mbi.u32(u64::from(tag.offset) + 12);
        if end < start {
            return Err(tag.error(TagProblem::ModuleEndsBeforeStart { start, end }));
        }
        let string = tag.string(mbi, MODULE_FIXED, None)?;
        let slot = self
            .modules
            .get_mut(self.module_count)
            .ok_or(tag.error(TagProblem::TooManyModules { capacity: MODS }))?;
        *slot = BootModule {
            range: PhysRange::new(u64::from(start), u64::from(end)),
            cmdline: string.range,
        };
        self.module_count += 1;
        Ok(())
    }

    fn read_memory_map<M: PhysMemory + ?Sized>(
        &mut self,
        mbi: &Mbi<'_, M>,
        tag: TagAt,
    ) -> Result<(), Multiboot2Error> {
        tag.require_size(MEMORY_MAP_FIXED)?;
        let tag_offset = u64::from(tag.offset);
        let entry_size = mbi.u32(tag_offset + 8);
        let entry_version = mbi.u32(tag_offset + 12);
        if entry_size < MEMORY_MAP_ENTRY_V0_SIZE {
            return Err(tag.error(TagProblem::EntrySizeTooSmall { entry_size }));
        }
        let entry_bytes = tag.size - MEMORY_MAP_FIXED;
        if !entry_bytes.is_multiple_of(entry_size) {
            return Err(tag.error(TagProblem::PartialEntry {
                entry_bytes,
                entry_size,
            }));
        }
        let count = entry_bytes / entry_size;
        if count as usize > MAP {
            return Err(tag.error(TagProblem::TooManyMapEntries {
                count,
                capacity: MAP,
            }));
        }
        for (index, slot) in (0..count).zip(self.memmap.iter_mut()) {
            let entry =
                tag_offset + u64::from(MEMORY_MAP_FIXED) + u64::from(index) * u64::from(entry_size);
            let base = mbi.u64(entry);
            let length = mbi.u64(entry + 8);
            let kind = mbi.u32(entry + 16);
            if base.checked_add(length).is_none() {
                return Err(tag.error(TagProblem::EntryWraps {
                    index,
                    base,
                    length,
                }));
            }
            *slot = MemoryRegion {
                start: base,
                len: length,
                kind,
            };
        }
        self.memmap_len = count as usize;
        self.memmap_source = MemoryMapSource::MemoryMapTag {
            entry_size,
            entry_version,
        };
        Ok(())
    }

    /// Reads the EFI memory map (tag 17): each descriptor converted to an E820 type
    /// ([`efi_to_e820`]), zero-length ones skipped, and one contiguous with the extent
    /// before it and of the same type merged into it, as Xen's `efi_arch_process_memory_map`
    /// does, so `MAP` bounds the extents, not the descriptors (OVMF hands over more than 128
    /// descriptors that merge into far fewer extents). No extent leaves the map empty.
    fn read_efi_memory_map<M: PhysMemory + ?Sized>(
        &mut self,
        mbi: &Mbi<'_, M>,
        tag: TagAt,
    ) -> Result<(), Multiboot2Error> {
        tag.require_size(MEMORY_MAP_FIXED)?;
        let tag_offset = u64::from(tag.offset);
        let descriptor_size = mbi.u32(tag_offset + 8);
        let descriptor_version = mbi.u32(tag_offset + 12);
        if descriptor_size < EFI_MEMORY_DESCRIPTOR_SIZE {
            return Err(tag.error(TagProblem::DescriptorSizeTooSmall { descriptor_size }));
        }
        if !descriptor_size.is_multiple_of(8) {
            return Err(tag.error(TagProblem::DescriptorSizeMisaligned { descriptor_size }));
        }
        let entry_bytes = tag.size - MEMORY_MAP_FIXED;
        if !entry_bytes.is_multiple_of(descriptor_size) {
            return Err(tag.error(TagProblem::PartialEntry {
                entry_bytes,
                entry_size: descriptor_size,
            }));
        }
        let count = entry_bytes / descriptor_size;
        // The extent being grown, and how many extents there are (it included); extents
        // past the capacity are counted, not kept, so the error can say how many there are.
        let mut extent = EMPTY_REGION;
        let mut extents = 0usize;
        for index in 0..count {
            let at = tag_offset
                + u64::from(MEMORY_MAP_FIXED)
                + u64::from(index) * u64::from(descriptor_size);
            let kind = mbi.u32(at);
            let physical_start = mbi.u64(at + 8);
            let number_of_pages = mbi.u64(at + 24);
            let attribute = mbi.u64(at + 32);
            let len = number_of_pages
                .checked_mul(EFI_PAGE_SIZE)
                .filter(|&len| physical_start.checked_add(len).is_some())
                .ok_or(tag.error(TagProblem::DescriptorWraps {
                    index,
                    physical_start,
                    number_of_pages,
                }))?;
            let e820 = efi_to_e820(kind, attribute);
            // Before the first extent, `extent` is EMPTY_REGION, whose kind 0 is no type
            // `efi_to_e820` gives: the first non-empty descriptor always starts an extent.
            if e820 == extent.kind && physical_start == extent.start + extent.len {
                // Cannot wrap: the merged extent ends where this descriptor does.
                extent.len += len;
            } else if len != 0 {
                if let Some(slot) = extents.checked_sub(1).and_then(|i| self.memmap.get_mut(i)) {
                    *slot = extent;
                }
                extent = MemoryRegion {
                    start: physical_start,
                    len,
                    kind: e820,
                };
                extents += 1;
            }
        }
        if extents > MAP {
            return Err(tag.error(TagProblem::TooManyMapEntries {
                count: u32::try_from(extents).unwrap_or(u32::MAX),
                capacity: MAP,
            }));
        }
        // With no extent, nothing is set: the map stays empty and basic meminfo may serve.
        if let Some(slot) = extents.checked_sub(1).and_then(|i| self.memmap.get_mut(i)) {
            *slot = extent;
            self.memmap_len = extents;
            self.memmap_source = MemoryMapSource::EfiMemoryMap {
                descriptor_size,
                descriptor_version,
                descriptors: count,
            };
        }
        Ok(())
    }

    fn use_basic_meminfo<M: PhysMemory + ?Sized>(
        &mut self,
        mbi: &Mbi<'_, M>,
        tag: TagAt,
    ) -> Result<(), Multiboot2Error> {
        let mem_lower_kib = mbi.u32(u64::from(tag.offset) + 8);
        let mem_upper_kib = mbi.u32(u64::from(tag.offset) + 12);
        let regions = [
            MemoryRegion {
                start: 0,
                len: u64::from(mem_lower_kib) * 1024,
                kind: E820_RAM,
            },
            MemoryRegion {
                start: 1 << 20,
                len: u64::from(mem_upper_kib) * 1024,
                kind: E820_RAM,
            },
        ];
        let slots = self.memmap.get_mut(..regions.len()).ok_or(tag.error(
            TagProblem::TooManyMapEntries {
                count: regions.len() as u32,
                capacity: MAP,
            },
        ))?;
        slots.copy_from_slice(&regions);
        self.memmap_len = regions.len();
        self.memmap_source = MemoryMapSource::BasicMeminfo {
            mem_lower_kib,
            mem_upper_kib,
        };
        Ok(())
    }

    /// The memory map, in the loader's order (possibly unsorted, with zero-sized entries),
    /// as [`crate::select::select_target`] takes it.
    pub fn memory_map(&self) -> &[MemoryRegion] {
        self.memmap.get(..self.memmap_len).unwrap_or(&[])
    }

    /// Which tag the memory map came from.
    pub fn memory_map_source(&self) -> MemoryMapSource {
        self.memmap_source
    }

    /// The boot modules, in tag order; each command line is its string inside the MBI.
    pub fn modules(&self) -> &[BootModule] {
        self.modules.get(..self.module_count).unwrap_or(&[])
    }

    /// The copy of the kernel command line without its NUL (empty when absent): the whole
    /// line, or its first [`CMDLINE_CAPACITY`] bytes when
    /// [`Multiboot2Info::cmdline_truncated`].
    pub fn cmdline(&self) -> &[u8] {
        self.cmdline.get(..self.cmdline_len).unwrap_or(&[])
    }

    /// True when the line was longer than [`CMDLINE_CAPACITY`] and
    /// [`Multiboot2Info::cmdline`] holds only its start. The line was accepted whole;
    /// [`Multiboot2Info::cmdline_range`] is all of it.
    pub fn cmdline_truncated(&self) -> bool {
        self.cmdline_truncated
    }

    /// Where the whole command line is (inside the MBI), NUL included (empty when absent).
    pub fn cmdline_range(&self) -> PhysRange {
        self.cmdline_range
    }

    /// True when the whole command line holds `word` as a whitespace-separated token: the
    /// copy when the line fits, else the line read again through `mem` (see
    /// [`LoaderInfo::cmdline_has_word`]).
    pub fn cmdline_has_word<M: PhysMemory + ?Sized>(&self, mem: &M, word: &str) -> bool {
        LoaderInfo::cmdline_has_word(self, mem, word)
    }

    /// The copy of the boot loader's name without its NUL (empty when absent): the whole
    /// name, or its first [`BOOTLOADER_NAME_CAPACITY`] bytes when
    /// [`Multiboot2Info::bootloader_name_truncated`].
    pub fn bootloader_name(&self) -> &[u8] {
        self.name.get(..self.name_len).unwrap_or(&[])
    }

    /// True when the boot loader's name was longer than [`BOOTLOADER_NAME_CAPACITY`].
    pub fn bootloader_name_truncated(&self) -> bool {
        self.name_truncated
    }

    /// Where the MBI is: `total_size` bytes from the address parsed.
    pub fn mbi_range(&self) -> PhysRange {
        self.mbi
    }

    /// Every range of boot data a relocation target must not overlap: the MBI, the command
    /// line, the boot loader name, each module and each module's string. The strings lie
    /// inside the MBI; they are named anyway so the list reads like PVH's. Empty ranges
    /// (absent pieces, empty modules) are left out.
    pub fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        [self.mbi, self.cmdline_range, self.name_range]
            .into_iter()
            .chain(
                self.modules()
                    .iter()
                    .flat_map(|m| [m.range, m.cmdline].into_iter()),
            )
            .filter(|r| !r.is_empty())
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

    fn cmdline_truncated(&self) -> bool {
        self.cmdline_truncated
    }

    fn cmdline_range(&self) -> PhysRange {
        self.cmdline_range
    }

    fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        Multiboot2Info::avoid_ranges(self)
    }
}

/// EFI's page size: `NumberOfPages` counts these.
const EFI_PAGE_SIZE: u64 = 4096;

/// `EFI_MEMORY_TYPE`s that [`efi_to_e820`] tells apart (UEFI specification, `AllocatePages`).
const EFI_LOADER_CODE: u32 = 1;
const EFI_LOADER_DATA: u32 = 2;
const EFI_BOOT_SERVICES_CODE: u32 = 3;
const EFI_BOOT_SERVICES_DATA: u32 = 4;
const EFI_CONVENTIONAL_MEMORY: u32 = 7;
const EFI_UNUSABLE_MEMORY: u32 = 8;
const EFI_ACPI_RECLAIM_MEMORY: u32 = 9;
const EFI_ACPI_MEMORY_NVS: u32 = 10;

/// `EFI_MEMORY_WB`: the range supports write-back caching.
pub const EFI_MEMORY_WB: u64 = 0x8;
/// `EFI_MEMORY_RUNTIME`: the firmware's runtime services need the range.
pub const EFI_MEMORY_RUNTIME: u64 = 1 << 63;

/// E820 types besides RAM ([`E820_RAM`]), as Xen's `e820.h` numbers them.
const E820_RESERVED: u32 = 2;
const E820_ACPI: u32 = 3;
const E820_NVS: u32 = 4;
const E820_UNUSABLE: u32 = 5;

/// The E820 type of an EFI memory descriptor, as Xen's `efi_arch_process_memory_map`
/// (`xen/arch/x86/efi/efi-boot.h`) assigns it without `-mapbs`: boot-services code and
/// data, conventional memory and loader code and data are RAM when write-back capable and
/// not needed at runtime (reserved when needed at runtime, unusable without write-back);
/// unusable memory is unusable, ACPI reclaim is ACPI, ACPI NVS is NVS, and every other type
/// (reserved, runtime services, MMIO, PAL code, persistent memory, unknown) is reserved.
pub fn efi_to_e820(efi_type: u32, attribute: u64) -> u32 {
    match efi_type {
        EFI_LOADER_CODE
        | EFI_LOADER_DATA
        | EFI_BOOT_SERVICES_CODE
        | EFI_BOOT_SERVICES_DATA
        | EFI_CONVENTIONAL_MEMORY => {
            if attribute & EFI_MEMORY_RUNTIME != 0 {
                E820_RESERVED
            } else if attribute & EFI_MEMORY_WB != 0 {
                E820_RAM
            } else {
                E820_UNUSABLE
            }
        }
        EFI_UNUSABLE_MEMORY => E820_UNUSABLE,
        EFI_ACPI_RECLAIM_MEMORY => E820_ACPI,
        EFI_ACPI_MEMORY_NVS => E820_NVS,
        _ => E820_RESERVED,
    }
}

/// A memory-map slot not yet filled.
const EMPTY_REGION: MemoryRegion = MemoryRegion {
    start: 0,
    len: 0,
    kind: 0,
};

/// The source [`Multiboot2Info::empty`] names: basic meminfo of nothing.
const EMPTY_SOURCE: MemoryMapSource = MemoryMapSource::BasicMeminfo {
    mem_lower_kib: 0,
    mem_upper_kib: 0,
};

/// Reads `total_size`, the MBI's first `u32`, checking its qword first.
fn read_total_size<M: PhysMemory + ?Sized>(mem: &M, paddr: u64) -> Result<u32, Multiboot2Error> {
    let len = u64::from(HEADER_SIZE);
    paddr
        .checked_add(len)
        .ok_or(Multiboot2Error::RangeWraps { paddr, len })?;
    mem.check_range(paddr, len)
        .map_err(|fault| Multiboot2Error::Unreadable { paddr, len, fault })?;
    // Little-endian: the low half of the aligned qword is `total_size`.
    Ok(mem.read_u64(paddr) as u32)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::boot::LoaderInfo;
    use crate::hvm::BootInfo;
    use crate::phys::DirectMap;
    use crate::select::{select_target, TargetRequest};
    use crate::testing::{MbiWriter, PhysWriter, PvhModule, PvhStartInfo};
    use ::multiboot2::{
        BasicMemoryInfoTag, BootInformation, BootInformationHeader, BootLoaderNameTag, Builder,
        CommandLineTag, MaybeDynSized, MemoryArea, MemoryAreaType, MemoryMapTag, ModuleTag,
    };
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    /// Where the tests put the MBI, and how much memory there is (from physical 0).
    const AT: u64 = 0x2000;
    const MEMORY: usize = 0x3000;

    /// A little-endian byte image of low memory, starting at physical 0.
    struct Blob {
        words: Vec<u64>,
    }

    impl Blob {
        fn new() -> Self {
            Self {
                words: vec![0; MEMORY / 8],
            }
        }
        fn with_mbi(mbi: &[u8]) -> Self {
            let mut blob = Self::new();
            blob.put(AT, mbi);
            blob
        }
        fn put(&mut self, at: u64, data: &[u8]) {
            PhysWriter::new(&mut self.words, 0)
                .write_bytes(at, data)
                .unwrap();
        }
        fn words(&self) -> Vec<u64> {
            self.words.clone()
        }
        fn parse_with<const MAP: usize, const MODS: usize>(
            &self,
            at: u64,
        ) -> Result<Multiboot2Info<MAP, MODS>, Multiboot2Error> {
            let mut words = self.words();
            let mem = ReadOnly::new(DirectMap::from_slice(&mut words, 0));
            Multiboot2Info::parse_with_capacity(&mem, u32::try_from(at).unwrap())
        }
        fn parse(&self) -> Result<Multiboot2Info, Multiboot2Error> {
            self.parse_with(AT)
        }
    }

    /// Memory as the parser may use it: reads only (a write panics), and a bounded number
    /// of them. The bound, 16 qword reads per byte of memory, is far above what a walk needs
    /// (it reads each MBI byte a few times), so a walk that stops making progress fails
    /// the test at once instead of hanging it.
    struct ReadOnly<'m> {
        mem: DirectMap<'m>,
        reads_left: core::cell::Cell<u64>,
    }

    impl<'m> ReadOnly<'m> {
        fn new(mem: DirectMap<'m>) -> Self {
            let budget = 16 * mem.window().len();
            Self {
                mem,
                reads_left: core::cell::Cell::new(budget),
            }
        }
    }

    impl PhysMemory for ReadOnly<'_> {
        fn check_range(&self, start: u64, len: u64) -> Result<(), MemoryFault> {
            self.mem.check_range(start, len)
        }
        fn read_u64(&self, addr: u64) -> u64 {
            let left = self.reads_left.get();
            assert!(left > 0, "the parser reads without end (at {addr:#x})");
            self.reads_left.set(left - 1);
            self.mem.read_u64(addr)
        }
        fn write_u64(&mut self, addr: u64, _: u64) {
            panic!("the parser wrote at {addr:#x}");
        }
        fn copy(&mut self, src: u64, dst: u64, _: u64) {
            panic!("the parser copied {src:#x} to {dst:#x}");
        }
    }

    fn parse(mbi: &[u8]) -> Result<Multiboot2Info, Multiboot2Error> {
        Blob::with_mbi(mbi).parse()
    }

    /// An MBI written tag by tag, for the malformed cases the crate's builder cannot make.
    #[derive(Default)]
    struct RawMbi {
        bytes: Vec<u8>,
        /// Offset of each tag pushed.
        offsets: Vec<usize>,
    }

    impl RawMbi {
        fn new() -> Self {
            Self {
                bytes: vec![0; 8],
                offsets: Vec::new(),
            }
        }
        /// A tag whose size field is `8 + payload.len()`, padded to 8.
        fn tag(self, tag_type: u32, payload: &[u8]) -> Self {
            let size = 8 + payload.len() as u32;
            self.tag_sized(tag_type, size, payload)
        }
        /// A tag with an explicit size field (which may lie), then its payload padded to 8.
        fn tag_sized(mut self, tag_type: u32, size: u32, payload: &[u8]) -> Self {
            self.offsets.push(self.bytes.len());
            self.bytes.extend_from_slice(&tag_type.to_le_bytes());
            self.bytes.extend_from_slice(&size.to_le_bytes());
            self.bytes.extend_from_slice(payload);
            self.bytes.resize(self.bytes.len().next_multiple_of(8), 0);
            self
        }
        fn cmdline(self, s: &[u8]) -> Self {
            self.tag(TAG_CMDLINE, &[s, b"\0"].concat())
        }
        fn module(self, start: u32, end: u32, s: &[u8]) -> Self {
            let payload = [&start.to_le_bytes()[..], &end.to_le_bytes(), s, b"\0"].concat();
            self.tag(TAG_MODULE, &payload)
        }
        fn meminfo(self, lower: u32, upper: u32) -> Self {
            self.tag(
                TAG_BASIC_MEMINFO,
                &[lower.to_le_bytes(), upper.to_le_bytes()].concat(),
            )
        }
        /// A memory map of `entry_size`-byte entries (extra bytes filled with 0xee).
        fn map(self, entry_size: u32, version: u32, entries: &[(u64, u64, u32)]) -> Self {
            let mut payload = [entry_size.to_le_bytes(), version.to_le_bytes()].concat();
            for &(base, len, kind) in entries {
                let mut entry = vec![0xee; entry_size as usize];
                entry[..8].copy_from_slice(&base.to_le_bytes());
                entry[8..16].copy_from_slice(&len.to_le_bytes());
                entry[16..20].copy_from_slice(&kind.to_le_bytes());
                entry[20..24].copy_from_slice(&0u32.to_le_bytes());
                payload.extend_from_slice(&entry);
            }
            self.tag(TAG_MEMORY_MAP, &payload)
        }
        fn end(self) -> Self {
            self.tag(TAG_END, &[])
        }
        /// The bytes with `total_size` set to their length.
        fn done(mut self) -> Vec<u8> {
            let total = self.bytes.len() as u32;
            self.bytes[..4].copy_from_slice(&total.to_le_bytes());
            self.bytes
        }
        fn offset(&self, tag_index: usize) -> u32 {
            self.offsets[tag_index] as u32
        }
    }

    /// QEMU/SeaBIOS's E820 map for `-m 3G` (PCI hole from 3 GiB), as GRUB passes it on.
    const QEMU_3G: [(u64, u64, u32); 6] = [
        (0, 0x9fc00, 1),
        (0x9fc00, 0x400, 2),
        (0xf0000, 0x10000, 2),
        (0x100000, 0xbfee0000, 1),
        (0xbffe0000, 0x20000, 2),
        (0xfffc0000, 0x40000, 2),
    ];

    fn areas(map: &[(u64, u64, u32)]) -> Vec<MemoryArea> {
        map.iter()
            .map(|&(base, len, kind)| MemoryArea::new(base, len, MemoryAreaType::from(kind)))
            .collect()
    }

    fn regions(map: &[(u64, u64, u32)]) -> Vec<MemoryRegion> {
        map.iter()
            .map(|&(start, len, kind)| MemoryRegion { start, len, kind })
            .collect()
    }

    /// The two modules the GRUB tests load, high in RAM as GRUB places them.
    const MODULES: [(u32, u32, &str); 2] = [
        (0xbfc1_0000, 0xbfc1_1234, "initrd"),
        (0xbfe0_0000, 0xbfe0_0010, ""),
    ];

    /// A GRUB-like MBI from the crate's builder: command line, name, two modules, basic
    /// meminfo and the memory map.
    fn grub_like() -> Vec<u8> {
        let mut builder = Builder::new()
            .cmdline(CommandLineTag::new("console=com1 hold"))
            .bootloader(BootLoaderNameTag::new("GRUB 2.06-13+deb12u1"));
        for (start, end, s) in MODULES {
            builder = builder.add_module(ModuleTag::new(start, end, s));
        }
        builder
            .meminfo(BasicMemoryInfoTag::new(639, 3_144_576))
            .mmap(MemoryMapTag::new(&areas(&QEMU_3G)))
            .build()
            .as_bytes()
            .to_vec()
    }

    /// `empty()` is a `const fn`: the storage can be a `static`.
    static EMPTY_INFO: Multiboot2Info = Multiboot2Info::empty();

    #[test]
    fn parse_in_place_matches_parse_and_is_emptied_by_an_error() {
        let mbi = grub_like();
        let by_value = parse(&mbi).unwrap();
        let blob = Blob::with_mbi(&mbi);
        let mut words = blob.words();
        let mem = DirectMap::from_slice(&mut words, 0);
        let mut in_place = std::boxed::Box::new(EMPTY_INFO.clone());
        in_place.parse_in_place(&mem, AT as u32).unwrap();
        assert_eq!(in_place.memory_map(), by_value.memory_map());
        assert_eq!(in_place.modules(), by_value.modules());
        assert_eq!(in_place.cmdline(), by_value.cmdline());
        assert_eq!(in_place.bootloader_name(), by_value.bootloader_name());
        assert!(in_place.avoid_ranges().eq(by_value.avoid_ranges()));
        // An MBI whose end tag is missing fails after the command line, modules and map were
        // read: none of it stays.
        let broken = Blob::with_mbi(&RawMbi::new().cmdline(b"x").map(24, 0, &SMALL_MAP).done());
        let mut words = broken.words();
        let mem = DirectMap::from_slice(&mut words, 0);
        assert!(matches!(
            in_place.parse_in_place(&mem, AT as u32),
            Err(Multiboot2Error::MissingEndTag { .. })
        ));
        assert!(in_place.memory_map().is_empty());
        assert!(in_place.modules().is_empty());
        assert!(in_place.cmdline().is_empty());
        assert!(in_place.bootloader_name().is_empty());
        assert_eq!(in_place.avoid_ranges().count(), 0);
    }

    /// `testing::MbiWriter` lays out byte for byte what the crate's builder does.
    #[test]
    fn the_mbi_writer_agrees_with_the_crate_builder() {
        let theirs = grub_like();
        let map = regions(&QEMU_3G);
        let mut memory = vec![0u64; 0x100];
        let mut writer = PhysWriter::new(&mut memory, AT);
        let mut mbi = MbiWriter::begin(&mut writer);
        mbi.cmdline(b"console=com1 hold")
            .bootloader_name(b"GRUB 2.06-13+deb12u1");
        for (start, end, string) in MODULES {
            mbi.module(start, end, string.as_bytes());
        }
        let ebx = mbi
            .basic_meminfo(639, 3_144_576)
            .memory_map(24, 0, &map)
            .end()
            .unwrap();
        assert_eq!(u64::from(ebx), AT);
        let ours: Vec<u8> = memory.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(&ours[..theirs.len()], &theirs[..]);
    }

    #[test]
    fn grub_like_mbi_built_by_the_crate() {
        let mbi = grub_like();
        let info = parse(&mbi).unwrap();
        assert_eq!(info.memory_map(), regions(&QEMU_3G));
        assert_eq!(
            info.memory_map_source(),
            MemoryMapSource::MemoryMapTag {
                entry_size: 24,
                entry_version: 0
            }
        );
        assert_eq!(info.cmdline(), b"console=com1 hold");
        let blob = Blob::with_mbi(&mbi);
        let mut words = blob.words();
        let mem = DirectMap::from_slice(&mut words, 0);
        assert!(info.cmdline_has_word(&mem, "hold"));
        assert!(!info.cmdline_has_word(&mem, "hol"));
        assert_eq!(info.bootloader_name(), b"GRUB 2.06-13+deb12u1");
        assert_eq!(info.mbi_range(), PhysRange::new(AT, AT + mbi.len() as u64));
        let modules: Vec<_> = info.modules().iter().map(|m| m.range).collect();
        assert_eq!(
            modules,
            [
                PhysRange::new(0xbfc1_0000, 0xbfc1_1234),
                PhysRange::new(0xbfe0_0000, 0xbfe0_0010)
            ]
        );
        // Strings are where the bytes are: check each against the MBI.
        let at = |r: PhysRange| &mbi[(r.start - AT) as usize..(r.end - AT) as usize];
        assert_eq!(at(info.modules()[0].cmdline), b"initrd\0");
        assert_eq!(at(info.modules()[1].cmdline), b"\0");
        let avoid: Vec<_> = info.avoid_ranges().collect();
        assert_eq!(avoid.len(), 7, "{avoid:?}");
        assert_eq!(avoid[0], info.mbi_range());
        assert_eq!(at(avoid[1]), b"console=com1 hold\0");
        assert_eq!(at(avoid[2]), b"GRUB 2.06-13+deb12u1\0");
        assert!(avoid.len() <= Multiboot2Info::<128, 16>::MAX_AVOID_RANGES);
    }

    /// Runs `read` on the crate's own reader of `mbi` (copied to an 8-aligned buffer).
    fn with_crate_reader<R>(mbi: &[u8], read: impl FnOnce(BootInformation<'_>) -> R) -> R {
        let mut aligned = vec![0u64; mbi.len().div_ceil(8)];
        for (word, chunk) in aligned.iter_mut().zip(mbi.chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_le_bytes(bytes);
        }
        // SAFETY: `aligned` is 8-aligned, holds the whole MBI (its total_size is its length)
        // and outlives the reader, which `read` cannot keep.
        let theirs =
            unsafe { BootInformation::load(aligned.as_ptr().cast::<BootInformationHeader>()) }
                .unwrap();
        read(theirs)
    }

    /// The crate's own reader of the same bytes (well-formed input only).
    #[test]
    fn agrees_with_the_crate_reader() {
        let mbi = grub_like();
        with_crate_reader(&mbi, |theirs| agrees(&mbi, &theirs));
    }

    fn agrees(mbi: &[u8], theirs: &BootInformation<'_>) {
        let ours = parse(mbi).unwrap();
        let their_map: Vec<_> = theirs
            .memory_map_tag()
            .unwrap()
            .memory_areas()
            .iter()
            .map(|a| MemoryRegion {
                start: a.start_address(),
                len: a.size(),
                kind: u32::from(a.typ()),
            })
            .collect();
        assert_eq!(ours.memory_map(), their_map);
        let their_modules: Vec<_> = theirs
            .module_tags()
            .map(|m| {
                (
                    PhysRange::new(m.start_address().into(), m.end_address().into()),
                    m.cmdline().unwrap().len() as u64 + 1,
                )
            })
            .collect();
        let our_modules: Vec<_> = ours
            .modules()
            .iter()
            .map(|m| (m.range, m.cmdline.len()))
            .collect();
        assert_eq!(our_modules, their_modules);
        assert_eq!(
            ours.cmdline(),
            theirs
                .command_line_tag()
                .unwrap()
                .cmdline()
                .unwrap()
                .as_bytes()
        );
        assert_eq!(
            ours.bootloader_name(),
            theirs
                .boot_loader_name_tag()
                .unwrap()
                .name()
                .unwrap()
                .as_bytes()
        );
        assert_eq!(ours.mbi_range().len(), theirs.total_size() as u64);
    }

    /// One target-selection path serves both entries: the same memory map and modules, once
    /// as an MBI and once as PVH boot data, give the same pick.
    #[test]
    fn same_target_as_the_equivalent_pvh_boot_data() {
        let mut blob = Blob::with_mbi(&grub_like());
        // The PVH equivalent at 0x1000 (start info, map, module list, command line).
        let si = 0x1000;
        let map = regions(&QEMU_3G);
        let modules = MODULES.map(|(start, end, _)| PvhModule {
            paddr: start.into(),
            size: (end - start).into(),
            cmdline: None,
        });
        let mut writer = PhysWriter::new(&mut blob.words, 0);
        writer.set_cursor(si);
        let pvh_ebx = PvhStartInfo {
            modules: &modules,
            cmdline: Some(b"console=com1 hold"),
            ..PvhStartInfo::new(&map)
        }
        .write(&mut writer)
        .unwrap();
        assert!(writer.cursor() < AT, "the PVH data ran into the MBI");
        let mut words = blob.words();
        let mem = DirectMap::from_slice(&mut words, 0);
        let pvh = BootInfo::parse(&mem, pvh_ebx).unwrap();
        let mb2 = Multiboot2Info::parse(&mem, AT as u32).unwrap();
        assert_eq!(pvh.memory_map(), mb2.memory_map());

        // The stub's 2 MiB image at 2 MiB, as the boot tests run it.
        let image = PhysRange::new(0x20_0000, 0x22_a000);
        fn pick<B: LoaderInfo>(boot: &B, image: PhysRange) -> u64 {
            let avoid: Vec<_> = core::iter::once(image).chain(boot.avoid_ranges()).collect();
            select_target(boot.memory_map(), &TargetRequest::new(image.len(), &avoid))
                .unwrap()
                .as_u64()
        }
        let from_mb2 = pick(&mb2, image);
        assert_eq!(from_mb2, pick(&pvh, image));
        // The first module sits in the highest slot, so the pick is the one below it.
        assert_eq!(from_mb2, 0xbfa0_0000);
        let no_modules = Builder::new()
            .mmap(MemoryMapTag::new(&areas(&QEMU_3G)))
            .build()
            .as_bytes()
            .to_vec();
        assert_eq!(pick(&parse(&no_modules).unwrap(), image), 0xbfc0_0000);
    }

    fn tag_error(err: Multiboot2Error) -> (u32, u32, TagProblem) {
        match err {
            Multiboot2Error::Tag {
                tag_type,
                offset,
                problem,
            } => (tag_type, offset, problem),
            other => panic!("expected a tag error, got {other:?}"),
        }
    }

    const SMALL_MAP: [(u64, u64, u32); 2] = [(0, 0x9fc00, 1), (0x100000, 0x7f00000, 1)];

    #[test]
    fn memory_map_honours_entry_size_and_accepts_later_versions() {
        // 40-byte entries of version 1: the extra 16 bytes of each (0xee) are skipped.
        let map = [
            (0, 0x9fc00, 1),
            (0x100000, 0x7f00000, 1),
            (0xfffc0000, 0x40000, 2),
        ];
        let info = parse(&RawMbi::new().map(40, 1, &map).end().done()).unwrap();
        assert_eq!(info.memory_map(), regions(&map));
        assert_eq!(
            info.memory_map_source(),
            MemoryMapSource::MemoryMapTag {
                entry_size: 40,
                entry_version: 1
            }
        );
        // An entry_size that is not a multiple of 8 still steps entry by entry.
        let info = parse(&RawMbi::new().map(28, 0, &map).end().done()).unwrap();
        assert_eq!(info.memory_map(), regions(&map));
    }

    #[test]
    fn memory_map_entry_size_below_24_and_partial_entries_are_rejected() {
        for entry_size in [0u32, 8, 23] {
            // The payload is the fixed fields only: no entry of that size is read.
            let mbi = RawMbi::new()
                .tag(TAG_MEMORY_MAP, &[entry_size.to_le_bytes(), [0; 4]].concat())
                .end();
            let offset = mbi.offset(0);
            let err = parse(&mbi.done()).unwrap_err();
            assert_eq!(
                err,
                Multiboot2Error::Tag {
                    tag_type: TAG_MEMORY_MAP,
                    offset,
                    problem: TagProblem::EntrySizeTooSmall { entry_size }
                }
            );
        }
        // Two 24-byte entries and 8 stray bytes.
        let mut payload = [24u32.to_le_bytes(), [0; 4]].concat();
        payload.extend_from_slice(&[0x11; 56]);
        let err = parse(&RawMbi::new().tag(TAG_MEMORY_MAP, &payload).end().done()).unwrap_err();
        assert_eq!(
            tag_error(err).2,
            TagProblem::PartialEntry {
                entry_bytes: 56,
                entry_size: 24
            }
        );
        // Too small for entry_size and entry_version.
        let err = parse(&RawMbi::new().tag(TAG_MEMORY_MAP, &[0; 4]).end().done()).unwrap_err();
        assert_eq!(tag_error(err).2, TagProblem::TooSmall { size: 12, min: 16 });
    }

    #[test]
    fn memory_map_entry_that_wraps_is_rejected() {
        let map = [(0, 0x9fc00, 1), (u64::MAX - 0xfff, 0x1000, 1)];
        let err = parse(&RawMbi::new().map(24, 0, &map).end().done()).unwrap_err();
        assert_eq!(
            tag_error(err).2,
            TagProblem::EntryWraps {
                index: 1,
                base: u64::MAX - 0xfff,
                length: 0x1000
            }
        );
        // Ending just below 2^64 does not wrap (as for PVH, an end of 2^64 itself does).
        let map = [(u64::MAX - 0xfff, 0xfff, 2)];
        assert!(parse(&RawMbi::new().map(24, 0, &map).end().done()).is_ok());
    }

    #[test]
    fn capacities_bound_entries_and_modules() {
        let map = [(0, 0x1000, 1); 5];
        let blob = Blob::with_mbi(&RawMbi::new().map(24, 0, &map).end().done());
        assert_eq!(
            tag_error(blob.parse_with::<4, 1>(AT).unwrap_err()).2,
            TagProblem::TooManyMapEntries {
                count: 5,
                capacity: 4
            }
        );
        assert_eq!(blob.parse_with::<5, 1>(AT).unwrap().memory_map().len(), 5);
        let mbi = RawMbi::new()
            .module(0x100000, 0x101000, b"a")
            .module(0x200000, 0x201000, b"b")
            .map(24, 0, &SMALL_MAP)
            .end();
        let second = mbi.offset(1);
        let blob = Blob::with_mbi(&mbi.done());
        assert_eq!(
            blob.parse_with::<4, 1>(AT).unwrap_err(),
            Multiboot2Error::Tag {
                tag_type: TAG_MODULE,
                offset: second,
                problem: TagProblem::TooManyModules { capacity: 1 }
            }
        );
        assert_eq!(blob.parse_with::<4, 2>(AT).unwrap().modules().len(), 2);
        // Basic meminfo makes two entries.
        let blob = Blob::with_mbi(&RawMbi::new().meminfo(639, 0x1000).end().done());
        assert!(matches!(
            tag_error(blob.parse_with::<1, 1>(AT).unwrap_err()).2,
            TagProblem::TooManyMapEntries {
                count: 2,
                capacity: 1
            }
        ));
    }

    #[test]
    fn basic_meminfo_only_when_there_is_no_map() {
        // Both: the map wins, wherever meminfo comes.
        let info = parse(
            &RawMbi::new()
                .meminfo(639, 0x1000)
                .map(24, 0, &SMALL_MAP)
                .end()
                .done(),
        )
        .unwrap();
        assert_eq!(info.memory_map(), regions(&SMALL_MAP));
        let info = parse(
            &RawMbi::new()
                .map(24, 0, &SMALL_MAP)
                .meminfo(639, 0x1000)
                .end()
                .done(),
        )
        .unwrap();
        assert_eq!(info.memory_map(), regions(&SMALL_MAP));
        // Meminfo only: [0, 639 KiB) and [1 MiB, 1 MiB + 127 MiB).
        let want = [(0, 639 * 1024, 1), (0x100000, 127 << 20, 1)];
        let info = parse(&RawMbi::new().meminfo(639, 127 * 1024).end().done()).unwrap();
        assert_eq!(info.memory_map(), regions(&want));
        assert_eq!(
            info.memory_map_source().to_string(),
            "basic meminfo (mem_lower 639 KiB, mem_upper 130048 KiB)"
        );
        assert_eq!(
            info.memory_map_source(),
            MemoryMapSource::BasicMeminfo {
                mem_lower_kib: 639,
                mem_upper_kib: 127 * 1024
            }
        );
        // A map tag without entries is no map: meminfo serves.
        let info = parse(
            &RawMbi::new()
                .map(24, 0, &[])
                .meminfo(639, 127 * 1024)
                .end()
                .done(),
        )
        .unwrap();
        assert_eq!(info.memory_map(), regions(&want));
        // A meminfo tag too small for its two fields.
        let err = parse(&RawMbi::new().tag(TAG_BASIC_MEMINFO, &[0; 4]).end().done()).unwrap_err();
        assert_eq!(
            tag_error(err),
            (
                TAG_BASIC_MEMINFO,
                8,
                TagProblem::TooSmall { size: 12, min: 16 }
            )
        );
    }

    #[test]
    fn missing_memory_map_is_its_own_error() {
        let err = parse(&RawMbi::new().cmdline(b"hold").end().done()).unwrap_err();
        assert_eq!(err, Multiboot2Error::MissingMemoryMap);
        let text = err.to_string();
        assert!(
            text.contains("type 6") && text.contains("type 4") && text.contains("type 17"),
            "{text}"
        );
        // An empty map and no meminfo.
        let err = parse(&RawMbi::new().map(24, 0, &[]).end().done()).unwrap_err();
        assert_eq!(err, Multiboot2Error::MissingMemoryMap);
    }

    #[test]
    fn unknown_tags_are_skipped_by_their_padded_size() {
        // Boot device (5, 20 bytes), an odd-sized custom tag and an image load base (21):
        // each is skipped by its size rounded up to 8. Misreading the padding would land
        // inside the 0x5a bytes, which parse as a tag of type and size 0x5a5a5a5a.
        let mbi = RawMbi::new()
            .tag(5, &[0x5a; 12])
            .tag(0x1337, &[0x5a; 5])
            .tag(21, &[0x5a; 4])
            .cmdline(b"after")
            .map(24, 0, &SMALL_MAP)
            .end()
            .done();
        let info = parse(&mbi).unwrap();
        assert_eq!(info.cmdline(), b"after");
        assert_eq!(info.memory_map(), regions(&SMALL_MAP));
    }

    #[test]
    fn later_tags_of_a_kind_read_once_are_skipped() {
        let mbi = RawMbi::new()
            .cmdline(b"first")
            .map(24, 0, &SMALL_MAP)
            .cmdline(b"second")
            .tag(TAG_BOOTLOADER_NAME, b"GRUB\0")
            .tag(TAG_BOOTLOADER_NAME, b"other\0")
            // A second map, malformed: never read.
            .tag(TAG_MEMORY_MAP, &[0; 4])
            .end()
            .done();
        let info = parse(&mbi).unwrap();
        assert_eq!(info.cmdline(), b"first");
        assert_eq!(info.bootloader_name(), b"GRUB");
        assert_eq!(info.memory_map(), regions(&SMALL_MAP));
        // Every module tag is read.
        let mbi = RawMbi::new()
            .module(0x100000, 0x100000, b"empty")
            .module(0x200000, 0x200800, b"")
            .map(24, 0, &SMALL_MAP)
            .end()
            .done();
        let info = parse(&mbi).unwrap();
        assert_eq!(info.modules().len(), 2);
        // The empty module is left out of the avoid list; its string is not.
        let avoid: Vec<_> = info.avoid_ranges().collect();
        assert!(!avoid.contains(&PhysRange::new(0x100000, 0x100000)));
        assert!(avoid.contains(&PhysRange::new(0x200000, 0x200800)));
        assert_eq!(avoid.len(), 4, "{avoid:?}");
    }

    #[test]
    fn walk_stops_at_the_end_tag() {
        // Garbage after the end tag, inside total_size, is not read.
        let mut mbi = RawMbi::new()
            .map(24, 0, &SMALL_MAP)
            .end()
            .tag(0xbad, &[0xff; 16]);
        mbi.bytes.extend_from_slice(&[0xff; 8]);
        let info = parse(&mbi.done()).unwrap();
        assert_eq!(info.memory_map(), regions(&SMALL_MAP));
        // No end tag: the tags run out.
        let mbi = RawMbi::new().map(24, 0, &SMALL_MAP).done();
        let total = mbi.len() as u32;
        assert_eq!(
            parse(&mbi).unwrap_err(),
            Multiboot2Error::MissingEndTag {
                offset: u64::from(total),
                total_size: total
            }
        );
        // total_size ending 4 bytes into where the next tag would be.
        let mut mbi = RawMbi::new().map(24, 0, &SMALL_MAP).end().done();
        let short = mbi.len() as u32 - 4;
        mbi[..4].copy_from_slice(&short.to_le_bytes());
        assert!(matches!(
            parse(&mbi).unwrap_err(),
            Multiboot2Error::MissingEndTag { .. }
        ));
        // An end tag of the wrong size.
        let mbi = RawMbi::new().map(24, 0, &SMALL_MAP).tag(TAG_END, &[0; 8]);
        let end = mbi.offset(1);
        assert_eq!(
            parse(&mbi.done()).unwrap_err(),
            Multiboot2Error::Tag {
                tag_type: TAG_END,
                offset: end,
                problem: TagProblem::EndTagSize { size: 16 }
            }
        );
    }

    #[test]
    fn tag_sizes_are_checked() {
        // Below its own header (0 would loop forever if not refused).
        for size in [0, 7] {
            let mbi = RawMbi::new().tag_sized(0x99, size, &[]).end().done();
            assert_eq!(
                parse(&mbi).unwrap_err(),
                Multiboot2Error::Tag {
                    tag_type: 0x99,
                    offset: 8,
                    problem: TagProblem::TooSmall { size, min: 8 }
                }
            );
        }
        // Past total_size: a module claiming 4 KiB in a short MBI.
        let mbi = RawMbi::new()
            .map(24, 0, &SMALL_MAP)
            .tag_sized(TAG_MODULE, 0x1000, &[0; 8])
            .end();
        let module = mbi.offset(1);
        let mbi = mbi.done();
        let total_size = mbi.len() as u32;
        let err = parse(&mbi).unwrap_err();
        assert_eq!(
            err,
            Multiboot2Error::Tag {
                tag_type: TAG_MODULE,
                offset: module,
                problem: TagProblem::PastEnd {
                    size: 0x1000,
                    total_size
                }
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("type 3 (module)") && text.contains(&std::format!("{module:#x}")),
            "{text}"
        );
        // u32::MAX does not overflow the walk.
        let mbi = RawMbi::new().tag_sized(1, u32::MAX, &[]).end().done();
        assert!(matches!(
            tag_error(parse(&mbi).unwrap_err()).2,
            TagProblem::PastEnd { size: u32::MAX, .. }
        ));
    }

    #[test]
    fn mbi_header_is_checked() {
        let good = RawMbi::new().map(24, 0, &SMALL_MAP).end().done();
        // Not 8-byte aligned.
        let mut blob = Blob::new();
        blob.put(AT + 4, &good);
        assert_eq!(
            blob.parse_with::<128, 16>(AT + 4).unwrap_err(),
            Multiboot2Error::Misaligned { paddr: AT + 4 }
        );
        // total_size too small for the header and an end tag.
        for total_size in [0u32, 8, 15] {
            let mut mbi = good.clone();
            mbi[..4].copy_from_slice(&total_size.to_le_bytes());
            assert_eq!(
                parse(&mbi).unwrap_err(),
                Multiboot2Error::TotalSizeTooSmall { total_size }
            );
        }
        // Header unreadable, and total_size running past the end of memory.
        let blob = Blob::new();
        assert!(matches!(
            blob.parse_with::<128, 16>(MEMORY as u64).unwrap_err(),
            Multiboot2Error::Unreadable { len: 8, .. }
        ));
        let mut blob = Blob::new();
        let at = MEMORY as u64 - 0x100;
        blob.put(at, &0x108u32.to_le_bytes());
        assert!(matches!(
            blob.parse_with::<128, 16>(at).unwrap_err(),
            Multiboot2Error::Unreadable { len: 0x108, .. }
        ));
    }

    /// Issue 19 item 1: GRUB puts the whole command line in tag 1, with no length limit.
    /// An 8 KiB line is accepted (before: `StringTooLong`, "bad boot info"), its copy is cut
    /// and says so, and a word at its end is found through memory.
    #[test]
    fn an_8_kib_command_line_is_accepted_and_its_last_word_found() {
        let mut line = vec![b'x'; 0x2000 - 5];
        line.extend_from_slice(b" la57");
        let mut memory = vec![0u64; 0x3000 / 8];
        let mut writer = PhysWriter::new(&mut memory, AT);
        let ebx = MbiWriter::begin(&mut writer)
            .cmdline(&line)
            .memory_map(24, 0, &regions(&SMALL_MAP))
            .end()
            .unwrap();
        let mem = DirectMap::from_slice(&mut memory, AT);
        let info = Multiboot2Info::parse(&mem, ebx).unwrap();
        assert!(info.cmdline_truncated());
        assert_eq!(info.cmdline(), &line[..CMDLINE_CAPACITY]);
        // Tag 1 at offset 8: the string starts 8 bytes into it.
        assert_eq!(
            info.cmdline_range(),
            PhysRange::new(AT + 16, AT + 16 + 0x2001)
        );
        assert!(info.cmdline_has_word(&mem, "la57"));
        assert!(LoaderInfo::cmdline_has_word(&info, &mem, "la57"));
        for absent in ["la5", "57", "x", ""] {
            assert!(!info.cmdline_has_word(&mem, absent), "{absent:?}");
        }
        assert_eq!(info.memory_map(), regions(&SMALL_MAP));
    }

    #[test]
    fn strings_are_checked() {
        // Exactly the capacity is copied whole; a longer one is cut, and says so.
        let fits = vec![b'x'; CMDLINE_CAPACITY];
        let info = parse(
            &RawMbi::new()
                .cmdline(&fits)
                .map(24, 0, &SMALL_MAP)
                .end()
                .done(),
        )
        .unwrap();
        assert_eq!(info.cmdline(), &fits[..]);
        assert!(!info.cmdline_truncated());
        let long = vec![b'G'; BOOTLOADER_NAME_CAPACITY + 1];
        let info = parse(
            &RawMbi::new()
                .tag(TAG_BOOTLOADER_NAME, &[&long[..], b"\0"].concat())
                .map(24, 0, &SMALL_MAP)
                .end()
                .done(),
        )
        .unwrap();
        assert!(info.bootloader_name_truncated());
        assert_eq!(info.bootloader_name(), &long[..BOOTLOADER_NAME_CAPACITY]);
        assert_eq!(
            info.avoid_ranges().nth(1).unwrap().len(),
            long.len() as u64 + 1
        );
        // No NUL inside the tag, though the padding after it is zero.
        for tag_type in [TAG_CMDLINE, TAG_BOOTLOADER_NAME] {
            let mbi = RawMbi::new().tag(tag_type, b"abc").end().done();
            assert_eq!(
                tag_error(parse(&mbi).unwrap_err()),
                (tag_type, 8, TagProblem::Unterminated)
            );
            // An empty payload has no NUL either.
            let mbi = RawMbi::new().tag(tag_type, b"").end().done();
            assert_eq!(
                tag_error(parse(&mbi).unwrap_err()).2,
                TagProblem::Unterminated
            );
        }
        let payload = [
            &0x100000u32.to_le_bytes()[..],
            &0x101000u32.to_le_bytes(),
            b"abc",
        ]
        .concat();
        let mbi = RawMbi::new().tag(TAG_MODULE, &payload).end().done();
        assert_eq!(
            tag_error(parse(&mbi).unwrap_err()),
            (TAG_MODULE, 8, TagProblem::Unterminated)
        );
        // A string stops at its first NUL.
        let info = parse(
            &RawMbi::new()
                .cmdline(b"a\0b")
                .map(24, 0, &SMALL_MAP)
                .end()
                .done(),
        )
        .unwrap();
        assert_eq!(info.cmdline(), b"a");
    }

    #[test]
    fn module_fields_are_checked() {
        let mbi = RawMbi::new().tag(TAG_MODULE, &[0; 7]).end().done();
        assert_eq!(
            tag_error(parse(&mbi).unwrap_err()),
            (TAG_MODULE, 8, TagProblem::TooSmall { size: 15, min: 16 })
        );
        let mbi = RawMbi::new().module(0x2000, 0x1fff, b"").end().done();
        let err = parse(&mbi).unwrap_err();
        assert_eq!(
            tag_error(err),
            (
                TAG_MODULE,
                8,
                TagProblem::ModuleEndsBeforeStart {
                    start: 0x2000,
                    end: 0x1fff
                }
            )
        );
        assert!(err.to_string().contains("mod_end 0x1fff"), "{err}");
    }

    /// Why reloc-core does not read MBIs with the crate (module docs): on these inputs, which
    /// this parser reads or rejects with a typed error, the crate's getters panic.
    #[test]
    fn multiboot2_crate_panics_where_this_parser_does_not() {
        let map = [(0, 0x9fc00, 1), (0x100000, 0x7f00000, 1)];
        let cases = [
            // Larger entries, as the specification allows: read here.
            (
                "entry_size 32",
                RawMbi::new().map(32, 0, &map).end().done(),
                true,
            ),
            // A partial entry: a typed error here.
            (
                "partial entry",
                RawMbi::new()
                    .tag(
                        TAG_MEMORY_MAP,
                        &[&24u32.to_le_bytes()[..], &[0; 4], &[0; 30]].concat(),
                    )
                    .end()
                    .done(),
                false,
            ),
            // A memory-map tag shorter than its fixed fields.
            (
                "short map tag",
                RawMbi::new().tag(TAG_MEMORY_MAP, &[0; 4]).end().done(),
                false,
            ),
        ];
        for (name, mbi, ours_ok) in cases {
            assert_eq!(parse(&mbi).is_ok(), ours_ok, "{name}");
            let crate_read = std::panic::catch_unwind(|| {
                with_crate_reader(&mbi, |theirs| {
                    theirs.memory_map_tag().map(|t| t.memory_areas().len())
                })
            });
            assert!(
                crate_read.is_err(),
                "{name}: the crate no longer panics; revisit the docs"
            );
        }
        let module_cases = [
            ("short module tag", RawMbi::new().tag(TAG_MODULE, &[0; 4])),
            (
                "module end below start",
                RawMbi::new().module(0x2000, 0x1000, b""),
            ),
        ];
        for (name, mbi) in module_cases {
            let mbi = mbi.map(24, 0, &map).end().done();
            assert!(parse(&mbi).is_err(), "{name}");
            let crate_read = std::panic::catch_unwind(|| {
                with_crate_reader(&mbi, |theirs| {
                    theirs.module_tags().map(|m| m.module_size()).sum::<u32>()
                })
            });
            assert!(crate_read.is_err(), "{name}: the crate no longer panics");
        }
        // A meminfo tag of 12 bytes (mem_upper missing): the crate reads mem_upper from the
        // padding after the tag.
        let mbi = RawMbi::new()
            .tag_sized(TAG_BASIC_MEMINFO, 12, &[1, 0, 0, 0, 7, 0, 0, 0])
            .map(24, 0, &map)
            .end()
            .done();
        assert!(parse(&mbi).is_err());
        let crate_read = with_crate_reader(&mbi, |theirs| {
            theirs.basic_memory_info_tag().map(|t| t.memory_upper())
        });
        assert_eq!(
            crate_read,
            Some(7),
            "the crate no longer reads past the tag"
        );
    }

    /// Writes an MBI with `build` (tags; the end tag is added) into 16 KiB at [`AT`] and
    /// parses it with capacities `MAP` and `MODS`.
    fn parse_written<const MAP: usize, const MODS: usize>(
        build: impl FnOnce(&mut MbiWriter<'_, '_>),
    ) -> Result<Multiboot2Info<MAP, MODS>, Multiboot2Error> {
        let mut memory = vec![0u64; 0x4000 / 8];
        let mut writer = PhysWriter::new(&mut memory, AT);
        let mut mbi = MbiWriter::begin(&mut writer);
        build(&mut mbi);
        let ebx = mbi.end().unwrap();
        let mem = ReadOnly::new(DirectMap::from_slice(&mut memory, AT));
        Multiboot2Info::parse_with_capacity(&mem, ebx)
    }

    /// `NumberOfPages` of a 4 KiB-multiple length.
    const fn pages(len: u64) -> u64 {
        len / 4096
    }

    /// A descriptor of `kind` with OVMF's usual attributes for it (UC | WC | WT | WB, plus
    /// RUNTIME for runtime services and MMIO).
    fn descriptor(kind: u32, start: u64, len: u64) -> EfiMemoryDescriptor {
        let runtime = if matches!(kind, 5 | 6 | 11) {
            EFI_MEMORY_RUNTIME
        } else {
            0
        };
        EfiMemoryDescriptor {
            kind,
            physical_start: start,
            virtual_start: 0,
            number_of_pages: pages(len),
            attribute: 0xf | runtime,
        }
    }

    /// 129 descriptors shaped like OVMF's at `-m 3G` (ACPI NVS holes at 8 MiB, boot-services
    /// and loader pieces in between, runtime services, MMIO at the top), which merge into
    /// the 13 extents of [`OVMF_3G_EXTENTS`].
    fn ovmf_3g_descriptors() -> Vec<EfiMemoryDescriptor> {
        let mut d = vec![
            descriptor(7, 0, 0xa0000),
            descriptor(7, 0x100000, 0x700000),
            descriptor(10, 0x800000, 0x8000),
            descriptor(7, 0x808000, 0x3000),
            descriptor(10, 0x80b000, 0x1000),
            descriptor(7, 0x80c000, 0x5000),
            descriptor(10, 0x811000, 0xef000),
            descriptor(7, 0x900000, 0x700000),
        ];
        // Boot-services data and code, loader data and free memory, contiguous: all RAM.
        for i in 0..115u64 {
            let kind = [4, 3, 2, 7][i as usize % 4];
            d.push(descriptor(kind, 0x1000000 + i * 0x10000, 0x10000));
        }
        let x = 0x1730000;
        d.extend([
            descriptor(6, x, 0x10000),
            descriptor(5, x + 0x10000, 0x10000),
            descriptor(9, x + 0x20000, 0x10000),
            descriptor(7, x + 0x30000, 0xbfff0000 - (x + 0x30000)),
            descriptor(10, 0xbfff0000, 0x10000),
            descriptor(11, 0xffc00000, 0x400000),
        ]);
        d
    }

    const OVMF_3G_EXTENTS: [(u64, u64, u32); 13] = [
        (0, 0xa0000, 1),
        (0x100000, 0x700000, 1),
        (0x800000, 0x8000, 4),
        (0x808000, 0x3000, 1),
        (0x80b000, 0x1000, 4),
        (0x80c000, 0x5000, 1),
        (0x811000, 0xef000, 4),
        (0x900000, 0x1730000 - 0x900000, 1),
        (0x1730000, 0x20000, 2),
        (0x1750000, 0x10000, 3),
        (0x1760000, 0xbfff0000 - 0x1760000, 1),
        (0xbfff0000, 0x10000, 4),
        (0xffc00000, 0x400000, 2),
    ];

    /// Issue 19 item 5: with tag 6 hidden (`mbi-no-memmap`), OVMF's map comes from tag 17,
    /// not from basic meminfo, which stops at the 8 MiB hole (before: the pick was
    /// 0x600000; tag 17 gives 0xbfc00000). 129 descriptors of 48 bytes, one more than the
    /// capacity, merge into 13 extents.
    #[test]
    fn efi_memory_map_serves_when_there_is_no_memory_map_tag() {
        let descriptors = ovmf_3g_descriptors();
        assert_eq!(descriptors.len(), 129);
        let info = parse_written::<128, 16>(|mbi| {
            mbi.cmdline(b"mbi-no-memmap")
                .basic_meminfo(640, 7168)
                .efi_memory_map(48, 1, &descriptors);
        })
        .unwrap();
        assert_eq!(info.memory_map(), regions(&OVMF_3G_EXTENTS));
        assert_eq!(
            info.memory_map_source(),
            MemoryMapSource::EfiMemoryMap {
                descriptor_size: 48,
                descriptor_version: 1,
                descriptors: 129
            }
        );
        assert_eq!(
            info.memory_map_source().to_string(),
            "EFI memory-map tag (129 descriptors, descriptor_size 48, descriptor_version 1)"
        );
        let image = PhysRange::new(0x20_0000, 0x22_a000);
        let avoid: Vec<_> = core::iter::once(image).chain(info.avoid_ranges()).collect();
        let pick = select_target(info.memory_map(), &TargetRequest::new(image.len(), &avoid));
        assert_eq!(pick.unwrap().as_u64(), 0xbfc0_0000);
        // The capacity bounds extents: 13 fit in 13 slots, not in 12.
        assert!(parse_written::<13, 1>(|mbi| {
            mbi.efi_memory_map(48, 1, &descriptors);
        })
        .is_ok());
        let err = parse_written::<12, 1>(|mbi| {
            mbi.efi_memory_map(48, 1, &descriptors);
        })
        .unwrap_err();
        assert_eq!(
            err,
            Multiboot2Error::Tag {
                tag_type: TAG_EFI_MEMORY_MAP,
                offset: 8,
                problem: TagProblem::TooManyMapEntries {
                    count: 13,
                    capacity: 12
                }
            }
        );
    }

    /// The conversion of `efi_arch_process_memory_map` (Xen, without `-mapbs`), type by type.
    #[test]
    fn efi_types_convert_as_xen_converts_them() {
        const WB: u64 = EFI_MEMORY_WB;
        const RT: u64 = EFI_MEMORY_RUNTIME;
        let cases = [
            // Loader code and data, boot-services code and data, free memory: RAM when
            // write-back and not runtime.
            (1, WB, 1),
            (2, WB, 1),
            (3, WB, 1),
            (4, WB, 1),
            (7, WB, 1),
            (7, 0xf, 1),
            (7, WB | RT, 2),
            (4, RT, 2),
            (7, 0x1, 5),
            (2, 0, 5),
            (8, WB, 5),
            (9, WB, 3),
            (10, WB, 4),
            // Reserved, runtime services, MMIO, port space, PAL code, persistent, unknown.
            (0, WB, 2),
            (5, WB | RT, 2),
            (6, WB, 2),
            (11, RT, 2),
            (12, 0, 2),
            (13, WB, 2),
            (14, WB, 2),
            (0x7000_0000, WB, 2),
        ];
        for (efi, attribute, e820) in cases {
            assert_eq!(
                efi_to_e820(efi, attribute),
                e820,
                "type {efi} attr {attribute:#x}"
            );
        }
        // Through the parser: one descriptor each, 1 MiB apart (never merged).
        let descriptors: Vec<_> = (0u64..)
            .zip(cases)
            .map(|(i, (kind, attribute, _))| EfiMemoryDescriptor {
                kind,
                physical_start: i << 20,
                virtual_start: 0,
                number_of_pages: 1,
                attribute,
            })
            .collect();
        let info = parse_written::<128, 1>(|mbi| {
            mbi.efi_memory_map(40, 1, &descriptors);
        })
        .unwrap();
        let kinds: Vec<_> = info.memory_map().iter().map(|r| r.kind).collect();
        let want: Vec<_> = cases.iter().map(|c| c.2).collect();
        assert_eq!(kinds, want);
    }

    #[test]
    fn efi_descriptors_merge_only_when_contiguous_and_of_one_type() {
        let d = |kind, start, len| descriptor(kind, start, len);
        let descriptors = [
            d(7, 0x100000, 0x1000),
            // Contiguous, another EFI type, the same E820 type: merged.
            d(4, 0x101000, 0x1000),
            // A zero-length descriptor of another type is skipped, and breaks nothing.
            d(10, 0x102000, 0),
            d(3, 0x102000, 0x1000),
            // A gap: a new extent.
            d(7, 0x200000, 0x1000),
            // Contiguous but reserved: a new extent; then RAM again: another.
            d(0, 0x201000, 0x1000),
            d(7, 0x202000, 0x1000),
            // Out of order, below: a new extent (only the extent before is extended).
            d(7, 0x100000 - 0x1000, 0x1000),
        ];
        let info = parse_written::<128, 1>(|mbi| {
            mbi.efi_memory_map(48, 1, &descriptors);
        })
        .unwrap();
        assert_eq!(
            info.memory_map(),
            regions(&[
                (0x100000, 0x3000, 1),
                (0x200000, 0x1000, 1),
                (0x201000, 0x1000, 2),
                (0x202000, 0x1000, 1),
                (0xff000, 0x1000, 1),
            ])
        );
        // Only zero-length descriptors (or none): no map from tag 17; meminfo serves.
        for descriptors in [&[d(7, 0x100000, 0)][..], &[]] {
            let info = parse_written::<128, 1>(|mbi| {
                mbi.efi_memory_map(48, 1, descriptors)
                    .basic_meminfo(639, 1024);
            })
            .unwrap();
            assert!(matches!(
                info.memory_map_source(),
                MemoryMapSource::BasicMeminfo { .. }
            ));
        }
    }

    #[test]
    fn memory_map_tag_wins_and_then_tag_17_is_not_read() {
        let map = regions(&SMALL_MAP);
        let info = parse_written::<128, 1>(|mbi| {
            // Malformed (descriptor_size 8), but never needed.
            mbi.raw_tag(TAG_EFI_MEMORY_MAP, 16, &[8, 0, 0, 0, 1, 0, 0, 0])
                .memory_map(24, 0, &map);
        })
        .unwrap();
        assert_eq!(info.memory_map(), map);
        // A second tag 17 is skipped like any later tag of a kind read once.
        let info = parse_written::<128, 1>(|mbi| {
            mbi.efi_memory_map(40, 1, &[descriptor(7, 0x100000, 0x100000)])
                .raw_tag(TAG_EFI_MEMORY_MAP, 12, &[0; 4]);
        })
        .unwrap();
        assert_eq!(info.memory_map(), regions(&[(0x100000, 0x100000, 1)]));
    }

    #[test]
    fn malformed_efi_memory_maps_are_typed_errors_naming_the_tag() {
        let one = [descriptor(7, 0x100000, 0x100000)];
        let problem = |build: &dyn Fn(&mut MbiWriter<'_, '_>)| {
            let err = parse_written::<128, 1>(|mbi| {
                mbi.cmdline(b"x");
                build(mbi);
            })
            .unwrap_err();
            // The EFI tag follows the 16-byte command-line tag.
            let (tag_type, offset, problem) = tag_error(err);
            assert_eq!((tag_type, offset), (TAG_EFI_MEMORY_MAP, 24), "{err}");
            assert!(
                err.to_string().contains("type 17 (EFI memory map)"),
                "{err}"
            );
            problem
        };
        for descriptor_size in [0, 8, 32] {
            assert_eq!(
                problem(&|mbi| {
                    mbi.efi_memory_map(descriptor_size, 1, &one);
                }),
                TagProblem::DescriptorSizeTooSmall { descriptor_size }
            );
        }
        assert_eq!(
            problem(&|mbi| {
                mbi.efi_memory_map(44, 1, &one);
            }),
            TagProblem::DescriptorSizeMisaligned {
                descriptor_size: 44
            }
        );
        let partial = [&48u32.to_le_bytes()[..], &1u32.to_le_bytes(), &[0; 40]].concat();
        assert_eq!(
            problem(&|mbi| {
                mbi.tag(TAG_EFI_MEMORY_MAP, &partial);
            }),
            TagProblem::PartialEntry {
                entry_bytes: 40,
                entry_size: 48
            }
        );
        assert_eq!(
            problem(&|mbi| {
                mbi.tag(TAG_EFI_MEMORY_MAP, &[0; 4]);
            }),
            TagProblem::TooSmall { size: 12, min: 16 }
        );
        for (physical_start, number_of_pages) in
            [(0, 1 << 52), (u64::MAX - 0xfff, 1), (1 << 63, 1 << 51)]
        {
            let wraps = [EfiMemoryDescriptor {
                kind: 7,
                physical_start,
                virtual_start: 0,
                number_of_pages,
                attribute: EFI_MEMORY_WB,
            }];
            assert_eq!(
                problem(&|mbi| {
                    mbi.efi_memory_map(48, 1, &[one[0], wraps[0]]);
                }),
                TagProblem::DescriptorWraps {
                    index: 1,
                    physical_start,
                    number_of_pages
                }
            );
        }
        // Ending just below 2^64 does not wrap.
        let top = EfiMemoryDescriptor {
            kind: 11,
            physical_start: u64::MAX - 0x1fff,
            virtual_start: 0,
            number_of_pages: 1,
            attribute: EFI_MEMORY_RUNTIME,
        };
        assert!(parse_written::<128, 1>(|mbi| {
            mbi.efi_memory_map(48, 1, &[one[0], top]);
        })
        .is_ok());
    }

    /// The crate's builder writes tag 17 too: this parser reads its descriptors as the
    /// crate's reader does, then converts and merges them.
    #[test]
    fn efi_memory_map_agrees_with_the_crate() {
        use ::multiboot2::{EFIMemoryAreaType, EFIMemoryAttribute, EFIMemoryDesc, EFIMemoryMapTag};
        let theirs_descriptors: Vec<EFIMemoryDesc> = ovmf_3g_descriptors()
            .iter()
            .map(|d| EFIMemoryDesc {
                ty: EFIMemoryAreaType(d.kind),
                padding: 0,
                phys_start: d.physical_start,
                virt_start: d.virtual_start,
                page_count: d.number_of_pages,
                att: EFIMemoryAttribute::from_bits_retain(d.attribute),
            })
            .collect();
        let mbi = Builder::new()
            .efi_mmap(EFIMemoryMapTag::new_from_descs(&theirs_descriptors))
            .build()
            .as_bytes()
            .to_vec();
        let mut memory = vec![0u64; 0x4000 / 8];
        PhysWriter::new(&mut memory, AT)
            .write_bytes(AT, &mbi)
            .unwrap();
        let mem = DirectMap::from_slice(&mut memory, AT);
        let info = Multiboot2Info::parse(&mem, AT as u32).unwrap();
        assert_eq!(info.memory_map(), regions(&OVMF_3G_EXTENTS));
        let read_back = with_crate_reader(&mbi, |theirs| {
            theirs
                .efi_memory_map_tag()
                .unwrap()
                .memory_areas()
                .map(|d| (d.ty.0, d.phys_start, d.page_count, d.att.bits()))
                .collect::<Vec<_>>()
        });
        let ours: Vec<_> = ovmf_3g_descriptors()
            .iter()
            .map(|d| (d.kind, d.physical_start, d.number_of_pages, d.attribute))
            .collect();
        assert_eq!(read_back, ours);
    }

    /// Each tag kind with fixed fields after its header (module: `mod_start`, `mod_end`;
    /// basic meminfo: `mem_lower`, `mem_upper`; memory map: `entry_size`, `entry_version`;
    /// EFI memory map: `descriptor_size`, `descriptor_version`) is refused when its size
    /// leaves any of them out, naming the tag's type and offset, rather than read from the
    /// bytes after the tag. At the least size the fields fit and the size is not the
    /// problem.
    #[test]
    fn a_tag_shorter_than_its_fixed_fields_is_refused() {
        let kinds = [
            (TAG_MODULE, "module"),
            (TAG_BASIC_MEMINFO, "basic meminfo"),
            (TAG_MEMORY_MAP, "memory map"),
            (TAG_EFI_MEMORY_MAP, "EFI memory map"),
        ];
        for (tag_type, name) in kinds {
            for size in 8..16u32 {
                // After a 16-byte command-line tag, so the offset is 24, not 8; then basic
                // meminfo, whose bytes a parser without the check would read as the fields.
                let mbi = RawMbi::new()
                    .cmdline(b"x")
                    .tag_sized(tag_type, size, &vec![0xff; size as usize - 8])
                    .meminfo(639, 1024)
                    .end();
                assert_eq!(mbi.offset(1), 24);
                let err = parse(&mbi.done()).unwrap_err();
                assert_eq!(
                    err,
                    Multiboot2Error::Tag {
                        tag_type,
                        offset: 24,
                        problem: TagProblem::TooSmall { size, min: 16 }
                    },
                    "{name} of size {size}"
                );
                assert_eq!(
                    err.to_string(),
                    std::format!(
                        "multiboot2 tag type {tag_type} ({name}) at MBI offset 0x18: size {size} is below the 16 bytes this tag holds"
                    )
                );
            }
            // Size 16: the fields are there (a module's string is then missing). Both are
            // 40: a valid entry_size and descriptor_size, a module of 0 bytes at 40.
            let mbi = RawMbi::new()
                .cmdline(b"x")
                .tag_sized(tag_type, 16, &[40, 0, 0, 0, 40, 0, 0, 0])
                .meminfo(639, 1024)
                .end()
                .done();
            match parse(&mbi) {
                Ok(_) => assert_ne!(tag_type, TAG_MODULE),
                Err(err) => assert_eq!(
                    err,
                    Multiboot2Error::Tag {
                        tag_type: TAG_MODULE,
                        offset: 24,
                        problem: TagProblem::Unterminated
                    }
                ),
            }
        }
    }

    /// A tag below its own 8-byte header, of any type, is refused with its type named:
    /// the walk cannot step over it.
    #[test]
    fn a_tag_below_its_header_is_refused_naming_its_type() {
        let kinds = [
            (TAG_END, "end"),
            (TAG_CMDLINE, "command line"),
            (TAG_BOOTLOADER_NAME, "boot loader name"),
            (TAG_MODULE, "module"),
            (TAG_BASIC_MEMINFO, "basic meminfo"),
            (5, "unknown"),
            (TAG_MEMORY_MAP, "memory map"),
            (TAG_EFI_MEMORY_MAP, "EFI memory map"),
            (0x1337, "unknown"),
        ];
        for (tag_type, name) in kinds {
            let mbi = RawMbi::new()
                .meminfo(639, 1024)
                .tag_sized(tag_type, 4, &[0; 4])
                .end()
                .done();
            let err = parse(&mbi).unwrap_err();
            assert_eq!(
                err,
                Multiboot2Error::Tag {
                    tag_type,
                    offset: 24,
                    problem: TagProblem::TooSmall { size: 4, min: 8 }
                }
            );
            assert_eq!(
                err.to_string(),
                std::format!(
                    "multiboot2 tag type {tag_type} ({name}) at MBI offset 0x18: size 4 is below the 8 bytes this tag holds"
                )
            );
        }
    }

    /// The smallest MBI the specification allows: the 8-byte header and the end tag,
    /// `total_size` 16. It is well-formed (only the memory map is missing).
    #[test]
    fn an_mbi_of_header_and_end_tag_only_is_well_formed() {
        let mbi = RawMbi::new().end().done();
        assert_eq!(mbi.len(), 16);
        assert_eq!(parse(&mbi).unwrap_err(), Multiboot2Error::MissingMemoryMap);
        // With basic meminfo it parses, and the MBI is its 32 bytes.
        let mbi = RawMbi::new().meminfo(639, 1024).end().done();
        let info = parse(&mbi).unwrap();
        assert_eq!(info.mbi_range(), PhysRange::new(AT, AT + 32));
    }

    /// Like the command line, the name and the memory map, basic meminfo is read from the
    /// first tag; a later one, well-formed or not, is skipped.
    #[test]
    fn the_first_basic_meminfo_tag_is_the_one_read() {
        let want = regions(&[(0, 639 * 1024, 1), (0x100000, 1024 * 1024, 1)]);
        let info = parse(
            &RawMbi::new()
                .meminfo(639, 1024)
                .meminfo(100, 2048)
                .end()
                .done(),
        )
        .unwrap();
        assert_eq!(info.memory_map(), want);
        let info = parse(
            &RawMbi::new()
                .meminfo(639, 1024)
                .tag(TAG_BASIC_MEMINFO, &[0; 4])
                .end()
                .done(),
        )
        .unwrap();
        assert_eq!(info.memory_map(), want);
    }

    /// `MAX_AVOID_RANGES` is what `avoid_ranges` yields with every piece present and every
    /// module slot used: the MBI, the command line, the boot loader name, and each module
    /// and its string, in that order.
    #[test]
    fn avoid_ranges_fill_their_bound_when_every_module_slot_is_used() {
        let info = parse_written::<8, 3>(|mbi| {
            mbi.cmdline(b"c").bootloader_name(b"n");
            for i in 1..=3u32 {
                mbi.module(i << 20, (i << 20) + 0x1000, b"m");
            }
            mbi.basic_meminfo(639, 1024);
        })
        .unwrap();
        // Tags at 8 (command line, 16 bytes), 24 (name, 16), then modules of 24 bytes
        // each at 40, 64 and 88: each string 16 bytes into its tag.
        let mut want = vec![
            info.mbi_range(),
            PhysRange::new(AT + 16, AT + 18),
            PhysRange::new(AT + 32, AT + 34),
        ];
        for (i, tag) in [(1u64, 40), (2, 64), (3, 88)] {
            want.push(PhysRange::new(i << 20, (i << 20) + 0x1000));
            want.push(PhysRange::new(AT + tag + 16, AT + tag + 18));
        }
        let avoid: Vec<_> = info.avoid_ranges().collect();
        assert_eq!(avoid, want);
        assert_eq!(Multiboot2Info::<8, 3>::MAX_AVOID_RANGES, 3 + 2 * 3);
        assert_eq!(avoid.len(), Multiboot2Info::<8, 3>::MAX_AVOID_RANGES);
        assert_eq!(
            <Multiboot2Info<8, 3> as LoaderInfo>::MAX_AVOID_RANGES,
            avoid.len()
        );
    }

    /// What `LoaderInfo` (the view target selection and the boot path take) shows of a
    /// parsed MBI.
    fn loader_view<B: LoaderInfo>(
        boot: &B,
    ) -> (
        Vec<MemoryRegion>,
        Vec<BootModule>,
        Vec<u8>,
        bool,
        PhysRange,
        Vec<PhysRange>,
    ) {
        (
            boot.memory_map().to_vec(),
            boot.modules().to_vec(),
            boot.cmdline().to_vec(),
            boot.cmdline_truncated(),
            boot.cmdline_range(),
            boot.avoid_ranges().collect(),
        )
    }

    /// Through `LoaderInfo`, a parsed MBI shows what its own accessors show, for a line
    /// that fits and for one whose copy is cut.
    #[test]
    fn the_loader_info_view_is_the_parsed_mbi() {
        let mut long = vec![b'y'; CMDLINE_CAPACITY + 10];
        long.extend_from_slice(b" last");
        for line in [&b"console=com1 hold"[..], &long] {
            let info = parse_written::<128, 16>(|mbi| {
                mbi.cmdline(line)
                    .module(0x10_0000, 0x10_2000, b"initrd")
                    .memory_map(24, 0, &regions(&QEMU_3G));
            })
            .unwrap();
            let view = loader_view(&info);
            let inherent = (
                info.memory_map().to_vec(),
                info.modules().to_vec(),
                info.cmdline().to_vec(),
                info.cmdline_truncated(),
                info.cmdline_range(),
                info.avoid_ranges().collect::<Vec<_>>(),
            );
            assert_eq!(view, inherent);
            // And the pieces are the ones written.
            assert_eq!(view.0, regions(&QEMU_3G));
            assert_eq!(view.1[0].range, PhysRange::new(0x10_0000, 0x10_2000));
            assert_eq!(view.2, &line[..line.len().min(CMDLINE_CAPACITY)]);
            assert_eq!(view.3, line.len() > CMDLINE_CAPACITY);
            assert_eq!(
                view.4,
                PhysRange::new(AT + 16, AT + 16 + line.len() as u64 + 1)
            );
            // The MBI, the command line, the module and its string (no boot loader name).
            assert_eq!(view.5.len(), 4);
            assert_eq!(view.5[..3], [info.mbi_range(), view.4, view.1[0].range]);
        }
    }

    /// A boot loader name of exactly the capacity is copied whole and not marked cut.
    #[test]
    fn a_boot_loader_name_that_fits_is_not_marked_truncated() {
        let name = vec![b'G'; BOOTLOADER_NAME_CAPACITY];
        let info = parse_written::<128, 16>(|mbi| {
            mbi.bootloader_name(&name).basic_meminfo(639, 1024);
        })
        .unwrap();
        assert_eq!(info.bootloader_name(), &name[..]);
        assert!(!info.bootloader_name_truncated());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Bytes of a GRUB-like MBI overwritten at random: parsed or rejected, never a
        /// panic, and whatever is read lies where the MBI says.
        #[test]
        #[cfg_attr(miri, ignore = "proptest persists failures through the file system, which Miri isolates; the parser holds no unsafe")]
        fn corrupted_mbis_never_panic(
            edits in proptest::collection::vec((0usize..0x200, proptest::prelude::any::<u8>()), 1..8),
        ) {
            let mut mbi = grub_like();
            for (at, byte) in edits {
                let len = mbi.len();
                mbi[at % len] = byte;
            }
            if let Ok(info) = parse(&mbi) {
                let mbi_range = info.mbi_range();
                proptest::prop_assert_eq!(mbi_range.start, AT);
                for m in info.modules() {
                    proptest::prop_assert!(mbi_range.start <= m.cmdline.start);
                    proptest::prop_assert!(m.cmdline.end <= mbi_range.end);
                }
                proptest::prop_assert!(!info.memory_map().is_empty());
            }
        }
    }
}

//! Writers for test inputs (cargo feature `test-util`, off by default): lay out a PVH
//! `hvm_start_info` or a multiboot2 MBI in a buffer that stands for physical memory, and get
//! back the `%ebx` a loader would hand over, ready for [`BootInfo::parse`] or
//! [`Multiboot2Info::parse`] through [`DirectMap::from_slice`] over the same buffer.
//!
//! The writers use no allocator and no `unsafe`. They write what they are told, malformed
//! or not ([`MbiWriter::raw_tag`] writes a size that may lie), so tests of the parsers'
//! refusals can start from a well-formed image and damage one field
//! ([`PhysWriter::write_u32`], [`PhysWriter::write_u64`]).
//!
//! # Example
//! A PVH start info with a memory map, a module and a command line, parsed back:
//! ```
//! use reloc_core::testing::{PhysWriter, PvhModule, PvhStartInfo};
//! use reloc_core::{BootInfo, DirectMap, MemoryRegion};
//!
//! let map = [
//!     MemoryRegion { start: 0, len: 0x9fc00, kind: 1 },
//!     MemoryRegion { start: 0x10_0000, len: 0x7f0_0000, kind: 1 },
//! ];
//! let modules = [PvhModule { paddr: 0x40_0000, size: 0x1000, cmdline: Some(b"initrd") }];
//! // 16 KiB of "physical memory" from 0x8000.
//! let mut memory = [0u64; 0x4000 / 8];
//! let mut writer = PhysWriter::new(&mut memory, 0x8000);
//! let ebx = PvhStartInfo {
//!     modules: &modules,
//!     cmdline: Some(b"console=ttyS0 la57"),
//!     ..PvhStartInfo::new(&map)
//! }
//! .write(&mut writer)?;
//!
//! let mem = DirectMap::from_slice(&mut memory, 0x8000);
//! let info = BootInfo::parse(&mem, ebx)?;
//! assert_eq!(info.memory_map(), map);
//! assert_eq!(info.modules()[0].range.start, 0x40_0000);
//! assert!(info.cmdline_has_word(&mem, "la57"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! A multiboot2 MBI as GRUB writes one (tags in the order given, then the end tag):
//! ```
//! use reloc_core::multiboot2::MemoryMapSource;
//! use reloc_core::testing::{MbiWriter, PhysWriter};
//! use reloc_core::{DirectMap, MemoryRegion, Multiboot2Info};
//!
//! let map = [MemoryRegion { start: 0x10_0000, len: 0x7f0_0000, kind: 1 }];
//! let mut memory = [0u64; 0x1000 / 8];
//! let mut writer = PhysWriter::new(&mut memory, 0x9000);
//! let ebx = MbiWriter::begin(&mut writer)
//!     .cmdline(b"console=com1 la57")
//!     .bootloader_name(b"GRUB 2.06")
//!     .module(0x20_0000, 0x20_1000, b"initrd")
//!     .basic_meminfo(639, 0x1fc00)
//!     .memory_map(24, 0, &map)
//!     .end()?;
//!
//! let mem = DirectMap::from_slice(&mut memory, 0x9000);
//! let info = Multiboot2Info::parse(&mem, ebx)?;
//! assert_eq!(info.memory_map(), map);
//! assert_eq!(info.bootloader_name(), b"GRUB 2.06");
//! assert!(matches!(info.memory_map_source(), MemoryMapSource::MemoryMapTag { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`BootInfo::parse`]: crate::BootInfo::parse
//! [`Multiboot2Info::parse`]: crate::Multiboot2Info::parse
//! [`DirectMap::from_slice`]: crate::DirectMap::from_slice

use core::fmt;
#[cfg(feature = "hvm")]
use core::mem::offset_of;

#[cfg(feature = "hvm")]
use crate::hvm::{
    HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, START_INFO_MAGIC, START_INFO_V0_SIZE,
    START_INFO_V1_SIZE,
};
#[cfg(feature = "multiboot2")]
use crate::multiboot2::{
    EfiMemoryDescriptor, MEMORY_MAP_ENTRY_V0_SIZE, TAG_BASIC_MEMINFO, TAG_BOOTLOADER_NAME,
    TAG_CMDLINE, TAG_EFI_MEMORY_MAP, TAG_END, TAG_MEMORY_MAP, TAG_MODULE,
};
use crate::phys::PhysRange;
#[cfg(any(feature = "hvm", feature = "multiboot2"))]
use crate::select::MemoryRegion;

/// Why a writer could not lay a piece out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WriteError {
    /// The bytes do not fit in the buffer's physical window.
    OutOfRoom {
        /// Where the bytes were to go.
        paddr: u64,
        /// How many.
        len: u64,
        /// The physical range the buffer stands for.
        window: PhysRange,
    },
    /// The structure would start at or above 4 GiB, where `%ebx` cannot point.
    Above4GiB {
        /// Where it would start.
        paddr: u64,
    },
    /// A length that does not fit the 32-bit field the format gives it.
    TooLong {
        /// The length.
        len: u64,
    },
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::OutOfRoom { paddr, len, window } => write!(
                f,
                "{len} bytes at {paddr:#x} do not fit in the buffer's window {window}"
            ),
            WriteError::Above4GiB { paddr } => {
                write!(f, "structure at {paddr:#x} is out of %ebx's reach (4 GiB)")
            }
            WriteError::TooLong { len } => write!(f, "length {len} does not fit in a u32"),
        }
    }
}

impl core::error::Error for WriteError {}

/// A `&mut [u64]` standing for physical memory from `base` (as
/// [`crate::DirectMap::from_slice`] will read it), with a cursor where the next piece goes.
#[derive(Debug)]
pub struct PhysWriter<'a> {
    words: &'a mut [u64],
    window: PhysRange,
    cursor: u64,
}

impl<'a> PhysWriter<'a> {
    /// A writer over `words`, whose first byte is physical `base`; the cursor starts at
    /// `base`.
    pub fn new(words: &'a mut [u64], base: u64) -> Self {
        let len = u64::try_from(core::mem::size_of_val(words)).unwrap_or(u64::MAX);
        Self {
            words,
            window: PhysRange::new(base, base.saturating_add(len)),
            cursor: base,
        }
    }

    /// The physical range the buffer stands for.
    pub fn window(&self) -> PhysRange {
        self.window
    }

    /// Where the next piece goes.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Moves the cursor to `paddr` (the next piece goes there).
    pub fn set_cursor(&mut self, paddr: u64) {
        self.cursor = paddr;
    }

    /// Writes `bytes` at physical `paddr`, any alignment; the cursor does not move.
    pub fn write_bytes(&mut self, paddr: u64, bytes: &[u8]) -> Result<(), WriteError> {
        let len = bytes.len() as u64;
        let out_of_room = WriteError::OutOfRoom {
            paddr,
            len,
            window: self.window,
        };
        if !self.window.contains_span(paddr, len) && len != 0 {
            return Err(out_of_room);
        }
        for (addr, &byte) in (paddr..).zip(bytes) {
            let offset = addr - self.window.start;
            let word = self
                .words
                .get_mut(usize::try_from(offset / 8).map_err(|_| out_of_room)?)
                .ok_or(out_of_room)?;
            let mut word_bytes = word.to_le_bytes();
            word_bytes[(offset % 8) as usize] = byte;
            *word = u64::from_le_bytes(word_bytes);
        }
        Ok(())
    }

    /// Writes the little-endian `value` at `paddr`.
    pub fn write_u32(&mut self, paddr: u64, value: u32) -> Result<(), WriteError> {
        self.write_bytes(paddr, &value.to_le_bytes())
    }

    /// Writes the little-endian `value` at `paddr`.
    pub fn write_u64(&mut self, paddr: u64, value: u64) -> Result<(), WriteError> {
        self.write_bytes(paddr, &value.to_le_bytes())
    }

    /// Moves the cursor up to a multiple of `align` (a power of two) and returns it.
    pub fn align(&mut self, align: u64) -> u64 {
        self.cursor = self.cursor.next_multiple_of(align);
        self.cursor
    }

    /// Writes `bytes` at the cursor and moves the cursor past them; returns where they went.
    pub fn push(&mut self, bytes: &[u8]) -> Result<u64, WriteError> {
        let at = self.cursor;
        self.write_bytes(at, bytes)?;
        self.cursor = at + bytes.len() as u64;
        Ok(at)
    }

    /// Writes `string` and a NUL at the cursor; returns where it went.
    pub fn push_cstr(&mut self, string: &[u8]) -> Result<u64, WriteError> {
        let at = self.push(string)?;
        self.push(&[0])?;
        Ok(at)
    }
}

/// The `%ebx` for a structure at `paddr`.
#[cfg(any(feature = "hvm", feature = "multiboot2"))]
fn ebx_of(paddr: u64) -> Result<u32, WriteError> {
    u32::try_from(paddr).map_err(|_| WriteError::Above4GiB { paddr })
}

/// One PVH module for [`PvhStartInfo`] (feature `hvm`).
#[cfg(feature = "hvm")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvhModule<'s> {
    /// Where the module is (its bytes are not written).
    pub paddr: u64,
    /// Its size.
    pub size: u64,
    /// Its command line (a NUL is added), or none.
    pub cmdline: Option<&'s [u8]>,
}

/// A PVH `hvm_start_info` and what it points to, to be laid out by [`PvhStartInfo::write`]
/// (feature `hvm`).
#[cfg(feature = "hvm")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhStartInfo<'s> {
    /// 0 (40 bytes, no memory map: the parser refuses it) or 1 and later (56 bytes).
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// `rsdp_paddr`, written as given.
    pub rsdp_paddr: u64,
    /// The memory map (version 1 and later).
    pub memory_map: &'s [MemoryRegion],
    /// The modules (their list is written; the modules' bytes are not).
    pub modules: &'s [PvhModule<'s>],
    /// The kernel command line (a NUL is added), or none.
    pub cmdline: Option<&'s [u8]>,
}

#[cfg(feature = "hvm")]
impl<'s> PvhStartInfo<'s> {
    /// Version 1 with `memory_map` and nothing else.
    pub fn new(memory_map: &'s [MemoryRegion]) -> Self {
        Self {
            version: 1,
            flags: 0,
            rsdp_paddr: 0,
            memory_map,
            modules: &[],
            cmdline: None,
        }
    }

    /// Lays out, from the writer's cursor (8-aligned first): the start info, the memory map,
    /// the module list, the command line, then each module's command line. Returns the start
    /// info's address, the `%ebx` to pass to [`crate::BootInfo::parse`]; the cursor ends
    /// past the last byte written. Empty tables get address 0, as loaders write them.
    pub fn write(&self, w: &mut PhysWriter<'_>) -> Result<u32, WriteError> {
        let start = w.align(8);
        let ebx = ebx_of(start)?;
        let size = if self.version == 0 {
            START_INFO_V0_SIZE
        } else {
            START_INFO_V1_SIZE
        };
        w.push(&[0; START_INFO_V1_SIZE][..size])?;

        let memmap_paddr = if self.memory_map.is_empty() {
            0
        } else {
            w.align(8)
        };
        for region in self.memory_map {
            let mut entry = [0u8; core::mem::size_of::<HvmMemmapEntry>()];
            entry[offset_of!(HvmMemmapEntry, addr)..][..8]
                .copy_from_slice(&region.start.to_le_bytes());
            entry[offset_of!(HvmMemmapEntry, size)..][..8]
                .copy_from_slice(&region.len.to_le_bytes());
            entry[offset_of!(HvmMemmapEntry, kind)..][..4]
                .copy_from_slice(&region.kind.to_le_bytes());
            w.push(&entry)?;
        }

        let modlist_paddr = if self.modules.is_empty() {
            0
        } else {
            w.align(8)
        };
        // The strings go after the list, whose entries are written once their addresses
        // are known.
        if !self.modules.is_empty() {
            w.set_cursor(modlist_paddr + (self.modules.len() * size_of_modlist_entry()) as u64);
        }
        let cmdline_paddr = match self.cmdline {
            Some(line) => w.push_cstr(line)?,
            None => 0,
        };
        for (index, module) in self.modules.iter().enumerate() {
            let cmdline = match module.cmdline {
                Some(line) => w.push_cstr(line)?,
                None => 0,
            };
            let mut entry = [0u8; core::mem::size_of::<HvmModlistEntry>()];
            entry[offset_of!(HvmModlistEntry, paddr)..][..8]
                .copy_from_slice(&module.paddr.to_le_bytes());
            entry[offset_of!(HvmModlistEntry, size)..][..8]
                .copy_from_slice(&module.size.to_le_bytes());
            entry[offset_of!(HvmModlistEntry, cmdline_paddr)..][..8]
                .copy_from_slice(&cmdline.to_le_bytes());
            w.write_bytes(
                modlist_paddr + (index * size_of_modlist_entry()) as u64,
                &entry,
            )?;
        }

        let field = |name: usize| start + name as u64;
        w.write_u32(field(offset_of!(HvmStartInfo, magic)), START_INFO_MAGIC)?;
        w.write_u32(field(offset_of!(HvmStartInfo, version)), self.version)?;
        w.write_u32(field(offset_of!(HvmStartInfo, flags)), self.flags)?;
        let nr_modules = u32::try_from(self.modules.len()).map_err(|_| WriteError::TooLong {
            len: self.modules.len() as u64,
        })?;
        w.write_u32(field(offset_of!(HvmStartInfo, nr_modules)), nr_modules)?;
        w.write_u64(
            field(offset_of!(HvmStartInfo, modlist_paddr)),
            modlist_paddr,
        )?;
        w.write_u64(
            field(offset_of!(HvmStartInfo, cmdline_paddr)),
            cmdline_paddr,
        )?;
        w.write_u64(field(offset_of!(HvmStartInfo, rsdp_paddr)), self.rsdp_paddr)?;
        if self.version != 0 {
            let entries =
                u32::try_from(self.memory_map.len()).map_err(|_| WriteError::TooLong {
                    len: self.memory_map.len() as u64,
                })?;
            w.write_u64(field(offset_of!(HvmStartInfo, memmap_paddr)), memmap_paddr)?;
            w.write_u32(field(offset_of!(HvmStartInfo, memmap_entries)), entries)?;
        }
        Ok(ebx)
    }
}

#[cfg(feature = "hvm")]
const fn size_of_modlist_entry() -> usize {
    core::mem::size_of::<HvmModlistEntry>()
}

/// A multiboot2 MBI written tag by tag at a [`PhysWriter`]'s cursor: the header first, each
/// tag 8-aligned, `total_size` filled in by [`MbiWriter::end`] or [`MbiWriter::finish`].
///
/// Methods chain; the first error is kept and returned by `end` / `finish`, so a chain reads
/// like the MBI it writes. Feature `multiboot2`.
#[cfg(feature = "multiboot2")]
#[derive(Debug)]
pub struct MbiWriter<'w, 'a> {
    writer: &'w mut PhysWriter<'a>,
    start: u64,
    error: Option<WriteError>,
}

#[cfg(feature = "multiboot2")]
impl<'w, 'a> MbiWriter<'w, 'a> {
    /// Starts an MBI at the writer's cursor, rounded up to 8 (the header's `total_size` is
    /// written at the end).
    pub fn begin(writer: &'w mut PhysWriter<'a>) -> Self {
        let start = writer.align(8);
        let error = writer.push(&[0; 8]).err();
        Self {
            writer,
            start,
            error,
        }
    }

    /// Where the MBI starts.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The offset in the MBI where the next tag goes.
    pub fn next_offset(&self) -> u32 {
        // The MBI is written into a buffer of at most 4 GiB past its start in practice; a
        // larger offset saturates.
        u32::try_from(self.writer.cursor().next_multiple_of(8) - self.start).unwrap_or(u32::MAX)
    }

    fn keep(&mut self, result: Result<u64, WriteError>) {
        if let (Err(e), None) = (result, self.error) {
            self.error = Some(e);
        }
    }

    /// Starts a tag with header `tag_type`, `size` (written as given); the caller pushes the
    /// payload.
    fn header(&mut self, tag_type: u32, size: u32) {
        self.writer.align(8);
        let result = self.writer.push(&tag_type.to_le_bytes());
        self.keep(result);
        let result = self.writer.push(&size.to_le_bytes());
        self.keep(result);
    }

    fn payload(&mut self, bytes: &[u8]) {
        let result = self.writer.push(bytes);
        self.keep(result);
    }

    fn size_of(&mut self, payload_len: usize) -> u32 {
        let size = 8 + payload_len as u64;
        u32::try_from(size).unwrap_or_else(|_| {
            self.error.get_or_insert(WriteError::TooLong { len: size });
            u32::MAX
        })
    }

    /// A tag of `tag_type` whose size field is `size`, whatever the payload's length (it may
    /// lie, for tests of the parser's refusals); the payload follows the header.
    pub fn raw_tag(&mut self, tag_type: u32, size: u32, payload: &[u8]) -> &mut Self {
        self.header(tag_type, size);
        self.payload(payload);
        self
    }

    /// A tag of `tag_type` with `payload` (size `8 + payload.len()`).
    pub fn tag(&mut self, tag_type: u32, payload: &[u8]) -> &mut Self {
        let size = self.size_of(payload.len());
        self.raw_tag(tag_type, size, payload)
    }

    /// A string tag (type 1 or 2): the string and its NUL.
    fn string_tag(&mut self, tag_type: u32, string: &[u8]) -> &mut Self {
        let size = self.size_of(string.len() + 1);
        self.header(tag_type, size);
        self.payload(string);
        self.payload(&[0]);
        self
    }

    /// The command line (type 1); a NUL is added.
    pub fn cmdline(&mut self, line: &[u8]) -> &mut Self {
        self.string_tag(TAG_CMDLINE, line)
    }

    /// The boot loader name (type 2); a NUL is added.
    pub fn bootloader_name(&mut self, name: &[u8]) -> &mut Self {
        self.string_tag(TAG_BOOTLOADER_NAME, name)
    }

    /// One module (type 3): `mod_start`, `mod_end`, its string (a NUL is added).
    pub fn module(&mut self, mod_start: u32, mod_end: u32, string: &[u8]) -> &mut Self {
        let size = self.size_of(8 + string.len() + 1);
        self.header(TAG_MODULE, size);
        self.payload(&mod_start.to_le_bytes());
        self.payload(&mod_end.to_le_bytes());
        self.payload(string);
        self.payload(&[0]);
        self
    }

    /// Basic memory information (type 4), in KiB.
    pub fn basic_meminfo(&mut self, mem_lower_kib: u32, mem_upper_kib: u32) -> &mut Self {
        self.header(TAG_BASIC_MEMINFO, 16);
        self.payload(&mem_lower_kib.to_le_bytes());
        self.payload(&mem_upper_kib.to_le_bytes());
        self
    }

    /// The memory map (type 6) of `entry_size`-byte entries: each the version-0 fields
    /// (`u64 base`, `u64 length`, `u32 type`, `u32 reserved` 0), then, when `entry_size` is
    /// above 24, bytes of 0xee up to `entry_size`, so a reader that ignores `entry_size`
    /// reads garbage. An `entry_size` below 24 writes each entry's first `entry_size` bytes.
    pub fn memory_map(
        &mut self,
        entry_size: u32,
        entry_version: u32,
        regions: &[MemoryRegion],
    ) -> &mut Self {
        let size = self.size_of(8 + regions.len() * entry_size as usize);
        self.header(TAG_MEMORY_MAP, size);
        self.payload(&entry_size.to_le_bytes());
        self.payload(&entry_version.to_le_bytes());
        for region in regions {
            let mut entry = [0u8; MEMORY_MAP_ENTRY_V0_SIZE as usize];
            entry[0..8].copy_from_slice(&region.start.to_le_bytes());
            entry[8..16].copy_from_slice(&region.len.to_le_bytes());
            entry[16..20].copy_from_slice(&region.kind.to_le_bytes());
            self.entry(&entry, entry_size, 0xee);
        }
        self
    }

    /// One entry of `entry_size` bytes: `fields`, cut or padded with `fill`.
    fn entry(&mut self, fields: &[u8], entry_size: u32, fill: u8) {
        let size = entry_size as usize;
        self.payload(fields.get(..size).unwrap_or(fields));
        for _ in fields.len()..size {
            self.payload(&[fill]);
        }
    }

    /// The EFI memory map (type 17) of `descriptor_size`-byte descriptors: each the 40-byte
    /// `EFI_MEMORY_DESCRIPTOR`, then bytes of 0xee up to `descriptor_size` (OVMF's are 48
    /// bytes), so a reader that ignores `descriptor_size` reads garbage. A `descriptor_size`
    /// below 40 writes each descriptor's first `descriptor_size` bytes.
    pub fn efi_memory_map(
        &mut self,
        descriptor_size: u32,
        descriptor_version: u32,
        descriptors: &[EfiMemoryDescriptor],
    ) -> &mut Self {
        let size = self.size_of(8 + descriptors.len() * descriptor_size as usize);
        self.header(TAG_EFI_MEMORY_MAP, size);
        self.payload(&descriptor_size.to_le_bytes());
        self.payload(&descriptor_version.to_le_bytes());
        for descriptor in descriptors {
            self.entry(&descriptor.to_bytes(), descriptor_size, 0xee);
        }
        self
    }

    /// Writes the end tag (type 0, size 8) and `total_size`; returns the MBI's address, the
    /// `%ebx` to pass to [`crate::Multiboot2Info::parse`].
    pub fn end(&mut self) -> Result<u32, WriteError> {
        self.header(TAG_END, 8);
        self.finish()
    }

    /// Writes `total_size` (from the MBI's start to the cursor) without an end tag; returns
    /// the MBI's address.
    pub fn finish(&mut self) -> Result<u32, WriteError> {
        let total = self.writer.cursor() - self.start;
        let total = u32::try_from(total).map_err(|_| WriteError::TooLong { len: total })?;
        self.finish_with_total_size(total)
    }

    /// Writes `total_size` as given (it may lie); returns the MBI's address.
    pub fn finish_with_total_size(&mut self, total_size: u32) -> Result<u32, WriteError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.writer.write_u32(self.start, total_size)?;
        ebx_of(self.start)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;
    use std::vec;

    use super::*;

    #[test]
    fn writes_bytes_where_directmap_reads_them() {
        let mut memory = [0u64; 4];
        let mut w = PhysWriter::new(&mut memory, 0x1004);
        w.write_bytes(0x1005, &[0xaa, 0xbb]).unwrap();
        w.write_u32(0x1020, 0x1122_3344).unwrap();
        assert_eq!(
            w.write_u32(0x1021, 0),
            Err(WriteError::OutOfRoom {
                paddr: 0x1021,
                len: 4,
                window: PhysRange::new(0x1004, 0x1024)
            })
        );
        assert!(w.write_bytes(0x1000, &[1]).is_err());
        assert_eq!(memory[0], 0xbbaa00);
        assert_eq!(memory[3] >> 32, 0x1122_3344);
    }

    #[test]
    #[cfg(all(feature = "hvm", feature = "multiboot2"))]
    fn structures_above_4_gib_are_refused() {
        let mut memory = [0u64; 64];
        let mut w = PhysWriter::new(&mut memory, 1 << 32);
        assert_eq!(
            PvhStartInfo::new(&[]).write(&mut w),
            Err(WriteError::Above4GiB { paddr: 1 << 32 })
        );
        let mut w = PhysWriter::new(&mut memory, 1 << 32);
        assert_eq!(
            MbiWriter::begin(&mut w).end(),
            Err(WriteError::Above4GiB { paddr: 1 << 32 })
        );
    }

    #[test]
    #[cfg(feature = "multiboot2")]
    fn mbi_that_does_not_fit_is_an_error_not_a_partial_image() {
        let mut memory = [0u64; 4];
        let mut w = PhysWriter::new(&mut memory, 0x1000);
        let err = MbiWriter::begin(&mut w)
            .cmdline(b"a command line longer than the buffer")
            .end()
            .unwrap_err();
        assert!(matches!(err, WriteError::OutOfRoom { .. }), "{err}");
    }

    /// The buffer's bytes, little-endian, as physical memory from `base` holds them.
    fn bytes_of(memory: &[u64]) -> std::vec::Vec<u8> {
        memory.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Reads little-endian fields at physical addresses of a buffer from `base`.
    struct Image {
        bytes: std::vec::Vec<u8>,
        base: u64,
    }

    impl Image {
        fn new(memory: &[u64], base: u64) -> Self {
            Self {
                bytes: bytes_of(memory),
                base,
            }
        }
        fn at(&self, paddr: u64, len: usize) -> &[u8] {
            let start = usize::try_from(paddr - self.base).unwrap();
            &self.bytes[start..start + len]
        }
        fn u32(&self, paddr: u64) -> u32 {
            u32::from_le_bytes(self.at(paddr, 4).try_into().unwrap())
        }
        fn u64(&self, paddr: u64) -> u64 {
            u64::from_le_bytes(self.at(paddr, 8).try_into().unwrap())
        }
        /// The NUL-terminated string at `paddr`, without its NUL.
        fn cstr(&self, paddr: u64) -> &[u8] {
            let rest = self.at(paddr, self.bytes.len() - (paddr - self.base) as usize);
            &rest[..rest.iter().position(|&b| b == 0).unwrap()]
        }
    }

    #[test]
    fn the_cursor_moves_past_what_is_pushed_and_nothing_else_moves_it() {
        let mut memory = [0u64; 8];
        let mut w = PhysWriter::new(&mut memory, 0x1000);
        assert_eq!(w.window(), PhysRange::new(0x1000, 0x1040));
        assert_eq!(w.cursor(), 0x1000);
        assert_eq!(w.push(&[1, 2, 3]), Ok(0x1000));
        assert_eq!(w.cursor(), 0x1003);
        assert_eq!(w.push_cstr(b"ab"), Ok(0x1003));
        assert_eq!(w.cursor(), 0x1006);
        assert_eq!(w.align(8), 0x1008);
        assert_eq!(w.cursor(), 0x1008);
        assert_eq!(w.align(8), 0x1008);
        w.write_u64(0x1030, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(w.cursor(), 0x1008);
        w.set_cursor(0x1021);
        assert_eq!(w.cursor(), 0x1021);
        assert_eq!(w.push(&[0xcc]), Ok(0x1021));
        assert_eq!(w.cursor(), 0x1022);
        let image = Image::new(&memory, 0x1000);
        assert_eq!(image.at(0x1000, 6), [1, 2, 3, b'a', b'b', 0]);
        assert_eq!(image.at(0x1020, 3), [0, 0xcc, 0]);
        assert_eq!(image.u64(0x1030), 0x1122_3344_5566_7788);
    }

    /// A write that does not fit in the window is refused whole: no byte of it lands,
    /// neither the part inside the window nor anything below it. An empty write fits
    /// anywhere.
    #[test]
    fn a_write_that_does_not_fit_changes_nothing() {
        let mut memory = [0u64; 4];
        let window = PhysRange::new(0x1000, 0x1020);
        let mut w = PhysWriter::new(&mut memory, 0x1000);
        for (paddr, len) in [
            (0x101e, 4),
            (0xffe, 4),
            (0x1020, 1),
            (0x800, 1),
            (0x1000, 0x21),
        ] {
            assert_eq!(
                w.write_bytes(paddr, &vec![0xaa; len]),
                Err(WriteError::OutOfRoom {
                    paddr,
                    len: len as u64,
                    window
                }),
                "{len} at {paddr:#x}"
            );
        }
        assert_eq!(w.write_bytes(0x5000, &[]), Ok(()));
        assert_eq!(w.write_bytes(0x101c, &[0xbb; 4]), Ok(()));
        assert_eq!(memory, [0, 0, 0, 0xbbbb_bbbb << 32]);
    }

    #[test]
    fn write_errors_say_what_did_not_fit() {
        let cases = [
            (
                WriteError::OutOfRoom {
                    paddr: 0x1021,
                    len: 4,
                    window: PhysRange::new(0x1000, 0x1020),
                },
                "4 bytes at 0x1021 do not fit in the buffer's window [0x1000, 0x1020)",
            ),
            (
                WriteError::Above4GiB { paddr: 1 << 32 },
                "structure at 0x100000000 is out of %ebx's reach (4 GiB)",
            ),
            (
                WriteError::TooLong { len: 1 << 32 },
                "length 4294967296 does not fit in a u32",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    /// `hvm_start_info` as Xen's `public/arch-x86/hvm/start_info.h` lays it out: magic at
    /// 0, version 4, flags 8, nr_modules 12, modlist_paddr 16, cmdline_paddr 24,
    /// rsdp_paddr 32, memmap_paddr 40, memmap_entries 48 (56 bytes in version 1); module
    /// entries of 32 bytes (paddr, size, cmdline_paddr, reserved), memory-map entries of
    /// 24 (addr, size, type, reserved). The writer's order: start info, memory map, module
    /// list, command line, module command lines.
    #[test]
    #[cfg(feature = "hvm")]
    fn the_pvh_start_info_is_laid_out_as_start_info_h_says() {
        let map = [
            MemoryRegion {
                start: 0,
                len: 0x9fc00,
                kind: 1,
            },
            MemoryRegion {
                start: 0x10_0000,
                len: 0x7f0_0000,
                kind: 2,
            },
        ];
        let modules = [
            PvhModule {
                paddr: 0x40_0000,
                size: 0x1234,
                cmdline: Some(b"initrd"),
            },
            PvhModule {
                paddr: 0x50_0000,
                size: 0x10,
                cmdline: None,
            },
            PvhModule {
                paddr: 0x60_0000,
                size: 0x2000,
                cmdline: Some(b"xsm"),
            },
        ];
        let mut memory = [0u64; 0x200 / 8];
        let mut w = PhysWriter::new(&mut memory, 0x1000);
        w.set_cursor(0x1004);
        let ebx = PvhStartInfo {
            version: 1,
            flags: 0x5,
            rsdp_paddr: 0xf_e000,
            memory_map: &map,
            modules: &modules,
            cmdline: Some(b"console=ttyS0"),
        }
        .write(&mut w)
        .unwrap();
        // 8-aligned from 0x1004; the map after the 56 bytes, the list after the map's 48.
        let (si, memmap, modlist) = (0x1008, 0x1040, 0x1070);
        // The strings after the list's 96 bytes: 14, 7 and 4 bytes with their NULs.
        let (cmdline, initrd, xsm) = (0x10d0, 0x10de, 0x10e5);
        assert_eq!(ebx, si);
        assert_eq!(w.cursor(), 0x10e9);
        let image = Image::new(&memory, 0x1000);
        let si = u64::from(si);
        assert_eq!(image.u32(si), 0x336e_c578);
        assert_eq!(image.u32(si + 4), 1);
        assert_eq!(image.u32(si + 8), 0x5);
        assert_eq!(image.u32(si + 12), 3);
        assert_eq!(image.u64(si + 16), modlist);
        assert_eq!(image.u64(si + 24), cmdline);
        assert_eq!(image.u64(si + 32), 0xf_e000);
        assert_eq!(image.u64(si + 40), memmap);
        assert_eq!(image.u32(si + 48), 2);
        assert_eq!(image.u32(si + 52), 0);
        for (i, region) in (0u64..).zip(&map) {
            let entry = memmap + i * 24;
            assert_eq!(image.u64(entry), region.start);
            assert_eq!(image.u64(entry + 8), region.len);
            assert_eq!(image.u32(entry + 16), region.kind);
            assert_eq!(image.u32(entry + 20), 0);
        }
        for (i, (module, string)) in (0u64..).zip(modules.iter().zip([initrd, 0, xsm])) {
            let entry = modlist + i * 32;
            assert_eq!(image.u64(entry), module.paddr);
            assert_eq!(image.u64(entry + 8), module.size);
            assert_eq!(image.u64(entry + 16), string);
            assert_eq!(image.u64(entry + 24), 0);
            if let Some(line) = module.cmdline {
                assert_eq!(image.cstr(string), line);
            }
        }
        assert_eq!(image.cstr(cmdline), b"console=ttyS0");
    }

    /// Version 0 is 40 bytes, without memmap_paddr and memmap_entries: what follows it
    /// starts at +40. Absent tables and strings have address 0.
    #[test]
    #[cfg(feature = "hvm")]
    fn a_version_0_start_info_is_40_bytes_and_absent_pieces_have_address_0() {
        let mut memory = [0xffff_ffff_ffff_ffffu64; 0x100 / 8];
        let mut w = PhysWriter::new(&mut memory, 0x2000);
        let ebx = PvhStartInfo {
            version: 0,
            cmdline: Some(b"v0"),
            ..PvhStartInfo::new(&[])
        }
        .write(&mut w)
        .unwrap();
        assert_eq!(ebx, 0x2000);
        assert_eq!(w.cursor(), 0x2000 + 40 + 3);
        let image = Image::new(&memory, 0x2000);
        assert_eq!(image.u32(0x2004), 0);
        assert_eq!(image.u32(0x200c), 0);
        assert_eq!(image.u64(0x2010), 0);
        assert_eq!(image.u64(0x2018), 0x2028);
        assert_eq!(image.cstr(0x2028), b"v0");
        // Version 1 with nothing but the header: 56 bytes, every address 0.
        let mut memory = [0xffff_ffff_ffff_ffffu64; 0x100 / 8];
        let mut w = PhysWriter::new(&mut memory, 0x2000);
        PvhStartInfo::new(&[]).write(&mut w).unwrap();
        assert_eq!(w.cursor(), 0x2000 + 56);
        let image = Image::new(&memory, 0x2000);
        for field in [0x10, 0x18, 0x20, 0x28] {
            assert_eq!(image.u64(0x2000 + field), 0, "field at {field:#x}");
        }
        assert_eq!(image.u32(0x2030), 0);
        assert_eq!(image.u32(0x2034), 0);
    }

    /// Every `MbiWriter` tag that rust-osdev's builder also writes (command line, boot
    /// loader name, modules, basic meminfo, memory map, EFI memory map), byte for byte,
    /// from an unaligned cursor; `start` and `next_offset` say where the MBI and its next
    /// tag are.
    #[test]
    #[cfg(feature = "multiboot2")]
    fn the_mbi_writer_writes_every_tag_as_the_crate_builder_does() {
        use ::multiboot2::{
            BasicMemoryInfoTag, BootLoaderNameTag, Builder, CommandLineTag, EFIMemoryAreaType,
            EFIMemoryAttribute, EFIMemoryDesc, EFIMemoryMapTag, MaybeDynSized, MemoryArea,
            MemoryAreaType, MemoryMapTag, ModuleTag,
        };
        let map = [
            MemoryRegion {
                start: 0,
                len: 0x9fc00,
                kind: 1,
            },
            MemoryRegion {
                start: 0x10_0000,
                len: 0xbfee_0000,
                kind: 1,
            },
            MemoryRegion {
                start: 0xfffc_0000,
                len: 0x4_0000,
                kind: 2,
            },
        ];
        let descriptors = [
            EfiMemoryDescriptor {
                kind: 7,
                physical_start: 0x10_0000,
                virtual_start: 0x1234_5000,
                number_of_pages: 0x700,
                attribute: 0xf,
            },
            EfiMemoryDescriptor {
                kind: 11,
                physical_start: 0xffc0_0000,
                virtual_start: 0,
                number_of_pages: 0x400,
                attribute: (1 << 63) | 1,
            },
        ];
        let theirs = Builder::new()
            .cmdline(CommandLineTag::new("console=com1"))
            .bootloader(BootLoaderNameTag::new("GRUB 2.12"))
            .add_module(ModuleTag::new(0x20_0000, 0x20_1234, "initrd"))
            .add_module(ModuleTag::new(0x30_0000, 0x30_0010, ""))
            .meminfo(BasicMemoryInfoTag::new(639, 0x1fc00))
            .mmap(MemoryMapTag::new(&map.map(|r| {
                MemoryArea::new(r.start, r.len, MemoryAreaType::from(r.kind))
            })))
            .efi_mmap(EFIMemoryMapTag::new_from_descs(&descriptors.map(|d| {
                EFIMemoryDesc {
                    ty: EFIMemoryAreaType(d.kind),
                    padding: 0,
                    phys_start: d.physical_start,
                    virt_start: d.virtual_start,
                    page_count: d.number_of_pages,
                    att: EFIMemoryAttribute::from_bits_retain(d.attribute),
                }
            })))
            .build()
            .as_bytes()
            .to_vec();

        let mut memory = [0u64; 0x200 / 8];
        let mut w = PhysWriter::new(&mut memory, 0x1000);
        w.set_cursor(0x1003);
        let mut mbi = MbiWriter::begin(&mut w);
        assert_eq!(mbi.start(), 0x1008);
        assert_eq!(mbi.next_offset(), 8);
        mbi.cmdline(b"console=com1");
        // 8 + 13 bytes, padded: the next tag at 8 + 24.
        assert_eq!(mbi.next_offset(), 32);
        mbi.bootloader_name(b"GRUB 2.12")
            .module(0x20_0000, 0x20_1234, b"initrd")
            .module(0x30_0000, 0x30_0010, b"")
            .basic_meminfo(639, 0x1fc00)
            .memory_map(24, 0, &map)
            .efi_memory_map(40, 1, &descriptors);
        assert_eq!(mbi.start(), 0x1008);
        let ebx = mbi.end().unwrap();
        assert_eq!(ebx, 0x1008);
        assert_eq!(w.cursor(), 0x1008 + theirs.len() as u64);
        let ours = Image::new(&memory, 0x1000);
        assert_eq!(ours.at(0x1008, theirs.len()), &theirs[..]);
    }

    /// Memory-map entries (and EFI descriptors) are `entry_size` bytes: the fields, then
    /// 0xee up to the size, or the fields' first bytes when the size is smaller; the tag's
    /// size counts the entries at that size.
    #[test]
    #[cfg(feature = "multiboot2")]
    fn map_entries_take_the_size_the_tag_declares() {
        let region = MemoryRegion {
            start: 0x1122_3344_5566_7788,
            len: 0x99aa_bbcc_ddee_ff00,
            kind: 0x0403_0201,
        };
        let fields: std::vec::Vec<u8> = [
            &region.start.to_le_bytes()[..],
            &region.len.to_le_bytes(),
            &region.kind.to_le_bytes(),
            &[0; 4],
        ]
        .concat();
        for entry_size in [16u32, 24, 32] {
            let mut memory = [0u64; 0x100 / 8];
            let mut w = PhysWriter::new(&mut memory, 0);
            let mut mbi = MbiWriter::begin(&mut w);
            mbi.memory_map(entry_size, 7, &[region, region]);
            let end_tag = mbi.next_offset();
            mbi.end().unwrap();
            let image = Image::new(&memory, 0);
            let size = 16 + 2 * entry_size;
            assert_eq!(image.u32(8), 6);
            assert_eq!(image.u32(12), size);
            assert_eq!(image.u32(16), entry_size);
            assert_eq!(image.u32(20), 7);
            let mut entry = fields.clone();
            entry.resize(entry_size as usize, 0xee);
            for i in 0..2 {
                assert_eq!(
                    image.at(24 + u64::from(i * entry_size), entry_size as usize),
                    &entry[..]
                );
            }
            assert_eq!(end_tag, 8 + size.next_multiple_of(8));
            assert_eq!(image.u32(u64::from(end_tag)), 0);
            assert_eq!(image.u32(u64::from(end_tag) + 4), 8);
            assert_eq!(image.u32(0), end_tag + 8);
        }
        let descriptor = EfiMemoryDescriptor {
            kind: 7,
            physical_start: 0x10_0000,
            virtual_start: 0x20_0000,
            number_of_pages: 3,
            attribute: 0xf,
        };
        for descriptor_size in [32u32, 48] {
            let mut memory = [0u64; 0x100 / 8];
            let mut w = PhysWriter::new(&mut memory, 0);
            MbiWriter::begin(&mut w)
                .efi_memory_map(descriptor_size, 1, &[descriptor])
                .end()
                .unwrap();
            let image = Image::new(&memory, 0);
            assert_eq!(image.u32(8), 17);
            assert_eq!(image.u32(12), 16 + descriptor_size);
            assert_eq!(image.u32(16), descriptor_size);
            let mut bytes = descriptor.to_bytes().to_vec();
            bytes.resize(descriptor_size as usize, 0xee);
            assert_eq!(image.at(24, descriptor_size as usize), &bytes[..]);
        }
    }

    /// `raw_tag` writes the size it is given, `tag` the payload's; `finish` leaves the end
    /// tag out and `finish_with_total_size` writes the total it is given.
    #[test]
    #[cfg(feature = "multiboot2")]
    fn raw_tags_and_totals_are_written_as_given() {
        let mut memory = [0u64; 0x100 / 8];
        let mut w = PhysWriter::new(&mut memory, 0x3000);
        let ebx = MbiWriter::begin(&mut w)
            .raw_tag(0x99, 0x1000, &[1, 2, 3])
            .tag(0x98, &[4, 5, 6, 7, 8])
            .finish()
            .unwrap();
        assert_eq!(ebx, 0x3000);
        let image = Image::new(&memory, 0x3000);
        // The header, the raw tag padded to 16, the 13-byte tag.
        assert_eq!(image.u32(0x3000), 8 + 16 + 13);
        assert_eq!(image.u32(0x3008), 0x99);
        assert_eq!(image.u32(0x300c), 0x1000);
        assert_eq!(image.at(0x3010, 3), [1, 2, 3]);
        assert_eq!(image.u32(0x3018), 0x98);
        assert_eq!(image.u32(0x301c), 13);
        assert_eq!(image.at(0x3020, 5), [4, 5, 6, 7, 8]);
        // Nothing after the last tag: no end tag.
        assert_eq!(image.at(0x3025, 16), [0; 16]);

        let mut memory = [0u64; 0x100 / 8];
        let mut w = PhysWriter::new(&mut memory, 0x3000);
        let ebx = MbiWriter::begin(&mut w)
            .basic_meminfo(1, 2)
            .finish_with_total_size(0xdead)
            .unwrap();
        assert_eq!(ebx, 0x3000);
        let image = Image::new(&memory, 0x3000);
        assert_eq!(image.u32(0x3000), 0xdead);
        assert_eq!(
            image.at(0x3008, 16),
            [4, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]
        );
    }

    /// Once a tag does not fit, the error returned is that first one, though later tags
    /// (and the end tag) do not fit either.
    #[test]
    #[cfg(feature = "multiboot2")]
    fn the_first_tag_that_does_not_fit_is_the_error() {
        let mut memory = [0u64; 0x20 / 8];
        let window = PhysRange::new(0x1000, 0x1020);
        let mut w = PhysWriter::new(&mut memory, 0x1000);
        let err = MbiWriter::begin(&mut w)
            .basic_meminfo(1, 2)
            // Its header fits at 0x1018; its string, at 0x1020, does not.
            .cmdline(b"too long")
            .module(1, 2, b"m")
            .end()
            .unwrap_err();
        assert_eq!(
            err,
            WriteError::OutOfRoom {
                paddr: 0x1020,
                len: 8,
                window
            }
        );
    }
}

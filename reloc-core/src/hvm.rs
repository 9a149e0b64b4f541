//! The PVH boot information (`hvm_start_info`, Xen's `arch-x86/hvm/start_info.h`): layout and
//! a parser that copies what relocation needs out of firmware memory.
//!
//! A PVH loader (QEMU `-kernel`, Xen) enters the image with `%ebx` holding the physical
//! address of an `hvm_start_info`. It and everything it points to (memory map, module list,
//! modules, command lines) live in RAM the firmware also reports as usable, so it must be
//! copied before that memory is reused, and kept clear of when choosing where to relocate
//! ([`BootInfo::avoid_ranges`]).
//!
//! The parser reads only through [`PhysMemory`] (`check_range` before every read), so it is
//! safe code a host test or fuzzer can feed arbitrary bytes: every malformed input is a
//! [`BootInfoError`] naming what is wrong and where, never a panic. Version 0 has no memory
//! map and is rejected: relocation needs one.
//!
//! Command lines (the kernel's and each module's) may be of any length: each ends at its
//! NUL, and only memory that cannot be read ends the scan. The kernel command line's first
//! [`CMDLINE_CAPACITY`] bytes are copied ([`BootInfo::cmdline_truncated`] says when that
//! is not all of it); [`BootInfo::cmdline_has_word`] searches the whole line, reading it
//! again through [`PhysMemory`] when the copy is cut. Module command lines are never copied,
//! only located.

use core::fmt;
use core::mem::{offset_of, size_of};

use crate::boot::{
    BootModule, LoaderInfo, MemoryRegion, CMDLINE_CAPACITY, DEFAULT_MEMMAP_CAPACITY,
    DEFAULT_MODULE_CAPACITY,
};
use crate::phys::{MemoryFault, PhysMemory, PhysRange};

/// `hvm_start_info.magic`: "xEn3" with the top bit of the last byte set.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// Size of a version-0 `hvm_start_info` (no memory-map fields).
pub const START_INFO_V0_SIZE: usize = 40;

/// Size of a version-1 `hvm_start_info`.
pub const START_INFO_V1_SIZE: usize = size_of::<HvmStartInfo>();

/// `hvm_start_info`, version 1 (version 0 stops after `rsdp_paddr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HvmStartInfo {
    /// [`START_INFO_MAGIC`].
    pub magic: u32,
    /// 0 or 1; 1 adds the memory map.
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Entries in the module list.
    pub nr_modules: u32,
    /// Physical address of the module list (0: none).
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line (0: none).
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP (0: none).
    pub rsdp_paddr: u64,
    /// Physical address of the memory map (version 1).
    pub memmap_paddr: u64,
    /// Entries in the memory map (version 1).
    pub memmap_entries: u32,
    /// Must be zero.
    pub reserved: u32,
}

const _: () = {
    assert!(offset_of!(HvmStartInfo, magic) == 0);
    assert!(offset_of!(HvmStartInfo, version) == 4);
    assert!(offset_of!(HvmStartInfo, flags) == 8);
    assert!(offset_of!(HvmStartInfo, nr_modules) == 12);
    assert!(offset_of!(HvmStartInfo, modlist_paddr) == 16);
    assert!(offset_of!(HvmStartInfo, cmdline_paddr) == 24);
    assert!(offset_of!(HvmStartInfo, rsdp_paddr) == 32);
    assert!(offset_of!(HvmStartInfo, memmap_paddr) == 40);
    assert!(offset_of!(HvmStartInfo, memmap_entries) == 48);
    assert!(offset_of!(HvmStartInfo, reserved) == 52);
    assert!(size_of::<HvmStartInfo>() == 56);
    assert!(offset_of!(HvmStartInfo, memmap_paddr) == START_INFO_V0_SIZE);
};

/// `hvm_modlist_entry`: one boot module.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HvmModlistEntry {
    /// Physical address of the module.
    pub paddr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Physical address of its NUL-terminated command line (0: none).
    pub cmdline_paddr: u64,
    /// Must be zero.
    pub reserved: u64,
}

const _: () = {
    assert!(offset_of!(HvmModlistEntry, paddr) == 0);
    assert!(offset_of!(HvmModlistEntry, size) == 8);
    assert!(offset_of!(HvmModlistEntry, cmdline_paddr) == 16);
    assert!(offset_of!(HvmModlistEntry, reserved) == 24);
    assert!(size_of::<HvmModlistEntry>() == 32);
};

/// `hvm_memmap_table_entry`: one E820-style memory-map entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HvmMemmapEntry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type (1 RAM, 2 reserved, 3 ACPI, 4 NVS, 5 unusable, 6 disabled, 7 pmem).
    pub kind: u32,
    /// Must be zero.
    pub reserved: u32,
}

const _: () = {
    assert!(offset_of!(HvmMemmapEntry, addr) == 0);
    assert!(offset_of!(HvmMemmapEntry, size) == 8);
    assert!(offset_of!(HvmMemmapEntry, kind) == 16);
    assert!(offset_of!(HvmMemmapEntry, reserved) == 20);
    assert!(size_of::<HvmMemmapEntry>() == 24);
};

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(offset..offset + 4) {
        word.copy_from_slice(src);
    }
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(src) = bytes.get(offset..offset + 8) {
        word.copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}

impl HvmStartInfo {
    /// Decodes the little-endian bytes of a version-1 structure (offsets from the asserted
    /// layout). For version 0, pass the 40 bytes padded with zeros.
    pub fn from_bytes(bytes: &[u8; START_INFO_V1_SIZE]) -> Self {
        Self {
            magic: u32_at(bytes, offset_of!(Self, magic)),
            version: u32_at(bytes, offset_of!(Self, version)),
            flags: u32_at(bytes, offset_of!(Self, flags)),
            nr_modules: u32_at(bytes, offset_of!(Self, nr_modules)),
            modlist_paddr: u64_at(bytes, offset_of!(Self, modlist_paddr)),
            cmdline_paddr: u64_at(bytes, offset_of!(Self, cmdline_paddr)),
            rsdp_paddr: u64_at(bytes, offset_of!(Self, rsdp_paddr)),
            memmap_paddr: u64_at(bytes, offset_of!(Self, memmap_paddr)),
            memmap_entries: u32_at(bytes, offset_of!(Self, memmap_entries)),
            reserved: u32_at(bytes, offset_of!(Self, reserved)),
        }
    }
}

impl HvmModlistEntry {
    /// Decodes the little-endian bytes of one entry.
    pub fn from_bytes(bytes: &[u8; size_of::<HvmModlistEntry>()]) -> Self {
        Self {
            paddr: u64_at(bytes, offset_of!(Self, paddr)),
            size: u64_at(bytes, offset_of!(Self, size)),
            cmdline_paddr: u64_at(bytes, offset_of!(Self, cmdline_paddr)),
            reserved: u64_at(bytes, offset_of!(Self, reserved)),
        }
    }
}

impl HvmMemmapEntry {
    /// Decodes the little-endian bytes of one entry.
    pub fn from_bytes(bytes: &[u8; size_of::<HvmMemmapEntry>()]) -> Self {
        Self {
            addr: u64_at(bytes, offset_of!(Self, addr)),
            size: u64_at(bytes, offset_of!(Self, size)),
            kind: u32_at(bytes, offset_of!(Self, kind)),
            reserved: u32_at(bytes, offset_of!(Self, reserved)),
        }
    }
}

/// Which piece of boot data an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BootData {
    /// The `hvm_start_info` structure itself.
    StartInfo,
    /// The memory-map table.
    MemoryMap,
    /// Memory-map entry `index`.
    MemoryMapEntry(u32),
    /// The module list.
    ModuleList,
    /// Module `index`.
    Module(u32),
    /// The command line of module `index`.
    ModuleCommandLine(u32),
    /// The kernel command line.
    CommandLine,
}

impl fmt::Display for BootData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootData::StartInfo => f.write_str("hvm_start_info"),
            BootData::MemoryMap => f.write_str("memory map"),
            BootData::MemoryMapEntry(i) => write!(f, "memory-map entry {i}"),
            BootData::ModuleList => f.write_str("module list"),
            BootData::Module(i) => write!(f, "module {i}"),
            BootData::ModuleCommandLine(i) => write!(f, "command line of module {i}"),
            BootData::CommandLine => f.write_str("command line"),
        }
    }
}

/// Why the boot information was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BootInfoError {
    /// Memory cannot serve a piece of boot data.
    Unreadable {
        /// What was being read.
        what: BootData,
        /// Its physical address.
        paddr: u64,
        /// What memory reported.
        fault: MemoryFault,
    },
    /// `magic` is not [`START_INFO_MAGIC`]: not a PVH start.
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// Version 0 (no memory map) or an unknown version below 1.
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// Version 1 with an empty memory map: nothing to choose a target from.
    NoMemoryMap,
    /// A table has entries but its address is zero.
    MissingTable {
        /// Which table.
        what: BootData,
        /// Its entry count.
        count: u32,
    },
    /// More entries than this parser holds.
    TooManyEntries {
        /// Which table.
        what: BootData,
        /// Entries announced.
        count: u32,
        /// Entries this parser holds.
        capacity: usize,
    },
    /// `start + len` passes 2^64.
    RangeWraps {
        /// Which piece.
        what: BootData,
        /// Its start.
        start: u64,
        /// Its length.
        len: u64,
    },
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::Unreadable { what, paddr, fault } => {
                write!(f, "{what} at {paddr:#x} is unreadable: {fault}")
            }
            BootInfoError::BadMagic { found } => write!(
                f,
                "hvm_start_info magic is {found:#010x}, expected {START_INFO_MAGIC:#010x} (not a PVH boot?)"
            ),
            BootInfoError::UnsupportedVersion { version } => write!(
                f,
                "hvm_start_info version {version} has no memory map; version 1 or later is required"
            ),
            BootInfoError::NoMemoryMap => f.write_str("hvm_start_info memory map is empty"),
            BootInfoError::MissingTable { what, count } => {
                write!(f, "{what} has {count} entries but address 0")
            }
            BootInfoError::TooManyEntries {
                what,
                count,
                capacity,
            } => write!(f, "{what} has {count} entries, more than the {capacity} supported"),
            BootInfoError::RangeWraps { what, start, len } => {
                write!(f, "{what} at {start:#x} of {len:#x} bytes wraps past 2^64")
            }
        }
    }
}

impl core::error::Error for BootInfoError {}

/// What relocation needs from `hvm_start_info`, copied out of firmware memory.
///
/// `MAP` and `MODS` bound the memory-map entries and modules held; more is
/// [`BootInfoError::TooManyEntries`].
#[derive(Clone, Debug)]
pub struct BootInfo<
    const MAP: usize = DEFAULT_MEMMAP_CAPACITY,
    const MODS: usize = DEFAULT_MODULE_CAPACITY,
> {
    /// The structure as read.
    pub header: HvmStartInfo,
    start_info: PhysRange,
    memmap_table: PhysRange,
    memmap: [MemoryRegion; MAP],
    memmap_len: usize,
    modlist: PhysRange,
    modules: [BootModule; MODS],
    module_count: usize,
    cmdline_range: PhysRange,
    cmdline: [u8; CMDLINE_CAPACITY],
    cmdline_len: usize,
    cmdline_truncated: bool,
}

/// The header of [`BootInfo::empty`]: all zero.
const EMPTY_HEADER: HvmStartInfo = HvmStartInfo {
    magic: 0,
    version: 0,
    flags: 0,
    nr_modules: 0,
    modlist_paddr: 0,
    cmdline_paddr: 0,
    rsdp_paddr: 0,
    memmap_paddr: 0,
    memmap_entries: 0,
    reserved: 0,
};

/// A memory-map slot not yet filled.
const EMPTY_REGION: MemoryRegion = MemoryRegion {
    start: 0,
    len: 0,
    kind: 0,
};

/// Reads `buf.len()` bytes at `paddr` through aligned qword reads, checking the covering
/// range first.
fn read_bytes<M: PhysMemory + ?Sized>(
    mem: &M,
    what: BootData,
    paddr: u64,
    buf: &mut [u8],
) -> Result<(), BootInfoError> {
    let len = buf.len() as u64;
    let wraps = BootInfoError::RangeWraps {
        what,
        start: paddr,
        len,
    };
    let end = paddr.checked_add(len).ok_or(wraps)?;
    let first = paddr & !7;
    let last = end.checked_next_multiple_of(8).ok_or(wraps)?;
    mem.check_range(first, last - first)
        .map_err(|fault| BootInfoError::Unreadable { what, paddr, fault })?;
    for (addr, byte) in (paddr..end).zip(buf.iter_mut()) {
        let qword = mem.read_u64(addr & !7);
        *byte = (qword >> ((addr & 7) * 8)) as u8;
    }
    Ok(())
}

/// The range `[start, start + len)` of a piece of boot data, or `RangeWraps`.
/// The range of a firmware table of `count` entries of `entry_size` bytes at `paddr`: present
/// (non-zero address), within `capacity`, not wrapping.
fn table_range(
    what: BootData,
    paddr: u64,
    count: u32,
    capacity: usize,
    entry_size: u64,
) -> Result<PhysRange, BootInfoError> {
    if paddr == 0 {
        return Err(BootInfoError::MissingTable { what, count });
    }
    if count as usize > capacity {
        return Err(BootInfoError::TooManyEntries {
            what,
            count,
            capacity,
        });
    }
    range_of(what, paddr, u64::from(count) * entry_size)
}

fn range_of(what: BootData, start: u64, len: u64) -> Result<PhysRange, BootInfoError> {
    PhysRange::from_start_len(start, len).ok_or(BootInfoError::RangeWraps { what, start, len })
}

/// A NUL-terminated string as [`read_cstr`] found it.
#[derive(Clone, Copy, Default)]
struct CString {
    /// Where it is, NUL included (empty when absent).
    range: PhysRange,
    /// Bytes copied (at most [`CMDLINE_CAPACITY`]).
    copied: usize,
    /// Longer than the copy.
    truncated: bool,
}

/// Finds the NUL-terminated string at `paddr` (0: none), however long: the scan ends at its
/// NUL, or with an error where memory cannot be read or the address space ends. Copies its
/// first [`CMDLINE_CAPACITY`] bytes into `out` if given.
fn read_cstr<M: PhysMemory + ?Sized>(
    mem: &M,
    what: BootData,
    paddr: u64,
    mut out: Option<&mut [u8; CMDLINE_CAPACITY]>,
) -> Result<CString, BootInfoError> {
    if paddr == 0 {
        return Ok(CString::default());
    }
    let mut checked_qword = None;
    // Bounded by the address space: the scan ends at the NUL, at memory that cannot be read,
    // or past the last address.
    for addr in paddr..=u64::MAX {
        let len = addr - paddr;
        let qword = addr & !7;
        if checked_qword != Some(qword) {
            mem.check_range(qword, 8)
                .map_err(|fault| BootInfoError::Unreadable {
                    what,
                    paddr: addr,
                    fault,
                })?;
            checked_qword = Some(qword);
        }
        let byte = (mem.read_u64(qword) >> ((addr & 7) * 8)) as u8;
        if byte == 0 {
            let copied = usize::try_from(len).map_or(CMDLINE_CAPACITY, |n| n.min(CMDLINE_CAPACITY));
            return Ok(CString {
                range: range_of(what, paddr, len + 1)?,
                copied,
                truncated: len > copied as u64,
            });
        }
        let slot = out
            .as_mut()
            .and_then(|o| o.get_mut(usize::try_from(len).ok()?));
        if let Some(slot) = slot {
            *slot = byte;
        }
    }
    // No NUL up to the last address: the string and its NUL pass 2^64.
    Err(BootInfoError::RangeWraps {
        what,
        start: paddr,
        len: (u64::MAX - paddr).saturating_add(2),
    })
}

impl BootInfo {
    /// Reads and validates the `hvm_start_info` at `ebx` (the register a PVH entry hands
    /// over) and everything it points to, with the default capacities
    /// ([`DEFAULT_MEMMAP_CAPACITY`], [`DEFAULT_MODULE_CAPACITY`]).
    ///
    /// Returns the ~4.7 KiB `BootInfo` by value: see [`BootInfo::parse_in_place`] to fill a
    /// `static` or caller-provided storage instead.
    ///
    /// # Stack
    /// About 5.3 KiB (5,296 bytes measured): the returned value (4.7 KiB) lives in the
    /// caller's frame, plus [`BootInfo::parse_in_place`]'s 0.5 KiB. (Measured: release build for
    /// `x86_64-unknown-none` over a [`crate::DirectMap`], the `sub $N,%rsp` of the function
    /// and its deepest callees in `objdump -d`.)
    pub fn parse<M: PhysMemory + ?Sized>(mem: &M, ebx: u32) -> Result<Self, BootInfoError> {
        Self::parse_with_capacity(mem, ebx)
    }
}

impl<const MAP: usize, const MODS: usize> BootInfo<MAP, MODS> {
    /// A boot information holding nothing (no map, no modules, no command line), usable in
    /// a `static` as the storage [`BootInfo::parse_in_place`] fills.
    pub const fn empty() -> Self {
        Self {
            header: EMPTY_HEADER,
            start_info: PhysRange::new(0, 0),
            memmap_table: PhysRange::new(0, 0),
            memmap: [EMPTY_REGION; MAP],
            memmap_len: 0,
            modlist: PhysRange::new(0, 0),
            modules: [BootModule::EMPTY; MODS],
            module_count: 0,
            cmdline_range: PhysRange::new(0, 0),
            cmdline: [0; CMDLINE_CAPACITY],
            cmdline_len: 0,
            cmdline_truncated: false,
        }
    }

    /// [`BootInfo::parse`] with the capacities `MAP` and `MODS` of the type asked for.
    ///
    /// # Stack
    /// As [`BootInfo::parse`], with the frame growing by the size of `Self`.
    pub fn parse_with_capacity<M: PhysMemory + ?Sized>(
        mem: &M,
        ebx: u32,
    ) -> Result<Self, BootInfoError> {
        let mut info = Self::empty();
        info.parse_in_place(mem, ebx)?;
        Ok(info)
    }

    /// Reads and validates the `hvm_start_info` at `ebx` into `self`, writing each field in
    /// place: no copy of the structure is made on the stack. On error `self` is left as
    /// [`BootInfo::empty`].
    ///
    /// # Stack
    /// About 0.5 KiB (512 bytes measured: release build for `x86_64-unknown-none` over a
    /// [`crate::DirectMap`], the `sub $N,%rsp` and pushes of the function and its deepest
    /// callees in `objdump -d`), whatever `MAP` and `MODS` are.
    pub fn parse_in_place<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        ebx: u32,
    ) -> Result<(), BootInfoError> {
        self.clear();
        let read = self.read(mem, u64::from(ebx));
        if read.is_err() {
            self.clear();
        }
        read
    }

    /// Puts `self` back to [`BootInfo::empty`] field by field (no temporary on the stack).
    fn clear(&mut self) {
        self.header = EMPTY_HEADER;
        self.start_info = PhysRange::default();
        self.memmap_table = PhysRange::default();
        self.memmap.fill(EMPTY_REGION);
        self.memmap_len = 0;
        self.modlist = PhysRange::default();
        self.modules.fill(BootModule::EMPTY);
        self.module_count = 0;
        self.cmdline_range = PhysRange::default();
        self.cmdline.fill(0);
        self.cmdline_len = 0;
        self.cmdline_truncated = false;
    }

    fn read<M: PhysMemory + ?Sized>(
        &mut self,
        mem: &M,
        start_info_paddr: u64,
    ) -> Result<(), BootInfoError> {
        // Version 0 is 40 bytes: read that much before trusting the version.
        let mut raw = [0u8; START_INFO_V1_SIZE];
        read_bytes(
            mem,
            BootData::StartInfo,
            start_info_paddr,
            &mut raw[..START_INFO_V0_SIZE],
        )?;
        let v0 = HvmStartInfo::from_bytes(&raw);
        if v0.magic != START_INFO_MAGIC {
            return Err(BootInfoError::BadMagic { found: v0.magic });
        }
        if v0.version < 1 {
            return Err(BootInfoError::UnsupportedVersion {
                version: v0.version,
            });
        }
        read_bytes(mem, BootData::StartInfo, start_info_paddr, &mut raw)?;
        self.header = HvmStartInfo::from_bytes(&raw);
        self.start_info = range_of(
            BootData::StartInfo,
            start_info_paddr,
            START_INFO_V1_SIZE as u64,
        )?;
        self.read_memmap(mem)?;
        self.read_modules(mem)?;
        let line = read_cstr(
            mem,
            BootData::CommandLine,
            self.header.cmdline_paddr,
            Some(&mut self.cmdline),
        )?;
        self.cmdline_range = line.range;
        self.cmdline_len = line.copied;
        self.cmdline_truncated = line.truncated;
        Ok(())
    }

    fn read_memmap<M: PhysMemory + ?Sized>(&mut self, mem: &M) -> Result<(), BootInfoError> {
        let count = self.header.memmap_entries;
        if count == 0 {
            return Err(BootInfoError::NoMemoryMap);
        }
        const ENTRY: u64 = size_of::<HvmMemmapEntry>() as u64;
        let table = table_range(
            BootData::MemoryMap,
            self.header.memmap_paddr,
            count,
            MAP,
            ENTRY,
        )?;
        for (index, slot) in (0..count).zip(self.memmap.iter_mut()) {
            let what = BootData::MemoryMapEntry(index);
            let mut raw = [0u8; size_of::<HvmMemmapEntry>()];
            read_bytes(mem, what, table.start + u64::from(index) * ENTRY, &mut raw)?;
            let entry = HvmMemmapEntry::from_bytes(&raw);
            range_of(what, entry.addr, entry.size)?;
            *slot = MemoryRegion {
                start: entry.addr,
                len: entry.size,
                kind: entry.kind,
            };
        }
        self.memmap_table = table;
        self.memmap_len = count as usize;
        Ok(())
    }

    fn read_modules<M: PhysMemory + ?Sized>(&mut self, mem: &M) -> Result<(), BootInfoError> {
        let count = self.header.nr_modules;
        if count == 0 {
            return Ok(());
        }
        const ENTRY: u64 = size_of::<HvmModlistEntry>() as u64;
        let list = table_range(
            BootData::ModuleList,
            self.header.modlist_paddr,
            count,
            MODS,
            ENTRY,
        )?;
        for (index, slot) in (0..count).zip(self.modules.iter_mut()) {
            let mut raw = [0u8; size_of::<HvmModlistEntry>()];
            read_bytes(
                mem,
                BootData::ModuleList,
                list.start + u64::from(index) * ENTRY,
                &mut raw,
            )?;
            let entry = HvmModlistEntry::from_bytes(&raw);
            let range = range_of(BootData::Module(index), entry.paddr, entry.size)?;
            let cmdline = read_cstr(
                mem,
                BootData::ModuleCommandLine(index),
                entry.cmdline_paddr,
                None,
            )?
            .range;
            *slot = BootModule { range, cmdline };
        }
        self.modlist = list;
        self.module_count = count as usize;
        Ok(())
    }

    /// The memory map, in firmware order (possibly unsorted, with zero-sized entries).
    pub fn memory_map(&self) -> &[MemoryRegion] {
        self.memmap.get(..self.memmap_len).unwrap_or(&[])
    }

    /// The boot modules.
    pub fn modules(&self) -> &[BootModule] {
        self.modules.get(..self.module_count).unwrap_or(&[])
    }

    /// The copy of the kernel command line without its NUL (empty when absent): the whole
    /// line, or its first [`CMDLINE_CAPACITY`] bytes when [`BootInfo::cmdline_truncated`].
    pub fn cmdline(&self) -> &[u8] {
        self.cmdline.get(..self.cmdline_len).unwrap_or(&[])
    }

    /// True when the line was longer than [`CMDLINE_CAPACITY`] and [`BootInfo::cmdline`]
    /// holds only its start. The line was accepted whole; [`BootInfo::cmdline_range`] is
    /// all of it.
    pub fn cmdline_truncated(&self) -> bool {
        self.cmdline_truncated
    }

    /// Where the whole command line is, NUL included (empty when absent).
    pub fn cmdline_range(&self) -> PhysRange {
        self.cmdline_range
    }

    /// True when the whole command line holds `word` as a whitespace-separated token: the
    /// copy when the line fits, else the line read again through `mem` (see
    /// [`LoaderInfo::cmdline_has_word`]).
    pub fn cmdline_has_word<M: PhysMemory + ?Sized>(&self, mem: &M, word: &str) -> bool {
        LoaderInfo::cmdline_has_word(self, mem, word)
    }

    /// Where `hvm_start_info` is.
    pub fn start_info_range(&self) -> PhysRange {
        self.start_info
    }

    /// Every range of boot data a relocation target must not overlap: the start info, the
    /// memory map, the module list, each module and module command line, and the command
    /// line. Empty ranges (absent pieces) are left out.
    pub fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        [
            self.start_info,
            self.memmap_table,
            self.modlist,
            self.cmdline_range,
        ]
        .into_iter()
        .chain(
            self.modules()
                .iter()
                .flat_map(|m| [m.range, m.cmdline].into_iter()),
        )
        .filter(|r| !r.is_empty())
    }

    /// The most ranges [`BootInfo::avoid_ranges`] can yield.
    pub const MAX_AVOID_RANGES: usize = 4 + 2 * MODS;
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

    fn cmdline_truncated(&self) -> bool {
        self.cmdline_truncated
    }

    fn cmdline_range(&self) -> PhysRange {
        self.cmdline_range
    }

    fn avoid_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        BootInfo::avoid_ranges(self)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::phys::DirectMap;
    use crate::select::{select_target, TargetRequest};
    use crate::testing::{PhysWriter, PvhModule, PvhStartInfo};
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    /// Low memory from physical 0, written through `testing::PhysWriter`.
    struct Blob {
        words: Vec<u64>,
    }

    impl Blob {
        fn new(size: usize) -> Self {
            Self {
                words: vec![0; size / 8],
            }
        }
        fn writer(&mut self) -> PhysWriter<'_> {
            PhysWriter::new(&mut self.words, 0)
        }
        fn put(&mut self, at: u64, data: &[u8]) {
            self.writer().write_bytes(at, data).unwrap();
        }
        fn put_u32(&mut self, at: u64, v: u32) {
            self.writer().write_u32(at, v).unwrap();
        }
        fn put_u64(&mut self, at: u64, v: u64) {
            self.writer().write_u64(at, v).unwrap();
        }
        /// A start-info header alone, anywhere (the writer places only well-formed,
        /// 8-aligned ones).
        fn start_info(&mut self, at: u64, version: u32, memmap: u64, entries: u32) {
            self.put_u32(at, START_INFO_MAGIC);
            self.put_u32(at + 4, version);
            self.put_u64(at + 40, memmap);
            self.put_u32(at + 48, entries);
        }
        fn memmap(&mut self, at: u64, entries: &[(u64, u64, u32)]) {
            for (i, &(addr, size, kind)) in entries.iter().enumerate() {
                let e = at + 24 * i as u64;
                self.put_u64(e, addr);
                self.put_u64(e + 8, size);
                self.put_u32(e + 16, kind);
            }
        }
        fn words(&self) -> Vec<u64> {
            self.words.clone()
        }
        fn parse(&self, at: u32) -> Result<BootInfo, BootInfoError> {
            let mut words = self.words();
            let mem = DirectMap::from_slice(&mut words, 0);
            BootInfo::parse(&mem, at)
        }
    }

    fn regions(map: &[(u64, u64, u32)]) -> Vec<MemoryRegion> {
        map.iter()
            .map(|&(start, len, kind)| MemoryRegion { start, len, kind })
            .collect()
    }

    const SEABIOS_MAP: [(u64, u64, u32); 5] = [
        (0, 0x9fc00, 1),
        (0x9fc00, 0x400, 2),
        (0xf0000, 0x10000, 2),
        (0x100000, 0x7ee0000, 1),
        (0xfffc0000, 0x40000, 2),
    ];

    /// Where `seabios_blob` puts things: the start info where SeaBIOS leaves it under QEMU,
    /// then (as the writer lays them out) the memory map and the command line.
    const SI: u64 = 0x21e0;
    const MEMMAP: u64 = SI + 56;
    const CMDLINE: u64 = MEMMAP + 5 * 24;

    /// SeaBIOS's map and `cmdline` (a NUL is added), in 16 KiB from physical 0.
    fn seabios_blob(cmdline: &[u8]) -> Blob {
        let mut blob = Blob::new(0x4000);
        let map = regions(&SEABIOS_MAP);
        let mut writer = blob.writer();
        writer.set_cursor(SI);
        let ebx = PvhStartInfo {
            cmdline: Some(cmdline),
            ..PvhStartInfo::new(&map)
        }
        .write(&mut writer)
        .unwrap();
        assert_eq!(u64::from(ebx), SI);
        blob
    }

    /// `empty()` is a `const fn`: the storage can be a `static`.
    static EMPTY_INFO: BootInfo = BootInfo::empty();

    #[test]
    fn parse_in_place_matches_parse_and_is_emptied_by_an_error() {
        let blob = seabios_blob(b"hold verbose");
        let mut words = blob.words();
        let mem = DirectMap::from_slice(&mut words, 0);
        let by_value = BootInfo::parse(&mem, 0x21e0).unwrap();
        let mut in_place = std::boxed::Box::new(EMPTY_INFO.clone());
        assert!(in_place.memory_map().is_empty());
        in_place.parse_in_place(&mem, 0x21e0).unwrap();
        assert_eq!(in_place.memory_map(), by_value.memory_map());
        assert_eq!(in_place.cmdline(), b"hold verbose");
        assert_eq!(in_place.header, by_value.header);
        assert!(in_place.avoid_ranges().eq(by_value.avoid_ranges()));
        // A failed parse (here: no NUL before the end of memory) leaves `empty()`, not the
        // half-read structure of this attempt nor the previous one.
        let mut bad = seabios_blob(b"");
        let end = bad.words.len() as u64 * 8;
        bad.put_u64(SI + 24, end - 4);
        bad.put(end - 4, b"word");
        let mut words = bad.words();
        let mem = DirectMap::from_slice(&mut words, 0);
        assert!(matches!(
            in_place.parse_in_place(&mem, 0x21e0),
            Err(BootInfoError::Unreadable {
                what: BootData::CommandLine,
                ..
            })
        ));
        assert!(in_place.memory_map().is_empty());
        assert!(in_place.cmdline().is_empty());
        assert_eq!(in_place.header, HvmStartInfo::default());
        assert_eq!(in_place.avoid_ranges().count(), 0);
    }

    #[test]
    fn layout_sizes() {
        assert_eq!(START_INFO_V1_SIZE, 56);
        assert_eq!(size_of::<HvmModlistEntry>(), 32);
        assert_eq!(size_of::<HvmMemmapEntry>(), 24);
    }

    #[test]
    fn seabios_like_blob() {
        let blob = seabios_blob(b"hold  verbose");
        let info = blob.parse(0x21e0).unwrap();
        assert_eq!(info.header.version, 1);
        let map: Vec<_> = info
            .memory_map()
            .iter()
            .map(|r| (r.start, r.len, r.kind))
            .collect();
        assert_eq!(map, SEABIOS_MAP);
        assert_eq!(info.cmdline(), b"hold  verbose");
        assert!(!info.cmdline_truncated());
        let mut words = blob.words();
        let mem = DirectMap::from_slice(&mut words, 0);
        assert!(info.cmdline_has_word(&mem, "hold"));
        assert!(info.cmdline_has_word(&mem, "verbose"));
        assert!(!info.cmdline_has_word(&mem, "hol"));
        let avoid: Vec<_> = info.avoid_ranges().collect();
        assert_eq!(
            avoid,
            [
                PhysRange::new(SI, SI + 56),
                PhysRange::new(MEMMAP, MEMMAP + 5 * 24),
                PhysRange::new(CMDLINE, CMDLINE + 14),
            ]
        );
        // The pick for this map with a 2 MiB image at 2 MiB: 0x7fe0000 rounds to 0x7e00000.
        let mut all = vec![PhysRange::new(0x200000, 0x22a000)];
        all.extend(avoid);
        let pick = select_target(info.memory_map(), &TargetRequest::new(0x2a000, &all));
        assert_eq!(pick.map(x86_64::PhysAddr::as_u64), Ok(0x7c0_0000));
    }

    #[test]
    fn qboot_like_unsorted_map_with_modules() {
        let qboot = [
            (0x100000, 0x7ee0000, 1),
            (0, 0x9fc00, 1),
            (0xfeffc000, 0x4000, 4),
            (0x9fc00, 0x400, 2),
            (0, 0, 0),
        ];
        let mut blob = Blob::new(0x8000);
        let map = regions(&qboot);
        // Two modules, the second with a command line.
        let modules = [
            PvhModule {
                paddr: 0x300000,
                size: 0x1234,
                cmdline: None,
            },
            PvhModule {
                paddr: 0x500000,
                size: 0x10,
                cmdline: Some(b"initrd"),
            },
        ];
        let mut writer = blob.writer();
        writer.set_cursor(0x6000);
        PvhStartInfo {
            modules: &modules,
            ..PvhStartInfo::new(&map)
        }
        .write(&mut writer)
        .unwrap();
        // The writer's layout: start info, map, module list, then the module's string.
        let modlist = 0x6000 + 56 + 5 * 24;
        let initrd = modlist + 2 * 32;
        let info = blob.parse(0x6000).unwrap();
        assert_eq!(info.memory_map().len(), 5);
        assert_eq!(info.memory_map()[4].len, 0);
        assert_eq!(info.memory_map()[2].kind, 4);
        assert_eq!(
            info.modules(),
            [
                BootModule {
                    range: PhysRange::new(0x300000, 0x301234),
                    cmdline: PhysRange::default()
                },
                BootModule {
                    range: PhysRange::new(0x500000, 0x500010),
                    cmdline: PhysRange::new(initrd, initrd + 7)
                },
            ]
        );
        let avoid: Vec<_> = info.avoid_ranges().collect();
        assert_eq!(avoid.len(), 6, "{avoid:?}");
        assert!(avoid.contains(&PhysRange::new(modlist, modlist + 0x40)));
        assert!(avoid.contains(&PhysRange::new(0x300000, 0x301234)));
        assert!(info.cmdline().is_empty());
        let mut words = blob.words();
        assert!(!info.cmdline_has_word(&DirectMap::from_slice(&mut words, 0), "hold"));
    }

    #[test]
    fn bad_magic() {
        let mut blob = seabios_blob(b"");
        blob.put_u32(0x21e0, 0x1234_5678);
        let err = blob.parse(0x21e0).unwrap_err();
        assert_eq!(err, BootInfoError::BadMagic { found: 0x1234_5678 });
        assert!(err.to_string().contains("0x12345678"), "{err}");
    }

    #[test]
    fn version_0_rejected_with_clear_message() {
        let mut blob = seabios_blob(b"");
        blob.put_u32(0x21e4, 0);
        let err = blob.parse(0x21e0).unwrap_err();
        assert_eq!(err, BootInfoError::UnsupportedVersion { version: 0 });
        let text = err.to_string();
        assert!(
            text.contains("version 0") && text.contains("memory map"),
            "{text}"
        );
    }

    #[test]
    fn version_0_at_end_of_memory_is_still_diagnosed_as_version() {
        // Only 40 bytes exist: a v0 structure must not be reported as unreadable.
        let mut blob = Blob::new(0x2000);
        blob.put_u32(0x2000 - 40, START_INFO_MAGIC);
        let err = blob.parse(0x2000 - 40).unwrap_err();
        assert_eq!(err, BootInfoError::UnsupportedVersion { version: 0 });
    }

    #[test]
    fn later_versions_accepted() {
        let mut blob = seabios_blob(b"");
        blob.put_u32(0x21e4, 2);
        assert_eq!(blob.parse(0x21e0).unwrap().header.version, 2);
    }

    #[test]
    fn unreadable_start_info_and_tables() {
        let blob = seabios_blob(b"");
        let err = blob.parse(0x10_0000).unwrap_err();
        assert!(
            matches!(
                err,
                BootInfoError::Unreadable {
                    what: BootData::StartInfo,
                    paddr: 0x10_0000,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut far_map = seabios_blob(b"");
        far_map.put_u64(SI + 40, 0x10_0000);
        assert!(matches!(
            far_map.parse(0x21e0),
            Err(BootInfoError::Unreadable {
                what: BootData::MemoryMapEntry(0),
                ..
            })
        ));
        let mut far_cmdline = seabios_blob(b"");
        far_cmdline.put_u64(SI + 24, 0x3fff);
        far_cmdline.put(0x3fff, b"x");
        assert!(matches!(
            far_cmdline.parse(0x21e0),
            Err(BootInfoError::Unreadable {
                what: BootData::CommandLine,
                paddr: 0x4000,
                ..
            })
        ));
    }

    #[test]
    fn truncated_memmap() {
        // The last entry runs past the end of memory.
        let mut blob = Blob::new(0x1000);
        blob.start_info(0x100, 1, 0x1000 - 30, 2);
        let err = blob.parse(0x100).unwrap_err();
        assert!(
            matches!(
                err,
                BootInfoError::Unreadable {
                    what: BootData::MemoryMapEntry(1),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn empty_and_missing_tables() {
        let mut blob = seabios_blob(b"");
        blob.put_u32(SI + 48, 0);
        assert_eq!(blob.parse(0x21e0).unwrap_err(), BootInfoError::NoMemoryMap);
        let mut blob = seabios_blob(b"");
        blob.put_u64(SI + 40, 0);
        assert_eq!(
            blob.parse(0x21e0).unwrap_err(),
            BootInfoError::MissingTable {
                what: BootData::MemoryMap,
                count: 5
            }
        );
        let mut blob = seabios_blob(b"");
        blob.put_u32(SI + 12, 1);
        assert_eq!(
            blob.parse(0x21e0).unwrap_err(),
            BootInfoError::MissingTable {
                what: BootData::ModuleList,
                count: 1
            }
        );
    }

    #[test]
    fn too_many_entries() {
        let mut blob = seabios_blob(b"");
        blob.put_u32(SI + 48, 129);
        let err = blob.parse(0x21e0).unwrap_err();
        assert_eq!(
            err,
            BootInfoError::TooManyEntries {
                what: BootData::MemoryMap,
                count: 129,
                capacity: 128
            }
        );
        assert!(err.to_string().contains("129"), "{err}");
        let mut blob = seabios_blob(b"");
        blob.put_u32(SI + 12, 17);
        blob.put_u64(SI + 16, 0x3000);
        assert_eq!(
            blob.parse(0x21e0).unwrap_err(),
            BootInfoError::TooManyEntries {
                what: BootData::ModuleList,
                count: 17,
                capacity: 16
            }
        );
        // A smaller parser capacity applies too.
        let blob = seabios_blob(b"");
        let mut words = blob.words();
        let mem = DirectMap::from_slice(&mut words, 0);
        assert!(matches!(
            BootInfo::<4, 1>::parse_with_capacity(&mem, 0x21e0),
            Err(BootInfoError::TooManyEntries { capacity: 4, .. })
        ));
    }

    #[test]
    fn wrapping_ranges() {
        let mut blob = seabios_blob(b"");
        blob.memmap(MEMMAP, &[(u64::MAX - 0x10, 0x20, 1)]);
        assert_eq!(
            blob.parse(0x21e0).unwrap_err(),
            BootInfoError::RangeWraps {
                what: BootData::MemoryMapEntry(0),
                start: u64::MAX - 0x10,
                len: 0x20
            }
        );
        let mut blob = seabios_blob(b"");
        blob.put_u64(SI + 40, u64::MAX - 8);
        assert!(matches!(
            blob.parse(0x21e0),
            Err(BootInfoError::RangeWraps {
                what: BootData::MemoryMap,
                ..
            })
        ));
        let mut blob = seabios_blob(b"");
        blob.put_u32(SI + 12, 1);
        blob.put_u64(SI + 16, 0x3000);
        blob.put_u64(0x3000, u64::MAX);
        blob.put_u64(0x3008, 2);
        assert!(matches!(
            blob.parse(0x21e0),
            Err(BootInfoError::RangeWraps {
                what: BootData::Module(0),
                ..
            })
        ));
    }

    /// A line of `len` bytes: `x` repeated, then ` la57` at its end.
    fn line_ending_in_la57(len: usize) -> Vec<u8> {
        let mut line = vec![b'x'; len - 5];
        line.extend_from_slice(b" la57");
        line
    }

    /// Issue 19 item 1: a command line over the copy's capacity is accepted whole (before,
    /// `Unterminated` after 1,024 bytes ended the boot); the copy is cut and says so, and
    /// words are found over the whole line.
    #[test]
    fn a_4_kib_command_line_is_accepted_and_its_last_word_found() {
        let line = line_ending_in_la57(4096);
        let blob = seabios_blob(&line);
        let mut words = blob.words();
        let mem = DirectMap::from_slice(&mut words, 0);
        let info = BootInfo::parse(&mem, SI as u32).unwrap();
        assert!(info.cmdline_truncated());
        assert_eq!(info.cmdline(), &line[..CMDLINE_CAPACITY]);
        assert_eq!(
            info.cmdline_range(),
            PhysRange::new(CMDLINE, CMDLINE + 4097)
        );
        assert!(info.avoid_ranges().any(|r| r == info.cmdline_range()));
        assert!(info.cmdline_has_word(&mem, "la57"));
        assert!(LoaderInfo::cmdline_has_word(&info, &mem, "la57"));
        let first = core::str::from_utf8(&line[..4091]).unwrap();
        assert!(info.cmdline_has_word(&mem, first));
        for absent in ["la5", "a57", "x", "", "la57 "] {
            assert!(!info.cmdline_has_word(&mem, absent), "{absent:?}");
        }
        // Exactly the capacity is not cut, and is searched in the copy.
        let line = line_ending_in_la57(CMDLINE_CAPACITY);
        let blob = seabios_blob(&line);
        let mut words = blob.words();
        let mem = DirectMap::from_slice(&mut words, 0);
        let info = BootInfo::parse(&mem, SI as u32).unwrap();
        assert!(!info.cmdline_truncated());
        assert_eq!(info.cmdline(), &line[..]);
        assert!(info.cmdline_has_word(&mem, "la57"));
        // The copy is enough: the memory given is not read.
        let mut nothing = [0u64; 1];
        assert!(info.cmdline_has_word(&DirectMap::from_slice(&mut nothing, 1 << 40), "la57"));
    }

    #[test]
    fn a_module_command_line_of_any_length_is_accepted() {
        let mut blob = Blob::new(0x8000);
        let map = regions(&SEABIOS_MAP);
        let long = line_ending_in_la57(0x2000);
        let modules = [PvhModule {
            paddr: 0x100000,
            size: 0x1000,
            cmdline: Some(&long),
        }];
        let ebx = PvhStartInfo {
            modules: &modules,
            ..PvhStartInfo::new(&map)
        }
        .write(&mut blob.writer())
        .unwrap();
        let info = blob.parse(ebx).unwrap();
        assert_eq!(info.modules()[0].cmdline.len(), 0x2001);
    }

    #[test]
    fn a_command_line_without_nul_is_unreadable_where_memory_ends() {
        let mut blob = seabios_blob(b"");
        let end = blob.words.len() as u64 * 8;
        blob.put(CMDLINE, &vec![b'x'; (end - CMDLINE) as usize]);
        assert!(matches!(
            blob.parse(SI as u32).unwrap_err(),
            BootInfoError::Unreadable {
                what: BootData::CommandLine,
                paddr,
                ..
            } if paddr == end
        ));
    }

    #[test]
    fn unaligned_start_info() {
        let mut blob = Blob::new(0x2000);
        blob.start_info(0x1003, 1, 0x1101, 1);
        blob.memmap(0x1101, &[(0x100000, 0x100000, 1)]);
        let info = blob.parse(0x1003).unwrap();
        assert_eq!(
            info.memory_map(),
            [MemoryRegion {
                start: 0x100000,
                len: 0x100000,
                kind: 1
            }]
        );
    }

    /// Boot information is read wherever memory's window begins: here memory starts at
    /// 6 MiB, and the start info and its map sit inside it (nothing is at physical 0).
    #[test]
    fn boot_information_is_read_from_memory_that_does_not_start_at_0() {
        const BASE: u64 = 0x60_0000;
        let map = regions(&SEABIOS_MAP);
        let mut words = vec![0u64; 0x2000 / 8];
        let mut writer = PhysWriter::new(&mut words, BASE);
        writer.set_cursor(BASE + 0x1000);
        let ebx = PvhStartInfo {
            cmdline: Some(b"hold"),
            ..PvhStartInfo::new(&map)
        }
        .write(&mut writer)
        .unwrap();
        let mem = DirectMap::from_slice(&mut words, BASE);
        let info = BootInfo::parse(&mem, ebx).unwrap();
        assert_eq!(info.memory_map(), &map[..]);
        assert_eq!(info.cmdline(), b"hold");
        assert_eq!(
            info.start_info_range(),
            PhysRange::new(BASE + 0x1000, BASE + 0x1000 + 56)
        );
    }

    /// The start info is boot data like the rest: its 56 bytes are its range and in the avoid
    /// list, and the target never overlaps it. Here the highest free 2 MiB slot, [6, 8) MiB,
    /// holds the start info (and its map), so the pick is the slot below, 4 MiB.
    #[test]
    fn the_start_info_is_in_the_avoid_list() {
        const MIB: u64 = 1 << 20;
        const START_INFO: u64 = 6 * MIB + 0x1000;
        let map = [MemoryRegion {
            start: 2 * MIB,
            len: 6 * MIB,
            kind: 1,
        }];
        let mut words = vec![0u64; 0x2000 / 8];
        let mut writer = PhysWriter::new(&mut words, 6 * MIB);
        writer.set_cursor(START_INFO);
        let ebx = PvhStartInfo::new(&map).write(&mut writer).unwrap();
        assert_eq!(u64::from(ebx), START_INFO);
        let mem = DirectMap::from_slice(&mut words, 6 * MIB);
        let info = BootInfo::parse(&mem, ebx).unwrap();
        let start_info = PhysRange::new(START_INFO, START_INFO + 56);
        assert_eq!(info.start_info_range(), start_info);
        assert_eq!(
            info.avoid_ranges().collect::<Vec<_>>(),
            [
                start_info,
                PhysRange::new(START_INFO + 56, START_INFO + 56 + 24)
            ]
        );
        let image = PhysRange::new(2 * MIB, 4 * MIB);
        assert_eq!(
            crate::select::select_target_for(&info, image).map(x86_64::PhysAddr::as_u64),
            Ok(4 * MIB)
        );
    }

    /// Tables of exactly the parser's capacity are accepted; one more entry is refused. With
    /// three modules, each with a command line, and a kernel command line, the avoid list
    /// reaches its stated maximum: the four tables and lines plus two ranges per module.
    #[test]
    fn tables_of_exactly_the_capacity_are_accepted_and_fill_the_avoid_list() {
        let mut blob = Blob::new(0x4000);
        let map = regions(&SEABIOS_MAP);
        let modules = [b"a".as_slice(), b"b", b"c"].map(|line| PvhModule {
            paddr: 0x10_0000,
            size: 0x1000,
            cmdline: Some(line),
        });
        let ebx = PvhStartInfo {
            modules: &modules,
            cmdline: Some(b"hold"),
            ..PvhStartInfo::new(&map)
        }
        .write(&mut blob.writer())
        .unwrap();
        let mut words = blob.words();
        let mem = DirectMap::from_slice(&mut words, 0);
        let info = BootInfo::<5, 3>::parse_with_capacity(&mem, ebx).unwrap();
        assert_eq!(info.memory_map().len(), 5);
        assert_eq!(info.modules().len(), 3);
        assert_eq!(BootInfo::<5, 3>::MAX_AVOID_RANGES, 10);
        assert_eq!(<BootInfo<5, 3> as LoaderInfo>::MAX_AVOID_RANGES, 10);
        assert_eq!(info.avoid_ranges().count(), 10);
        assert_eq!(BootInfo::<128, 16>::MAX_AVOID_RANGES, 36);
        assert_eq!(
            BootInfo::<4, 3>::parse_with_capacity(&mem, ebx).unwrap_err(),
            BootInfoError::TooManyEntries {
                what: BootData::MemoryMap,
                count: 5,
                capacity: 4
            }
        );
        assert_eq!(
            BootInfo::<5, 2>::parse_with_capacity(&mem, ebx).unwrap_err(),
            BootInfoError::TooManyEntries {
                what: BootData::ModuleList,
                count: 3,
                capacity: 2
            }
        );
    }

    /// A module list whose entries would run past 2^64 is refused as wrapping, with the whole
    /// list's length (two entries of 32 bytes), before any entry is read.
    #[test]
    fn a_module_list_at_a_wrapping_address_is_refused() {
        let list = u64::MAX - 40; // room for one entry, not two
        let mut blob = seabios_blob(b"");
        blob.put_u32(SI + 12, 2);
        blob.put_u64(SI + 16, list);
        assert_eq!(
            blob.parse(SI as u32).unwrap_err(),
            BootInfoError::RangeWraps {
                what: BootData::ModuleList,
                start: list,
                len: 64
            }
        );
        // The memory map likewise: five entries of 24 bytes.
        let map = u64::MAX - 100;
        let mut blob = seabios_blob(b"");
        blob.put_u64(SI + 40, map);
        assert_eq!(
            blob.parse(SI as u32).unwrap_err(),
            BootInfoError::RangeWraps {
                what: BootData::MemoryMap,
                start: map,
                len: 120
            }
        );
    }

    /// Memory with two windows: `low` from physical 0 (where the start info must be, below
    /// 4 GiB) and `top`, the last bytes of the address space, so that a string can run into
    /// 2^64. Parsing only reads.
    struct LowAndTop {
        low: Vec<u64>,
        top: Vec<u64>,
    }

    impl LowAndTop {
        fn top_start(&self) -> u64 {
            0u64.wrapping_sub(self.top.len() as u64 * 8)
        }
    }

    impl PhysMemory for LowAndTop {
        fn check_range(&self, start: u64, len: u64) -> Result<(), MemoryFault> {
            let low_end = self.low.len() as u64 * 8;
            let in_low = start.checked_add(len).is_some_and(|end| end <= low_end);
            // `0 - start` (wrapping) is what is left up to and including the last byte.
            let in_top = start >= self.top_start() && len <= 0u64.wrapping_sub(start);
            if len == 0 || in_low || in_top {
                Ok(())
            } else {
                Err(MemoryFault { addr: start })
            }
        }
        fn read_u64(&self, addr: u64) -> u64 {
            assert!(addr.is_multiple_of(8), "unaligned read at {addr:#x}");
            if addr >= self.top_start() {
                self.top[((addr - self.top_start()) / 8) as usize]
            } else {
                self.low[(addr / 8) as usize]
            }
        }
        fn write_u64(&mut self, _: u64, _: u64) {
            panic!("parsing writes nothing");
        }
        fn copy(&mut self, _: u64, _: u64, _: u64) {
            panic!("parsing copies nothing");
        }
    }

    /// A command line whose bytes run to the last byte of the address space without a NUL
    /// is refused as wrapping: it is at least its 16 bytes and a NUL, 17, long. The kernel's
    /// line and a module's alike.
    #[test]
    fn a_command_line_running_into_2_pow_64_is_refused_as_wrapping() {
        let line = u64::MAX - 15; // 16 bytes to the end
        let top = vec![u64::from_le_bytes(*b"xxxxxxxx"); 4];
        let mut blob = seabios_blob(b"");
        blob.put_u64(SI + 24, line);
        let mem = LowAndTop {
            low: blob.words(),
            top: top.clone(),
        };
        assert_eq!(
            BootInfo::parse(&mem, SI as u32).unwrap_err(),
            BootInfoError::RangeWraps {
                what: BootData::CommandLine,
                start: line,
                len: 17
            }
        );
        let mut blob = Blob::new(0x4000);
        let map = regions(&SEABIOS_MAP);
        let modules = [PvhModule {
            paddr: 0x10_0000,
            size: 0x1000,
            cmdline: Some(b"x"),
        }];
        let ebx = PvhStartInfo {
            modules: &modules,
            ..PvhStartInfo::new(&map)
        }
        .write(&mut blob.writer())
        .unwrap();
        let modlist = u64::from(ebx) + 56 + 5 * 24;
        blob.put_u64(modlist + 16, line);
        let mem = LowAndTop {
            low: blob.words(),
            top,
        };
        assert_eq!(
            BootInfo::parse(&mem, ebx).unwrap_err(),
            BootInfoError::RangeWraps {
                what: BootData::ModuleCommandLine(0),
                start: line,
                len: 17
            }
        );
    }

    /// Each piece of boot data is named in messages, with its index where it has one.
    #[test]
    fn each_piece_of_boot_data_is_named_in_messages() {
        for (what, name) in [
            (BootData::StartInfo, "hvm_start_info"),
            (BootData::MemoryMap, "memory map"),
            (BootData::MemoryMapEntry(3), "memory-map entry 3"),
            (BootData::ModuleList, "module list"),
            (BootData::Module(2), "module 2"),
            (BootData::ModuleCommandLine(1), "command line of module 1"),
            (BootData::CommandLine, "command line"),
        ] {
            assert_eq!(what.to_string(), name);
        }
        let unreadable = BootInfoError::Unreadable {
            what: BootData::MemoryMapEntry(3),
            paddr: 0x2048,
            fault: MemoryFault { addr: 0x2050 },
        };
        let text = unreadable.to_string();
        assert!(
            text.starts_with("memory-map entry 3 at 0x2048 is unreadable: "),
            "{text}"
        );
    }
}

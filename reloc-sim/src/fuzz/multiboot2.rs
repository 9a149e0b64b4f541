//! The `multiboot2` fuzz target: arbitrary bytes as physical memory holding a multiboot2
//! boot information structure (MBI), parsed by `reloc_core::Multiboot2Info::parse` and
//! compared with an independent reading of the same bytes.
//!
//! Input: one flag byte, the physical base of the memory (in 8-byte units), the MBI's offset
//! from it, then the memory itself. Fix-ups (flag bits) write `total_size` and an end tag so
//! the fuzzer reaches the tags at once; without them the bytes are taken as they are.
//!
//! The oracle is written from the multiboot2 specification (§3.6) and the rules in
//! `reloc_core::multiboot2`'s docs, not from the parser: it reads bytes out of a slice with
//! `u128` arithmetic, first walking the whole tag chain, then reading the first tag of each
//! kind it keeps.

use arbitrary::Unstructured;
use reloc_core::boot::CMDLINE_CAPACITY;
use reloc_core::multiboot2::{MemoryMapSource, BOOTLOADER_NAME_CAPACITY};
use reloc_core::{DirectMap, MemoryRegion, Multiboot2Error, Multiboot2Info, PhysRange};

use super::{Reader, Writer};

/// Most bytes of memory.
pub const MAX_MEMORY: usize = 1 << 16;

/// Fix-up: write `total_size` = the bytes from the MBI to the end of memory.
pub const FIX_TOTAL_SIZE: u8 = 1;
/// Fix-up: write an end tag (type 0, size 8) in the last 8 bytes `total_size` covers.
pub const FIX_END_TAG: u8 = 1 << 1;
/// Parse at `base - mbi_off` (below the memory) instead of `base + mbi_off`.
pub const MBI_BELOW: u8 = 1 << 2;
/// Add 4 to the physical base: memory not 8-byte aligned physically.
pub const BASE_PLUS_4: u8 = 1 << 3;

/// One decoded input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// `FIX_*` and the other flag bits.
    pub flags: u8,
    /// Physical base of the memory in 8-byte units.
    pub base: u32,
    /// Offset of the MBI from the base (any value: unaligned ones are rejected).
    pub mbi_off: u16,
    /// The memory (at most [`MAX_MEMORY`] bytes are used).
    pub memory: Vec<u8>,
}

impl Description {
    /// Decodes fuzzer bytes.
    pub fn decode(u: &mut Unstructured<'_>) -> Self {
        let mut r = Reader(u);
        let mut d = Self {
            flags: r.u8(),
            base: r.u32(),
            mbi_off: r.u16(),
            memory: Vec::new(),
        };
        let rest = r.0.len();
        d.memory = r.0.bytes(rest).map(<[u8]>::to_vec).unwrap_or_default();
        d.memory.truncate(MAX_MEMORY);
        d
    }

    /// The bytes that decode to `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.flags);
        w.u32(self.base);
        w.u16(self.mbi_off);
        w.0.extend_from_slice(&self.memory);
        w.0
    }

    /// Physical address of the first byte of memory.
    pub fn phys_base(&self) -> u64 {
        u64::from(self.base) * 8 + if self.flags & BASE_PLUS_4 != 0 { 4 } else { 0 }
    }

    /// Where the MBI is parsed.
    pub fn mbi_paddr(&self) -> u64 {
        if self.flags & MBI_BELOW != 0 {
            self.phys_base().wrapping_sub(u64::from(self.mbi_off))
        } else {
            self.phys_base() + u64::from(self.mbi_off)
        }
    }

    /// The memory with the fix-ups applied, at least 64 bytes, a whole number of qwords.
    pub fn bytes(&self) -> Vec<u8> {
        let mut m = self.memory.clone();
        let len = m.len().max(64).next_multiple_of(8);
        m.resize(len, 0);
        let off = usize::from(self.mbi_off);
        if self.flags & MBI_BELOW == 0 && off < m.len() {
            let total = m.len() - off;
            if self.flags & FIX_TOTAL_SIZE != 0 && total >= 4 {
                m[off..off + 4].copy_from_slice(&(total as u32).to_le_bytes());
            }
            let total = u32::from_le_bytes(
                m[off..]
                    .get(..4)
                    .map_or([0; 4], |b| b.try_into().expect("four bytes")),
            );
            let end = (off as u64 + u64::from(total)).checked_sub(8);
            if self.flags & FIX_END_TAG != 0 {
                if let Some(slot) = end.and_then(|e| {
                    let e = usize::try_from(e).ok()?;
                    (e >= off).then_some(e)
                }) {
                    if let Some(dst) = m.get_mut(slot..slot + 8) {
                        dst.copy_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]);
                    }
                }
            }
        }
        m
    }
}

/// What a successful parse must hold.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    mbi: PhysRange,
    map: Vec<MemoryRegion>,
    source: MemoryMapSource,
    modules: Vec<(PhysRange, PhysRange)>,
    cmdline: Vec<u8>,
    cmdline_truncated: bool,
    name: Vec<u8>,
    name_truncated: bool,
    avoid: Vec<PhysRange>,
}

/// Memory as the parser sees it: bytes at a physical base, readable in whole aligned qwords.
struct Memory<'a> {
    bytes: &'a [u8],
    base: u64,
}

impl Memory<'_> {
    /// The `len` bytes at `paddr`, when the aligned qwords covering them lie in memory.
    fn get(&self, paddr: u64, len: u64) -> Option<&[u8]> {
        let (paddr, len, base) = (u128::from(paddr), u128::from(len), u128::from(self.base));
        let end = paddr + len;
        let first = paddr / 8 * 8;
        let last = end.div_ceil(8) * 8;
        if first < base || last > base + self.bytes.len() as u128 || last > 1 << 64 {
            return None;
        }
        let from = usize::try_from(paddr - base).ok()?;
        self.bytes.get(from..from + usize::try_from(len).ok()?)
    }
}

/// Little-endian `u32` at `at` of `b`, by bytes.
fn le32(b: &[u8], at: u128) -> u128 {
    (0..4)
        .rev()
        .fold(0u128, |v, i| (v << 8) | u128::from(b[(at + i) as usize]))
}

/// Little-endian `u64` at `at` of `b`, by bytes.
fn le64(b: &[u8], at: u128) -> u128 {
    (0..8)
        .rev()
        .fold(0u128, |v, i| (v << 8) | u128::from(b[(at + i) as usize]))
}

/// The NUL-terminated string in `b[from..to)`: its offset and bytes, or `None`.
fn string(b: &[u8], from: u128, to: u128) -> Option<(u128, Vec<u8>)> {
    let mut s = Vec::new();
    let mut at = from;
    while at < to {
        let c = b[at as usize];
        if c == 0 {
            return Some((from, s));
        }
        s.push(c);
        at += 1;
    }
    None
}

/// The E820 type Xen's `efi_arch_process_memory_map` (`xen/arch/x86/efi/efi-boot.h`, without
/// `-mapbs`) gives an EFI descriptor of `kind` with `attribute`: its `switch`, case by case.
fn xen_e820_type(kind: u128, attribute: u128) -> u32 {
    const EFI_MEMORY_WB: u128 = 0x8;
    const EFI_MEMORY_RUNTIME: u128 = 1 << 63;
    match kind {
        // EfiBootServicesCode/Data (map_bs off), EfiConventionalMemory, EfiLoaderCode/Data.
        3 | 4 | 7 | 1 | 2 if attribute & EFI_MEMORY_RUNTIME != 0 => 2,
        3 | 4 | 7 | 1 | 2 if attribute & EFI_MEMORY_WB != 0 => 1,
        3 | 4 | 7 | 1 | 2 => 5,
        // EfiUnusableMemory, EfiACPIReclaimMemory, EfiACPIMemoryNVS.
        8 => 5,
        9 => 3,
        10 => 4,
        // default: E820_RESERVED.
        _ => 2,
    }
}

/// An independent reading of the MBI at `paddr`; `None` where the parser must reject.
fn expected(mem: &Memory, paddr: u64, map_cap: usize, mod_cap: usize) -> Option<Expected> {
    if paddr & 7 != 0 {
        return None;
    }
    let total = le32(mem.get(paddr, 8)?, 0);
    if total < 16 {
        return None;
    }
    let b = mem.get(paddr, total as u64)?;
    let phys = |off: u128, len: u128| {
        PhysRange::new(
            (u128::from(paddr) + off) as u64,
            (u128::from(paddr) + off + len) as u64,
        )
    };

    // The chain: (type, offset, size) of every tag before the end tag.
    let mut tags = Vec::new();
    let mut at: u128 = 8;
    loop {
        if at + 8 > total {
            return None;
        }
        let (kind, size) = (le32(b, at), le32(b, at + 4));
        if size < 8 || at + size > total {
            return None;
        }
        if kind == 0 {
            if size != 8 {
                return None;
            }
            break;
        }
        tags.push((kind, at, size));
        at += size.div_ceil(8) * 8;
    }
    let first = |kind: u128| tags.iter().copied().find(|t| t.0 == kind);

    // Strings of any length are accepted; the copy holds the first CAPACITY bytes.
    let (mut cmdline, mut cmd_range, mut cmdline_truncated) =
        (Vec::new(), PhysRange::default(), false);
    if let Some((_, at, size)) = first(1) {
        let (off, mut s) = string(b, at + 8, at + size)?;
        cmd_range = phys(off, s.len() as u128 + 1);
        cmdline_truncated = s.len() > CMDLINE_CAPACITY;
        s.truncate(CMDLINE_CAPACITY);
        cmdline = s;
    }
    let (mut name, mut name_range, mut name_truncated) = (Vec::new(), PhysRange::default(), false);
    if let Some((_, at, size)) = first(2) {
        let (off, mut s) = string(b, at + 8, at + size)?;
        name_range = phys(off, s.len() as u128 + 1);
        name_truncated = s.len() > BOOTLOADER_NAME_CAPACITY;
        s.truncate(BOOTLOADER_NAME_CAPACITY);
        name = s;
    }
    let mut modules = Vec::new();
    for &(_, at, size) in tags.iter().filter(|t| t.0 == 3) {
        if size < 16 {
            return None;
        }
        let (start, end) = (le32(b, at + 8), le32(b, at + 12));
        if end < start {
            return None;
        }
        let (off, s) = string(b, at + 16, at + size)?;
        modules.push((
            PhysRange::new(start as u64, end as u64),
            phys(off, s.len() as u128 + 1),
        ));
    }
    if modules.len() > mod_cap {
        return None;
    }
    let meminfo = match first(4) {
        Some((_, _, size)) if size < 16 => return None,
        Some((_, at, _)) => Some((le32(b, at + 8), le32(b, at + 12))),
        None => None,
    };
    let mut map = Vec::new();
    let mut source = None;
    if let Some((_, at, size)) = first(6) {
        if size < 16 {
            return None;
        }
        let (entry_size, version) = (le32(b, at + 8), le32(b, at + 12));
        if entry_size < 24 || (size - 16) % entry_size != 0 {
            return None;
        }
        let count = (size - 16) / entry_size;
        if count > map_cap as u128 {
            return None;
        }
        for i in 0..count {
            let e = at + 16 + i * entry_size;
            let (start, len, kind) = (le64(b, e), le64(b, e + 8), le32(b, e + 16));
            if start + len >= 1 << 64 {
                return None;
            }
            map.push(MemoryRegion {
                start: start as u64,
                len: len as u64,
                kind: kind as u32,
            });
        }
        source = Some(MemoryMapSource::MemoryMapTag {
            entry_size: entry_size as u32,
            entry_version: version as u32,
        });
    }
    // The EFI memory map (tag 17), only when tag 6 gave nothing: Xen's conversion of each
    // descriptor and its merging of contiguous ones of one type, zero-length ones skipped.
    if let (true, Some((_, at, size))) = (map.is_empty(), first(17)) {
        if size < 16 {
            return None;
        }
        let (descriptor_size, version) = (le32(b, at + 8), le32(b, at + 12));
        if descriptor_size < 40 || descriptor_size % 8 != 0 || (size - 16) % descriptor_size != 0 {
            return None;
        }
        let count = (size - 16) / descriptor_size;
        let mut extents: Vec<(u128, u128, u32)> = Vec::new();
        for i in 0..count {
            let e = at + 16 + i * descriptor_size;
            let (kind, start, pages, attribute) =
                (le32(b, e), le64(b, e + 8), le64(b, e + 24), le64(b, e + 32));
            let len = pages * 4096;
            if start + len >= 1 << 64 {
                return None;
            }
            let e820 = xen_e820_type(kind, attribute);
            match extents.last_mut() {
                Some(last) if last.2 == e820 && last.0 + last.1 == start => last.1 += len,
                _ if len == 0 => {}
                _ => extents.push((start, len, e820)),
            }
        }
        if extents.len() > map_cap {
            return None;
        }
        if !extents.is_empty() {
            map = extents
                .iter()
                .map(|&(start, len, kind)| MemoryRegion {
                    start: start as u64,
                    len: len as u64,
                    kind,
                })
                .collect();
            source = Some(MemoryMapSource::EfiMemoryMap {
                descriptor_size: descriptor_size as u32,
                descriptor_version: version as u32,
                descriptors: count as u32,
            });
        }
    }
    if map.is_empty() {
        let (lower, upper) = meminfo?;
        if map_cap < 2 {
            return None;
        }
        map = vec![
            MemoryRegion {
                start: 0,
                len: (lower * 1024) as u64,
                kind: 1,
            },
            MemoryRegion {
                start: 0x10_0000,
                len: (upper * 1024) as u64,
                kind: 1,
            },
        ];
        source = Some(MemoryMapSource::BasicMeminfo {
            mem_lower_kib: lower as u32,
            mem_upper_kib: upper as u32,
        });
    }

    let mbi = phys(0, total);
    let mut avoid = vec![mbi, cmd_range, name_range];
    for &(range, s) in &modules {
        avoid.push(range);
        avoid.push(s);
    }
    avoid.retain(|r| r.end > r.start);
    Some(Expected {
        mbi,
        map,
        source: source?,
        modules,
        cmdline,
        cmdline_truncated,
        name,
        name_truncated,
        avoid,
    })
}

fn actual<const MAP: usize, const MODS: usize>(info: &Multiboot2Info<MAP, MODS>) -> Expected {
    Expected {
        mbi: info.mbi_range(),
        map: info.memory_map().to_vec(),
        source: info.memory_map_source(),
        modules: info
            .modules()
            .iter()
            .map(|m| (m.range, m.cmdline))
            .collect(),
        cmdline: info.cmdline().to_vec(),
        cmdline_truncated: info.cmdline_truncated(),
        name: info.bootloader_name().to_vec(),
        name_truncated: info.bootloader_name_truncated(),
        avoid: info.avoid_ranges().collect(),
    }
}

/// What an input led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Parsed, and the parse matched the oracle.
    Parsed {
        /// Memory-map entries.
        entries: usize,
        /// Modules.
        modules: usize,
        /// True when the map came from basic meminfo.
        meminfo: bool,
        /// True when the map came from the EFI memory map (tag 17).
        efi: bool,
    },
    /// Rejected, as the oracle expected.
    Rejected,
}

/// Checks what a rejection names against the bytes: the tag it blames is a tag there.
fn check_error(e: &Multiboot2Error, mem: &Memory, paddr: u64, d: &Description) {
    assert!(!e.to_string().is_empty());
    match *e {
        Multiboot2Error::Misaligned { paddr: at } => {
            assert_eq!(at, paddr, "{d:?}");
            assert_ne!(paddr % 8, 0, "{d:?}");
        }
        Multiboot2Error::Tag {
            tag_type, offset, ..
        } => {
            let header = mem
                .get(paddr + u64::from(offset), 8)
                .unwrap_or_else(|| panic!("error names a tag outside memory: {e:?}; {d:?}"));
            assert_eq!(le32(header, 0), u128::from(tag_type), "{e:?}; {d:?}");
            assert_eq!(offset % 8, 0, "{e:?}; {d:?}");
        }
        _ => {}
    }
}

/// Decodes `data` and checks it; panics on a violation.
pub fn check_bytes(data: &[u8]) -> Outcome {
    check(&Description::decode(&mut Unstructured::new(data)))
}

/// Parses the described memory (with the default capacities and with small ones) and
/// compares with the oracle; panics on a violation.
pub fn check(d: &Description) -> Outcome {
    let bytes = d.bytes();
    let mut words = super::qwords(&bytes);
    let base = d.phys_base();
    // The loader hands over `%ebx`: an MBI above 4 GiB is out of reach, and the register
    // holds the address's low 32 bits.
    let ebx = d.mbi_paddr() as u32;
    let paddr = u64::from(ebx);
    let oracle = Memory {
        bytes: &bytes,
        base,
    };
    let mem = DirectMap::from_slice(&mut words, base);
    let parsed = Multiboot2Info::parse(&mem, ebx);
    let small = Multiboot2Info::<4, 2>::parse_with_capacity(&mem, ebx);
    let want = expected(&oracle, paddr, 128, 16);
    let want_small = expected(&oracle, paddr, 4, 2);
    for (name, got, want) in [
        ("default", parsed.as_ref().map(actual), &want),
        ("small", small.as_ref().map(actual), &want_small),
    ] {
        match (got, want) {
            (Ok(got), Some(want)) => assert_eq!(&got, want, "{name} capacities: {d:?}"),
            (Err(e), None) => check_error(e, &oracle, paddr, d),
            (got, want) => {
                panic!("{name} capacities: parse gave {got:?}, oracle expected {want:?}; {d:?}")
            }
        }
    }
    if let Ok(info) = &parsed {
        let range = info.cmdline_range();
        if let Some(line) = oracle.get(range.start, range.len().saturating_sub(1)) {
            super::boot_info::check_words(line, |word| info.cmdline_has_word(&mem, word), d);
        }
        assert!(info.avoid_ranges().count() <= Multiboot2Info::<128, 16>::MAX_AVOID_RANGES);
    }
    match parsed {
        Ok(info) => Outcome::Parsed {
            entries: info.memory_map().len(),
            modules: info.modules().len(),
            meminfo: matches!(
                info.memory_map_source(),
                MemoryMapSource::BasicMeminfo { .. }
            ),
            efi: matches!(
                info.memory_map_source(),
                MemoryMapSource::EfiMemoryMap { .. }
            ),
        },
        Err(_) => Outcome::Rejected,
    }
}

/// An MBI written tag by tag for the seeds.
struct SeedMbi(Vec<u8>);

impl SeedMbi {
    fn new() -> Self {
        Self(vec![0; 8])
    }
    fn tag(mut self, kind: u32, payload: &[u8]) -> Self {
        self.0.extend_from_slice(&kind.to_le_bytes());
        self.0
            .extend_from_slice(&(8 + payload.len() as u32).to_le_bytes());
        self.0.extend_from_slice(payload);
        self.0.resize(self.0.len().next_multiple_of(8), 0);
        self
    }
    fn module(self, start: u32, end: u32, s: &[u8]) -> Self {
        let payload = [&start.to_le_bytes()[..], &end.to_le_bytes(), s, b"\0"].concat();
        self.tag(3, &payload)
    }
    fn map(self, entry_size: u32, version: u32, entries: &[(u64, u64, u32)]) -> Self {
        let mut payload = [entry_size.to_le_bytes(), version.to_le_bytes()].concat();
        for &(base, len, kind) in entries {
            let mut entry = vec![0; entry_size as usize];
            entry[..8].copy_from_slice(&base.to_le_bytes());
            entry[8..16].copy_from_slice(&len.to_le_bytes());
            entry[16..20].copy_from_slice(&kind.to_le_bytes());
            payload.extend_from_slice(&entry);
        }
        self.tag(6, &payload)
    }
    /// With an end tag and `total_size` written.
    fn done(self) -> Vec<u8> {
        let mut b = self.tag(0, &[]).0;
        let total = b.len() as u32;
        b[..4].copy_from_slice(&total.to_le_bytes());
        b
    }
}

/// Named seeds: a GRUB-like MBI under QEMU `-m 3G` (command line, name, two modules,
/// meminfo, boot device, the memory map), one with 32-byte version-1 map entries, one with
/// basic meminfo only, one whose module tag runs past `total_size`, an 8 KiB command line
/// ending in `la57`, and an OVMF-like EFI memory map (tag 17, 129 descriptors) with no tag 6.
pub fn seeds() -> Vec<(&'static str, Description)> {
    let qemu_3g = [
        (0u64, 0x9fc00u64, 1u32),
        (0x9fc00, 0x400, 2),
        (0xf0000, 0x10000, 2),
        (0x100000, 0xbfee0000, 1),
        (0xbffe0000, 0x20000, 2),
        (0xfffc0000, 0x40000, 2),
    ];
    let grub = SeedMbi::new()
        .tag(1, b"console=com1 hold\0")
        .tag(2, b"GRUB 2.06-13+deb12u1\0")
        .module(0x13e000, 0x13f234, b"initrd")
        .module(0x140000, 0x140010, b"")
        .tag(
            4,
            &[639u32.to_le_bytes(), 3_144_576u32.to_le_bytes()].concat(),
        )
        .tag(5, &[0xff; 12])
        .map(24, 0, &qemu_3g)
        .tag(21, &0x20_0000u32.to_le_bytes())
        .done();
    let described = |flags: u8, mbi: Vec<u8>| Description {
        flags,
        base: 0x1_0000 / 8,
        mbi_off: 0x40,
        memory: [vec![0; 0x40], mbi].concat(),
    };
    let wide = SeedMbi::new()
        .tag(1, b"la57\0")
        .map(32, 1, &qemu_3g[..4])
        .done();
    let meminfo = SeedMbi::new()
        .tag(
            4,
            &[639u32.to_le_bytes(), 130_048u32.to_le_bytes()].concat(),
        )
        .done();
    // GRUB puts the whole command line in tag 1, however long (issue 19 item 1).
    let mut long_line = b"console=com1 ".to_vec();
    long_line.resize(0x2000 - 5, b'x');
    long_line.extend_from_slice(b" la57\0");
    let long_cmdline = SeedMbi::new()
        .tag(1, &long_line)
        .map(24, 0, &qemu_3g)
        .done();
    // GRUB-EFI on OVMF with tag 6 hidden (`mbi-no-memmap`): basic meminfo stopping at the
    // 8 MiB hole, and tag 17 with 129 descriptors of 48 bytes (one more than the parser's
    // capacity) that merge into 13 extents.
    let efi = SeedMbi::new()
        .tag(1, b"mbi-no-memmap\0")
        .tag(4, &[640u32.to_le_bytes(), 7168u32.to_le_bytes()].concat())
        .tag(17, &ovmf_efi_memory_map())
        .done();
    let mut corrupt = grub.clone();
    // The first module tag (after the 32-byte command line and name tags) claims 4 KiB.
    corrupt[8 + 32 + 32 + 4..8 + 32 + 32 + 8].copy_from_slice(&0x1000u32.to_le_bytes());
    vec![
        ("grub-qemu-3g", described(0, grub)),
        ("entry-size-32-version-1", described(0, wide)),
        ("basic-meminfo-only", described(0, meminfo)),
        ("module-tag-past-total-size", described(0, corrupt)),
        ("cmdline-8k-la57", described(0, long_cmdline)),
        ("efi-memory-map-ovmf-129", described(0, efi)),
    ]
}

/// The payload of an OVMF-like tag 17 (`-m 3G`): `descriptor_size` 48, version 1, then 129
/// descriptors (NVS holes at 8 MiB, 115 contiguous boot-services, loader and free pieces,
/// runtime services, ACPI, RAM to just below 3 GiB, NVS, MMIO), each padded to 48 bytes.
fn ovmf_efi_memory_map() -> Vec<u8> {
    const WB_ETC: u64 = 0xf;
    const RUNTIME: u64 = 1 << 63;
    let mut pieces: Vec<(u32, u64, u64, u64)> = vec![
        (7, 0, 0xa0000, WB_ETC),
        (7, 0x100000, 0x700000, WB_ETC),
        (10, 0x800000, 0x8000, WB_ETC),
        (7, 0x808000, 0x3000, WB_ETC),
        (10, 0x80b000, 0x1000, WB_ETC),
        (7, 0x80c000, 0x5000, WB_ETC),
        (10, 0x811000, 0xef000, WB_ETC),
        (7, 0x900000, 0x700000, WB_ETC),
    ];
    for i in 0..115u64 {
        pieces.push((
            [4, 3, 2, 7][i as usize % 4],
            0x1000000 + i * 0x10000,
            0x10000,
            WB_ETC,
        ));
    }
    let x = 0x1730000;
    pieces.extend([
        (6, x, 0x10000, WB_ETC | RUNTIME),
        (5, x + 0x10000, 0x10000, WB_ETC | RUNTIME),
        (9, x + 0x20000, 0x10000, WB_ETC),
        (7, x + 0x30000, 0xbfff0000 - (x + 0x30000), WB_ETC),
        (10, 0xbfff0000, 0x10000, WB_ETC),
        (11, 0xffc00000, 0x400000, 1 | RUNTIME),
    ]);
    let mut payload = [48u32.to_le_bytes(), 1u32.to_le_bytes()].concat();
    for (kind, physical_start, len, attribute) in pieces {
        let descriptor = reloc_core::multiboot2::EfiMemoryDescriptor {
            kind,
            physical_start,
            virtual_start: 0,
            number_of_pages: len / 4096,
            attribute,
        };
        payload.extend_from_slice(&descriptor.to_bytes());
        payload.extend_from_slice(&[0; 8]);
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_round_trip_and_pass() {
        let outcomes: Vec<_> = seeds()
            .into_iter()
            .map(|(name, d)| {
                let bytes = d.encode();
                assert_eq!(
                    Description::decode(&mut Unstructured::new(&bytes)),
                    d,
                    "{name}"
                );
                check(&d)
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Parsed {
                    entries: 6,
                    modules: 2,
                    meminfo: false,
                    efi: false
                },
                Outcome::Parsed {
                    entries: 4,
                    modules: 0,
                    meminfo: false,
                    efi: false
                },
                Outcome::Parsed {
                    entries: 2,
                    modules: 0,
                    meminfo: true,
                    efi: false
                },
                Outcome::Rejected,
                Outcome::Parsed {
                    entries: 6,
                    modules: 0,
                    meminfo: false,
                    efi: false
                },
                Outcome::Parsed {
                    entries: 13,
                    modules: 0,
                    meminfo: false,
                    efi: true
                },
            ]
        );
    }

    #[test]
    fn fix_ups_make_total_size_and_end_tag() {
        let d = Description {
            flags: FIX_TOTAL_SIZE | FIX_END_TAG,
            base: 0x1000,
            mbi_off: 8,
            memory: vec![0xff; 0x48],
        };
        let bytes = d.bytes();
        assert_eq!(&bytes[8..12], &0x40u32.to_le_bytes());
        assert_eq!(&bytes[0x40..0x48], &[0, 0, 0, 0, 8, 0, 0, 0]);
        // A tag of type and size 0xffffffff after the header: past total_size.
        assert_eq!(check(&d), Outcome::Rejected);
    }

    /// The oracle is not the parser: inputs where a slip in either would show.
    #[test]
    fn oracle_and_parser_agree_on_edges() {
        for (_, d) in seeds() {
            // Every single-byte change of the first 0x100 bytes of each seed.
            for at in 0..d.memory.len().min(0x100) {
                for byte in [0u8, 7, 8, 0x18, 0xff] {
                    let mut e = d.clone();
                    e.memory[at] = byte;
                    let _ = check(&e);
                }
            }
            // Unaligned and below-memory MBIs.
            let _ = check(&Description {
                mbi_off: d.mbi_off + 4,
                ..d.clone()
            });
            let _ = check(&Description {
                flags: MBI_BELOW | BASE_PLUS_4,
                ..d.clone()
            });
        }
    }
}

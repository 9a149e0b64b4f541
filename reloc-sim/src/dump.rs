//! Page-table listing of a raw physical memory dump, as QEMU's `pmemsave ADDR SIZE FILE`
//! writes it: byte `n` of the file is physical address `base + n`.
//!
//! [`mapped_ranges`] walks the tables from CR3 with the simulator's SDM walker (MAXPHYADDR
//! taken as 52) and lists what is mapped, coalesced: two neighbouring pages join when they
//! are contiguous both virtually and physically and have equal effective flags. [`leaves`]
//! gives one entry per leaf instead, with the same effective flags. [`tlb_lines`] lists the
//! leaves as QEMU's `info tlb` does (`reloc-sim map --leaves`).
//!
//! A dump in which nothing is mapped (no present entry leads to a valid leaf, e.g. all bytes
//! 0xff, where every top-level entry has reserved bits set) is [`DumpError::NothingMapped`].
//!
//! # `info tlb` format
//! QEMU 7.2's `hmp_info_tlb` (`target/i386/monitor.c`, `print_pte`) prints one line per
//! present leaf: the canonical virtual address, `: `, the leaf entry masked to its frame
//! (`0x3fffffffff000` for 4 KiB, `0x3ffffffe00000` for 2 MiB, `0x3ffffc0000000` for 1 GiB),
//! then nine flags of *that entry alone*: `X` (NX), `G`, `P` (PS: huge leaves only; bit 7 of
//! a 4 KiB leaf is PAT and is cleared first), `D`, `A`, `C` (PCD), `T` (PWT), `U`, `W`, each
//! `-` when clear:
//!
//! ```text
//! ffff82d040000000: 0000000000200000 --PDA---W
//! ```
//!
//! Differences from QEMU, both for tables QEMU would walk past: a leaf with reserved bits set
//! is listed (QEMU does not check them either) but a pointer with reserved bits is not
//! followed, and pointers are followed with MAXPHYADDR 52 where QEMU masks bits 12 to 49.
//!
//! # Output format
//! One line per range ([`MappedRange`]'s `Display`):
//!
//! ```text
//! ffff82d040000000-ffff82d040800000 0000000000200000 0000000000800000 -rwxg
//! ```
//!
//! virtual start, `-`, virtual end (exclusive), physical start, size, flags; all hex,
//! 16 digits, virtual addresses sign-extended (canonical) as QEMU prints them. Flags are
//! five characters: `u` user or `-` supervisor; `r`; `w` writable or `-`; `x` executable or
//! `-` (NX); `g` global or `-`. The first three read as QEMU `info mem`'s protection column
//! (`-rw`, `urw`, `ur-`). Entries that would fault with a reserved bit set are not mapped and
//! not listed.

use std::fmt;

use crate::mem::{PhysFault, PhysRead};
use crate::paging::{enumerate, EnumerateError, Mappings, WalkConfig, DEFAULT_LEAF_LIMIT};

/// A dump as physical memory: byte `n` is physical `base + n`.
#[derive(Clone, Copy, Debug)]
pub struct RawDump<'a> {
    bytes: &'a [u8],
    base: u64,
}

impl<'a> RawDump<'a> {
    /// `bytes` starting at physical `base`.
    pub fn new(bytes: &'a [u8], base: u64) -> Self {
        Self { bytes, base }
    }
}

impl PhysRead for RawDump<'_> {
    fn read_phys_u64(&self, addr: u64) -> Result<u64, PhysFault> {
        if !addr.is_multiple_of(8) {
            return Err(PhysFault::Misaligned { addr });
        }
        let outside = PhysFault::NotRam { addr };
        let offset = addr.checked_sub(self.base).ok_or(outside)?;
        let offset = usize::try_from(offset).map_err(|_| outside)?;
        let end = offset.checked_add(8).ok_or(outside)?;
        let bytes = self.bytes.get(offset..end).ok_or(outside)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }
}

/// A mapped virtual range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MappedRange {
    /// Virtual start (sign-extended).
    pub virt_start: u64,
    /// Virtual end, exclusive (wraps to 0 for a range ending at the top of the address
    /// space).
    pub virt_end: u64,
    /// Physical address of `virt_start`; the range maps linearly.
    pub phys_start: u64,
    /// Writable (R/W at every level).
    pub writable: bool,
    /// User-accessible (U/S at every level).
    pub user: bool,
    /// No-execute (XD at some level).
    pub nx: bool,
    /// G bit of the leaves.
    pub global: bool,
    /// The smallest leaf size in the range (4 KiB, 2 MiB or 1 GiB).
    pub page_size: u64,
}

impl MappedRange {
    /// Bytes mapped.
    pub fn size(&self) -> u64 {
        self.virt_end.wrapping_sub(self.virt_start)
    }

    /// The physical address of `virt`, if the range holds it.
    pub fn translate(&self, virt: u64) -> Option<u64> {
        let offset = virt.wrapping_sub(self.virt_start);
        (offset < self.size()).then(|| self.phys_start.wrapping_add(offset))
    }

    /// The five-character flags (`urwxg`, with `-` for each absent one; `r` is always set).
    pub fn flags(&self) -> String {
        [
            if self.user { 'u' } else { '-' },
            'r',
            if self.writable { 'w' } else { '-' },
            if self.nx { '-' } else { 'x' },
            if self.global { 'g' } else { '-' },
        ]
        .iter()
        .collect()
    }

    fn same_flags(&self, other: &MappedRange) -> bool {
        (self.writable, self.user, self.nx, self.global)
            == (other.writable, other.user, other.nx, other.global)
    }
}

impl fmt::Display for MappedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}-{:016x} {:016x} {:016x} {}",
            self.virt_start,
            self.virt_end,
            self.phys_start,
            self.size(),
            self.flags()
        )
    }
}

/// One leaf as QEMU's `info tlb` prints it (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlbLine {
    /// Virtual start (sign-extended).
    pub virt: u64,
    /// The leaf entry as read.
    pub entry: u64,
    /// Page size: 4 KiB, 2 MiB or 1 GiB.
    pub size: u64,
}

impl TlbLine {
    /// The entry as QEMU prints it: a 4 KiB leaf's bit 7 (PAT) cleared.
    fn shown(&self) -> u64 {
        if self.size == 1 << 12 {
            self.entry & !(1 << 7)
        } else {
            self.entry
        }
    }

    /// The frame as QEMU masks it.
    pub fn frame(&self) -> u64 {
        let mask = match self.size {
            s if s == 1 << 30 => 0x3_ffff_c000_0000,
            s if s == 1 << 21 => 0x3_ffff_ffe0_0000,
            _ => 0x3_ffff_ffff_f000,
        };
        self.shown() & mask
    }

    /// `XGPDACTUW`, `-` for each clear bit, of the leaf entry alone.
    pub fn flags(&self) -> String {
        let e = self.shown();
        [
            (63, 'X'),
            (8, 'G'),
            (7, 'P'),
            (6, 'D'),
            (5, 'A'),
            (4, 'C'),
            (3, 'T'),
            (2, 'U'),
            (1, 'W'),
        ]
        .iter()
        .map(|&(bit, c)| if e & (1 << bit) != 0 { c } else { '-' })
        .collect()
    }
}

impl fmt::Display for TlbLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}: {:016x} {}",
            self.virt,
            self.frame(),
            self.flags()
        )
    }
}

/// Why a dump cannot be listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpError {
    /// The top-level table is not in the dump.
    TopTableOutside {
        /// Its address.
        table: u64,
    },
    /// A table is outside the dump, or the tables map too much.
    Walk(EnumerateError),
    /// No present entry leads to a valid leaf.
    NothingMapped {
        /// The top-level table.
        table: u64,
        /// Present entries skipped because reserved bits are set.
        reserved: usize,
    },
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DumpError::TopTableOutside { table } => write!(
                f,
                "the top-level table at {table:#x} is not inside the dump (check --cr3 and --base)"
            ),
            DumpError::Walk(e) => write!(f, "{e}"),
            DumpError::NothingMapped { table, reserved } => write!(
                f,
                "nothing is mapped from the top-level table at {table:#x}: no present entry leads to a valid leaf ({reserved} present entries have reserved bits set; check --cr3, --base and --la57)"
            ),
        }
    }
}

impl std::error::Error for DumpError {}

/// Every leaf and reserved-bit fault of the tables at `cr3`; an error when there is no leaf.
fn walk_dump(bytes: &[u8], base: u64, cr3: u64, la57: bool) -> Result<Mappings, DumpError> {
    let dump = RawDump::new(bytes, base);
    let cfg = WalkConfig {
        cr3,
        la57,
        max_phys_bits: 52,
    };
    let top = cfg.top_table();
    if dump.read_phys_u64(top).is_err() || dump.read_phys_u64(top + 4088).is_err() {
        return Err(DumpError::TopTableOutside { table: top });
    }
    let maps = enumerate(&dump, &cfg, DEFAULT_LEAF_LIMIT).map_err(DumpError::Walk)?;
    if maps.leaves.is_empty() {
        return Err(DumpError::NothingMapped {
            table: top,
            reserved: maps.faults.len(),
        });
    }
    Ok(maps)
}

/// One [`TlbLine`] per present leaf, as QEMU's `info tlb` lists them, in ascending virtual
/// order: the valid leaves and the leaves with reserved bits set.
pub fn tlb_lines(bytes: &[u8], base: u64, cr3: u64, la57: bool) -> Result<Vec<TlbLine>, DumpError> {
    let maps = walk_dump(bytes, base, cr3, la57)?;
    let leaf = |level: u8, entry: u64| level == 1 || (level <= 3 && entry & (1 << 7) != 0);
    let mut lines: Vec<TlbLine> = maps
        .leaves
        .iter()
        .map(|l| TlbLine {
            virt: l.virt,
            entry: l.site.entry,
            size: l.size,
        })
        .chain(
            maps.faults
                .iter()
                .filter(|f| leaf(f.site.level, f.site.entry))
                .map(|f| TlbLine {
                    virt: f.virt,
                    entry: f.site.entry,
                    size: f.size,
                }),
        )
        .collect();
    lines.sort_by_key(|l| l.virt);
    Ok(lines)
}

/// One [`MappedRange`] per leaf, in ascending virtual order.
pub fn leaves(
    bytes: &[u8],
    base: u64,
    cr3: u64,
    la57: bool,
) -> Result<Vec<MappedRange>, DumpError> {
    let maps = walk_dump(bytes, base, cr3, la57)?;
    Ok(maps
        .leaves
        .iter()
        .map(|l| MappedRange {
            virt_start: l.virt,
            virt_end: l.virt.wrapping_add(l.size),
            phys_start: l.frame,
            writable: l.perms.writable,
            user: l.perms.user,
            nx: l.perms.nx,
            global: l.global,
            page_size: l.size,
        })
        .collect())
}

/// Joins neighbours that are contiguous virtually and physically with equal flags.
pub fn coalesce(ranges: impl IntoIterator<Item = MappedRange>) -> Vec<MappedRange> {
    let mut out: Vec<MappedRange> = Vec::new();
    for r in ranges {
        if let Some(last) = out.last_mut() {
            if last.virt_end == r.virt_start
                && last.phys_start.wrapping_add(last.size()) == r.phys_start
                && last.same_flags(&r)
                && last.virt_end != 0
            {
                last.virt_end = r.virt_end;
                last.page_size = last.page_size.min(r.page_size);
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// The mapped ranges of the tables at `cr3` in a raw dump of physical memory starting at
/// `base`, coalesced (see the module documentation for the rules and the printed format).
pub fn mapped_ranges(
    bytes: &[u8],
    base: u64,
    cr3: u64,
    la57: bool,
) -> Result<Vec<MappedRange>, DumpError> {
    Ok(coalesce(leaves(bytes, base, cr3, la57)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DumpBuilder(Vec<u8>);
    impl DumpBuilder {
        fn new(size: usize) -> Self {
            Self(vec![0; size])
        }
        fn set(&mut self, pa: u64, v: u64) {
            let at = pa as usize;
            self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Tables at 0x1000 (L4), 0x2000 (L3), 0x3000 (L2), 0x4000 (L1), in a 64 KiB dump.
    fn sample() -> DumpBuilder {
        let mut d = DumpBuilder::new(0x10000);
        d.set(0x1000, 0x2000 | 0x7); // L4[0] user
        d.set(0x1000 + 511 * 8, 0x2000 | 0x3); // L4[511] supervisor, same L3
        d.set(0x2000, 0x3000 | 0x7);
        d.set(0x3000, 0x4000 | 0x7);
        // Four 4 KiB pages: 0-1 contiguous rw, 2 read-only, 3 discontiguous.
        d.set(0x4000, 0x10_0000 | 0x7);
        d.set(0x4008, 0x10_1000 | 0x7);
        d.set(0x4010, 0x10_2000 | 0x5);
        d.set(0x4018, 0x20_0000 | 0x7 | (1 << 63));
        // A 2 MiB global leaf, then a contiguous one, then a PS leaf with reserved bits.
        d.set(0x3008, 0x40_0000 | 0x183);
        d.set(0x3010, 0x60_0000 | 0x183);
        d.set(0x3018, 0x80_1000 | 0x2000 | 0x83); // bit 13 reserved: not listed
        d
    }

    #[test]
    fn lists_coalesced_ranges_with_flags() {
        let d = sample();
        let r = mapped_ranges(&d.0, 0, 0x1000, false).unwrap();
        let lines: Vec<String> = r.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            lines,
            vec![
                "0000000000000000-0000000000002000 0000000000100000 0000000000002000 urwx-",
                "0000000000002000-0000000000003000 0000000000102000 0000000000001000 ur-x-",
                "0000000000003000-0000000000004000 0000000000200000 0000000000001000 urw--",
                "0000000000200000-0000000000600000 0000000000400000 0000000000400000 -rwxg",
                "ffffff8000000000-ffffff8000002000 0000000000100000 0000000000002000 -rwx-",
                "ffffff8000002000-ffffff8000003000 0000000000102000 0000000000001000 -r-x-",
                "ffffff8000003000-ffffff8000004000 0000000000200000 0000000000001000 -rw--",
                "ffffff8000200000-ffffff8000600000 0000000000400000 0000000000400000 -rwxg",
            ]
        );
        assert_eq!(r[3].page_size, 2 << 20);
        assert_eq!(r[3].translate(0x30_0010), Some(0x50_0010));
        assert_eq!(r[3].translate(0x60_0000), None);
        assert_eq!(leaves(&d.0, 0, 0x1000, false).unwrap().len(), 12);
    }

    #[test]
    fn base_offset_and_errors() {
        let d = sample();
        // The same dump read as starting at 1 MiB: the top table is at 0x101000.
        let shifted = mapped_ranges(&d.0, 0x10_0000, 0x10_1000, false);
        // Its pointers say 0x2000, which is now outside the dump.
        assert!(matches!(
            shifted,
            Err(DumpError::Walk(EnumerateError::Phys { level: 3, .. }))
        ));
        assert_eq!(
            mapped_ranges(&d.0, 0, 0x20_0000, false),
            Err(DumpError::TopTableOutside { table: 0x20_0000 })
        );
        assert_eq!(
            mapped_ranges(&[0u8; 5], 0, 0, false),
            Err(DumpError::TopTableOutside { table: 0 })
        );
        // PCID bits in CR3 are ignored.
        assert_eq!(
            mapped_ranges(&d.0, 0, 0x1000 | 0x5, false).unwrap().len(),
            8
        );
    }

    /// `map --leaves` prints what QEMU 7.2's `info tlb` prints: the leaf entry's own flags,
    /// not the effective ones (a supervisor L4 over a user leaf still shows `U`).
    #[test]
    fn tlb_lines_show_the_leaf_entry_flags_as_qemu_does() {
        let d = sample();
        let lines: Vec<String> = tlb_lines(&d.0, 0, 0x1000, false)
            .unwrap()
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert_eq!(lines.len(), 14, "{lines:#?}");
        assert_eq!(lines[0], "0000000000000000: 0000000000100000 -------UW");
        assert_eq!(lines[3], "0000000000003000: 0000000000200000 X------UW");
        assert_eq!(lines[4], "0000000000200000: 0000000000400000 -GP-----W");
        // The PS leaf with bit 13 set: listed, its frame masked as QEMU masks 2 MiB frames.
        assert_eq!(lines[6], "0000000000600000: 0000000000800000 --P-----W");
        // Through the supervisor L4 entry 511: effective U is clear, the leaf's U is shown.
        assert_eq!(lines[7], "ffffff8000000000: 0000000000100000 -------UW");
        assert_eq!(
            leaves(&d.0, 0, 0x1000, false).unwrap()[6].flags(),
            "-rwx-",
            "the effective listing is unchanged"
        );
    }

    #[test]
    fn a_dump_that_maps_nothing_is_an_error() {
        let ff = vec![0xffu8; 0x2000];
        assert_eq!(
            mapped_ranges(&ff, 0, 0x1000, false),
            Err(DumpError::NothingMapped {
                table: 0x1000,
                reserved: 512
            })
        );
        assert!(matches!(
            tlb_lines(&[0u8; 0x2000], 0, 0x1000, false),
            Err(DumpError::NothingMapped { reserved: 0, .. })
        ));
    }

    #[test]
    fn five_level_dump() {
        let mut d = DumpBuilder::new(0x10000);
        d.set(0x5000 + 256 * 8, 0x1000 | 0x3); // L5[256] -> L4
        d.set(0x1000, 0x2000 | 0x3);
        d.set(0x2000, 0x3000 | 0x3);
        d.set(0x3000, 0x40_0000 | 0x83);
        let r = mapped_ranges(&d.0, 0, 0x5000, true).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].virt_start, 0xff00_0000_0000_0000);
        assert_eq!(r[0].flags(), "-rwx-");
    }
}

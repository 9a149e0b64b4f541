//! The simulator's page walker, written from the Intel SDM (vol. 3A, 4.5) and deliberately
//! independent of reloc-core's `Entry::decode`, so that a decoding bug there cannot hide.
//!
//! - Bit 0 present; bit 1 R/W; bit 2 U/S; bit 7 PS at L2 (2 MiB) and L3 (1 GiB), reserved at
//!   L4/L5, PAT at L1; bit 8 G (leaves); bit 63 XD (NX, EFER.NXE assumed set).
//! - Effective permissions: writable = AND of R/W along the path, user = AND of U/S,
//!   no-execute = OR of XD.
//! - Address field: bits 12..MAXPHYADDR for pointers and 4 KiB leaves; bits 21.. (2 MiB) or
//!   30.. (1 GiB) for huge leaves, whose bit 12 is PAT and whose bits 13..21 / 13..30 are
//!   reserved. Address bits at or above MAXPHYADDR are reserved.

use std::fmt;

use crate::mem::{PhysFault, PhysRead, TableView};

const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
const XD: u64 = 1 << 63;

/// Bits `low..high` set.
pub(crate) const fn bits(low: u32, high: u32) -> u64 {
    let upper = if high >= 64 {
        u64::MAX
    } else {
        (1u64 << high) - 1
    };
    upper & !((1u64 << low) - 1)
}

/// Effective permissions of a translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Perms {
    /// Writable: R/W set at every level.
    pub writable: bool,
    /// User-accessible: U/S set at every level.
    pub user: bool,
    /// No-execute: XD set at some level.
    pub nx: bool,
}

impl Perms {
    const ROOT: Perms = Perms {
        writable: true,
        user: true,
        nx: false,
    };

    fn through(self, entry: u64) -> Perms {
        Perms {
            writable: self.writable && entry & RW != 0,
            user: self.user && entry & US != 0,
            nx: self.nx || entry & XD != 0,
        }
    }
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Translation {
    /// The physical address of the byte asked for.
    pub phys: u64,
    /// Virtual address of the start of the page (sign-extended).
    pub page_virt: u64,
    /// Physical address of the start of the page.
    pub frame: u64,
    /// 4 KiB, 2 MiB or 1 GiB.
    pub page_size: u64,
    /// Effective permissions along the path.
    pub perms: Perms,
    /// G bit of the leaf.
    pub global: bool,
    /// Where the leaf entry is.
    pub leaf: EntrySite,
}

/// One entry of one table, as met by a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntrySite {
    /// Physical address of the table.
    pub table: u64,
    /// Level the walk read the table at (1 to 5).
    pub level: u8,
    /// Index of the entry.
    pub index: u16,
    /// The raw entry.
    pub entry: u64,
}

impl fmt::Display for EntrySite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "L{} table {:#x}[{}] = {:#018x}",
            self.level, self.table, self.index, self.entry
        )
    }
}

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalkFault {
    /// The address is not canonical for the paging depth.
    NonCanonical {
        /// The virtual address.
        virt: u64,
    },
    /// A page fault: not-present or reserved-bit entry.
    Page(PageFault),
    /// A table lies outside memory.
    Phys {
        /// The virtual address being translated.
        virt: u64,
        /// The level of the table that could not be read.
        level: u8,
        /// What memory reported.
        fault: PhysFault,
    },
}

/// A page fault, naming the virtual address, level, table and entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageFault {
    /// The virtual address being translated.
    pub virt: u64,
    /// The entry at fault.
    pub site: EntrySite,
    /// Not present, or a reserved bit set.
    pub reserved_bit: bool,
}

impl fmt::Display for WalkFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkFault::NonCanonical { virt } => {
                write!(f, "virtual address {virt:#x} is not canonical")
            }
            WalkFault::Page(pf) => write!(
                f,
                "page fault at {:#x}: {} {}",
                pf.virt,
                pf.site,
                if pf.reserved_bit {
                    "has a reserved bit set"
                } else {
                    "is not present"
                }
            ),
            WalkFault::Phys { virt, level, fault } => {
                write!(f, "walk of {virt:#x} at L{level}: {fault}")
            }
        }
    }
}

impl std::error::Error for WalkFault {}

/// The paging configuration a walk needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalkConfig {
    /// CR3 (address bits 12..MAXPHYADDR are the top table; the rest are ignored).
    pub cr3: u64,
    /// CR4.LA57: five levels.
    pub la57: bool,
    /// MAXPHYADDR in bits.
    pub max_phys_bits: u8,
}

impl WalkConfig {
    /// The configuration a relocation request describes: CR3 pointing at its top table,
    /// LA57 for five levels, its MAXPHYADDR.
    pub fn of_request(request: &reloc_core::RelocationRequest<'_>) -> Self {
        Self {
            cr3: request.top_table.as_u64(),
            la57: request.paging == reloc_core::PagingMode::FiveLevel,
            max_phys_bits: request.max_phys_bits,
        }
    }

    /// 4 or 5.
    pub fn levels(&self) -> u8 {
        if self.la57 {
            5
        } else {
            4
        }
    }

    /// Bits 12..MAXPHYADDR.
    fn addr_mask(&self) -> u64 {
        bits(12, u32::from(self.max_phys_bits))
    }

    /// Bits MAXPHYADDR..52: reserved in every present entry.
    fn reserved_high(&self) -> u64 {
        bits(u32::from(self.max_phys_bits), 52)
    }

    /// The physical address of the top-level table.
    pub fn top_table(&self) -> u64 {
        self.cr3 & self.addr_mask()
    }
}

/// Sign-extends a virtual address from bit 47 (4 levels) or 56 (5 levels).
pub fn canonical(virt: u64, la57: bool) -> u64 {
    let sign_bit = if la57 { 56 } else { 47 };
    let shift = 63 - sign_bit;
    (((virt << shift) as i64) >> shift) as u64
}

/// What one entry means when read at `level` (1..=5).
enum Decoded {
    NotPresent,
    Reserved,
    Table(u64),
    Leaf { frame: u64, size: u64 },
}

fn decode(entry: u64, level: u8, cfg: &WalkConfig) -> Decoded {
    if entry & P == 0 {
        return Decoded::NotPresent;
    }
    if entry & cfg.reserved_high() != 0 {
        return Decoded::Reserved;
    }
    if level >= 4 && entry & PS != 0 {
        return Decoded::Reserved;
    }
    let shift = 12 + 9 * u32::from(level - 1);
    let is_leaf = level == 1 || (level <= 3 && entry & PS != 0);
    if !is_leaf {
        return Decoded::Table(entry & cfg.addr_mask());
    }
    if level > 1 && entry & bits(13, shift) != 0 {
        return Decoded::Reserved;
    }
    Decoded::Leaf {
        frame: entry & bits(shift, u32::from(cfg.max_phys_bits)),
        size: 1u64 << shift,
    }
}

/// Translates `virt` by walking the tables in `mem`.
pub fn walk<M: PhysRead + ?Sized>(
    mem: &M,
    cfg: &WalkConfig,
    virt: u64,
) -> Result<Translation, WalkFault> {
    if canonical(virt, cfg.la57) != virt {
        return Err(WalkFault::NonCanonical { virt });
    }
    let mut table = cfg.top_table();
    let mut perms = Perms::ROOT;
    for level in (1..=cfg.levels()).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let index = ((virt >> shift) & 511) as u16;
        let entry = mem
            .read_phys_u64(table + u64::from(index) * 8)
            .map_err(|fault| WalkFault::Phys { virt, level, fault })?;
        let site = EntrySite {
            table,
            level,
            index,
            entry,
        };
        let fault = |reserved_bit| {
            WalkFault::Page(PageFault {
                virt,
                site,
                reserved_bit,
            })
        };
        match decode(entry, level, cfg) {
            Decoded::NotPresent => return Err(fault(false)),
            Decoded::Reserved => return Err(fault(true)),
            Decoded::Table(next) => {
                perms = perms.through(entry);
                table = next;
            }
            Decoded::Leaf { frame, size } => {
                let offset = virt & (size - 1);
                return Ok(Translation {
                    phys: frame | offset,
                    page_virt: virt - offset,
                    frame,
                    page_size: size,
                    perms: perms.through(entry),
                    global: entry & G != 0,
                    leaf: site,
                });
            }
        }
    }
    unreachable!("L1 entries always decode as leaves or faults")
}

/// One leaf found by [`enumerate`]: a page-sized mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeafMapping {
    /// Virtual start (sign-extended).
    pub virt: u64,
    /// Physical start.
    pub frame: u64,
    /// 4 KiB, 2 MiB or 1 GiB.
    pub size: u64,
    /// Effective permissions along the path.
    pub perms: Perms,
    /// G bit of the leaf.
    pub global: bool,
    /// The leaf entry.
    pub site: EntrySite,
}

/// A virtual range whose walk ends in a reserved-bit fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultingRange {
    /// Virtual start (sign-extended).
    pub virt: u64,
    /// Bytes covered by the faulting entry.
    pub size: u64,
    /// The entry.
    pub site: EntrySite,
}

/// Everything a set of tables maps, in ascending virtual order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mappings {
    /// Present leaves.
    pub leaves: Vec<LeafMapping>,
    /// Entries the CPU would fault on with a reserved-bit page fault.
    pub faults: Vec<FaultingRange>,
}

/// Why [`enumerate`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnumerateError {
    /// A table could not be read.
    Phys {
        /// The table's level.
        level: u8,
        /// The pointer that led there (`None` for the top table).
        pointer: Option<EntrySite>,
        /// What memory reported.
        fault: PhysFault,
    },
    /// More leaves than `limit` (hostile tables can map every table 512^4 times).
    TooManyLeaves {
        /// The limit.
        limit: usize,
    },
    /// More table visits than [`TABLE_VISIT_LIMIT`].
    TooManyTables {
        /// The limit.
        limit: usize,
    },
}

/// How many tables [`enumerate`] reads (counting a table once per path to it) before it
/// gives up.
pub const TABLE_VISIT_LIMIT: usize = 1 << 16;

impl fmt::Display for EnumerateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnumerateError::Phys {
                level,
                pointer: Some(p),
                fault,
            } => write!(
                f,
                "L{level} table pointed to by {p} cannot be read: {fault}"
            ),
            EnumerateError::Phys {
                level,
                pointer: None,
                fault,
            } => write!(f, "top-level (L{level}) table cannot be read: {fault}"),
            EnumerateError::TooManyLeaves { limit } => {
                write!(f, "the tables map more than {limit} pages")
            }
            EnumerateError::TooManyTables { limit } => {
                write!(
                    f,
                    "more than {limit} table visits: the tables loop too much"
                )
            }
        }
    }
}

impl std::error::Error for EnumerateError {}

/// Default leaf limit of [`enumerate`].
pub const DEFAULT_LEAF_LIMIT: usize = 1 << 22;

/// Every leaf reachable from CR3, by walking each present entry once per path (a table
/// reachable by two paths is enumerated twice, as the CPU would translate both).
pub fn enumerate<M: PhysRead + ?Sized>(
    mem: &M,
    cfg: &WalkConfig,
    limit: usize,
) -> Result<Mappings, EnumerateError> {
    let mut out = Mappings::default();
    let top = cfg.top_table();
    let ctx = Ctx {
        mem,
        cfg,
        limit,
        visits: std::cell::Cell::new(0),
    };
    ctx.table(top, cfg.levels(), 0, Perms::ROOT, None, &mut out)?;
    Ok(out)
}

struct Ctx<'a, M: ?Sized> {
    mem: &'a M,
    cfg: &'a WalkConfig,
    limit: usize,
    visits: std::cell::Cell<usize>,
}

impl<M: PhysRead + ?Sized> Ctx<'_, M> {
    fn table(
        &self,
        table: u64,
        level: u8,
        virt_prefix: u64,
        perms: Perms,
        pointer: Option<EntrySite>,
        out: &mut Mappings,
    ) -> Result<(), EnumerateError> {
        let shift = 12 + 9 * u32::from(level - 1);
        self.visits.set(self.visits.get() + 1);
        if self.visits.get() > TABLE_VISIT_LIMIT {
            return Err(EnumerateError::TooManyTables {
                limit: TABLE_VISIT_LIMIT,
            });
        }
        let view = TableView::read(self.mem, table);
        // The entries before a fault are processed first, as a qword-by-qword walk would.
        for (index, &entry) in (0u16..).zip(view.readable()) {
            if entry & P == 0 {
                continue; // Not present: most entries of most tables.
            }
            let virt = canonical(virt_prefix | (u64::from(index) << shift), self.cfg.la57);
            let site = EntrySite {
                table,
                level,
                index,
                entry,
            };
            match decode(entry, level, self.cfg) {
                Decoded::NotPresent => {}
                Decoded::Reserved => out.faults.push(FaultingRange {
                    virt,
                    size: 1 << shift,
                    site,
                }),
                Decoded::Table(next) => {
                    self.table(next, level - 1, virt, perms.through(entry), Some(site), out)?;
                }
                Decoded::Leaf { frame, size } => {
                    if out.leaves.len() >= self.limit {
                        return Err(EnumerateError::TooManyLeaves { limit: self.limit });
                    }
                    out.leaves.push(LeafMapping {
                        virt,
                        frame,
                        size,
                        perms: perms.through(entry),
                        global: entry & G != 0,
                        site,
                    });
                }
            }
        }
        match view.fault() {
            Some(fault) => Err(EnumerateError::Phys {
                level,
                pointer,
                fault,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::SparseMemory;
    use reloc_core::PhysRange;

    fn cfg(cr3: u64) -> WalkConfig {
        WalkConfig {
            cr3,
            la57: false,
            max_phys_bits: 40,
        }
    }

    #[test]
    fn four_level_walk_with_all_leaf_sizes() {
        let mut m = SparseMemory::new(&[PhysRange::new(0, 0x100_0000)]);
        let (top, l3, l2, l1) = (0x1000, 0x2000, 0x3000, 0x4000);
        m.write(top + 511 * 8, l3 | 0x7).unwrap();
        m.write(l3, l2 | 0x3).unwrap(); // not user
        m.write(l3 + 8, 0x4000_0000 | 0x1e3 | 0x1000).unwrap(); // 1 GiB leaf, PAT bit 12
        m.write(l2, l1 | 0x7 | XD).unwrap();
        m.write(l2 + 8, 0x20_0000 | 0x81 | 0x1000).unwrap(); // 2 MiB read-only, PAT
        m.write(l1 + 8, 0xabc_d000 | 0x83).unwrap(); // bit 7 is PAT at L1
        let base = 0xffff_ff80_0000_0000;
        let t = walk(&m, &cfg(top), base + 0x234).unwrap_err();
        assert!(
            matches!(t, WalkFault::Page(PageFault { reserved_bit: false, site, .. }) if site.level == 1 && site.index == 0)
        );
        let t = walk(&m, &cfg(top), base + 0x1234).unwrap();
        assert_eq!(t.phys, 0xabc_d234);
        assert_eq!(t.page_size, 0x1000);
        assert_eq!(
            t.perms,
            Perms {
                writable: true,
                user: false,
                nx: true
            }
        );
        let t = walk(&m, &cfg(top), base + 0x20_0010).unwrap();
        assert_eq!(
            (t.frame, t.phys, t.page_size),
            (0x20_0000, 0x20_0010, 0x20_0000)
        );
        assert!(!t.perms.writable);
        let t = walk(&m, &cfg(top), base + 0x4000_0000 + 5).unwrap();
        assert_eq!(
            (t.frame, t.page_size, t.global),
            (0x4000_0000, 1 << 30, true)
        );
        assert_eq!(
            walk(&m, &cfg(top), 0x0000_8000_0000_0000),
            Err(WalkFault::NonCanonical {
                virt: 0x0000_8000_0000_0000
            })
        );
    }

    #[test]
    fn reserved_bits_fault() {
        let mut m = SparseMemory::new(&[PhysRange::new(0, 0x10_0000)]);
        m.write(0x1000, 0x2000 | 0x83).unwrap(); // PS at L4
        m.write(0x1008, 0x2000 | 0x3).unwrap();
        m.write(0x2000, 0x4000_2000 | 0x83).unwrap(); // 1 GiB leaf with bit 13 set
        m.write(0x2008, (1 << 40) | 0x3).unwrap(); // beyond MAXPHYADDR
        for va in [0u64, 1 << 39, (1 << 39) + (1 << 30)] {
            assert!(matches!(
                walk(&m, &cfg(0x1000), va),
                Err(WalkFault::Page(PageFault {
                    reserved_bit: true,
                    ..
                }))
            ));
        }
        let maps = enumerate(&m, &cfg(0x1000), 100).unwrap();
        assert_eq!(maps.leaves, vec![]);
        assert_eq!(maps.faults.len(), 3);
    }

    #[test]
    fn table_outside_memory_is_typed() {
        let mut m = SparseMemory::new(&[PhysRange::new(0, 0x10_0000)]);
        m.write(0x1000, 0x1000_0000 | 0x3).unwrap();
        assert!(matches!(
            walk(&m, &cfg(0x1000), 0),
            Err(WalkFault::Phys { level: 3, .. })
        ));
        assert!(matches!(
            enumerate(&m, &cfg(0x1000), 100),
            Err(EnumerateError::Phys { level: 3, .. })
        ));
    }

    #[test]
    fn recursive_slot_is_bounded() {
        let mut m = SparseMemory::new(&[PhysRange::new(0, 0x10_0000)]);
        for i in 0..512 {
            m.write(0x1000 + i * 8, 0x1000 | 0x3).unwrap();
        }
        assert_eq!(
            enumerate(&m, &cfg(0x1000), 1000),
            Err(EnumerateError::TooManyLeaves { limit: 1000 })
        );
    }

    #[test]
    fn five_level_canonical() {
        assert_eq!(
            canonical(0x01ff_0000_0000_0000, true),
            0xffff_0000_0000_0000
        );
        assert_eq!(
            canonical(0x0000_8000_0000_0000, false),
            0xffff_8000_0000_0000
        );
        assert_eq!(
            canonical(0x0000_8000_0000_0000, true),
            0x0000_8000_0000_0000
        );
    }
}

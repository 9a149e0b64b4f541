//! The x86_64 paging model: levels, entry decoding and address masks.
//!
//! The `x86_64` crate's `PageTableEntry::addr()` masks bits 12..52 for every entry, which reads
//! the PAT bit (bit 12) of a 2 MiB or 1 GiB leaf as an address bit and ignores MAXPHYADDR. This
//! module decodes an entry *per level* instead: the address field of a pointer or a 4 KiB leaf
//! is bits 12..MAXPHYADDR, of a 2 MiB leaf bits 21..MAXPHYADDR, of a 1 GiB leaf bits
//! 30..MAXPHYADDR. Everything else (flags, PAT, protection keys, software bits, NX) is never
//! an address.

use core::fmt;
use x86_64::structures::paging::PageTableFlags;

/// Entries in one page table.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Size of one page table, and of a 4 KiB page.
pub const TABLE_SIZE: u64 = 4096;
/// Size of a 2 MiB page.
pub const SIZE_2M: u64 = 2 << 20;
/// Size of a 1 GiB page.
pub const SIZE_1G: u64 = 1 << 30;

pub(crate) const PRESENT: u64 = PageTableFlags::PRESENT.bits();
pub(crate) const PAGE_SIZE: u64 = PageTableFlags::HUGE_PAGE.bits();

/// A virtual address, as 4- or 5-level paging reads it.
///
/// Not `x86_64::VirtAddr`: in `x86_64` 0.15 that type is canonical to 48 bits only, so it
/// cannot hold a 5-level (LA57) address. Any `u64` converts; whether it is canonical depends
/// on the paging mode ([`PagingMode::is_canonical`]), and reloc-core checks it where the
/// mode is known. `From<x86_64::VirtAddr>` converts the crate's type.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtAddr(u64);

impl VirtAddr {
    /// The address `addr`.
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    /// The address as a `u64`.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl From<x86_64::VirtAddr> for VirtAddr {
    fn from(addr: x86_64::VirtAddr) -> Self {
        Self(addr.as_u64())
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}

impl fmt::LowerHex for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// A paging level. `L1` holds 4 KiB leaves; `L5` exists only with LA57.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Page table: 4 KiB leaves only.
    L1 = 1,
    /// Page directory: pointers or 2 MiB leaves.
    L2 = 2,
    /// Page-directory-pointer table: pointers or 1 GiB leaves.
    L3 = 3,
    /// PML4: pointers only.
    L4 = 4,
    /// PML5 (LA57): pointers only.
    L5 = 5,
}

impl Level {
    /// All levels, lowest first.
    pub const ALL: [Level; 5] = [Level::L1, Level::L2, Level::L3, Level::L4, Level::L5];

    /// The level number, 1 to 5.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The level below this one, or `None` for `L1`.
    pub const fn below(self) -> Option<Level> {
        match self {
            Level::L1 => None,
            Level::L2 => Some(Level::L1),
            Level::L3 => Some(Level::L2),
            Level::L4 => Some(Level::L3),
            Level::L5 => Some(Level::L4),
        }
    }

    /// The bit of a virtual address where this level's 9-bit index starts.
    pub const fn index_shift(self) -> u32 {
        12 + 9 * (self as u32 - 1)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.number())
    }
}

/// 4-level or 5-level (CR4.LA57) paging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PagingMode {
    /// Four levels, 48-bit virtual addresses: the top table is an L4 (PML4).
    FourLevel,
    /// Five levels, 57-bit virtual addresses: the top table is an L5 (PML5).
    FiveLevel,
}

impl PagingMode {
    /// Bits of a virtual address that paging translates: 48 or 57.
    pub const fn virt_bits(self) -> u32 {
        match self {
            PagingMode::FourLevel => 48,
            PagingMode::FiveLevel => 57,
        }
    }

    /// True when bits `virt_bits - 1` to 63 of `addr` are all equal (the CPU faults on any
    /// other address).
    pub const fn is_canonical(self, addr: VirtAddr) -> bool {
        let shift = 64 - self.virt_bits();
        ((addr.0 << shift) as i64 >> shift) as u64 == addr.0
    }

    /// The level of the table CR3 points to.
    pub const fn top_level(self) -> Level {
        match self {
            PagingMode::FourLevel => Level::L4,
            PagingMode::FiveLevel => Level::L5,
        }
    }
}

/// The CPU's physical-address width (CPUID 0x80000008 EAX bits 7..0), and the bits of it that
/// memory encryption takes over: every address written into a page-table entry must lie below
/// [`MaxPhysAddr::limit`].
///
/// With AMD SME/SEV the C-bit (CPUID 0x8000001F EBX bits 5..0), and with Intel TME-MK the
/// KeyID bits, sit inside the MAXPHYADDR-wide field of every entry but are not address bits.
/// [`MaxPhysAddr::with_encryption_mask`] names them: they are then never read as address,
/// never rebased, and kept bit-identical in every rewritten entry (the `x86_64` crate's
/// `memory_encryption` feature masks the C-bit the same way). Addresses must then lie below
/// the lowest masked bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxPhysAddr {
    bits: u8,
    encryption_mask: u64,
}

impl MaxPhysAddr {
    /// The smallest width accepted. Real x86_64 CPUs report 36 or more; 32 keeps room for
    /// models of small machines.
    pub const MIN_BITS: u8 = 32;
    /// The architectural maximum.
    pub const MAX_BITS: u8 = 52;
    /// [`MaxPhysAddr::MAX_BITS`] wide, no encryption bits: what an empty plan holds.
    pub(crate) const ARCHITECTURAL: Self = Self {
        bits: Self::MAX_BITS,
        encryption_mask: 0,
    };

    /// A width of `bits` with no encryption bits, or `None` outside `MIN_BITS..=MAX_BITS`.
    pub const fn new(bits: u8) -> Option<Self> {
        if bits >= Self::MIN_BITS && bits <= Self::MAX_BITS {
            Some(Self {
                bits,
                encryption_mask: 0,
            })
        } else {
            None
        }
    }

    /// The same width with `mask` naming the memory-encryption bits (the C-bit, or the
    /// KeyID bits). `None` unless every bit of `mask` lies in `12..MAXPHYADDR` and at least
    /// [`MaxPhysAddr::MIN_BITS`] address bits remain below the lowest of them.
    pub const fn with_encryption_mask(self, mask: u64) -> Option<Self> {
        let field = ((1u64 << self.bits) - 1) & !0xfff;
        if mask & !field != 0 {
            return None;
        }
        if mask != 0 && mask.trailing_zeros() < Self::MIN_BITS as u32 {
            return None;
        }
        Some(Self {
            bits: self.bits,
            encryption_mask: mask,
        })
    }

    /// The width in bits (MAXPHYADDR as the CPU reports it).
    pub const fn bits(self) -> u8 {
        self.bits
    }

    /// The memory-encryption bits (zero when there are none).
    pub const fn encryption_mask(self) -> u64 {
        self.encryption_mask
    }

    /// The number of bits an address may use: MAXPHYADDR, or the position of the lowest
    /// encryption bit.
    pub const fn address_bits(self) -> u32 {
        if self.encryption_mask == 0 {
            self.bits as u32
        } else {
            self.encryption_mask.trailing_zeros()
        }
    }

    /// One past the highest physical address: `2^address_bits`.
    pub const fn limit(self) -> u64 {
        1 << self.address_bits()
    }

    /// The bits of an entry that hold an address whose low `low_bit` bits are implied zero:
    /// bits `low_bit..address_bits`.
    pub(crate) const fn address_mask(self, low_bit: u32) -> u64 {
        (self.limit() - 1) & !((1u64 << low_bit) - 1)
    }

    /// The bits of CR3 (or of an entry) that a relocation keeps: everything but the
    /// 4 KiB-aligned address (PCID, PWT, PCD, encryption bits, reserved bits).
    pub(crate) const fn non_address_mask(self) -> u64 {
        !self.address_mask(12)
    }
}

/// What one entry means at one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Present bit clear: the rest of the entry is ignored by the CPU.
    NotPresent,
    /// A pointer to the next-level table at `table`.
    Table {
        /// Physical address of the next-level table.
        table: u64,
    },
    /// A leaf mapping `size` bytes at physical `frame`.
    Leaf {
        /// Physical address of the mapped page (aligned to `size`).
        frame: u64,
        /// 4 KiB, 2 MiB or 1 GiB.
        size: u64,
    },
}

/// Why a present entry is malformed: the CPU would raise a reserved-bit page fault on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Malformed {
    /// PS (bit 7) set in an L4 or L5 entry.
    PageSizeAtTopLevels,
    /// Address bits at or above MAXPHYADDR (and below bit 52) are set.
    AddressBeyondMaxPhys,
    /// Bits between the PAT bit (12) and the leaf's alignment are set in a 2 MiB or 1 GiB
    /// leaf.
    MisalignedHugeLeaf,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::PageSizeAtTopLevels => "PS bit set at L4/L5",
            Malformed::AddressBeyondMaxPhys => "address bits set at or above MAXPHYADDR",
            Malformed::MisalignedHugeLeaf => "reserved bits set below a huge leaf's alignment",
        })
    }
}

impl core::error::Error for Malformed {}

/// Bits 12..52: what the architecture may use for an address on any CPU.
pub(crate) const ARCH_ADDRESS_BITS: u64 = 0x000f_ffff_ffff_f000;

/// A raw page-table entry. Decoding needs the level and MAXPHYADDR; the raw value is kept
/// so that rebasing can change the address field and nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry(u64);

impl Entry {
    /// The entry whose raw value is `raw`.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The present bit.
    pub fn is_present(self) -> bool {
        self.0 & PRESENT != 0
    }

    /// Bit 7: PS (a 2 MiB / 1 GiB leaf) at L2 and L3, reserved at L4/L5, PAT at L1.
    pub(crate) fn has_page_size_bit(self) -> bool {
        self.0 & PAGE_SIZE != 0
    }

    /// Decodes the entry as the CPU would at `level`, or says why the CPU would fault on it.
    pub fn decode(self, level: Level, max_phys: MaxPhysAddr) -> Result<EntryKind, Malformed> {
        if !self.is_present() {
            return Ok(EntryKind::NotPresent);
        }
        let is_huge = level != Level::L1 && self.0 & PAGE_SIZE != 0;
        if is_huge && matches!(level, Level::L4 | Level::L5) {
            return Err(Malformed::PageSizeAtTopLevels);
        }
        if self.0 & ARCH_ADDRESS_BITS & !max_phys.address_mask(12) & !max_phys.encryption_mask()
            != 0
        {
            return Err(Malformed::AddressBeyondMaxPhys);
        }
        let field = address_field(level, is_huge, max_phys);
        if is_huge
            && self.0 & ARCH_ADDRESS_BITS & !field & !(1 << 12) & !max_phys.encryption_mask() != 0
        {
            return Err(Malformed::MisalignedHugeLeaf);
        }
        let addr = self.0 & field;
        Ok(match (level, is_huge) {
            (Level::L1, _) => EntryKind::Leaf {
                frame: addr,
                size: TABLE_SIZE,
            },
            (Level::L2, true) => EntryKind::Leaf {
                frame: addr,
                size: SIZE_2M,
            },
            (Level::L3, true) => EntryKind::Leaf {
                frame: addr,
                size: SIZE_1G,
            },
            _ => EntryKind::Table { table: addr },
        })
    }

    /// The entry with `delta` added to its address field, as two's complement (so a move to
    /// a lower base works too); every other bit unchanged. `field` is the mask from
    /// [`address_field`]. Returns `None` when the new address leaves the field (below zero or
    /// at/above the address limit) or is not aligned to the field.
    pub(crate) fn rebased(self, field: u64, delta: u64) -> Option<Entry> {
        let new_addr = (self.0 & field).wrapping_add(delta);
        // A move in either direction that crosses zero or the limit leaves bits outside the
        // field; a delta not aligned to the field's low bit does too.
        if new_addr & !field != 0 {
            return None;
        }
        Some(Entry((self.0 & !field) | new_addr))
    }
}

/// The mask of an entry's address field at `level`: bits 12, 21 or 30 up to the address
/// limit (MAXPHYADDR, or the lowest encryption bit).
pub(crate) const fn address_field(level: Level, is_huge: bool, max_phys: MaxPhysAddr) -> u64 {
    let low_bit = match (level, is_huge) {
        (Level::L2, true) => 21,
        (Level::L3, true) => 30,
        _ => 12,
    };
    max_phys.address_mask(low_bit)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn mp(bits: u8) -> MaxPhysAddr {
        MaxPhysAddr::new(bits).unwrap()
    }

    #[test]
    fn max_phys_bounds() {
        assert!(MaxPhysAddr::new(31).is_none());
        assert!(MaxPhysAddr::new(53).is_none());
        assert_eq!(mp(52).address_mask(12), ARCH_ADDRESS_BITS);
        assert_eq!(mp(36).address_mask(21), 0x0000_000f_ffe0_0000);
    }

    #[test]
    fn pat_bit_of_huge_leaf_is_not_address() {
        // 2 MiB leaf at 0x4000_0000 with PAT (bit 12), NX, G, software bit 52.
        let e = Entry(0x8010_0000_4000_1000 | 0x1e3);
        assert_eq!(
            e.decode(Level::L2, mp(46)),
            Ok(EntryKind::Leaf {
                frame: 0x4000_0000,
                size: SIZE_2M
            })
        );
        // The x86_64 crate's addr() would read 0x4000_1000 here.
        let field = address_field(Level::L2, true, mp(46));
        let moved = e.rebased(field, 0x20_0000).unwrap();
        assert_eq!(moved.0, 0x8010_0000_4020_1000 | 0x1e3);
    }

    #[test]
    fn a_1_gib_leaf_is_read_at_1_gib_granularity() {
        // 1 GiB leaf at 0xc000_0000 with PAT (bit 12), NX and G: the frame is 1 GiB aligned
        // and the size 1 GiB (written out, not through SIZE_1G, so the constant is checked
        // too). Bits 13..30 are reserved in a 1 GiB leaf: one set there is misaligned.
        let e = Entry(0x8000_0000_c000_1000 | 0x1e3);
        assert_eq!(
            e.decode(Level::L3, mp(46)),
            Ok(EntryKind::Leaf {
                frame: 0xc000_0000,
                size: 1 << 30
            })
        );
        for reserved in [13, 21, 29] {
            assert_eq!(
                Entry(0xc000_0000 | (1 << reserved) | 0xe3).decode(Level::L3, mp(46)),
                Err(Malformed::MisalignedHugeLeaf),
                "bit {reserved}"
            );
        }
    }

    #[test]
    fn l1_bit7_is_pat_not_ps() {
        let e = Entry(0x1234_5000 | 0x80 | 0x3);
        assert_eq!(
            e.decode(Level::L1, mp(40)),
            Ok(EntryKind::Leaf {
                frame: 0x1234_5000,
                size: TABLE_SIZE
            })
        );
    }

    #[test]
    fn malformed_entries() {
        assert_eq!(
            Entry(0x1000 | 0x83).decode(Level::L4, mp(40)),
            Err(Malformed::PageSizeAtTopLevels)
        );
        assert_eq!(
            Entry(0x1000 | 0x83).decode(Level::L5, mp(40)),
            Err(Malformed::PageSizeAtTopLevels)
        );
        assert_eq!(
            Entry((1 << 40) | 0x3).decode(Level::L3, mp(40)),
            Err(Malformed::AddressBeyondMaxPhys)
        );
        assert_eq!(
            Entry(0x20_2000 | 0x83).decode(Level::L2, mp(40)),
            Err(Malformed::MisalignedHugeLeaf)
        );
        // Not present: everything else ignored.
        assert_eq!(
            Entry(!1).decode(Level::L4, mp(40)),
            Ok(EntryKind::NotPresent)
        );
    }

    #[test]
    fn rebase_rejects_leaving_the_field() {
        let field = address_field(Level::L3, false, mp(36));
        let top = Entry(0xf_ffff_f000 | 0x3);
        assert_eq!(top.rebased(field, 0x1000), None);
        let low = Entry(0x1000 | 0x3);
        assert_eq!(low.rebased(field, 0x2000u64.wrapping_neg()), None);
        assert_eq!(low.rebased(field, 0x800), None);
        assert_eq!(
            Entry(0x3000 | 0x3).rebased(field, 0x2000u64.wrapping_neg()),
            Some(Entry(0x1003))
        );
    }

    #[test]
    fn index_shift_per_level() {
        assert_eq!(Level::L1.index_shift(), 12);
        assert_eq!(Level::L4.index_shift(), 39);
        assert_eq!(Level::L5.index_shift(), 48);
    }

    /// Canonical means bits 47..63 (4-level) or 56..63 (5-level) all equal: the low half
    /// ends one below bit 47 (56) set, the high half starts with all of them set.
    #[test]
    fn canonical_addresses_end_at_both_halves_edges() {
        let four = [
            (0, true),
            (0x0000_7fff_ffff_ffff, true),
            (0x0000_8000_0000_0000, false),
            (0x00ff_ffff_ffff_ffff, false),
            (0x8000_0000_0000_0000, false),
            (0xffff_7fff_ffff_ffff, false),
            (0xffff_8000_0000_0000, true),
            (u64::MAX, true),
        ];
        let five = [
            (0, true),
            (0x0000_8000_0000_0000, true),
            (0x00ff_ffff_ffff_ffff, true),
            (0x0100_0000_0000_0000, false),
            (0x8000_0000_0000_0000, false),
            (0xfeff_ffff_ffff_ffff, false),
            (0xff00_0000_0000_0000, true),
            (0xffff_8000_0000_0000, true),
            (u64::MAX, true),
        ];
        for (mode, cases) in [
            (PagingMode::FourLevel, &four[..]),
            (PagingMode::FiveLevel, &five[..]),
        ] {
            for &(addr, canonical) in cases {
                assert_eq!(
                    mode.is_canonical(VirtAddr::new(addr)),
                    canonical,
                    "{mode:?} {addr:#x}"
                );
            }
        }
    }

    /// An encryption mask must lie in the address field (bits 12..MAXPHYADDR) and leave at
    /// least 32 address bits below its lowest bit; the limit is then that bit.
    #[test]
    fn an_encryption_mask_leaves_at_least_32_address_bits_inside_the_field() {
        let with = |bits, mask| mp(bits).with_encryption_mask(mask);
        let c_bit_32 = with(46, 1 << 32).expect("exactly 32 address bits left");
        assert_eq!(c_bit_32.address_bits(), 32);
        assert_eq!(c_bit_32.limit(), 1 << 32);
        assert_eq!(c_bit_32.encryption_mask(), 1 << 32);
        assert_eq!(c_bit_32.bits(), 46);
        assert_eq!(with(46, 1 << 31), None);
        assert_eq!(with(46, 1 << 45 | 1 << 31), None);
        let top = with(46, 0b11 << 44).expect("the two top bits of the field");
        assert_eq!(top.address_bits(), 44);
        assert_eq!(with(46, 1 << 46), None);
        assert_eq!(with(52, 1 << 51).map(MaxPhysAddr::limit), Some(1 << 51));
        assert_eq!(with(52, 1 << 52), None);
        assert_eq!(with(32, 1 << 11), None);
        let none = with(40, 0).expect("no encryption");
        assert_eq!((none.address_bits(), none.limit()), (40, 1 << 40));
    }

    #[test]
    fn virtual_addresses_print_in_hex() {
        let addr = VirtAddr::from(x86_64::VirtAddr::new(0xffff_8000_0020_1000));
        assert_eq!(addr.as_u64(), 0xffff_8000_0020_1000);
        assert_eq!(std::format!("{addr:?}"), "VirtAddr(0xffff800000201000)");
        assert_eq!(std::format!("{addr:#x}"), "0xffff800000201000");
        assert_eq!(std::format!("{:x}", VirtAddr::new(0x1f)), "1f");
    }

    #[test]
    fn malformed_entries_say_what_the_cpu_faults_on() {
        for (reason, text) in [
            (Malformed::PageSizeAtTopLevels, "PS bit set at L4/L5"),
            (
                Malformed::AddressBeyondMaxPhys,
                "address bits set at or above MAXPHYADDR",
            ),
            (
                Malformed::MisalignedHugeLeaf,
                "reserved bits set below a huge leaf's alignment",
            ),
        ] {
            assert_eq!(std::format!("{reason}"), text);
        }
        assert_eq!(std::format!("{}", Level::L3), "L3");
    }
}

//! Every `PlanError` variant, triggered on a Xen-like layout, with memory verified
//! bit-identical afterwards and the message naming the culprit.
// 48 MiB of simulated RAM is beyond what Miri interprets in reasonable time; tests/miri.rs
// runs the same pipeline on a small layout under Miri.
#![cfg(not(miri))]

mod common;

use common::*;
use reloc_core::paging::Malformed;
use reloc_core::plan::{RangeRole, TableRole};
use reloc_core::{
    EntryLocation, Level, MemoryFault, PagingMode, PhysAddr, PhysMemory, PhysRange, Plan,
    PlanError, RelocationRequest,
};

const MEM: u64 = 48 * MIB;
const IMAGE: PhysRange = PhysRange::new(2 * MIB, 8 * MIB);
const NEW_BASE: u64 = 32 * MIB;

struct Fixture {
    mem: TestMem,
    l: XenLayout,
    maps: [PhysAddr; 1],
}

fn fixture() -> Fixture {
    let mut mem = TestMem::new(MEM);
    mem.fill_pattern(IMAGE.start, IMAGE.end);
    let l = build_xen(&mut mem, IMAGE.start, IMAGE.len(), MIB);
    let maps = [pa(l.l2_xenmap)];
    Fixture { mem, l, maps }
}

impl Fixture {
    fn request(&self) -> RelocationRequest<'_> {
        RelocationRequest {
            paging: PagingMode::FourLevel,
            top_table: pa(self.l.top),
            image: IMAGE,
            new_base: pa(NEW_BASE),
            image_maps: &self.maps,
            max_phys_bits: 46,
            encryption_mask: 0,
        }
    }

    /// Plans `req` on a copy of the fixture's memory and checks the copy is bit-identical
    /// afterwards.
    fn plan<const N: usize>(&self, req: &RelocationRequest<'_>) -> Result<Plan<N>, PlanError> {
        let mut probe = self.mem.clone();
        let result = Plan::new_with_capacity(&probe.directmap(), req);
        assert!(probe == self.mem, "planning changed memory");
        result
    }

    /// Plans `req`, expects `expected`, returns the message.
    fn reject(&self, req: &RelocationRequest<'_>, expected: PlanError) -> String {
        assert_eq!(self.plan::<64>(req).err(), Some(expected));
        expected.to_string()
    }
}

fn at(table: u64, level: Level, index: u16, entry: u64) -> EntryLocation {
    EntryLocation {
        table: pa(table),
        level,
        index,
        entry,
    }
}

#[test]
fn invalid_max_phys_bits() {
    let f = fixture();
    for bits in [0, 31, 53, 64] {
        let req = RelocationRequest {
            max_phys_bits: bits,
            ..f.request()
        };
        let msg = f.reject(&req, PlanError::InvalidMaxPhysBits { bits });
        assert!(msg.contains(&bits.to_string()));
    }
}

#[test]
fn empty_image() {
    let f = fixture();
    let image = PhysRange::new(IMAGE.start, IMAGE.start);
    let req = RelocationRequest {
        image,
        ..f.request()
    };
    f.reject(&req, PlanError::EmptyImage { image });
}

#[test]
fn image_misaligned() {
    let f = fixture();
    for image in [
        PhysRange::new(IMAGE.start + 4 * KIB, IMAGE.end),
        PhysRange::new(IMAGE.start, IMAGE.end - 8),
    ] {
        let req = RelocationRequest {
            image,
            ..f.request()
        };
        let msg = f.reject(&req, PlanError::ImageMisaligned { image });
        assert!(msg.contains(&format!("{:#x}", image.start)));
    }
}

#[test]
fn new_base_misaligned() {
    let f = fixture();
    let req = RelocationRequest {
        new_base: pa(NEW_BASE + 4 * KIB),
        ..f.request()
    };
    let msg = f.reject(
        &req,
        PlanError::NewBaseMisaligned {
            new_base: pa(NEW_BASE + 4 * KIB),
        },
    );
    assert!(msg.contains("0x2001000"), "{msg}");
}

/// Memory that serves every range and reads as all zeros: the worst case for a check that
/// relies on `check_range` to catch absurd ranges.
struct ServesEverything;

impl PhysMemory for ServesEverything {
    fn check_range(&self, _: u64, _: u64) -> Result<(), MemoryFault> {
        Ok(())
    }
    fn read_u64(&self, _: u64) -> u64 {
        0
    }
    fn write_u64(&mut self, _: u64, _: u64) {}
    fn copy(&mut self, _: u64, _: u64, _: u64) {}
}

/// Found by review: `[0, 0xffff_ffff_ffe0_1000)` is 2 MiB-aligned at the start and 4 KiB at the
/// end, and its length rounded up to 2 MiB wraps. Debug builds panicked ("attempt to add with
/// overflow"), release builds accepted it with an inverted `new_image()` when memory served
/// every range, and a real directmap reported `Inaccessible`. The image end is now checked
/// against MAXPHYADDR before any rounding.
#[test]
fn image_whose_rounded_length_wraps_is_beyond_max_phys() {
    let image = PhysRange::new(0, 0xffff_ffff_ffe0_1000);
    for bits in [46, 52] {
        let req = RelocationRequest {
            paging: PagingMode::FourLevel,
            top_table: pa(0),
            image,
            new_base: pa(0x10_0000_0000_0000 - 2 * MIB),
            image_maps: &[],
            max_phys_bits: bits,
            encryption_mask: 0,
        };
        let expected = PlanError::RangeBeyondMaxPhys {
            role: RangeRole::Old,
            range: image,
            max_phys_bits: bits,
        };
        assert_eq!(
            Plan::<64>::new(&ServesEverything, &req).err(),
            Some(expected)
        );
        // A real directmap gives the same answer, not `Inaccessible`.
        let f = fixture();
        assert_eq!(f.plan::<64>(&req).err(), Some(expected));
    }
}

/// Every image end at the top of the 64-bit space is refused before anything is rounded,
/// for any start and any MAXPHYADDR.
#[test]
fn images_ending_near_2_pow_64_never_panic() {
    for start in [0, 2 * MIB, 1 << 51, 0xffff_ffff_ffe0_0000] {
        for end in [!0xfff, 0xffff_ffff_ffe0_1000, 1 << 63] {
            let image = PhysRange::new(start, end);
            let req = RelocationRequest {
                paging: PagingMode::FiveLevel,
                top_table: pa(0),
                image,
                new_base: pa(2 * MIB),
                image_maps: &[],
                max_phys_bits: 52,
                encryption_mask: 0,
            };
            let err = Plan::<4>::new_with_capacity(&ServesEverything, &req).unwrap_err();
            assert!(
                matches!(
                    err,
                    PlanError::RangeBeyondMaxPhys {
                        role: RangeRole::Old,
                        ..
                    } | PlanError::ImageMisaligned { .. }
                        | PlanError::EmptyImage { .. }
                ),
                "{image}: {err}"
            );
        }
    }
}

#[test]
fn ranges_beyond_max_phys() {
    let mut f = fixture();
    // The image itself above MAXPHYADDR.
    let image = PhysRange::new(1 << 40, (1 << 40) + 6 * MIB);
    let req = RelocationRequest {
        image,
        top_table: pa(image.start),
        image_maps: &[],
        max_phys_bits: 36,
        ..f.request()
    };
    f.reject(
        &req,
        PlanError::RangeBeyondMaxPhys {
            role: RangeRole::Old,
            range: image,
            max_phys_bits: 36,
        },
    );
    // A destination beyond MAXPHYADDR with no entry to rebase (an empty top-level table):
    // the range check itself catches it.
    let empty_top = IMAGE.start + 0x1_0000;
    let new_base = (1 << 36) - 4 * MIB;
    let req = RelocationRequest {
        top_table: pa(empty_top),
        image_maps: &[],
        new_base: pa(new_base),
        max_phys_bits: 36,
        ..f.request()
    };
    f.mem.words[(empty_top / 8) as usize..(empty_top / 8 + 512) as usize].fill(0);
    f.reject(
        &req,
        PlanError::RangeBeyondMaxPhys {
            role: RangeRole::New,
            range: PhysRange::new(new_base, new_base + 6 * MIB),
            max_phys_bits: 36,
        },
    );
}

#[test]
fn ranges_overlap() {
    let f = fixture();
    for new_base in [6 * MIB, 0, IMAGE.start] {
        let req = RelocationRequest {
            new_base: pa(new_base),
            ..f.request()
        };
        f.reject(
            &req,
            PlanError::RangesOverlap {
                old: IMAGE,
                new: PhysRange::new(new_base, new_base + 6 * MIB),
            },
        );
    }
}

#[test]
fn inaccessible_ranges() {
    let f = fixture();
    let image = PhysRange::new(64 * MIB, 70 * MIB);
    let req = RelocationRequest {
        image,
        top_table: pa(image.start),
        image_maps: &[],
        new_base: pa(128 * MIB),
        ..f.request()
    };
    f.reject(
        &req,
        PlanError::Inaccessible {
            role: RangeRole::Old,
            range: image,
            fault: MemoryFault { addr: 64 * MIB },
        },
    );
    let req = RelocationRequest {
        new_base: pa(46 * MIB),
        ..f.request()
    };
    let msg = f.reject(
        &req,
        PlanError::Inaccessible {
            role: RangeRole::New,
            range: PhysRange::new(46 * MIB, 52 * MIB),
            fault: MemoryFault { addr: 48 * MIB },
        },
    );
    assert!(msg.contains("0x3000000"), "{msg}");
}

#[test]
fn named_tables_misaligned_or_outside() {
    let f = fixture();
    let top = f.l.top;
    let req = RelocationRequest {
        top_table: pa(top + 8),
        ..f.request()
    };
    f.reject(
        &req,
        PlanError::TableMisaligned {
            role: TableRole::TopLevel,
            table: pa(top + 8),
        },
    );
    let req = RelocationRequest {
        top_table: pa(0x9000),
        ..f.request()
    };
    let msg = f.reject(
        &req,
        PlanError::TableOutsideImage {
            role: TableRole::TopLevel,
            table: pa(0x9000),
        },
    );
    assert!(msg.contains("0x9000"), "{msg}");
    let maps = [pa(f.l.l2_xenmap + 0x10)];
    let req = RelocationRequest {
        image_maps: &maps,
        ..f.request()
    };
    f.reject(
        &req,
        PlanError::TableMisaligned {
            role: TableRole::ImageMap,
            table: maps[0],
        },
    );
    let maps = [pa(IMAGE.end)];
    let req = RelocationRequest {
        image_maps: &maps,
        ..f.request()
    };
    f.reject(
        &req,
        PlanError::TableOutsideImage {
            role: TableRole::ImageMap,
            table: pa(IMAGE.end),
        },
    );
}

#[test]
fn pointer_outside_image() {
    let mut f = fixture();
    let entry = 0x9000 | PTR;
    f.mem.set_entry(f.l.l3_xenmap, 5, entry);
    let req = f.request();
    let msg = f.reject(
        &req,
        PlanError::PointerOutsideImage {
            at: at(f.l.l3_xenmap, Level::L3, 5, entry),
        },
    );
    assert!(
        msg.contains("L3 table 0x303000[5] = 0x0000000000009063"),
        "{msg}"
    );
}

#[test]
fn malformed_entries() {
    type Place = fn(&XenLayout) -> (u64, u16, Level);
    let cases: [(Place, u64, Malformed); 4] = [
        (
            |l| (l.top, 7, Level::L4),
            0x83,
            Malformed::PageSizeAtTopLevels,
        ),
        (
            |l| (l.l3_xenmap, 6, Level::L3),
            (1 << 47) | PTR,
            Malformed::AddressBeyondMaxPhys,
        ),
        (
            |l| (l.l2_fixmap, 3, Level::L2),
            0x20_2000 | HUGE,
            Malformed::MisalignedHugeLeaf,
        ),
        (
            |l| (l.l1_fixmap, 9, Level::L1),
            (1 << 50) | PTR,
            Malformed::AddressBeyondMaxPhys,
        ),
    ];
    for (place, raw, reason) in cases {
        let mut f = fixture();
        let (table, index, level) = place(&f.l);
        let entry = if reason == Malformed::PageSizeAtTopLevels {
            f.l.l3_xenmap | raw
        } else {
            raw
        };
        f.mem.set_entry(table, index.into(), entry);
        let req = f.request();
        let msg = f.reject(
            &req,
            PlanError::MalformedEntry {
                at: at(table, level, index, entry),
                reason,
            },
        );
        assert!(msg.contains(&format!("{table:#x}[{index}]")), "{msg}");
    }
}

#[test]
fn image_leaf_outside_image() {
    let mut f = fixture();
    let entry = 0x4000_0000 | IMAGE_LEAF;
    f.mem.set_entry(f.l.l2_xenmap, 5, entry);
    let req = f.request();
    f.reject(
        &req,
        PlanError::ImageLeafOutsideImage {
            at: at(f.l.l2_xenmap, Level::L2, 5, entry),
        },
    );
}

#[test]
fn image_mapped_by_4kib_leaf() {
    let mut f = fixture();
    let leaf = (IMAGE.start + 0x5000) | 0x163;
    f.mem.set_entry(f.l.l1_fixmap_x, 7, leaf);
    let req = f.request();
    let image_map_entry = f.mem.entry(f.l.l2_xenmap, 511);
    let msg = f.reject(
        &req,
        PlanError::ImageMappedBy4KiBLeaf {
            image_map: at(f.l.l2_xenmap, Level::L2, 511, image_map_entry),
            leaf: at(f.l.l1_fixmap_x, Level::L1, 7, leaf),
        },
    );
    assert!(msg.contains("4 KiB leaf"), "{msg}");
    // The same leaf outside the image is Xen's fixmap and fine.
    f.mem
        .set_entry(f.l.l1_fixmap_x, 7, (IMAGE.end + 0x5000) | 0x163);
    assert!(f.plan::<64>(&f.request()).is_ok());
}

#[test]
fn image_map_not_reached_as_l2() {
    let f = fixture();
    // l1_directmap is reached, but as an L1; the page after the tables is not reached at all.
    for table in [f.l.l1_directmap, f.l.l1_directmap + 4 * KIB] {
        let maps = [pa(f.l.l2_xenmap), pa(table)];
        let req = RelocationRequest {
            image_maps: &maps,
            ..f.request()
        };
        f.reject(&req, PlanError::ImageMapNotReached { table: pa(table) });
    }
}

#[test]
fn image_map_also_reached_as_l3() {
    let mut f = fixture();
    // An image map with no leaves, also hung under the top level where it reads as an L3.
    for i in 0..512 {
        f.mem.set_entry(f.l.l2_xenmap, i, 0);
    }
    f.mem.set_entry(f.l.top, 5, f.l.l2_xenmap | PTR);
    let req = f.request();
    let msg = f.reject(
        &req,
        PlanError::ImageMapAliased {
            table: pa(f.l.l2_xenmap),
            level: Level::L3,
        },
    );
    assert!(msg.contains("0x304000") && msg.contains("L3"), "{msg}");
}

#[test]
fn rebased_entry_beyond_max_phys() {
    let mut mem = TestMem::new(MEM);
    // Tables at 7 MiB: the first pointer rebased past 2^36 is top[0].
    let l = build_xen(&mut mem, IMAGE.start, IMAGE.len(), 5 * MIB);
    let maps = [pa(l.l2_xenmap)];
    let f = Fixture { mem, l, maps };
    let req = RelocationRequest {
        new_base: pa((1 << 36) - 2 * MIB),
        max_phys_bits: 36,
        ..f.request()
    };
    let entry = f.mem.entry(f.l.top, 0);
    let msg = f.reject(
        &req,
        PlanError::RebasedEntryBeyondMaxPhys {
            at: at(f.l.top, Level::L4, 0, entry),
            max_phys_bits: 36,
        },
    );
    assert!(msg.contains("L4 table 0x700000[0]"), "{msg}");
}

#[test]
fn too_many_tables() {
    let f = fixture();
    assert_eq!(
        f.plan::<4>(&f.request()).err(),
        Some(PlanError::TooManyTables { capacity: 4 })
    );
    // The layout has 14 tables: 14 fits, 13 does not.
    assert!(f.plan::<14>(&f.request()).is_ok());
    assert_eq!(
        f.plan::<13>(&f.request()).err(),
        Some(PlanError::TooManyTables { capacity: 13 })
    );
}

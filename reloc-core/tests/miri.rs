//! The Miri suite's end-to-end case: a small Xen-like layout planned, rejected and applied
//! through `DirectMap` over a heap buffer, so Miri checks every raw-pointer access of the
//! directmap on the engine's real access pattern. Small enough to interpret in seconds; the
//! full-size layouts (tests/relocate.rs, tests/errors.rs) are compiled out under Miri.
//!
//! Run: `cargo +nightly miri test -p reloc-core` (also runs as an ordinary test).

mod common;

use common::*;
use reloc_core::plan::RangeRole;
use reloc_core::{MemoryFault, PagingMode, PhysRange, Plan, PlanError, RelocationRequest};

/// Image at physical 0 (2 MiB-aligned), 128 KiB; tables from 64 KiB; new base 2 MiB.
const IMAGE: PhysRange = PhysRange::new(0, 128 * KIB);
const NEW_BASE: u64 = 2 * MIB;
const MEM: u64 = NEW_BASE + IMAGE.end;

#[test]
fn small_layout_through_the_directmap() {
    let mut mem = TestMem::new(MEM);
    mem.fill_pattern(IMAGE.start, IMAGE.end);
    let l = build_xen(&mut mem, IMAGE.start, IMAGE.len(), 64 * KIB);
    let old_image: Vec<u64> = mem.words[..(IMAGE.end / 8) as usize].to_vec();
    let maps = [pa(l.l2_xenmap)];
    let request = RelocationRequest {
        paging: PagingMode::FourLevel,
        top_table: pa(l.top),
        image: IMAGE,
        new_base: pa(NEW_BASE),
        image_maps: &maps,
        max_phys_bits: 40,
        encryption_mask: 0,
    };

    // A destination past the buffer is rejected without a write.
    let too_high = RelocationRequest {
        new_base: pa(4 * MIB),
        ..request
    };
    assert_eq!(
        Plan::<64>::new(&mem.directmap(), &too_high).err(),
        Some(PlanError::Inaccessible {
            role: RangeRole::New,
            range: PhysRange::new(4 * MIB, 6 * MIB),
            fault: MemoryFault { addr: 4 * MIB },
        })
    );
    assert!(mem.words[(NEW_BASE / 8) as usize..].iter().all(|&w| w == 0));

    let plan: Plan = Plan::new(&mem.directmap(), &request).expect("plan");
    let report = plan.apply(&mut mem.directmap());
    assert_eq!(report.bytes_copied, IMAGE.len());
    assert_eq!(report.image_leaves_rebased, 1);
    assert_eq!(report.tables_rebased.total(), 11);

    // The old image is untouched; the copy differs from it exactly in rebased entries.
    assert_eq!(&mem.words[..old_image.len()], &old_image[..]);
    let copy = &mem.words[(NEW_BASE / 8) as usize..];
    let changed: Vec<usize> = (0..old_image.len())
        .filter(|&i| copy[i] != old_image[i])
        .collect();
    assert_eq!(changed.len(), 3 + 1 + 2 + 1 + 1 + 4 + 1 + 1);
    for i in changed {
        assert_eq!(copy[i], old_image[i] + NEW_BASE, "qword {i}");
    }
    let (pa, _) = translate(
        &mem,
        l.top + NEW_BASE,
        PagingMode::FourLevel,
        XEN_VIRT_START + 8,
    )
    .unwrap();
    assert_eq!(pa, NEW_BASE + 8);
}

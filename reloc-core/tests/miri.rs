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

/// Issue 19 item 4: the CPU sets accessed and dirty bits in the tables it runs on at any
/// time, so planning must read live tables with atomic loads. A thread stands in for the
/// CPU: it sets the accessed bit of every present qword of the image's tables with atomic
/// read-modify-writes, unsynchronised with the planning thread. Under Miri a plain load of
/// those qwords (planning before it read `&[u64; 512]`) is a data race and fails this test;
/// natively it checks that A/D updates change no planning decision.
#[test]
fn planning_reads_live_tables_while_the_cpu_sets_accessed_bits() {
    use std::sync::atomic::{AtomicU64, Ordering};

    let mut mem = TestMem::new(MEM);
    mem.fill_pattern(IMAGE.start, IMAGE.end);
    let l = build_xen(&mut mem, IMAGE.start, IMAGE.len(), 64 * KIB);
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
    let quiet = Plan::new(&mem.directmap(), &request).expect("plan");

    let live: Vec<AtomicU64> = mem.words.iter().copied().map(AtomicU64::new).collect();
    let tables = &live[(64 * KIB / 8) as usize..(IMAGE.end / 8) as usize];
    let accessed = 1 << 5;
    std::thread::scope(|s| {
        let cpu = s.spawn(|| {
            for entry in tables {
                if entry.load(Ordering::Relaxed) & 1 != 0 {
                    entry.fetch_or(accessed, Ordering::Relaxed);
                }
            }
        });
        // SAFETY: `live` is 8-byte aligned, valid for reads and writes (`AtomicU64` is
        // interior-mutable) and outlives the directmap; besides the engine, only the "CPU"
        // thread writes it, with atomic accessed-bit updates, as `DirectMap::new` allows.
        // Only planning runs through it: nothing is written.
        let directmap = unsafe {
            reloc_core::DirectMap::new(live.as_ptr().cast_mut().cast(), PhysRange::new(0, MEM))
        };
        let planned = Plan::new(&directmap, &request).expect("plan over live tables");
        assert!(planned.tables().eq(quiet.tables()));
        assert!(planned.rewritten_entries().eq(quiet.rewritten_entries()));
        cpu.join().expect("the CPU thread");
    });
}

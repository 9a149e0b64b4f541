//! `select_target` on a full 128-entry map (the default `BootInfo` capacity), the shape an
//! EFI-converted map has: RAM split into touching entries with reserved holes. Its cost grows
//! with the cube of the entry count at worst (see the `select` module docs); these show what
//! that is in time. Run with `cargo bench -p reloc-core --bench select`.

use criterion::{criterion_group, criterion_main, Criterion};
use reloc_core::select::E820_RAM;
use reloc_core::{select_target, MemoryRegion, PhysRange, TargetRequest};
use std::hint::black_box;

const MIB: u64 = 1 << 20;

/// 120 touching 16 MiB RAM entries from 16 MiB up, shuffled, and a reserved page in every
/// tenth entry's top; 8 entries for the low MiB and the top of 4 GiB.
fn efi_like_map() -> Vec<MemoryRegion> {
    let mut map = Vec::new();
    for k in 0..120u64 {
        // A fixed permutation of 0..120 (gcd(77, 120) = 1), so the map is unsorted.
        let slot = (k * 77) % 120;
        let start = 16 * MIB * (slot + 1);
        map.push(MemoryRegion {
            start,
            len: 16 * MIB,
            kind: E820_RAM,
        });
    }
    for k in 0..8u64 {
        map.push(MemoryRegion {
            start: 16 * MIB * (15 * k + 2) - 4096,
            len: 4096,
            kind: 2,
        });
    }
    map
}

fn bench(c: &mut Criterion) {
    let map = efi_like_map();
    assert_eq!(map.len(), 128);
    let avoid = [
        PhysRange::new(2 * MIB, 8 * MIB),
        PhysRange::new(9 * MIB, 10 * MIB),
    ];
    c.bench_function(
        "select 8 MiB on a 128-entry map (first candidate fits)",
        |b| {
            let request = TargetRequest::new(8 * MIB, &avoid);
            b.iter(|| select_target(black_box(&map), black_box(&request)).unwrap())
        },
    );
    c.bench_function(
        "select on a 128-entry map, no room (every candidate)",
        |b| {
            let request = TargetRequest::new(1 << 40, &avoid);
            b.iter(|| select_target(black_box(&map), black_box(&request)).unwrap_err())
        },
    );
    // The worst shape: one extent chained through all 128 entries, walked from every top.
    let chain: Vec<MemoryRegion> = (0..128u64)
        .map(|k| MemoryRegion {
            // A fixed permutation of 0..128 (77 is odd), so the map is unsorted.
            start: 16 * MIB * ((k * 77) % 128 + 1),
            len: 16 * MIB,
            kind: E820_RAM,
        })
        .collect();
    assert_eq!(chain.len(), 128);
    c.bench_function(
        "select on one 128-entry extent, no room (every candidate)",
        |b| {
            let request = TargetRequest::new(1 << 40, &avoid);
            b.iter(|| select_target(black_box(&chain), black_box(&request)).unwrap_err())
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

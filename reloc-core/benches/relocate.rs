//! Planning and applying a Xen-like relocation (6 MiB image, 14 tables) over a heap buffer.
//! Run with `cargo bench -p reloc-core`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion};
use reloc_core::{PagingMode, PhysRange, Plan, RelocationRequest};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut mem = TestMem::new(48 * MIB);
    mem.fill_pattern(2 * MIB, 8 * MIB);
    let l = build_xen(&mut mem, 2 * MIB, 6 * MIB, MIB);
    let maps = [pa(l.l2_xenmap)];
    let request = RelocationRequest {
        paging: PagingMode::FourLevel,
        top_table: pa(l.top),
        image: PhysRange::new(2 * MIB, 8 * MIB),
        new_base: pa(32 * MIB),
        image_maps: &maps,
        max_phys_bits: 46,
        encryption_mask: 0,
    };
    c.bench_function("plan xen layout", |b| {
        let dm = mem.directmap();
        b.iter(|| Plan::<64>::new(black_box(&dm), black_box(&request)).unwrap())
    });
    let plan: Plan = Plan::new(&mem.directmap(), &request).unwrap();
    c.bench_function("apply xen layout (6 MiB copy + rebase)", |b| {
        let mut dm = mem.directmap();
        b.iter(|| plan.apply(black_box(&mut dm)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

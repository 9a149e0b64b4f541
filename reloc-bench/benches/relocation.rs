//! reloc-core against a plain memcpy and against Xen's `move_xen()` in C, side by side in one
//! run (see BENCHMARKS.md). `cargo bench -p reloc-bench`, then
//! `cargo run -p reloc-bench --bin bench-ratios` for the ratios.
//!
//! Groups:
//! - `xen_{6,16,64,256}MiB`: Xen-like layout (14 tables) with an image of that size, hot
//!   caches where it fits: `memcpy` of the image, `plan`, `apply`, `plan_apply`, `xen_c`.
//! - `plan_tables`: planning the Xen-like layout grown to 14 (the test layout), 18 (Xen's
//!   real count), 64, 512 and 4,096 tables; throughput in present entries.
//! - `cold_6MiB`: the 6 MiB group with cold caches. Eight copies of the layout, each with its
//!   own destination, used in turn (96 MiB touched, three times the 32 MiB last-level
//!   cache); `plan` alone touches only tables, so it takes turns over 1,024 layouts instead
//!   (56 MiB of tables).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use reloc_bench::{build_xen, image_len_for, write_xen_tables, Memory, XenLayout, MIB, XEN_TABLES};
use reloc_core::{PhysAddr, Plan, RelocationRequest};

/// Hot-cache image sizes, MiB. 6 MiB is Xen's `reloc_size` under QEMU.
const SIZES_MIB: [u64; 4] = [6, 16, 64, 256];
/// Table counts of the planning group.
const TABLE_COUNTS: [usize; 5] = [XEN_TABLES, 18, 64, 512, 4096];
/// Layouts used in turn by the cold-cache group.
const COLD_COPIES: u64 = 8;
/// Table-only layouts used in turn by the cold-cache planning benchmark.
const COLD_PLANS: u64 = 1024;

fn timing<M: criterion::measurement::Measurement>(group: &mut BenchmarkGroup<'_, M>, len: u64) {
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    // Many short samples: on a shared machine the fastest ones are the undisturbed ones.
    // Large copies take milliseconds: 20 samples.
    group.sample_size(if len >= 64 * MIB { 20 } else { 200 });
}

/// A layout of `len` bytes at 2 MiB and the 2 MiB-aligned destination just above it.
fn xen_memory(len: u64, tables: usize) -> (Memory, XenLayout, u64) {
    let new_base = (2 * MIB + len).next_multiple_of(2 * MIB);
    let mut mem = Memory::new(new_base + len);
    let layout = build_xen(&mut mem, 2 * MIB, len, tables);
    // Fault the destination in before anything is timed.
    mem.fill(reloc_core::PhysRange::new(new_base, new_base + len));
    (mem, layout, new_base)
}

fn apply_vs_memcpy(c: &mut Criterion) {
    for size in SIZES_MIB {
        let len = size * MIB;
        let (mut mem, layout, new_base) = xen_memory(len, XEN_TABLES);
        let maps = layout.image_maps();
        let request = layout.request(new_base, &maps);
        let plan: Plan = Plan::new(&mem.directmap(), &request).expect("the layout plans");

        let mut group = c.benchmark_group(format!("xen_{size}MiB"));
        timing(&mut group, len);
        group.throughput(Throughput::Bytes(len));
        group.bench_function("memcpy", |b| {
            b.iter(|| mem.memcpy(black_box(layout.image.start), black_box(new_base), len))
        });
        group.bench_function("plan", |b| {
            let dm = mem.directmap();
            b.iter(|| Plan::<64>::new(black_box(&dm), black_box(&request)).expect("plans"))
        });
        group.bench_function("apply", |b| {
            let mut dm = mem.directmap();
            b.iter(|| black_box(&plan).apply(&mut dm))
        });
        group.bench_function("plan_apply", |b| {
            let mut dm = mem.directmap();
            b.iter(|| {
                let plan: Plan = Plan::new(&dm, black_box(&request)).expect("plans");
                plan.apply(&mut dm)
            })
        });
        group.bench_function("xen_c", |b| {
            b.iter(|| mem.move_xen_c(black_box(&layout), black_box(new_base)))
        });
        group.finish();
    }
}

/// Planning a layout of `tables` tables with capacity `N`.
fn bench_plan<const N: usize>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    tables: usize,
) {
    let len = image_len_for(tables, 6 * MIB);
    let (mut mem, layout, new_base) = xen_memory(len, tables);
    let maps = layout.image_maps();
    let request = layout.request(new_base, &maps);
    group.throughput(Throughput::Elements(layout.present_entries));
    let dm = mem.directmap();
    let plan = Plan::<N>::new_with_capacity(&dm, &request).expect("the layout plans");
    assert_eq!(plan.tables().count(), tables);
    group.bench_function(format!("{tables}_tables"), |b| {
        b.iter(|| Plan::<N>::new_with_capacity(black_box(&dm), black_box(&request)).expect("plans"))
    });
}

fn plan_scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_tables");
    timing(&mut group, 0);
    for tables in TABLE_COUNTS {
        match tables {
            0..=64 => bench_plan::<64>(&mut group, tables),
            65..=512 => bench_plan::<512>(&mut group, tables),
            _ => bench_plan::<4096>(&mut group, tables),
        }
    }
    group.finish();
}

fn cold_cache(c: &mut Criterion) {
    let len = 6 * MIB;
    // Copy k: image at k * 16 MiB + 2 MiB, destination at k * 16 MiB + 10 MiB.
    let stride = 16 * MIB;
    let mut mem = Memory::new(COLD_COPIES * stride);
    let layouts: Vec<(XenLayout, u64)> = (0..COLD_COPIES)
        .map(|k| {
            let layout = build_xen(&mut mem, k * stride + 2 * MIB, len, XEN_TABLES);
            let new_base = k * stride + 10 * MIB;
            mem.fill(reloc_core::PhysRange::new(new_base, new_base + len));
            (layout, new_base)
        })
        .collect();
    let maps: Vec<[PhysAddr; 1]> = layouts.iter().map(|(l, _)| l.image_maps()).collect();
    let requests: Vec<RelocationRequest<'_>> = layouts
        .iter()
        .zip(&maps)
        .map(|((l, new_base), maps)| l.request(*new_base, maps))
        .collect();
    let plans: Vec<Plan> = requests
        .iter()
        .map(|r| Plan::new(&mem.directmap(), r).expect("the layouts plan"))
        .collect();
    let count = layouts.len();
    // Each iteration takes the next copy: the one touched longest ago.
    let mut turn = 0;
    let mut next = move || {
        turn = (turn + 1) % count;
        turn
    };

    let mut group = c.benchmark_group("cold_6MiB");
    timing(&mut group, len);
    group.throughput(Throughput::Bytes(len));
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            let (layout, new_base) = layouts[next()];
            mem.memcpy(layout.image.start, new_base, len)
        })
    });
    group.bench_function("plan", |b| {
        // 1,024 layouts in one sparse buffer: layout k's image starts at (k + 1) * 2 MiB
        // (images overlap; each plan reads only its own tables), one shared destination
        // above them all.
        let len = 6 * MIB;
        let new_base = (COLD_PLANS + 8) * 2 * MIB;
        let mut tables_only = Memory::new(new_base + len);
        let layouts: Vec<XenLayout> = (0..COLD_PLANS)
            .map(|k| write_xen_tables(&mut tables_only, (k + 1) * 2 * MIB, len, XEN_TABLES))
            .collect();
        let maps: Vec<[PhysAddr; 1]> = layouts.iter().map(XenLayout::image_maps).collect();
        let requests: Vec<RelocationRequest<'_>> = layouts
            .iter()
            .zip(&maps)
            .map(|(l, maps)| l.request(new_base, maps))
            .collect();
        let dm = tables_only.directmap();
        let mut turn = 0;
        b.iter(|| {
            turn = (turn + 1) % requests.len();
            Plan::<64>::new(&dm, black_box(&requests[turn])).expect("plans")
        })
    });
    group.bench_function("apply", |b| {
        let mut dm = mem.directmap();
        b.iter(|| plans[next()].apply(&mut dm))
    });
    group.bench_function("plan_apply", |b| {
        let mut dm = mem.directmap();
        b.iter(|| {
            let plan: Plan = Plan::new(&dm, black_box(&requests[next()])).expect("plans");
            plan.apply(&mut dm)
        })
    });
    group.bench_function("xen_c", |b| {
        b.iter(|| {
            let (layout, new_base) = layouts[next()];
            mem.move_xen_c(&layout, new_base)
        })
    });
    group.finish();
}

criterion_group!(benches, apply_vs_memcpy, plan_scaling, cold_cache);
criterion_main!(benches);

//! One operation of the benchmarks, repeated, for a profiler or callgrind:
//! `cargo build --release -p reloc-bench --example profile`, then for instance
//! `valgrind --tool=callgrind target/release/examples/profile plan 100`.
//!
//! Operations on the 6 MiB Xen-like layout: `memcpy`, `plan`, `apply`, `plan_apply`, `xen_c`;
//! and `plan4096` (the 4,096-table layout).

use std::hint::black_box;

use reloc_bench::{build_xen, image_len_for, Memory, MIB, XEN_TABLES};
use reloc_core::Plan;

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| "plan".into());
    let rounds: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let tables = if op == "plan4096" { 4096 } else { XEN_TABLES };
    let len = image_len_for(tables, 6 * MIB);
    let new_base = (2 * MIB + len).next_multiple_of(2 * MIB);
    let mut mem = Memory::new(new_base + len);
    let layout = build_xen(&mut mem, 2 * MIB, len, tables);
    let maps = layout.image_maps();
    let request = layout.request(new_base, &maps);
    let plan: Option<Plan> = Plan::new(&mem.directmap(), &request).ok();
    let mut best = std::time::Duration::MAX;
    for round in 0..rounds {
        let start = std::time::Instant::now();
        match op.as_str() {
            "memcpy" => mem.memcpy(layout.image.start, new_base, len),
            "plan" => {
                black_box(Plan::<64>::new(&mem.directmap(), black_box(&request)).is_ok());
            }
            "plan4096" => {
                black_box(
                    Plan::<4096>::new_with_capacity(&mem.directmap(), black_box(&request)).is_ok(),
                );
            }
            "apply" => {
                let plan = plan.as_ref().expect("the layout plans with 64 tables");
                black_box(plan.apply(&mut mem.directmap()));
            }
            "plan_apply" => {
                let mut dm = mem.directmap();
                let plan: Plan = Plan::new(&dm, black_box(&request)).expect("plans");
                black_box(plan.apply(&mut dm));
            }
            "xen_c" => mem.move_xen_c(&layout, new_base),
            other => panic!("unknown operation {other}"),
        }
        best = best.min(start.elapsed());
        if round + 1 == rounds {
            println!("{op}: fastest of {rounds} rounds {best:?}");
        }
    }
}

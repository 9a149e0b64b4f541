//! The ratios of the benchmarks, measured interleaved: each round runs memcpy, plan, apply,
//! plan + apply and Xen's C once each, in turn, so that all five see the same load on a
//! shared machine; per operation it keeps the fastest and the median round.
//! `cargo run --release -p reloc-bench --example interleaved [ROUNDS]` (pin it with
//! `taskset -c 1` where other work runs). A complement to criterion's figures, which
//! measure one function after another.

use std::hint::black_box;
use std::time::{Duration, Instant};

use reloc_bench::{build_xen, Memory, MIB, XEN_TABLES};
use reloc_core::{PhysRange, Plan};

const OPERATIONS: [&str; 5] = ["memcpy", "plan", "apply", "plan_apply", "xen_c"];

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    println!("| image | op | fastest | median | fastest / memcpy | median / memcpy |");
    println!("|---|---|---|---|---|---|");
    for size in [6, 16, 64, 256] {
        let len = size * MIB;
        let new_base = (2 * MIB + len).next_multiple_of(2 * MIB);
        let mut mem = Memory::new(new_base + len);
        let layout = build_xen(&mut mem, 2 * MIB, len, XEN_TABLES);
        mem.fill(PhysRange::new(new_base, new_base + len));
        let maps = layout.image_maps();
        let request = layout.request(new_base, &maps);
        let plan: Plan = Plan::new(&mem.directmap(), &request).expect("the layout plans");
        // Fewer rounds for the large copies: about the same time per size.
        let rounds = (rounds * 6 / size as usize).max(20);
        let mut times = vec![Vec::with_capacity(rounds); OPERATIONS.len()];
        for _ in 0..rounds {
            for (op, samples) in OPERATIONS.iter().zip(times.iter_mut()) {
                let start = Instant::now();
                match *op {
                    "memcpy" => mem.memcpy(layout.image.start, new_base, len),
                    "plan" => {
                        black_box(Plan::<64>::new(&mem.directmap(), black_box(&request)).is_ok());
                    }
                    "apply" => {
                        black_box(plan.apply(&mut mem.directmap()));
                    }
                    "plan_apply" => {
                        let mut dm = mem.directmap();
                        let plan: Plan = Plan::new(&dm, black_box(&request)).expect("plans");
                        black_box(plan.apply(&mut dm));
                    }
                    _ => mem.move_xen_c(&layout, new_base),
                }
                samples.push(start.elapsed());
            }
        }
        let stats: Vec<(Duration, Duration)> = times
            .iter_mut()
            .map(|samples| {
                samples.sort();
                (samples[0], samples[samples.len() / 2])
            })
            .collect();
        let (memcpy_fastest, memcpy_median) = stats[0];
        for (op, (fastest, median)) in OPERATIONS.iter().zip(&stats) {
            println!(
                "| {size} MiB | {op} | {fastest:.2?} | {median:.2?} | {:.4} | {:.4} |",
                fastest.as_secs_f64() / memcpy_fastest.as_secs_f64(),
                median.as_secs_f64() / memcpy_median.as_secs_f64(),
            );
        }
        let ratio = |a: usize, b: usize| {
            (
                stats[a].0.as_secs_f64() / stats[b].0.as_secs_f64(),
                stats[a].1.as_secs_f64() / stats[b].1.as_secs_f64(),
            )
        };
        let (fastest, median) = ratio(3, 4);
        println!("| {size} MiB | plan_apply / xen_c | | | {fastest:.4} | {median:.4} |");
    }
}

//! Prints the ratios BENCHMARKS.md reports, from the last `cargo bench -p reloc-bench` run:
//! `cargo run -p reloc-bench --bin bench-ratios [CRITERION_DIR]` (default
//! `target/criterion`).
//!
//! Two statistics per benchmark, both from that one run: criterion's median, and the fastest
//! sample (the mean time per iteration of the least disturbed sample). On a machine shared
//! with other work the fastest sample is the steadier one: interference only ever adds time.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One benchmark's times per iteration, in nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Times {
    median: f64,
    fastest: f64,
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn times(dir: &Path, group: &str, function: &str) -> Result<Times, String> {
    let base = dir.join(group).join(function).join("new");
    let estimates = read_json(&base.join("estimates.json"))?;
    let median = estimates["median"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| format!("{group}/{function}: no median in estimates.json"))?;
    let sample = read_json(&base.join("sample.json"))?;
    let numbers = |key: &str| -> Result<Vec<f64>, String> {
        sample[key]
            .as_array()
            .ok_or_else(|| format!("{group}/{function}: no {key} in sample.json"))?
            .iter()
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| format!("{group}/{function}: bad {key}"))
            })
            .collect()
    };
    let fastest = numbers("iters")?
        .iter()
        .zip(numbers("times")?)
        .map(|(iters, time)| time / iters)
        .fold(f64::INFINITY, f64::min);
    Ok(Times { median, fastest })
}

fn ratio_row(dir: &Path, group: &str, label: &str, num: &str, den: &str) -> Result<String, String> {
    let (n, d) = (times(dir, group, num)?, times(dir, group, den)?);
    Ok(format!(
        "| {group} | {label} | {:.3} | {:.3} | {} / {} |",
        n.fastest / d.fastest,
        n.median / d.median,
        show(n.fastest),
        show(d.fastest),
    ))
}

fn show(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() -> Result<(), String> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/criterion"));
    println!("| group | ratio | fastest samples | medians | fastest: numerator / denominator |");
    println!("|---|---|---|---|---|");
    let groups = [
        "xen_6MiB",
        "xen_16MiB",
        "xen_64MiB",
        "xen_256MiB",
        "cold_6MiB",
    ];
    let ratios = [
        ("plan + apply / memcpy", "plan_apply", "memcpy"),
        ("apply / memcpy", "apply", "memcpy"),
        ("plan / memcpy", "plan", "memcpy"),
        ("plan + apply / Xen's C", "plan_apply", "xen_c"),
        ("Xen's C / memcpy", "xen_c", "memcpy"),
    ];
    for group in groups {
        for (label, num, den) in ratios {
            match ratio_row(&dir, group, label, num, den) {
                Ok(row) => println!("{row}"),
                Err(e) => eprintln!("skipped: {e}"),
            }
        }
    }
    println!();
    println!("| plan_tables | present entries | fastest | ns per present entry | ns per table | median |");
    println!("|---|---|---|---|---|---|");
    for tables in [14u64, 18, 64, 512, 4096] {
        let function = format!("{tables}_tables");
        let result = times(&dir, "plan_tables", &function).and_then(|t| {
            let bench = read_json(
                &dir.join("plan_tables")
                    .join(&function)
                    .join("new/benchmark.json"),
            )?;
            let entries = bench["throughput"]["Elements"]
                .as_f64()
                .ok_or_else(|| format!("plan_tables/{function}: no element throughput"))?;
            Ok((t, entries))
        });
        match result {
            Ok((t, entries)) => println!(
                "| {tables} | {entries} | {} | {:.3} | {:.1} | {} |",
                show(t.fastest),
                t.fastest / entries,
                t.fastest / tables as f64,
                show(t.median),
            ),
            Err(e) => eprintln!("skipped: {e}"),
        }
    }
    Ok(())
}

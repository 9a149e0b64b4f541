//! `cargo xtask ci`: every check, in order, each printed with its wall time; a summary of the
//! timings at the end, also when a step fails (the run stops at the first failure).

use std::time::{Duration, Instant};

use crate::setup::BARE_TARGET;
use crate::{cargo, fuzz, run, seconds, setup, Error};

/// Every combination of reloc-core's optional features, each built on its own (with
/// `--no-default-features`): a module gated by one feature must never need another. Then the
/// default set, and `test-util` (which turns on `hvm` and `multiboot2`).
const RELOC_CORE_FEATURE_SETS: [&str; 9] = [
    "",
    "hvm",
    "multiboot2",
    "notes",
    "hvm,multiboot2",
    "hvm,notes",
    "multiboot2,notes",
    "hvm,multiboot2,notes",
    "test-util",
];

/// Runs every step; `quick` skips Miri and fuzzing.
pub fn run_all(quick: bool) -> Result<(), Error> {
    let mut timings = Vec::new();
    let result = steps(quick, &mut timings);
    println!("\n== ci timings");
    for (name, took) in &timings {
        println!("{:>9}  {name}", seconds(*took));
    }
    let total: Duration = timings.iter().map(|(_, took)| *took).sum();
    let outcome = if result.is_ok() { "passed" } else { "FAILED" };
    println!("{:>9}  total: ci {outcome}", seconds(total));
    result
}

fn steps(quick: bool, timings: &mut Vec<(String, Duration)>) -> Result<(), Error> {
    let mut step = |name: &str, task: &mut dyn FnMut() -> Result<(), Error>| {
        println!("\n== {name}");
        let start = Instant::now();
        let result = task();
        let took = start.elapsed();
        let outcome = if result.is_ok() { "ok" } else { "FAILED" };
        println!("== {name}: {outcome} in {}", seconds(took));
        timings.push((name.to_owned(), took));
        result
    };
    let bare = ["--target", BARE_TARGET];

    step(
        "set-up: target, QEMU, binutils, clippy, rustfmt",
        &mut setup::for_ci,
    )?;
    step("fmt", &mut || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("clippy (host)", &mut || {
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    for package in ["reloc-core", "boot-stub"] {
        step(&format!("clippy ({package}, {BARE_TARGET})"), &mut || {
            run(cargo()
                .args(["clippy", "-p", package])
                .args(bare)
                .args(["--", "-D", "warnings"]))
        })?;
    }
    step("doc (-D warnings)", &mut || {
        run(cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"))
    })?;
    for features in RELOC_CORE_FEATURE_SETS {
        let name = if features.is_empty() {
            "no features"
        } else {
            features
        };
        step(
            &format!("reloc-core [{name}]: clippy (host), build ({BARE_TARGET})"),
            &mut || {
                let selected = ["-p", "reloc-core", "--no-default-features", "--features"];
                run(cargo()
                    .arg("clippy")
                    .args(selected)
                    .arg(features)
                    .args(["--", "-D", "warnings"]))?;
                run(cargo().arg("build").args(selected).arg(features).args(bare))
            },
        )?;
    }
    // What crates.io would receive: packages them (README, licence files), builds each
    // from its package alone, and stops before the upload. No `--allow-dirty`: CI's clone
    // is clean, and a file the build leaves behind is worth a failure. Needs the crates.io
    // index (network).
    step("publish dry run: reloc-core, reloc-sim", &mut || {
        run(cargo().args([
            "publish",
            "--dry-run",
            "-p",
            "reloc-core",
            "-p",
            "reloc-sim",
        ]))
    })?;
    step("tests: cargo test --workspace", &mut crate::run_tests)?;
    step(
        "main job: cargo run -p reloc-sim --release -- demo",
        &mut || run(cargo().args(["run", "-p", "reloc-sim", "--release", "--", "demo"])),
    )?;
    if quick {
        println!("\n== --quick: Miri and fuzzing skipped");
        return Ok(());
    }
    step("Miri: reloc-core, strict provenance", &mut || {
        setup::for_miri().and_then(|()| crate::run_miri())
    })?;
    step(
        &format!("fuzz: every target for {} s", fuzz::DEFAULT_SECONDS),
        &mut || fuzz::run_targets(fuzz::DEFAULT_SECONDS, false, &[]),
    )?;
    Ok(())
}

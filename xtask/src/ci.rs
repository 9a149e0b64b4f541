//! `cargo xtask ci`: every check, in order, each printed with its wall time; a summary of the
//! timings at the end, also when a step fails (the run stops at the first failure).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::setup::BARE_TARGET;
use crate::{cargo, fuzz, mutants, run, seconds, setup, Error};

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
    // reloc-sim without its default features (`cli`, `proptest`): the lean library the README
    // offers, which no other step builds (the fuzz project adds `fuzz` to it).
    step(
        "reloc-sim library without default features: check",
        &mut || run(cargo().args(["check", "-p", "reloc-sim", "--no-default-features", "--lib"])),
    )?;
    step(
        &format!("reloc-core README example as a user's crate ({BARE_TARGET})"),
        &mut || crate::readme_example::build(&crate::workspace_root()),
    )?;
    // What crates.io would receive: packages them (README, licence files), builds each
    // from its package alone, and stops before the upload. reloc-sim is built against
    // reloc-core's package, which cargo unpacks into CARGO_HOME once per version and then
    // reuses even after reloc-core changed: those copies go first. No `--allow-dirty`: CI's clone
    // is clean, and a file the build leaves behind is worth a failure. Needs the crates.io
    // index (network).
    step("publish dry run: reloc-core, reloc-sim", &mut || {
        forget_packaged_copies(&cargo_home())?;
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
        println!("\n== --quick: mutants, Miri and fuzzing skipped");
        return Ok(());
    }
    step(
        &format!(
            "mutants of the last change (HEAD^..HEAD, at most {})",
            mutants::CI_MAX_MUTANTS
        ),
        &mut mutants::run_for_ci,
    )?;
    step("Miri: reloc-core, strict provenance", &mut || {
        setup::for_miri().and_then(|()| crate::run_miri())
    })?;
    step(
        &format!("fuzz: every target for {} s", fuzz::DEFAULT_SECONDS),
        &mut || fuzz::run_targets(fuzz::DEFAULT_SECONDS, false, &[]),
    )?;
    Ok(())
}

/// `$CARGO_HOME`, or `~/.cargo`.
fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
}

/// Removes the copies of this workspace's published crates that earlier publish dry runs
/// unpacked into `cargo_home` (`registry/src/<registry>/reloc-core-0.1.0`, ...). Cargo skips
/// unpacking a version already there, so a dry run would verify reloc-sim against an old
/// reloc-core (a known cargo behaviour; miden-vm's CI clears the registry for the same
/// reason). Crates of other names stay. Returns how many it removed.
pub fn forget_packaged_copies(cargo_home: &Path) -> Result<usize, Error> {
    let Ok(registries) = std::fs::read_dir(cargo_home.join("registry").join("src")) else {
        return Ok(0);
    };
    let mut removed = 0;
    for registry in registries.flatten() {
        let Ok(crates) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for krate in crates.flatten() {
            let name = krate.file_name();
            let ours = ["reloc-core-", "reloc-sim-"]
                .iter()
                .any(|p| name.to_string_lossy().starts_with(p));
            if ours {
                let path = krate.path();
                std::fs::remove_dir_all(&path).map_err(|source| Error::Io { path, source })?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_unpacked_crates_are_forgotten() {
        let home = tempfile::tempdir().unwrap();
        let src = home.path().join("registry/src");
        for dir in [
            "-47b3594ee4d670dc/reloc-core-0.1.0/src",
            "-47b3594ee4d670dc/reloc-sim-0.1.0",
            "index.crates.io-1949cf8c6b5b557f/serde-1.0.229",
            "index.crates.io-1949cf8c6b5b557f/reloc-corex-1.0.0",
        ] {
            std::fs::create_dir_all(src.join(dir)).unwrap();
        }
        assert_eq!(forget_packaged_copies(home.path()).unwrap(), 2);
        assert!(!src.join("-47b3594ee4d670dc/reloc-core-0.1.0").exists());
        assert!(!src.join("-47b3594ee4d670dc/reloc-sim-0.1.0").exists());
        assert!(src
            .join("index.crates.io-1949cf8c6b5b557f/serde-1.0.229")
            .exists());
        assert!(src
            .join("index.crates.io-1949cf8c6b5b557f/reloc-corex-1.0.0")
            .exists());
        // No registry at all: nothing to do.
        assert_eq!(
            forget_packaged_copies(&home.path().join("none")).unwrap(),
            0
        );
    }
}

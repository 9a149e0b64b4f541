//! Replays the fuzz inputs kept in `fuzz/`: every named regression input
//! (`fuzz/regressions/<target>/*`, one per bug the fuzzer found) and every checked-in seed
//! (`fuzz/corpus/<target>/seed-*`), through the same decoding and oracles as the libFuzzer
//! targets (`reloc_sim::fuzz`). A violated property panics inside the oracle and fails here.
//!
//! The seeds are generated from `reloc_sim::fuzz::*::seeds()`; `RELOC_WRITE_SEEDS=1 cargo
//! test -p reloc-sim --test fuzz_regressions` rewrites them after a format change.

// `reloc_sim::fuzz` is behind the `fuzz` feature. In the workspace the dev-dependency on
// reloc-sim itself turns it on; in the published package that dev-dependency is gone, so
// without `--features fuzz` this file compiles to nothing instead of failing.
#![cfg(feature = "fuzz")]

use std::fs;
use std::path::{Path, PathBuf};

use reloc_sim::fuzz::{boot_info, multiboot2, notes, relocate, select};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Files of `fuzz/<kind>/<target>/` whose names start with `prefix`, sorted.
fn inputs(kind: &str, target: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("readable directory").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && !n.starts_with('.'))
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).expect("readable input"))
        })
        .collect();
    files.sort();
    files
}

/// Checks that the seed files equal the generated seeds (or writes them).
fn seeds_match(target: &str, seeds: Vec<(&str, Vec<u8>)>) {
    let dir = fuzz_dir().join("corpus").join(target);
    let write = std::env::var_os("RELOC_WRITE_SEEDS").is_some();
    if write {
        fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in &seeds {
        let path = dir.join(format!("seed-{name}"));
        if write {
            fs::write(&path, bytes).unwrap();
        }
        let on_disk = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run RELOC_WRITE_SEEDS=1 cargo test -p reloc-sim --test fuzz_regressions",
                path.display()
            )
        });
        assert_eq!(&on_disk, bytes, "{} is stale", path.display());
    }
    assert_eq!(
        inputs("corpus", target, "seed-").len(),
        seeds.len(),
        "fuzz/corpus/{target} holds seed files no generator writes"
    );
}

#[test]
fn relocate_seeds_are_current() {
    seeds_match(
        "relocate",
        relocate::seeds()
            .into_iter()
            .map(|(n, d)| (n, d.encode()))
            .collect(),
    );
}

#[test]
fn select_target_seeds_are_current() {
    seeds_match(
        "select_target",
        select::seeds()
            .into_iter()
            .map(|(n, d)| (n, d.encode()))
            .collect(),
    );
}

#[test]
fn boot_info_seeds_are_current() {
    seeds_match(
        "boot_info",
        boot_info::seeds()
            .into_iter()
            .map(|(n, d)| (n, d.encode()))
            .collect(),
    );
}

#[test]
fn notes_seeds_are_current() {
    seeds_match(
        "notes",
        notes::seeds()
            .into_iter()
            .map(|(n, d)| (n, d.encode()))
            .collect(),
    );
}

#[test]
fn multiboot2_seeds_are_current() {
    seeds_match(
        "multiboot2",
        multiboot2::seeds()
            .into_iter()
            .map(|(n, d)| (n, d.encode()))
            .collect(),
    );
}

#[test]
fn relocate_seeds_replay() {
    let outcomes: Vec<_> = inputs("corpus", "relocate", "seed-")
        .iter()
        .map(|(name, bytes)| (name.clone(), relocate::check_bytes(bytes)))
        .collect();
    assert!(outcomes
        .iter()
        .any(|(_, o)| matches!(o, relocate::Outcome::Relocated { virt: true, .. })));
    assert!(outcomes
        .iter()
        .any(|(_, o)| matches!(o, relocate::Outcome::Rejected(_))));
}

#[test]
fn select_target_seeds_replay() {
    let outcomes: Vec<_> = inputs("corpus", "select_target", "seed-")
        .iter()
        .map(|(_, bytes)| select::check_bytes(bytes))
        .collect();
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, select::Outcome::Picked { xen: Some(_), .. })));
    assert!(outcomes.contains(&select::Outcome::NoRoom));
}

#[test]
fn boot_info_seeds_replay() {
    let outcomes: Vec<_> = inputs("corpus", "boot_info", "seed-")
        .iter()
        .map(|(_, bytes)| boot_info::check_bytes(bytes))
        .collect();
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, boot_info::Outcome::Parsed { modules: 2, .. })));
}

#[test]
fn notes_seeds_replay() {
    let outcomes: Vec<_> = inputs("corpus", "notes", "seed-")
        .iter()
        .map(|(_, bytes)| notes::check_bytes(bytes))
        .collect();
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, notes::Outcome::Read { entry: true, .. })));
    assert!(outcomes.contains(&notes::Outcome::Rejected));
}

#[test]
fn multiboot2_seeds_replay() {
    let outcomes: Vec<_> = inputs("corpus", "multiboot2", "seed-")
        .iter()
        .map(|(_, bytes)| multiboot2::check_bytes(bytes))
        .collect();
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, multiboot2::Outcome::Parsed { modules: 2, .. })));
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, multiboot2::Outcome::Parsed { meminfo: true, .. })));
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, multiboot2::Outcome::Parsed { efi: true, .. })));
    assert!(outcomes.contains(&multiboot2::Outcome::Rejected));
}

/// Replays every `fuzz/regressions/<target>/*` through its target's oracle; returns the
/// (target, file) pairs replayed.
fn replay_all_regressions() -> Vec<(String, String)> {
    let mut replayed = Vec::new();
    for entry in fs::read_dir(fuzz_dir().join("regressions")).expect("fuzz/regressions") {
        let target = entry.unwrap().file_name().to_string_lossy().into_owned();
        let check: fn(&[u8]) = match target.as_str() {
            "relocate" => |b| {
                let _ = relocate::check_bytes(b);
            },
            "select_target" => |b| {
                let _ = select::check_bytes(b);
            },
            "boot_info" => |b| {
                let _ = boot_info::check_bytes(b);
            },
            "notes" => |b| {
                let _ = notes::check_bytes(b);
            },
            "multiboot2" => |b| {
                let _ = multiboot2::check_bytes(b);
            },
            other => panic!("fuzz/regressions/{other} is not a fuzz target"),
        };
        for (name, bytes) in inputs("regressions", &target, "") {
            check(&bytes);
            replayed.push((target.clone(), name));
        }
    }
    replayed
}

#[test]
fn every_regression_input_replays() {
    let replayed = replay_all_regressions();
    assert!(replayed.contains(&("boot_info".into(), "directmap-unaligned-window".into())));
    assert!(replayed.contains(&("relocate".into(), "image-rounded-length-wraps".into())));
}

/// boot_info found: `DirectMap::from_slice` with a physical start off an 8-byte boundary
/// read aligned physical qwords through unaligned host pointers with `read_volatile`
/// (undefined behaviour; a debug-assertion panic). Fixed in reloc-core's `phys.rs`.
#[test]
fn boot_info_directmap_unaligned_window() {
    let bytes = fs::read(fuzz_dir().join("regressions/boot_info/directmap-unaligned-window"))
        .expect("regression input");
    let d = boot_info::Description::decode(&mut arbitrary::Unstructured::new(&bytes));
    assert_ne!(
        d.phys_base() % 8,
        0,
        "the input exercises an unaligned window"
    );
    boot_info::check(&d);
}

/// boot_info found, in the harness itself: a start info placed below physical 0 (wrapping
/// to just under 2^64) overflowed the fix-up arithmetic. Fixed in `reloc_sim::fuzz::boot_info`.
#[test]
fn boot_info_harness_start_info_wraps() {
    let bytes = fs::read(fuzz_dir().join("regressions/boot_info/harness-start-info-wraps"))
        .expect("regression input");
    let d = boot_info::Description::decode(&mut arbitrary::Unstructured::new(&bytes));
    assert!(d.start_paddr() > u64::MAX - 64, "{d:?}");
    assert_eq!(boot_info::check(&d), boot_info::Outcome::Rejected);
}

/// The full-range proptest of `Plan::new` found (the fuzz decoder could not yet describe
/// images beyond ~40 MiB): an image `[0, 0xffff_ffff_ffe0_1000)` whose length, rounded up to
/// 2 MiB, wraps past 2^64 (a debug-assertion panic in reloc-core's `ranges`). Fixed by
/// checking the image end against MAXPHYADDR before rounding; the input is `encode` of the
/// description below, reached through `Description::wide_image`.
#[test]
fn relocate_image_rounded_length_wraps() {
    let bytes = fs::read(fuzz_dir().join("regressions/relocate/image-rounded-length-wraps"))
        .expect("regression input");
    let d = relocate::Description::decode(&mut arbitrary::Unstructured::new(&bytes));
    let expected = relocate::Description {
        max_phys: 52,
        wide_image: Some((0, 0xffff_ffff_ffe0_1000)),
        // A fixed target (1 GiB): automatic selection finds none for such an image, and the
        // request must reach reloc-core.
        target: relocate::TargetDesc::Units(512),
        ..relocate::Description::default()
    };
    assert_eq!(d, expected);
    assert_eq!(d.encode(), bytes);
    assert!(
        0xffff_ffff_ffe0_1000u64
            .checked_next_multiple_of(2 << 20)
            .is_none(),
        "the input exercises a rounded length that wraps"
    );
    assert_eq!(
        relocate::check(&d),
        relocate::Outcome::Rejected("RangeBeyondMaxPhys")
    );
}

/// Every `PlanError` variant is reached by a checked-in `relocate` seed, except those listed
/// unreachable with their reason; a listed one must indeed not be reached.
#[test]
fn relocate_seeds_reach_every_plan_error() {
    use reloc_sim::run::PLAN_ERROR_KINDS;
    let mut reached = std::collections::BTreeMap::new();
    for (name, bytes) in inputs("corpus", "relocate", "seed-") {
        if let relocate::Outcome::Rejected(kind) = relocate::check_bytes(&bytes) {
            reached.entry(kind).or_insert(name);
        }
    }
    let unreached: Vec<&str> = relocate::PLAN_ERRORS_UNREACHED
        .iter()
        .map(|(kind, _)| *kind)
        .collect();
    for kind in PLAN_ERROR_KINDS {
        if unreached.contains(&kind) {
            assert!(
                !reached.contains_key(kind),
                "{kind} is listed unreachable but {} reaches it",
                reached[kind]
            );
        } else {
            assert!(
                reached.contains_key(kind),
                "no relocate seed reaches {kind}: {reached:?}"
            );
        }
    }
}

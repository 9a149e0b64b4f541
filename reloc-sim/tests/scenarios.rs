//! Replays every scenario in `scenarios/` and checks its outcome against its `expect` field;
//! checks that every PlanError kind has an example; round-trips a dump.

use std::path::PathBuf;

use reloc_sim::run::{run, RunOptions, PLAN_ERROR_KINDS};
use reloc_sim::scenario::Scenario;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn outcome(s: &Scenario) -> String {
    let input = s.to_input().expect("scenario loads");
    match run(input, RunOptions::default()) {
        Ok(r) if r.passed() => "ok".into(),
        Ok(r) => format!("check failed: {:?}", r.first_violation()),
        Err(e) => e.kind().into(),
    }
}

#[test]
fn every_scenario_has_its_expected_outcome() {
    let mut seen = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{files:?}");
    for path in files {
        let s = Scenario::from_json(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let expect = s
            .expect
            .clone()
            .expect("example scenarios state their outcome");
        assert_eq!(outcome(&s), expect, "{}", path.display());
        seen.push(expect);
    }
    let other_kinds = [
        "NoRoom",
        "LayoutMismatch",
        "StackOverlapsTable",
        "DestinationOutsideDirectMap",
        "StackOutsideImage",
        "StackMisaligned",
        "RspOutsideStack",
        "NonCanonical",
        "StackMismatch",
        "DirectMapAliasNonCanonical",
    ];
    for kind in ["ok"].iter().chain(&PLAN_ERROR_KINDS).chain(&other_kinds) {
        assert!(seen.iter().any(|s| s == kind), "no scenario for {kind}");
    }
}

#[test]
fn a_dumped_state_replays_as_a_second_relocation() {
    let s =
        Scenario::from_json(&std::fs::read_to_string(dir().join("ok-auto.json")).unwrap()).unwrap();
    let report = run(s.to_input().unwrap(), RunOptions::default()).unwrap();
    assert!(report.passed());
    let new = report.request.new_base.as_u64();
    let dumped = Scenario::from_machine(
        &report.machine,
        reloc_core::PhysRange::new(new, new + report.request.image.len()),
        &report
            .request
            .image_maps
            .iter()
            .map(|m| m.as_u64().wrapping_add(report.request.delta()))
            .collect::<Vec<_>>(),
        s.virt,
        "dump".into(),
    );
    let text = dumped.to_json();
    let again = Scenario::from_json(&text).unwrap();
    assert_eq!(again, dumped);
    assert_eq!(again.cr3.0, report.machine.cr3());
    let second = run(again.to_input().unwrap(), RunOptions::default()).unwrap();
    assert!(second.passed(), "{:?}", second.first_violation());
    assert_ne!(second.request.new_base.as_u64(), new);
}

/// Issue 11: a 16 TiB image (a 600-byte scenario) ran past 20 s in loops over every page of
/// the image. Its cost must follow the pages written: with the old loops this test hangs.
#[test]
fn a_16_tib_image_costs_only_its_written_pages() {
    let path = dir().join("ok-16tib-image.json");
    let s = Scenario::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let input = s.to_input().unwrap();
    assert_eq!(input.request.image.len(), 16 << 40);
    let report = run(input, RunOptions::default()).expect("the move runs");
    assert!(report.passed(), "{:?}", report.first_violation());
    assert_eq!(report.apply.bytes_copied, 16 << 40);
    // Three tables, and their copies: nothing was materialised for the unwritten 16 TiB.
    assert_eq!(report.machine.mem.allocated_pages(), 6);
}

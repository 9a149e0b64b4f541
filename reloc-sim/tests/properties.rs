//! The property suite: reloc-core on random layouts (shared tables, recursive slots, L1
//! tables under the image map, extra leaves, noisy flags, 4 and 5 levels), 1,000 cases per
//! property. `tests/broken.rs` shows each property failing against a broken relocator.

use proptest::prelude::*;
use reloc_core::{PhysAddr, PhysRange};
use reloc_sim::check::{self, Property, Violation};
use reloc_sim::layout::{arb_layout, RandomLayout, Sharing};
use reloc_sim::machine::SwitchOptions;
use reloc_sim::relocators::Relocator;
use reloc_sim::run::{run, RunInput, RunOptions, RunReport};

fn input(rl: &RandomLayout) -> RunInput {
    RunInput::from_random(rl).expect("random layouts build")
}

fn outcome(report: &RunReport, property: Property) -> Result<String, Violation> {
    report
        .properties
        .iter()
        .find(|p| p.property == property)
        .unwrap_or_else(|| panic!("{property} was not checked"))
        .result
        .clone()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every mapped virtual address translates after the move to old + delta if the image map
    /// maps it (or it maps a moved table through a recursive slot), unchanged otherwise, with
    /// identical flags; unmapped stays unmapped.
    #[test]
    fn mappings_move_exactly_as_specified(rl in arb_layout(Sharing::Allowed)) {
        let report = run(input(&rl), RunOptions::default()).expect("valid requests run");
        prop_assert!(outcome(&report, Property::Mappings).is_ok(), "{:?}", outcome(&report, Property::Mappings));
        prop_assert!(report.leaves_verified > 0);
    }

    /// The new copy equals the old image except the rebased address fields; no byte outside
    /// the new image changes; the old image is untouched.
    #[test]
    fn copy_is_exact_and_nothing_else_changes(rl in arb_layout(Sharing::Allowed)) {
        let report = run(input(&rl), RunOptions::default()).expect("valid requests run");
        for p in [Property::Copy, Property::OutsideUntouched, Property::OldImageUntouched] {
            prop_assert!(outcome(&report, p).is_ok(), "{p}: {:?}", outcome(&report, p));
        }
    }

    /// A rejected request leaves memory bit-identical, and is rejected for the right reason.
    #[test]
    fn rejected_requests_leave_memory_identical(
        rl in arb_layout(Sharing::Allowed),
        fault in 0u8..8,
        pick in any::<u64>(),
    ) {
        let (mut machine, layout) = rl.build().expect("random layouts build");
        let mut request = layout.request(rl.target);
        let image = layout.image;
        let table = layout.tables[(pick % layout.tables.len() as u64) as usize];
        let expected = match fault {
            0 => {
                let step = if image.len() > (2 << 20) { pick % 2 } else { 0 };
                request.new_base = PhysAddr::new(image.start + step * (2 << 20));
                "RangesOverlap"
            }
            1 => { request.new_base = PhysAddr::new(rl.target + 4096 * (1 + pick % 511)); "NewBaseMisaligned" }
            2 => { request.new_base = PhysAddr::new(8 << 30); "Inaccessible" }
            3 => {
                // A 4 KiB leaf under the image map that maps image memory.
                let map = layout.image_maps[0];
                let l1 = image.end - 8192; // a stack page, now an L1 table
                machine.mem.fill_page(l1, |_| 0).unwrap();
                machine.mem.write(l1 + 8 * (pick % 512), (image.start + 4096 * (pick % 16)) | 0x63).unwrap();
                let slot = (0..512).rev().find(|i| machine.mem.read(map + i * 8).unwrap() & 1 == 0).unwrap();
                machine.mem.write(map + slot * 8, l1 | 0x63).unwrap();
                "ImageMappedBy4KiBLeaf"
            }
            4 => {
                // A table with a free slot (directmap tables are full; the top never is).
                let free = |t: u64| (0..512).find(|i| machine.mem.read(t + i * 8).unwrap() & 1 == 0);
                let (table, slot) = match free(table) {
                    Some(slot) => (table, slot),
                    None => (layout.top_table, free(layout.top_table).unwrap()),
                };
                // Present, PS clear: a pointer at any level, to a table outside the image.
                let outside = if image.start >= (4 << 20) { 0 } else { image.end.next_multiple_of(4096) + (2 << 20) };
                let level_ok = machine.mem.write(table + slot * 8, outside | 0x3);
                prop_assert!(level_ok.is_ok());
                // Only tables reached at L2 or above are scanned; skip the case for L1 tables.
                let reached = check::reached_tables(&machine.mem, &machine.walk_config());
                if reached.get(&table).is_some_and(|l| l & !0b11 == 0) { return Ok(()); }
                "PointerOutsideImage"
            }
            5 => {
                let top = layout.top_table;
                let slot = (0..512).find(|i| machine.mem.read(top + i * 8).unwrap() & 1 == 0).unwrap();
                machine.mem.write(top + slot * 8, table | 0x83).unwrap();
                "MalformedEntry"
            }
            6 => { request.image_maps.push(PhysAddr::new(image.end - 4096)); "ImageMapNotReached" }
            _ => { request.max_phys_bits = 53 + (pick % 20) as u8; "InvalidMaxPhysBits" }
        };
        let before = machine.mem.clone();
        let result = Relocator::Core.relocate(&mut machine, &request);
        let err = result.err();
        prop_assert!(err.is_some(), "accepted; expected {expected}");
        let err = err.unwrap_or(reloc_core::PlanError::InvalidMaxPhysBits { bits: 0 });
        prop_assert_eq!(reloc_sim::run::plan_error_kind(&err), expected, "{}", err);
        prop_assert_eq!(check::check_untouched(&before, &machine.mem), Ok(()));
    }

    /// After reloc-core's switch no TLB entry translates stale (in particular none reaches the
    /// old copy); the same move with the PGE toggle left out leaves the cached global image
    /// leaves stale, and the checker shows them.
    #[test]
    fn tlb_is_coherent_only_with_the_pge_toggle(rl in arb_layout(Sharing::Allowed)) {
        let report = run(input(&rl), RunOptions::default()).expect("valid requests run");
        prop_assert!(outcome(&report, Property::TlbCoherent).is_ok(), "{:?}", outcome(&report, Property::TlbCoherent));

        let no_toggle = RunOptions {
            switch: SwitchOptions { toggle_pge: false, recopy_stack: true },
            ..RunOptions::default()
        };
        let report = run(input(&rl), no_toggle).expect("valid requests run");
        // Which image leaves were global? Walk every image page before the move.
        let stale = check::stale_tlb_entries(&report.machine, report.request.image);
        let global_image_leaf = {
            let (mut m, l) = rl.build().expect("random layouts build");
            let mut any = false;
            let mut va = l.virt.image_start;
            while va < l.virt.image_start + l.image.len() {
                m.read_virt(va).expect("image is mapped");
                va += 4096;
            }
            for e in m.tlb().entries() {
                any |= e.global && l.image.overlaps(&PhysRange::new(e.frame, e.frame + e.size));
            }
            any
        };
        prop_assert_eq!(global_image_leaf, stale.iter().any(|v| matches!(v, Violation::StaleTlbEntry { global: true, in_old_copy: true, .. })), "{:?}", stale);
        prop_assert_eq!(global_image_leaf, outcome(&report, Property::TlbCoherent).is_err());
    }

    /// The stack spill made in the critical region survives only with the stack re-copy.
    #[test]
    fn stack_recopy_cures_the_spill_hazard(rl in arb_layout(Sharing::Allowed)) {
        let report = run(input(&rl), RunOptions::default()).expect("valid requests run");
        prop_assert!(outcome(&report, Property::NoStaleReads).is_ok());
        prop_assert!(report.critical_writes >= 1 && report.critical_writes_rescued == report.critical_writes);
        let no_recopy = RunOptions {
            switch: SwitchOptions { toggle_pge: true, recopy_stack: false },
            ..RunOptions::default()
        };
        let report = run(input(&rl), no_recopy).expect("valid requests run");
        prop_assert!(matches!(outcome(&report, Property::NoStaleReads), Err(Violation::StaleRead(_))));
    }

    /// A naive add-per-visit walk agrees with reloc-core on layouts without sharing ...
    #[test]
    fn naive_walk_agrees_without_sharing(rl in arb_layout(Sharing::None)) {
        let options = RunOptions { compare_naive: true, ..RunOptions::default() };
        let report = run(input(&rl), options).expect("valid requests run");
        prop_assert!(report.passed(), "{:?}", report.first_violation());
    }

    /// ... and corrupts shared or recursive layouts, where reloc-core does not: the bug class
    /// of a walk that adds delta per visit.
    #[test]
    fn naive_walk_corrupts_shared_layouts(rl in arb_layout(Sharing::Required)) {
        let core = run(input(&rl), RunOptions::default()).expect("valid requests run");
        prop_assert!(core.passed(), "{:?}", core.first_violation());
        let naive = RunOptions { relocator: Relocator::NaiveXen, ..RunOptions::default() };
        match run(input(&rl), naive) {
            Ok(report) => {
                let caught = outcome(&report, Property::Copy).is_err() || outcome(&report, Property::Mappings).is_err();
                prop_assert!(caught, "naive walk not caught on {:?}", rl.spec);
            }
            // Corrupted tables can make the simulated code fault after the switch: also caught.
            Err(e) => prop_assert!(false, "the naive run did not complete: {e}"),
        }
    }
}

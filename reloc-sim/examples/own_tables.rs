//! Property-testing a hypervisor's own boot tables with reloc-sim.
//!
//! The tables come from the hypervisor's own writer (`common/tables.rs`), not from
//! reloc-sim's builders. reloc-sim supplies the machine around them ([`arb_case`]: paging
//! mode, RAM map, target, extra tables that must not move) and the oracle: one [`check`]
//! call per relocation. `cargo test -p reloc-sim --example own_tables` runs the tests;
//! `cargo run -p reloc-sim --example own_tables` prints one report.

#[path = "common/tables.rs"]
mod tables;

use reloc_core::{PagingMode, Plan};
use reloc_sim::case::{Case, CaseSpec};
use reloc_sim::machine::{Machine, SwitchOptions, CR4_LA57, CR4_PGE};
use reloc_sim::{check, Expectation, Report, Snapshot};
use tables::{write_boot_tables, KERNEL_VIRT};

/// Writes the tables into `case`'s machine, relocates with reloc-core's own call sequence
/// (plan, apply, switch) and checks everything; `switch` is the switch sequence simulated.
fn relocate_and_check(case: &Case, switch: SwitchOptions) -> Report {
    let mut mem = case.memory();
    let tables = write_boot_tables(&mut mem, case.paging, case.image);
    let mut next = tables.next_free;
    let mut alloc = || {
        next += 0x1000;
        next - 0x1000
    };
    case.write_extra(&mut mem, tables.top.as_u64(), &mut alloc)
        .expect("extra mappings fit");
    let request = tables.request(case.paging, case.image, case.target);

    let la57 = if case.paging == PagingMode::FiveLevel {
        CR4_LA57
    } else {
        0
    };
    let mut machine = Machine::new(mem, request.top_table.as_u64(), CR4_PGE | la57, 46);
    // Running code has the image's global leaves in the TLB.
    for offset in (0..case.image.len()).step_by(0x1000) {
        machine
            .read_virt(KERNEL_VIRT + offset)
            .expect("the image is mapped");
    }
    let before = Snapshot::of_machine(&machine);
    let plan = Plan::new(&machine.mem, &request).expect("reloc-core accepts the tables");
    machine.apply(&plan);
    let after = Snapshot::of_machine(&machine);
    machine
        .switch(&plan, None, switch)
        .expect("the switch runs");
    // The code after the switch runs on: its image translates through the TLB again.
    for offset in (0..case.image.len()).step_by(0x1000) {
        machine
            .read_virt(KERNEL_VIRT + offset)
            .expect("the image is mapped");
    }
    check(
        &before,
        &after.with_switch(&machine),
        &Expectation::moved(&request),
    )
}

fn main() {
    let case = CaseSpec::default().case(&[1, 1, 7, 3]).expect("a case");
    println!("{case:?}");
    print!("{}", relocate_and_check(&case, SwitchOptions::CORE));
}

#[cfg(test)]
mod tests {
    use super::*;
    use reloc_core::{DirectMap, PhysRange};
    use reloc_sim::case::{arb_case, RamSpec};
    use reloc_sim::paging::WalkConfig;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Every case of the default spec (4/5 levels, random RAM, any target, extra tables):
        /// every property holds.
        #[test]
        fn own_tables_relocate_correctly(case in arb_case(CaseSpec::default())) {
            let report = relocate_and_check(&case, SwitchOptions::CORE);
            proptest::prop_assert!(report.passed(), "{report}");
        }
    }

    /// The oracle can fail: a switch without the CR4.PGE toggle keeps the image's global
    /// leaves cached, pointing at the old copy.
    #[test]
    fn a_switch_without_the_pge_toggle_is_caught() {
        let case = CaseSpec::default().case(&[]).expect("the simplest case");
        let no_pge = SwitchOptions {
            toggle_pge: false,
            ..SwitchOptions::CORE
        };
        let report = relocate_and_check(&case, no_pge);
        let (property, violation) = report.violations().next().expect("a violation");
        assert_eq!(
            property,
            reloc_sim::check::Property::TlbCoherent,
            "{report}"
        );
        assert!(violation.to_string().contains("global"), "{violation}");
    }

    /// The same tables in a `DirectMap` buffer, the memory boot code hands reloc-core: the
    /// snapshots read it through reloc-sim's `PhysRead`. A rejected move (a destination off
    /// the 2 MiB grid) is checked to leave the buffer bit-identical.
    #[test]
    fn a_directmap_buffer_is_checked_too() {
        let spec = CaseSpec {
            ram: RamSpec::Fixed(vec![PhysRange::new(0, 32 << 20)]),
            extra_tables: false,
            ..CaseSpec::default()
        };
        for choices in [[0u64; 8], [1, 2, 3, 4, 5, 6, 7, 8], [9; 8]] {
            let case = spec.case(&choices).expect("a case");
            let mut buffer = vec![0u64; (32 << 20) / 8];
            let mut dm = DirectMap::from_slice(&mut buffer, 0);
            case.scribble(&mut dm);
            let tables = write_boot_tables(&mut dm, case.paging, case.image);
            let paging = WalkConfig::of_request(&tables.request(case.paging, case.image, 0));

            let before = Snapshot::of_directmap(&dm, paging);
            let request = tables.request(case.paging, case.image, case.target);
            let plan = Plan::new(&dm, &request).expect("accepted");
            plan.apply(&mut dm);
            let report = check(
                &before,
                &Snapshot::of_directmap(&dm, paging),
                &Expectation::moved(&request),
            );
            report.assert_passed();

            let before = Snapshot::of_directmap(&dm, paging);
            let bad = tables.request(case.paging, case.image, case.target + 0x1000);
            let result = Plan::new(&dm, &bad).map(|plan| plan.apply(&mut dm));
            let report = check(
                &before,
                &Snapshot::of_directmap(&dm, paging),
                &Expectation::for_outcome(&bad, &result),
            );
            assert!(result.is_err());
            report.assert_passed();
        }
    }
}

//! The one-call checker (`reloc_sim::check`) sees what `run` sees: each broken relocator,
//! driven by the test's own call sequence instead of `run`, is caught by the property
//! `tests/broken.rs` expects, and reloc-core passes every check on the same layouts. The
//! same holds through a `DirectMap` buffer, so snapshots read through `PhysRead` see the
//! same memory.

use reloc_core::{DirectMap, PhysRange, Plan};
use reloc_sim::check::Property;
use reloc_sim::layout::{scribble, LayoutSpec, XenLayout, GIB, MIB};
use reloc_sim::machine::{Machine, SwitchOptions};
use reloc_sim::mem::{CoreMemory, SparseMemory};
use reloc_sim::relocators::{Relocator, Request};
use reloc_sim::{check, Expectation, Report, Snapshot};

const TARGET: u64 = 0x3000_0000;

/// A Xen layout on 2 GiB of RAM (image 7 MiB at 2 MiB, garbage around), as `broken.rs`.
fn xen(edit: impl FnOnce(&mut LayoutSpec)) -> (Machine, Request) {
    let mut spec = XenLayout::spec(2 * MIB, 7 * MIB, 2 * GIB);
    edit(&mut spec);
    let mut mem = SparseMemory::new(&[PhysRange::new(0, 2 * GIB)]);
    scribble(&mut mem, PhysRange::new(TARGET, TARGET + 8 * MIB), 7, 2);
    scribble(&mut mem, PhysRange::new(9 * MIB, 10 * MIB), 8, 1);
    let layout = spec.build(&mut mem).expect("layout builds");
    let map = layout.image_maps[0];
    let leaf = mem.read(map + 8).unwrap();
    mem.write(map + 8, leaf | (1 << 63) | (1 << 55)).unwrap();
    (layout.machine(mem), layout.request(TARGET))
}

/// Relocates with `relocator` and checks the move in one call.
fn relocate_and_check((mut machine, request): (Machine, Request), relocator: Relocator) -> Report {
    let before = Snapshot::of_machine(&machine);
    relocator
        .relocate(&mut machine, &request)
        .expect("accepted");
    check(
        &before,
        &Snapshot::of_machine(&machine),
        &Expectation::from(&request),
    )
}

fn violated(report: &Report) -> Vec<Property> {
    report.violations().map(|(p, _)| p).collect()
}

#[test]
fn reloc_core_passes_and_each_broken_relocator_is_caught() {
    let plain = || xen(|_| {});
    let recursive = || xen(|s| s.recursive_slot = Some(5));
    let report = relocate_and_check(plain(), Relocator::Core);
    report.assert_passed();
    assert!(report.outcome(Property::Mappings).is_some());
    relocate_and_check(recursive(), Relocator::Core).assert_passed();

    let cases = [
        (recursive(), Relocator::NaiveXen, Property::Mappings),
        (plain(), Relocator::ClobberFlags, Property::Copy),
        (plain(), Relocator::ForgetImageLeaves, Property::Mappings),
        (
            plain(),
            Relocator::CopyFootprint,
            Property::OutsideUntouched,
        ),
        (
            plain(),
            Relocator::RebaseInPlace,
            Property::OldImageUntouched,
        ),
    ];
    for (input, relocator, property) in cases {
        let report = relocate_and_check(input, relocator);
        assert!(
            violated(&report).contains(&property),
            "{relocator}: expected {property} violated:\n{report}"
        );
    }
}

#[test]
fn a_copy_before_validation_is_caught_as_a_rejection_that_wrote() {
    for (relocator, writes) in [(Relocator::Core, false), (Relocator::EagerCopy, true)] {
        let (mut machine, mut request) = xen(|_| {});
        request.new_base = reloc_core::PhysAddr::new(TARGET + 0x1000); // off the 2 MiB grid
        let before = Snapshot::of_machine(&machine);
        let result = relocator.relocate(&mut machine, &request);
        assert!(result.is_err());
        let expected = Expectation::for_outcome(&request.as_core(), &result);
        assert_eq!(expected, Expectation::Rejected);
        let report = check(&before, &Snapshot::of_machine(&machine), &expected);
        assert_eq!(
            violated(&report),
            if writes {
                vec![Property::RejectedUntouched]
            } else {
                vec![]
            },
            "{relocator}:\n{report}"
        );
        assert_eq!(report.not_checked.len(), 6);
    }
}

#[test]
fn tlb_properties_need_the_switched_machine_and_catch_a_missing_pge_toggle() {
    let (mut machine, request) = xen(|_| {});
    // Running code has the image's global leaves cached.
    for offset in (0..request.image.len()).step_by(4096) {
        machine
            .read_virt(reloc_sim::layout::XEN_VIRT_START + offset)
            .unwrap();
    }
    let before = Snapshot::of_machine(&machine);
    let plan = Plan::new(&machine.mem, &request.as_core()).unwrap();
    machine.apply(&plan);
    let after = Snapshot::of_machine(&machine);
    let report = check(&before, &after, &Expectation::from(&request));
    report.assert_passed();
    let skipped: Vec<Property> = report.not_checked.iter().map(|&(p, _)| p).collect();
    assert_eq!(skipped, [Property::TlbCoherent, Property::NoStaleReads]);

    let mut no_pge = machine.clone();
    let options = SwitchOptions {
        toggle_pge: false,
        ..SwitchOptions::CORE
    };
    no_pge.switch(&plan, None, options).unwrap();
    let report = check(
        &before,
        &after.clone().with_switch(&no_pge),
        &Expectation::from(&request),
    );
    assert_eq!(violated(&report), [Property::TlbCoherent], "{report}");

    machine.switch(&plan, None, SwitchOptions::CORE).unwrap();
    check(
        &before,
        &after.with_switch(&machine),
        &Expectation::from(&request),
    )
    .assert_passed();
}

#[test]
fn a_directmap_buffer_and_the_simulated_memory_give_the_same_verdicts() {
    // 32 MiB of RAM from 0 as one buffer; the Xen-like layout written into reloc-sim memory
    // and copied into the buffer.
    let ram = PhysRange::new(0, 32 * MIB);
    let mut spec = XenLayout::spec(2 * MIB, 4 * MIB, 32 * MIB);
    spec.fixmap_l1 = false;
    let mut mem = SparseMemory::new(&[ram]);
    let layout = spec.build(&mut mem).unwrap();
    let request = layout.request(16 * MIB);
    let mut buffer = vec![0u64; (ram.len() / 8) as usize];
    for (addr, value) in mem.nonzero_words() {
        buffer[(addr / 8) as usize] = value;
    }
    let mut dm = DirectMap::from_slice(&mut buffer, 0);
    let paging = reloc_sim::paging::WalkConfig::of_request(&request.as_core());

    let before = Snapshot::of_directmap(&dm, paging);
    assert_eq!(before.memory(), &mem);
    let plan = Plan::new(&dm, &request.as_core()).unwrap();
    plan.apply(&mut dm);
    let after = Snapshot::of_directmap(&dm, paging);
    check(&before, &after, &Expectation::from(&request)).assert_passed();
    // Through the generic adapter, the same memory.
    let via_adapter = Snapshot::capture(&CoreMemory(&dm), &[ram], paging).unwrap();
    assert_eq!(via_adapter.memory(), after.memory());

    // Break the copy in the buffer: one rebased pointer in the new top table reverted.
    let top_new = layout.top_table + 14 * MIB;
    let slot = (0..512)
        .map(|i| top_new + i * 8)
        .find(|&a| reloc_core::PhysMemory::read_u64(&dm, a) & 1 != 0)
        .unwrap();
    let entry = reloc_core::PhysMemory::read_u64(&dm, slot);
    reloc_core::PhysMemory::write_u64(&mut dm, slot, entry - 14 * MIB);
    let report = check(
        &before,
        &Snapshot::of_directmap(&dm, paging),
        &Expectation::from(&request),
    );
    assert!(violated(&report).contains(&Property::Copy), "{report}");
}

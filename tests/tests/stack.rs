//! The boot-stub's stack high-water mark for parse + select + plan + switch, through PVH and
//! through GRUB, against the budget reloc-core documents. The stub paints its stack, repaints
//! it just before parsing, and prints the mark right after the switch (`boot-stub/src/stack.rs`
//! says how); every successful boot must print it (`output::check_relocation`), these tests
//! hold it to the budget.

use std::time::Duration;

use reloc_tests::grub;
use reloc_tests::output::check_relocation;
use reloc_tests::qemu;

/// The budget reloc-core documents for parse + select + plan + switch.
const STACK_BUDGET: u64 = reloc_core::STACK_BUDGET as u64;

/// Boots `medium` with `args`, checks the relocation, returns the printed high-water mark.
fn high_water(medium: &qemu::Medium, args: &[&str]) -> u64 {
    let run = qemu::boot_medium(medium, args, Duration::from_secs(120));
    let out = run.expect_success(args);
    check_relocation(&out, &run.serial);
    let mark = out.stack_high_water.expect("checked by check_relocation");
    eprintln!("{medium:?} {args:?}: stack high-water mark {mark} bytes");
    mark
}

#[test]
fn pvh_stack_high_water_mark_is_within_the_budget() {
    qemu::qemu_binary();
    let medium = qemu::Medium::Kernel(qemu::boot_stub_image().to_path_buf());
    let mark = high_water(&medium, &["-m", "3G"]);
    assert!(
        mark <= STACK_BUDGET,
        "PVH -m 3G: stack high-water mark {mark} bytes over the budget of {STACK_BUDGET}"
    );
}

#[test]
fn grub_stack_high_water_mark_is_within_the_budget() {
    qemu::qemu_binary();
    let iso = grub::build(qemu::boot_stub_image(), "", &[]).unwrap_or_else(|e| panic!("{e}"));
    let mark = high_water(&iso.medium(), &["-m", "3G"]);
    assert!(
        mark <= STACK_BUDGET,
        "GRUB -m 3G: stack high-water mark {mark} bytes over the budget of {STACK_BUDGET}"
    );
}

//! The boot-stub's stack high-water mark for parse + select + plan + switch, on the boots that
//! reach deepest, printed with `qemu::notice` (visible past the harness's capture) so the
//! figures in README.md and `boot-stub/src/layout.rs` can be re-measured with
//! `cargo test -p reloc-tests --test stack -- --test-threads 1`. The stub paints its stack,
//! repaints it just before parsing, and prints the mark right after the switch
//! (`boot-stub/src/stack.rs` says how). The budget itself (`reloc_core::STACK_BUDGET`) is
//! asserted on every successful boot of every test, by `output::check_relocation`.

use std::time::Duration;

use reloc_tests::grub;
use reloc_tests::output::check_relocation;
use reloc_tests::qemu;

/// Boots `medium` with `args`, checks the relocation (the budget included), prints and returns
/// the high-water mark.
fn high_water(what: &str, medium: &qemu::Medium, args: &[&str]) -> u64 {
    let run = qemu::boot_medium(medium, args, Duration::from_secs(120));
    let out = run.expect_success(args);
    check_relocation(&out, &run.serial);
    let mark = out.stack_high_water.expect("checked by check_relocation");
    qemu::notice(&format!(
        "{what} {args:?}: stack high-water mark {mark} bytes (budget {})",
        reloc_core::STACK_BUDGET
    ));
    mark
}

fn grub_image(stub_args: &str) -> grub::GrubImage {
    qemu::qemu_binary();
    grub::build(qemu::boot_stub_image(), stub_args, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// OVMF's firmware arguments followed by `args`.
fn ovmf(args: &[&str]) -> Vec<String> {
    let firmware = grub::ovmf_args().unwrap_or_else(|e| panic!("{e}"));
    firmware
        .iter()
        .map(|a| a.to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}

#[test]
fn pvh_stack_high_water_mark() {
    qemu::qemu_binary();
    let medium = qemu::Medium::Kernel(qemu::boot_stub_image().to_path_buf());
    high_water("PVH", &medium, &["-m", "3G"]);
    high_water(
        "PVH la57",
        &medium,
        &["-m", "3G", "-cpu", "max,la57=on", "-append", "la57"],
    );
}

#[test]
fn grub_stack_high_water_mark() {
    high_water("GRUB SeaBIOS", &grub_image("").medium(), &["-m", "3G"]);
    // 8 KiB command line (tag 1 read past the parser's copy) and 5-level planning.
    let iso = grub_image(&reloc_tests::long_command_line(8192, "la57"));
    high_water(
        "GRUB SeaBIOS 8 KiB command line, la57",
        &iso.medium(),
        &["-m", "3G", "-cpu", "max,la57=on"],
    );
}

#[test]
fn ovmf_stack_high_water_mark() {
    let args = ovmf(&["-m", "3G"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    high_water("OVMF", &grub_image("").medium(), &args);
    // Tag 17 with 129 descriptors: the deepest parse (merging while reading).
    let args = ovmf(&["-m", "6G", "-machine", "q35"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    high_water(
        "OVMF mbi-no-memmap",
        &grub_image("mbi-no-memmap").medium(),
        &args,
    );
    let args = ovmf(&["-m", "3G", "-cpu", "max,la57=on"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    high_water("OVMF la57", &grub_image("la57").medium(), &args);
}

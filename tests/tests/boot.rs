//! Boots the boot-stub under QEMU (TCG) and checks, for each machine configuration, that it
//! relocated itself where reloc-core's selection says it should and verified the move on the
//! CPU. Each test fails (never skips) when QEMU is missing, with an install hint.

use std::time::Duration;

use reloc_core::{select_target, SelectError, TargetRequest, IMAGE_ALIGN};
use reloc_tests::output::StubOutput;
use reloc_tests::qemu::{self, status, Finished};

/// Boots with `args`, checks success, and returns the parsed output.
fn boot_ok(args: &[&str]) -> (StubOutput, Finished) {
    let run = qemu::boot(args);
    assert!(
        !run.timed_out,
        "QEMU {args:?} timed out; serial:\n{}",
        run.serial
    );
    assert_eq!(
        run.status,
        Some(status::SUCCESS),
        "QEMU {args:?} exit status; serial:\n{}\nstderr:\n{}",
        run.serial,
        run.stderr
    );
    let out = StubOutput::parse(&run.serial).unwrap_or_else(|e| panic!("{e}\n{}", run.serial));
    check_relocation(&out, &run.serial);
    eprintln!(
        "{args:?}: {} in {:?}",
        run.serial
            .lines()
            .find(|l| l.starts_with("reloc: moved"))
            .unwrap_or("(no summary)"),
        run.elapsed
    );
    (out, run)
}

/// What every successful boot must show: the summary agrees with the printed target and with
/// reloc-core's selection recomputed on the host from the printed memory map and avoided
/// ranges, and every on-CPU check passed.
fn check_relocation(out: &StubOutput, serial: &str) {
    let summary = out
        .summary
        .unwrap_or_else(|| panic!("no summary line:\n{serial}"));
    let image = out
        .image
        .unwrap_or_else(|| panic!("no image line:\n{serial}"));
    assert!(!out.memmap.is_empty(), "no memmap lines:\n{serial}");
    assert_eq!(out.avoid.first(), Some(&image), "image not avoided first");
    // The boot data must be avoided too: at least hvm_start_info itself (56 bytes).
    let start_info = serial
        .lines()
        .find_map(|l| l.strip_prefix("boot-stub: PVH entry, hvm_start_info at 0x"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no entry line:\n{serial}"));
    assert!(
        out.avoid
            .iter()
            .any(|r| r.start == start_info && r.len() == 56),
        "hvm_start_info at {start_info:#x} not avoided:\n{serial}"
    );
    assert_eq!(summary.old_base, image.start);
    assert_eq!(summary.len, image.len());

    let expected = select_target(&out.memmap, &TargetRequest::new(image.len(), &out.avoid))
        .unwrap_or_else(|e| panic!("host selection failed: {e}\n{serial}"))
        .as_u64();
    assert_eq!(
        summary.new_base, expected,
        "stub moved to {:#x}, reloc-core selects {expected:#x}\n{serial}",
        summary.new_base
    );
    assert_eq!(out.target, Some(expected));
    assert!(expected >= IMAGE_ALIGN && expected.is_multiple_of(IMAGE_ALIGN));
    assert!(
        expected >= image.end || expected + image.len() <= image.start,
        "target overlaps the image"
    );
    for avoided in &out.avoid {
        assert!(
            avoided.end <= expected || avoided.start >= expected + image.len(),
            "target {expected:#x} overlaps avoided {avoided}"
        );
    }

    assert_eq!(summary.tables, out.rebased_tables, "tables= vs plan lines");
    assert_eq!(u64::from(summary.leaves), image.len().div_ceil(IMAGE_ALIGN));
    assert_eq!(out.checks_failed, 0, "a check differed:\n{serial}");
    // apply report, cr3, six walks, directmap walk, stack value, two global reads, stack peak.
    assert_eq!(out.checks_ok, 13, "unexpected number of checks:\n{serial}");
}

fn ram_regions(out: &StubOutput) -> Vec<(u64, u64)> {
    out.memmap
        .iter()
        .filter(|r| r.kind == 1 && r.len > 0)
        .map(|r| (r.start, r.start + r.len))
        .collect()
}

#[test]
fn pc_128m() {
    let (out, _) = boot_ok(&["-m", "128M"]);
    // Measured map: RAM [0x100000, 0x7fe0000); the highest 2 MiB slot ends at 0x7e00000.
    assert!(ram_regions(&out).contains(&(0x100000, 0x7fe0000)));
    assert_eq!(out.summary.unwrap().new_base, 0x7e0_0000 - IMAGE_ALIGN);
}

#[test]
fn pc_512m() {
    let (out, _) = boot_ok(&["-m", "512M"]);
    let top = ram_regions(&out).iter().map(|r| r.1).max().unwrap();
    assert!(out.summary.unwrap().new_base + IMAGE_ALIGN <= top);
}

#[test]
fn pc_3g() {
    let (out, _) = boot_ok(&["-m", "3G"]);
    assert!(ram_regions(&out).contains(&(0x100000, 0xbffe0000)));
    assert_eq!(out.summary.unwrap().new_base, 0xbfe0_0000 - IMAGE_ALIGN);
}

#[test]
fn q35_3g() {
    let (out, _) = boot_ok(&["-m", "3G", "-machine", "q35"]);
    // q35 splits RAM at 2 GiB; the part above 4 GiB does not qualify.
    assert!(ram_regions(&out).iter().any(|r| r.0 >= 1 << 32));
    assert!(out.summary.unwrap().new_base < 0x8000_0000);
}

#[test]
fn pc_6g() {
    let (out, _) = boot_ok(&["-m", "6G"]);
    assert!(ram_regions(&out).iter().any(|r| r.1 > 1 << 32));
    assert!(out.summary.unwrap().new_base + IMAGE_ALIGN <= 1 << 32);
}

#[test]
fn qboot_unsorted_memmap() {
    let (out, _) = boot_ok(&["-bios", "/usr/share/qemu/qboot.rom"]);
    let starts: Vec<u64> = out.memmap.iter().map(|r| r.start).collect();
    assert!(
        starts.windows(2).any(|w| w[1] < w[0]),
        "expected qboot's unsorted memmap, got {starts:#x?}"
    );
}

#[test]
fn smallest_memory_that_fits() {
    // 7 MiB: RAM ends at 0x6e0000, so the only slot is [4 MiB, 6 MiB).
    let (out, _) = boot_ok(&["-m", "7M"]);
    assert_eq!(out.summary.unwrap().new_base, 0x40_0000);
}

#[test]
fn no_room_for_a_second_copy() {
    // 6 MiB: RAM ends at 0x5e0000; above the image (2 MiB..) no 2 MiB slot is left.
    let run = qemu::boot(&["-m", "6M"]);
    assert_eq!(
        run.status,
        Some(status::NO_ROOM),
        "serial:\n{}\nstderr:\n{}",
        run.serial,
        run.stderr
    );
    assert!(
        run.serial
            .contains("reloc: FAILED: no room: not enough memory to relocate"),
        "{}",
        run.serial
    );
    let out = StubOutput::parse(&run.serial).unwrap();
    assert!(out.summary.is_none());
    let image = out.image.expect("image line");
    let host = select_target(&out.memmap, &TargetRequest::new(image.len(), &out.avoid));
    assert!(
        matches!(host, Err(SelectError::NoRoom { .. })),
        "host selection disagrees: {host:?}"
    );
}

#[test]
fn verification_catches_a_missing_switch() {
    // Fault injection: copy and rebase, but never load the new CR3.
    let run = qemu::boot(&["-m", "128M", "-append", "no-switch"]);
    assert_eq!(
        run.status,
        Some(status::VERIFY_FAILED),
        "serial:\n{}",
        run.serial
    );
    let out = StubOutput::parse(&run.serial).unwrap();
    assert!(out.summary.is_none(), "{}", run.serial);
    assert!(out.checks_failed > 0);
    for line in ["verify: cr3", "verify: walk code", "verify: global write"] {
        assert!(
            run.serial
                .lines()
                .any(|l| l.starts_with(line) && l.ends_with("MISMATCH")),
            "`{line}` should differ:\n{}",
            run.serial
        );
    }
}

#[test]
fn panic_prints_message_and_location() {
    let run = qemu::boot(&["-m", "128M", "-append", "panic"]);
    assert_eq!(run.status, Some(status::PANIC), "serial:\n{}", run.serial);
    assert!(
        run.serial.lines().any(
            |l| l.starts_with("panic: panic requested on the command line at ")
                && l.contains("stub.rs:")
        ),
        "{}",
        run.serial
    );
}

#[test]
fn hold_keeps_running_and_monitor_sees_new_cr3() {
    let mut vm = qemu::boot_and_hold(&["-m", "128M"]);
    let serial = vm.serial();
    let out = StubOutput::parse(&serial).unwrap();
    check_relocation(&out, &serial);
    let new_top = serial
        .lines()
        .find_map(|l| l.strip_prefix("verify: cr3 "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("cr3 line")
        .to_owned();

    let status = vm.monitor("info status").expect("monitor");
    assert!(status.contains("VM status: running"), "{status:?}");
    let registers = vm.monitor("info registers").expect("monitor");
    let cr3 = registers
        .split_whitespace()
        .find_map(|w| w.strip_prefix("CR3="))
        .unwrap_or_else(|| panic!("no CR3 in {registers}"));
    assert_eq!(
        u64::from_str_radix(cr3, 16).unwrap(),
        u64::from_str_radix(new_top.trim_start_matches("0x"), 16).unwrap(),
        "QEMU's CR3 vs the stub's"
    );
    // Still running: the stub halts rather than exits.
    std::thread::sleep(Duration::from_millis(100));
    let finished = vm.kill();
    assert!(!finished.timed_out);
    assert_ne!(finished.status, Some(status::SUCCESS));
}

#[test]
fn bad_boot_info_is_reported() {
    // Fault injection: the stub overwrites the firmware's magic / version and parses again.
    for (word, message) in [
        (
            "bad-magic",
            "reloc: FAILED: bad boot info: hvm_start_info magic is 0xdeadbeef, expected 0x336ec578",
        ),
        (
            "start-info-v0",
            "reloc: FAILED: bad boot info: hvm_start_info version 0 has no memory map",
        ),
    ] {
        let run = qemu::boot(&["-m", "128M", "-append", word]);
        assert_eq!(
            run.status,
            Some(status::BAD_BOOT_INFO),
            "{word}: serial:\n{}",
            run.serial
        );
        assert!(run.serial.contains(message), "{word}:\n{}", run.serial);
        assert!(!run.serial.contains("reloc: moved"));
    }
}

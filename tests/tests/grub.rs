//! Boots the boot-stub from real GRUB (a `grub-mkrescue` image, QEMU `-cdrom`) through its
//! multiboot2 header, and checks each configuration as the PVH tests do: the summary, and the
//! target recomputed on the host from the memory map and avoided ranges the stub printed.
//! Also the header itself (where GRUB looks for it) and the MBI fault injections. The
//! `ovmf_*` tests boot the same hybrid image on UEFI firmware (OVMF, TCG only).
//!
//! The GRUB tools missing is a failure naming `cargo xtask test`, never a skip. KVM: GRUB
//! boots very slowly under this machine's nested KVM (real-mode firmware and disc I/O trap),
//! so only the `-m 3G` boot runs again under KVM; the others say they ran TCG only.

use std::time::Duration;

use reloc_core::IMAGE_ALIGN;
use reloc_tests::grub::{self, GrubImage, Module};
use reloc_tests::output::{check_relocation, Entry, StubOutput};
use reloc_tests::qemu::{self, status, Finished, KVM_ARGS};

/// A TCG boot through GRUB takes about half a second; the margin is for loaded machines.
const TCG_TIMEOUT: Duration = Duration::from_secs(120);
/// GRUB under this machine's KVM took 60-90 s (measured); the margin is for loaded machines.
const KVM_TIMEOUT: Duration = Duration::from_secs(400);

fn image(stub_args: &str, modules: &[Module]) -> GrubImage {
    qemu::qemu_binary();
    grub::build(qemu::boot_stub_image(), stub_args, modules).unwrap_or_else(|e| panic!("{e}"))
}

/// Boots `iso` with `args`; checks success and the relocation; returns the parsed output.
fn boot_ok_with(iso: &GrubImage, args: &[&str], timeout: Duration) -> (StubOutput, Finished) {
    let run = qemu::boot_medium(&iso.medium(), args, timeout);
    let out = run.expect_success(args);
    assert!(
        matches!(out.entry, Some(Entry::Multiboot2(_))),
        "not entered through multiboot2:\n{}",
        run.serial
    );
    assert!(
        run.serial
            .lines()
            .any(|l| l.starts_with("boot: multiboot2 MBI") && l.contains("loader \"GRUB")),
        "{}",
        run.serial
    );
    check_relocation(&out, &run.serial);
    eprintln!(
        "GRUB {args:?}: {} in {:?}",
        run.serial
            .lines()
            .find(|l| l.starts_with("reloc: moved"))
            .unwrap_or("(no summary)"),
        run.elapsed
    );
    (out, run)
}

fn boot_ok(iso: &GrubImage, args: &[&str]) -> (StubOutput, Finished) {
    boot_ok_with(iso, args, TCG_TIMEOUT)
}

fn tcg_only(args: &[&str]) {
    qemu::notice(&format!(
        "GRUB {args:?}: ran TCG only (GRUB under KVM is slow here; the -m 3G test runs KVM)"
    ));
}

#[test]
fn grub_pc_3g() {
    let iso = image("", &[]);
    let (out, _) = boot_ok(&iso, &["-m", "3G"]);
    // The same slot top as Xen's selection (and GRUB's own placement of Xen): 0xbfe00000.
    assert_eq!(out.summary.unwrap().new_base, 0xbfe0_0000 - IMAGE_ALIGN);
    match qemu::kvm_usable() {
        Ok(()) => {
            let args: Vec<&str> = ["-m", "3G"].into_iter().chain(KVM_ARGS).collect();
            let (kvm, _) = boot_ok_with(&iso, &args, KVM_TIMEOUT);
            assert_eq!(
                kvm.summary.map(|s| s.new_base),
                out.summary.map(|s| s.new_base)
            );
        }
        Err(why) => qemu::notice(&format!("GRUB [\"-m\", \"3G\"]: ran TCG only: {why}")),
    }
}

#[test]
fn grub_q35_6g() {
    let iso = image("", &[]);
    let args = ["-m", "6G", "-machine", "q35"];
    let (out, _) = boot_ok(&iso, &args);
    assert!(out.memmap.iter().any(|r| r.kind == 1 && r.start >= 1 << 32));
    assert!(out.summary.unwrap().new_base < 0x8000_0000);
    tcg_only(&args);
}

#[test]
fn grub_1g_with_a_32_mib_module() {
    let size = 32 << 20;
    let iso = image(
        "",
        &[Module {
            name: "big-module".into(),
            size,
            args: "big".into(),
        }],
    );
    let args = ["-m", "1G"];
    let (out, run) = boot_ok(&iso, &args);
    let module = out
        .modules
        .iter()
        .find(|m| m.len() == size)
        .unwrap_or_else(|| panic!("no 32 MiB module line:\n{}", run.serial));
    assert!(out.avoid.contains(module));
    tcg_only(&args);
}

#[test]
fn grub_2g_two_cpus() {
    let iso = image("", &[]);
    let args = ["-m", "2G", "-smp", "2"];
    boot_ok(&iso, &args);
    tcg_only(&args);
}

#[test]
fn grub_la57_relocates_with_five_levels() {
    let iso = image("la57", &[]);
    let (out, run) = boot_ok(&iso, &["-m", "3G", "-cpu", "max,la57=on"]);
    assert_eq!(out.summary.unwrap().paging_levels, 5, "{}", run.serial);
    qemu::notice("GRUB la57: ran TCG only (the test chooses its own -cpu)");
}

#[test]
fn grub_an_8_kib_command_line_relocates_and_honours_la57_at_its_end() {
    // GRUB puts the whole line in tag 1, with no length limit.
    let iso = image(&reloc_tests::long_command_line(8192, "la57"), &[]);
    let (out, run) = boot_ok(&iso, &["-m", "3G", "-cpu", "max,la57=on"]);
    assert_eq!(out.summary.unwrap().paging_levels, 5, "{}", run.serial);
    qemu::notice("GRUB 8 KiB command line: ran TCG only (the test chooses its own -cpu)");
}

#[test]
fn grub_corrupt_tag_size_is_a_typed_error() {
    let iso = image("mbi-bad-tag-size", &[]);
    let run = qemu::boot_medium(&iso.medium(), &["-m", "1G"], TCG_TIMEOUT);
    assert_eq!(
        run.status,
        Some(status::BAD_BOOT_INFO),
        "serial:\n{}",
        run.serial
    );
    let failure = run
        .serial
        .lines()
        .find(|l| l.starts_with("reloc: FAILED: bad boot info: "))
        .unwrap_or_else(|| panic!("no failure line:\n{}", run.serial));
    // The first tag, at offset 8, now runs past the MBI: named with its type and offset.
    assert!(
        failure.contains("multiboot2 tag type ") && failure.contains("at MBI offset 0x8: size "),
        "{failure}"
    );
    assert!(
        failure.contains("runs past the MBI's total_size"),
        "{failure}"
    );
    assert!(!run.serial.contains("reloc: moved"));
}

#[test]
fn grub_missing_memory_map_tag_falls_back_to_basic_meminfo() {
    // Without the memory-map tag the parser reads basic meminfo (RAM from 0 and from 1 MiB),
    // and the stub still relocates where the host selection says.
    let iso = image("mbi-no-memmap", &[]);
    let (out, run) = boot_ok(&iso, &["-m", "1G"]);
    assert!(
        run.serial
            .contains("boot: memory map now from the basic meminfo (mem_lower "),
        "{}",
        run.serial
    );
    assert_eq!(out.memmap.len(), 2, "{}", run.serial);
}

#[test]
fn grub_missing_memory_map_and_meminfo_is_a_typed_error() {
    let iso = image("mbi-no-memmap mbi-no-meminfo", &[]);
    let run = qemu::boot_medium(&iso.medium(), &["-m", "1G"], TCG_TIMEOUT);
    assert_eq!(
        run.status,
        Some(status::BAD_BOOT_INFO),
        "serial:\n{}",
        run.serial
    );
    assert!(
        run.serial.contains(
            "reloc: FAILED: bad boot info: multiboot2 MBI has no memory map: neither a \
             memory-map tag (type 6) with entries nor basic meminfo (type 4)"
        ),
        "{}",
        run.serial
    );
}

/// Where GRUB looks: an 8-aligned multiboot2 header in the first 32 KiB of the file.
#[test]
fn multiboot2_header_is_where_grub_looks_and_asks_for_what_the_stub_needs() {
    let bytes = std::fs::read(qemu::boot_stub_image()).expect("the stub image");
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let window = bytes.len().min(32 * 1024);
    let header = (0..window - 16)
        .step_by(8)
        .find(|&at| u32_at(at) == 0xe852_50d6)
        .expect("a multiboot2 header in the first 32 KiB, 8-aligned");
    let (arch, length, checksum) = (u32_at(header + 4), u32_at(header + 8), u32_at(header + 12));
    assert_eq!(arch, 0, "i386 protected mode");
    assert_eq!(
        0xe852_50d6u32
            .wrapping_add(arch)
            .wrapping_add(length)
            .wrapping_add(checksum),
        0
    );
    assert!(
        header + length as usize <= window,
        "header runs past 32 KiB"
    );
    // Tags: information request (memory map), entry address, end; no relocatable tag.
    let mut tags = Vec::new();
    let mut at = header + 16;
    loop {
        let tag_type = u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
        let size = u32_at(at + 4) as usize;
        tags.push((tag_type, bytes[at + 8..at + size].to_vec()));
        if tag_type == 0 {
            assert_eq!(size, 8, "end tag size");
            assert_eq!(
                at + size,
                header + length as usize,
                "end tag ends the header"
            );
            break;
        }
        at += size.next_multiple_of(8);
    }
    let types: Vec<u16> = tags.iter().map(|t| t.0).collect();
    assert_eq!(types, [1, 3, 0], "information request, entry address, end");
    assert_eq!(tags[0].1, 6u32.to_le_bytes(), "requests the memory map");
    let entry = u32::from_le_bytes(tags[1].1[..4].try_into().unwrap());
    assert!(
        (0x20_0000..0x40_0000).contains(&entry),
        "entry {entry:#x} is a physical address in the image"
    );
    // No multiboot1 header (QEMU's -kernel would prefer it to the PVH note).
    assert!(
        !(0..bytes.len().min(8192) - 4)
            .step_by(4)
            .any(|at| u32_at(at) == 0x1bad_b002),
        "a multiboot1 header"
    );
    // GRUB's own check agrees.
    let grub_file = std::process::Command::new("grub-file")
        .arg("--is-x86-multiboot2")
        .arg(qemu::boot_stub_image())
        .status()
        .expect("grub-file (grub-common; `cargo xtask test` installs it)");
    assert!(grub_file.success(), "grub-file --is-x86-multiboot2");
}

/// Boots `iso` on OVMF (UEFI, GRUB's x86_64-efi side of the same hybrid image) with `args`,
/// TCG only (OVMF stops with "emulation failure" under this machine's nested KVM); checks
/// success, the relocation recomputed on the host, and that the stub saw and replaced the
/// firmware's leftover CPU state. Returns the parsed output.
fn boot_ovmf(iso: &GrubImage, args: &[&str]) -> (StubOutput, Finished) {
    let firmware = grub::ovmf_args().unwrap_or_else(|e| panic!("{e}"));
    let all: Vec<&str> = firmware
        .iter()
        .copied()
        .chain(args.iter().copied())
        .collect();
    let (out, run) = boot_ok(iso, &all);
    // OVMF hands over with its own IDT loaded, CR4 0x648 and EFER.NXE (measured, OVMF
    // 2022.11); the stub reports them and runs on its own IDT with CR4/EFER of its own.
    let inherited = run
        .serial
        .lines()
        .find(|l| l.starts_with("cpu: inherited IDTR "))
        .unwrap_or_else(|| panic!("no inherited-state line:\n{}", run.serial));
    assert!(
        !inherited.starts_with("cpu: inherited IDTR 0x0+") && inherited.contains(" EFER 0x800;"),
        "{inherited}"
    );
    assert!(inherited.contains("now own IDT, CR4 0x"), "{inherited}");
    assert!(inherited.ends_with(" EFER 0x500"), "{inherited}");
    qemu::notice(&format!(
        "OVMF {args:?}: ran TCG only (OVMF fails under nested KVM here)"
    ));
    (out, run)
}

#[test]
fn ovmf_3g() {
    let iso = image("", &[]);
    let (out, _) = boot_ovmf(&iso, &["-m", "3G"]);
    // The same target as under SeaBIOS (measured on OVMF 2022.11).
    assert_eq!(out.summary.unwrap().new_base, 0xbfc0_0000);
}

#[test]
fn ovmf_q35_6g() {
    let iso = image("", &[]);
    let (out, _) = boot_ovmf(&iso, &["-m", "6G", "-machine", "q35"]);
    assert!(out.memmap.iter().any(|r| r.kind == 1 && r.start >= 1 << 32));
    assert_eq!(out.summary.unwrap().new_base, 0x7fc0_0000);
}

#[test]
fn ovmf_1g_with_a_32_mib_module() {
    let size = 32 << 20;
    let iso = image(
        "",
        &[Module {
            name: "big-module".into(),
            size,
            args: "big".into(),
        }],
    );
    let (out, run) = boot_ovmf(&iso, &["-m", "1G"]);
    let module = out
        .modules
        .iter()
        .find(|m| m.len() == size)
        .unwrap_or_else(|| panic!("no 32 MiB module line:\n{}", run.serial));
    assert!(out.avoid.contains(module));
}

#[test]
fn ovmf_la57_relocates_with_five_levels() {
    let iso = image("la57", &[]);
    let (out, run) = boot_ovmf(&iso, &["-m", "3G", "-cpu", "max,la57=on"]);
    assert_eq!(out.summary.unwrap().paging_levels, 5, "{}", run.serial);
}

/// The descriptor count of `boot: memory map now from the EFI memory-map tag (<n> descriptors,
/// ...`; panics when the map did not come from tag 17.
fn efi_descriptor_count(serial: &str) -> usize {
    serial
        .lines()
        .find_map(|l| l.strip_prefix("boot: memory map now from the EFI memory-map tag ("))
        .and_then(|rest| rest.split_once(" descriptors,"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no EFI memory-map line with a descriptor count:\n{serial}"))
}

#[test]
fn ovmf_missing_memory_map_tag_reads_the_efi_memory_map() {
    // Without tag 6 the map must come from tag 17 (the EFI memory map), not basic meminfo,
    // which on OVMF stops at the ACPI NVS hole at 8 MiB (it would give 0x600000).
    let iso = image("mbi-no-memmap", &[]);
    let (out, run) = boot_ovmf(&iso, &["-m", "3G"]);
    efi_descriptor_count(&run.serial);
    assert_eq!(out.summary.unwrap().new_base, 0xbfc0_0000, "{}", run.serial);
    // q35 with 6 GiB: the same target as tag 6 gives. OVMF's descriptor count varies from
    // boot to boot of the same image (measured with two small modules: 129, then 127; 128
    // without modules), and only a count over the 128 entries the map holds makes the parser
    // merge while reading. So the test boots until one count is over 128 (at most
    // `ATTEMPTS` boots), checks every boot's target, and says so when no boot reached that
    // case: failing on it would make the test flaky. The merge itself is held deterministically
    // by reloc-core's `efi_memory_map_serves_when_there_is_no_memory_map_tag` (129
    // OVMF-shaped descriptors).
    const ATTEMPTS: usize = 6;
    let modules: Vec<Module> = (0..2)
        .map(|i| Module {
            name: format!("module-{i}"),
            size: 4096,
            args: format!("m{i}"),
        })
        .collect();
    let iso = image("mbi-no-memmap", &modules);
    let mut counts = Vec::new();
    while counts.len() < ATTEMPTS && counts.iter().all(|&n| n <= 128) {
        let (out, run) = boot_ovmf(&iso, &["-m", "6G", "-machine", "q35"]);
        counts.push(efi_descriptor_count(&run.serial));
        assert_eq!(out.summary.unwrap().new_base, 0x7fc0_0000, "{}", run.serial);
    }
    let reached = if counts.iter().any(|&n| n > 128) {
        "over 128 reached"
    } else {
        "over 128 NOT reached: the merge-while-reading case did not run on OVMF this time"
    };
    qemu::notice(&format!(
        "OVMF -m 6G q35 mbi-no-memmap: EFI descriptor counts {counts:?} ({reached})"
    ));
}

/// Boots `iso` (whose command line holds `image-not-ram`) with `args` and expects the stub to
/// refuse the image before selecting: exit 0x16, the failure line, no target line.
fn expect_image_not_ram(iso: &GrubImage, args: &[&str], marked: &str) {
    let run = qemu::boot_medium(&iso.medium(), args, TCG_TIMEOUT);
    assert_eq!(
        run.status,
        Some(status::IMAGE_NOT_RAM),
        "{args:?} serial:\n{}",
        run.serial
    );
    assert!(
        run.serial
            .lines()
            .any(|l| l.starts_with(&format!("boot: image-not-ram requested: {marked} at "))),
        "no `{marked}` marked:\n{}",
        run.serial
    );
    let out = StubOutput::parse(&run.serial).unwrap();
    let image = out.image.expect("image line");
    assert!(
        run.serial.lines().any(|l| l
            == format!(
                "reloc: FAILED: image not in RAM: the image {image} is loaded over {:#x}, which \
                 the memory map does not report as RAM",
                image.start
            )),
        "{}",
        run.serial
    );
    assert!(out.target.is_none(), "selected a target:\n{}", run.serial);
}

#[test]
fn grub_image_outside_ram_has_its_own_exit_code() {
    // SeaBIOS: GRUB hands over tag 6 only; its entry holding the image becomes reserved.
    let iso = image("image-not-ram", &[]);
    expect_image_not_ram(&iso, &["-m", "1G"], "memory map entry");
    tcg_only(&["-m", "1G"]);
}

#[test]
fn ovmf_image_outside_ram_has_its_own_exit_code() {
    let firmware = grub::ovmf_args().unwrap_or_else(|e| panic!("{e}"));
    let args = [firmware[0], firmware[1], "-m", "1G"];
    // Tag 6 present: the map comes from it.
    expect_image_not_ram(&image("image-not-ram", &[]), &args, "memory map entry");
    // Tag 6 hidden: the map comes from the EFI memory map (tag 17), whose descriptor holding
    // the image must be marked too (editing tag 6 alone left this boot relocating).
    expect_image_not_ram(
        &image("mbi-no-memmap image-not-ram", &[]),
        &args,
        "EFI memory descriptor",
    );
    qemu::notice("OVMF image-not-ram: ran TCG only (OVMF fails under nested KVM here)");
}

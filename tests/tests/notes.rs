//! The boot-stub's Xen ELF notes, read by `reloc-sim notes` (`reloc_sim::notes`, which the
//! command prints): PHYS32_ENTRY is the physical address of the stub's 32-bit entry symbol,
//! and the notes agree with binutils' `readelf -n` on count, owner and type.
//!
//! The readelf comparison fails (never skips) when `readelf` is missing; `cargo xtask test`
//! installs binutils.

use std::path::PathBuf;
use std::process::Command;

use reloc_core::notes::{ElfImage, PT_LOAD};
use reloc_sim::notes::NotesReport;
use reloc_tests::qemu;

/// The stub's 32-bit PVH entry (`boot-stub/src/entry.rs`; `ENTRY` in `boot-stub/linker.ld`).
const ENTRY_SYMBOL: &str = "pvh_start32";

fn stub_bytes() -> Vec<u8> {
    let path = qemu::boot_stub_image();
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `name`'s value in the ELF64 symbol table (`.symtab`, names in `.strtab`), read directly.
fn symbol_value(bytes: &[u8], name: &str) -> Option<u64> {
    let image = ElfImage::parse(bytes).ok()?;
    let section = |want: &str| {
        image
            .section_headers()
            .find(|s| image.section_name(s) == Some(want.as_bytes()))
    };
    let (symtab, strtab) = (section(".symtab")?, section(".strtab")?);
    let at = |offset: u64, len: usize| {
        let start = usize::try_from(offset).ok()?;
        bytes.get(start..start.checked_add(len)?)
    };
    let strings = at(strtab.offset, usize::try_from(strtab.size).ok()?)?;
    // Elf64_Sym: st_name u32, st_info, st_other, st_shndx u16, st_value u64, st_size u64.
    (0..symtab.size / 24).find_map(|i| {
        let sym = at(symtab.offset + 24 * i, 24)?;
        let name_at = u32::from_le_bytes(sym[0..4].try_into().ok()?) as usize;
        let rest = strings.get(name_at..)?;
        let sym_name = &rest[..rest.iter().position(|&b| b == 0)?];
        (sym_name == name.as_bytes()).then(|| u64::from_le_bytes(sym[8..16].try_into().unwrap()))
    })
}

#[test]
fn phys32_entry_is_the_physical_address_of_the_32_bit_entry_symbol() {
    let bytes = stub_bytes();
    let report = NotesReport::from_bytes(&bytes).expect("the stub's notes parse");
    let symbol = symbol_value(&bytes, ENTRY_SYMBOL)
        .unwrap_or_else(|| panic!("{ENTRY_SYMBOL} not in the boot-stub's symbol table"));
    let image = ElfImage::parse(&bytes).unwrap();
    assert_eq!(
        image.entry(),
        symbol,
        "e_entry is {ENTRY_SYMBOL} (linker.ld ENTRY)"
    );
    // The symbol is linked high; its physical address comes from the PT_LOAD holding it.
    let load = image
        .program_headers()
        .find(|p| p.p_type == PT_LOAD && symbol >= p.vaddr && symbol - p.vaddr < p.memsz)
        .unwrap_or_else(|| panic!("no PT_LOAD holds {ENTRY_SYMBOL} at {symbol:#x}"));
    let physical = load.paddr + (symbol - load.vaddr);
    assert_eq!(
        report.summary.phys32_entry.map(u64::from),
        Some(physical),
        "PHYS32_ENTRY vs {ENTRY_SYMBOL} at {symbol:#x} (physical {physical:#x})"
    );
    assert_eq!(report.summary.xen_notes, 1);
    assert_eq!(report.entry_segment.map(|(i, _, _)| i), Some(load.index));
    assert!(report.lints.is_empty(), "{:?}", report.lints);
    let text = report.text("boot-stub");
    assert!(
        text.ends_with("result: PVH-bootable, 0 error(s), 0 warning(s)\n"),
        "{text}"
    );
}

/// `readelf` on `PATH`, or a failure naming how to get it.
fn readelf() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("readelf"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "readelf (binutils) not found on PATH: this test compares `reloc-sim notes` with \
                 `readelf -n`. Run the tests with `cargo xtask test`, which installs binutils \
                 (or `apt-get install -y binutils`)."
            )
        })
}

/// readelf's note type from its description column: the number it prints for types it does
/// not name, or the number behind the names it gives (`get_note_type`, `get_gnu_elf_note_type`).
fn readelf_type(owner: &str, description: &str) -> Option<u32> {
    if let Some(hex) = description
        .strip_prefix("Unknown note type: (0x")
        .and_then(|r| r.strip_suffix(')'))
    {
        return u32::from_str_radix(hex, 16).ok();
    }
    let name = description.split(" (").next().unwrap_or(description);
    Some(match (owner, name) {
        ("GNU", "NT_GNU_ABI_TAG") => 1,
        ("GNU", "NT_GNU_HWCAP") => 2,
        ("GNU", "NT_GNU_BUILD_ID") => 3,
        ("GNU", "NT_GNU_GOLD_VERSION") => 4,
        ("GNU", "NT_GNU_PROPERTY_TYPE_0") => 5,
        (_, "NT_VERSION") => 1,
        (_, "NT_ARCH") => 2,
        (_, "GO BUILDID") => 4,
        (_, "OPEN") => 0x100,
        (_, "func") => 0x101,
        _ => return None,
    })
}

/// (owner, data size, type) of each note `readelf -n` lists.
fn readelf_notes(output: &str) -> Vec<(String, usize, u32)> {
    output
        .lines()
        .filter_map(|line| {
            let (head, description) = line.split_once('\t')?;
            let mut fields = head.split_whitespace();
            let owner = fields.next()?;
            let size = usize::from_str_radix(fields.next()?.strip_prefix("0x")?, 16).ok()?;
            let description = description.trim();
            let n_type = readelf_type(owner, description).unwrap_or_else(|| {
                panic!("unrecognised readelf note description {description:?} in {line:?}")
            });
            Some((owner.to_owned(), size, n_type))
        })
        .collect()
}

#[test]
fn notes_agree_with_readelf() {
    let readelf = readelf();
    let path = qemu::boot_stub_image();
    let out = Command::new(&readelf)
        .arg("-n")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", readelf.display()));
    assert!(out.status.success(), "readelf -n failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let theirs = readelf_notes(&text);
    let report = NotesReport::from_bytes(&stub_bytes()).unwrap();
    let ours: Vec<(String, usize, u32)> = report
        .notes
        .iter()
        .map(|n| (n.owner.clone(), n.desc_size, n.n_type))
        .collect();
    assert!(!ours.is_empty(), "the stub carries notes");
    assert_eq!(ours, theirs, "reloc-sim notes vs readelf -n:\n{text}");
    // The parser itself can tell them apart: a Xen 18 line must be there.
    assert!(ours.contains(&("Xen".to_owned(), 4, 18)), "{ours:?}");
}

#[test]
fn readelf_parsing_reads_names_and_numbers() {
    // Lines as binutils 2.40 prints them (a Linux vmlinux, abridged).
    let sample = "\nDisplaying notes found in: .notes\n  Owner                Data size \tDescription\n  Xen                  0x00000006\tUnknown note type: (0x00000006)\n   description data: 6c 69 6e 75 78 00 \n  Xen                  0x00000008\tNT_VERSION (version)\n  GNU                  0x00000014\tNT_GNU_BUILD_ID (unique build ID bitstring)\n    Build ID: 6a2b4ac77585b8cf102cba771300e573c8489b69\n  Linux                0x0000000f\tOPEN\n";
    assert_eq!(
        readelf_notes(sample),
        [
            ("Xen".to_owned(), 6, 6),
            ("Xen".to_owned(), 8, 1),
            ("GNU".to_owned(), 20, 3),
            ("Linux".to_owned(), 15, 0x100),
        ]
    );
}

//! `reloc-sim notes`: the report, the lints, exit statuses, gzip input, JSON.

// The test images are written with `reloc_sim::fuzz::notes`'s ELF writer, behind the `fuzz`
// feature (on in the workspace through the dev-dependency on reloc-sim itself; absent from
// the published package, where this file then compiles to nothing).
#![cfg(feature = "fuzz")]

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use reloc_sim::fuzz::notes::{note, xen_string, ElfWriter};

fn reloc_sim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reloc-sim"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch file holding `bytes`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, bytes: &[u8]) -> Self {
        let dir = std::env::temp_dir().join(format!("reloc-sim-notes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        Self(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn entry(paddr: u32) -> Vec<u8> {
    note("Xen", 18, &paddr.to_le_bytes())
}

fn image(elf64: bool, notes: &[Vec<u8>]) -> Vec<u8> {
    let mut w = ElfWriter::new(elf64);
    w.note_segments.push(notes.concat());
    w.build()
}

fn json(args: &[&str]) -> (i32, serde_json::Value) {
    let (code, out, err) = reloc_sim(args);
    let v = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v)
}

#[test]
fn xen_4_1_features_string_parses_and_warns() {
    let features = "!writable_page_tables|pae_pgdir_above_4gb|hvm_callback_vector";
    for elf64 in [false, true] {
        let f = Scratch::new(
            &format!("xen41-{elf64}"),
            &image(elf64, &[xen_string(10, features), entry(0x10_0000)]),
        );
        let (code, out, err) = reloc_sim(&["notes", f.path()]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains(
                "supported         0x00000111 writable_page_tables, pae_pgdir_above_4gb, hvm_callback_vector"
            ),
            "{out}"
        );
        assert!(
            out.contains("required          0x00000001 writable_page_tables"),
            "{out}"
        );
        let warnings: Vec<&str> = out.lines().filter(|l| l.contains("warning ")).collect();
        assert_eq!(warnings.len(), 1, "{out}");
        assert!(warnings[0].contains("`hvm_callback_vector`"), "{out}");
        assert!(warnings[0].contains("Xen 4.1"), "{out}");
        assert!(
            warnings[0].contains("set bit 8 in SUPPORTED_FEATURES"),
            "{out}"
        );
        assert!(
            out.ends_with("result: PVH-bootable, 0 error(s), 1 warning(s)\n"),
            "{out}"
        );

        let (code, v) = json(&["notes", "--json", f.path()]);
        assert_eq!(code, 0);
        assert_eq!(v["class"], if elf64 { "ELF64" } else { "ELF32" });
        assert_eq!(v["supported"]["bits"], "0x111");
        assert_eq!(
            v["required"]["names"],
            serde_json::json!(["writable_page_tables"])
        );
        assert_eq!(v["phys32_entry"], "0x100000");
        assert_eq!(v["pvh_bootable"], true);
        assert_eq!(v["lints"][0]["code"], "feature-name-unknown-to-old-xen");
        assert_eq!(v["lints"][0]["severity"], "warning");
        assert_eq!(v["notes"][0]["xen_type"], "FEATURES");
    }
}

#[test]
fn moving_the_name_to_supported_features_clears_the_warning() {
    // What Linux did: the same bit through SUPPORTED_FEATURES, which old hypervisors ignore.
    let f = Scratch::new(
        "fixed",
        &image(
            true,
            &[
                xen_string(10, "!writable_page_tables|pae_pgdir_above_4gb"),
                note("Xen", 17, &(1u32 << 8).to_le_bytes()),
                entry(0x10_0000),
            ],
        ),
    );
    let (code, v) = json(&["notes", "--json", f.path()]);
    assert_eq!(code, 0);
    assert_eq!(v["supported"]["bits"], "0x111");
    assert_eq!(v["lints"], serde_json::json!([]));
}

#[test]
fn names_libelf_does_not_know_warn_with_their_bit() {
    let f = Scratch::new(
        "unknown-optional",
        &image(
            false,
            &[
                xen_string(10, "highmem_assist|no_such_thing||dom0"),
                entry(0x10_0000),
            ],
        ),
    );
    let (code, v) = json(&["notes", "--json", f.path()]);
    assert_eq!(code, 0);
    // libelf: highmem_assist and no_such_thing ignored, dom0 (bit 11) set.
    assert_eq!(v["supported"]["bits"], "0x800");
    let messages: Vec<String> = v["lints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(messages[0].contains("`highmem_assist`") && messages[0].contains("bit 6"));
    assert!(messages[1].contains("`no_such_thing`") && messages[1].contains("no XENFEAT name"));
    assert!(messages[2].contains("empty token at byte 29"));
    assert!(messages[3].contains("`dom0`") && messages[3].contains("bit 11"));
}

#[test]
fn unknown_required_feature_is_bad_input_naming_it() {
    let f = Scratch::new(
        "unknown-required",
        &image(
            false,
            &[xen_string(10, "!no_such_feature"), entry(0x10_0000)],
        ),
    );
    let (code, out, err) = reloc_sim(&["notes", f.path()]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("requires unknown feature `no_such_feature`"),
        "{err}"
    );
    let (code, v) = json(&["notes", "--json", f.path()]);
    assert_eq!(code, 1);
    assert!(v["error"].as_str().unwrap().contains("no_such_feature"));
}

#[test]
fn no_phys32_entry_is_not_pvh_bootable() {
    let f = Scratch::new(
        "no-entry",
        &image(true, &[note("GNU", 3, &[7; 20]), xen_string(6, "linux")]),
    );
    let (code, out, err) = reloc_sim(&["notes", f.path()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("warning not-pvh-bootable: no PHYS32_ENTRY note"),
        "{out}"
    );
    assert!(
        out.ends_with("result: not PVH-bootable, 0 error(s), 1 warning(s)\n"),
        "{out}"
    );
}

#[test]
fn entry_outside_every_load_segment_is_an_error() {
    // PT_LOAD covers [1 MiB, 1 MiB + 64 KiB): its end and a gap both fail.
    for paddr in [0x11_0000u32, 0x0f_ffff, 0] {
        let f = Scratch::new(&format!("outside-{paddr:x}"), &image(true, &[entry(paddr)]));
        let (code, out, err) = reloc_sim(&["notes", f.path()]);
        assert_eq!(code, 4, "{paddr:#x}: {out}{err}");
        assert!(
            out.contains(&format!(
                "error   entry-outside-load: PHYS32_ENTRY {paddr:#x} is outside"
            )),
            "{out}"
        );
    }
    let f = Scratch::new("inside-last", &image(true, &[entry(0x10_ffff)]));
    let (code, out, _) = reloc_sim(&["notes", f.path()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0x10ffff (PT_LOAD segment 0, physical 0x100000+0x10000)"),
        "{out}"
    );
}

#[test]
fn gzip_input_reads_the_same() {
    let elf = image(true, &[note("GNU", 3, &[7; 20]), entry(0x10_0000)]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&elf).unwrap();
    let gz = gz.finish().unwrap();
    let plain = Scratch::new("plain", &elf);
    let packed = Scratch::new("packed.gz", &gz);
    let (code, a) = json(&["notes", "--json", plain.path()]);
    let (code_gz, b) = json(&["notes", "--json", packed.path()]);
    assert_eq!((code, code_gz), (0, 0));
    assert_eq!(a["compressed"], false);
    assert_eq!(b["compressed"], true);
    assert_eq!(b["elf_size"], elf.len());
    assert_eq!(a["notes"], b["notes"]);
    assert_eq!(b["notes"].as_array().unwrap().len(), 2);
    // A damaged stream is bad input, not a panic.
    let mut broken = gz.clone();
    broken.truncate(gz.len() / 2);
    let broken = Scratch::new("broken.gz", &broken);
    let (code, _, err) = reloc_sim(&["notes", broken.path()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("gzip:"), "{err}");
}

#[test]
fn bad_files_exit_1_with_one_line() {
    let not_elf = Scratch::new("not-elf", b"MZ\x90\0 not an ELF file");
    let truncated = Scratch::new("truncated", &image(true, &[entry(1)])[..40]);
    let mut bad_note = image(true, &[entry(0x10_0000)]);
    // descsz of the note (right after the two program headers) far past the segment.
    let note_at = 64 + 2 * 56;
    bad_note[note_at + 4..note_at + 8].copy_from_slice(&0x1000u32.to_le_bytes());
    let bad_note = Scratch::new("bad-note", &bad_note);
    for (f, what) in [
        (&not_elf, "not an ELF file"),
        (&truncated, "shorter than its 64-byte ELF header"),
        (
            &bad_note,
            "note 0 at offset 0xb0 in PT_NOTE segment 1 needs 4112 bytes",
        ),
    ] {
        let (code, out, err) = reloc_sim(&["notes", f.path()]);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(what), "{err}");
    }
    let (code, _, err) = reloc_sim(&["notes", "/no/such/image"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot read /no/such/image"),
        "{err}"
    );
    let (code, _, _) = reloc_sim(&["notes"]);
    assert_eq!(code, 2);
}

/// Issue 19, 2c: libelf loads a `PT_LOAD` only with R, W or X (`elf_phdr_is_loadable`): an
/// entry inside a `PT_LOAD` with none of them runs unloaded memory. It passed before.
#[test]
fn entry_in_a_load_segment_without_rwx_is_an_error() {
    let mut w = ElfWriter::new(true);
    w.loads = vec![(0x10_0000, 0x10_0000, 0x1_0000, 0)];
    w.note_segments.push(entry(0x10_0000));
    let f = Scratch::new("no-rwx", &w.build());
    let (code, out, err) = reloc_sim(&["notes", f.path()]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("error   entry-outside-load: PHYS32_ENTRY 0x100000 is outside"),
        "{out}"
    );
}

/// Issue 19, 2g: padding after a PT_NOTE's last note boots under libelf; it was rejected as a
/// truncated note. Now the image reads, and the bytes get a warning.
#[test]
fn padding_after_the_last_note_is_a_warning() {
    let f = Scratch::new("short-tail", &image(true, &[entry(0x10_0000), vec![0; 4]]));
    let (code, out, err) = reloc_sim(&["notes", f.path()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("warning note-region-short-tail: PT_NOTE segment 1 ends with 4 byte(s)"),
        "{out}"
    );
    assert!(
        out.ends_with("result: PVH-bootable, 0 error(s), 1 warning(s)\n"),
        "{out}"
    );
}

/// Issue 19, 2d: a string note over 4,096 bytes: libelf skips it and boots (it was rejected).
#[test]
fn an_over_long_string_note_is_skipped_with_a_warning() {
    let long = "!no_such_feature|".to_string() + &"a".repeat(4096);
    let f = Scratch::new(
        "long-string",
        &image(false, &[xen_string(10, &long), entry(0x10_0000)]),
    );
    let (code, out, err) = reloc_sim(&["notes", f.path()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("warning string-too-long: 1 Xen string note(s)"),
        "{out}"
    );
    assert!(out.contains("required          0x00000000"), "{out}");
}

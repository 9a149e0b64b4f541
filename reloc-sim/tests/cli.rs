//! The `reloc-sim` command: exit statuses, one-line errors, JSON output, the map listing.

use std::process::Command;

fn reloc_sim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reloc-sim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_small_machine_passes_and_json_parses() {
    let (code, out, err) = reloc_sim(&["demo", "--memory", "256M", "--image-size", "4M"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("result: 8 of 8 checks passed"), "{out}");
    let (code, out, _) = reloc_sim(&["demo", "--memory", "256M", "--json", "--levels", "5"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["passed"], true);
    assert_eq!(v["new_base"], "0xf600000");
    assert!(v["properties"].as_array().unwrap().len() >= 8);
}

#[test]
fn a_rejected_scenario_exits_3_with_one_line() {
    let (code, out, err) = reloc_sim(&["replay", "scenarios/err-image-mapped-by-4k-leaf.json"]);
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: relocation rejected: 4 KiB leaf"),
        "{err}"
    );
    let (code, out, _) = reloc_sim(&["replay", "--json", "scenarios/err-no-room.json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error_kind"], "NoRoom");
}

#[test]
fn bad_input_and_usage_errors() {
    let (code, _, err) = reloc_sim(&["replay", "no-such-file.json"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot read no-such-file.json"),
        "{err}"
    );
    let (code, _, _) = reloc_sim(&["demo", "--levels", "6"]);
    assert_eq!(code, 2);
    let (code, _, err) = reloc_sim(&["demo", "--image-base", "0x201000"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn extreme_demo_sizes_are_errors_not_panics() {
    for args in [
        ["--memory", "18446744073709551615"],
        ["--image-size", "0xfffffffffff00000"],
        ["--image-base", "0xffffffffffe00000"],
        ["--image-size", "2G"],
    ] {
        let (code, _, err) = reloc_sim(&["demo", args[0], args[1]]);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.starts_with("error: invalid layout:"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn map_lists_a_raw_dump() {
    let dir = std::env::temp_dir().join(format!("reloc-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mem.raw");
    let mut bytes = vec![0u8; 0x8000];
    let mut set = |pa: usize, v: u64| bytes[pa..pa + 8].copy_from_slice(&v.to_le_bytes());
    set(0x1000 + 511 * 8, 0x2003);
    set(0x2000 + 511 * 8, 0x3003);
    set(0x3000, 0x20_0000 | 0x183);
    set(0x3008, 0x40_0000 | 0x183);
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap();
    let (code, out, err) = reloc_sim(&["map", "--raw", p, "--cr3", "0x1000"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "ffffffffc0000000-ffffffffc0400000 0000000000200000 0000000000400000 -rwxg\n"
    );
    let (code, out, _) = reloc_sim(&["map", "--raw", p, "--cr3", "0x1000", "--leaves"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2);
    let (code, _, err) = reloc_sim(&["map", "--raw", p, "--cr3", "0x100000"]);
    assert_eq!(code, 1);
    assert!(err.contains("not inside the dump"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A scratch directory for this test process.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("reloc-sim-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `scenarios/ok-fixed-target.json` with `edit` applied to its JSON text, replayed: (exit
/// status, stdout, stderr).
fn replay_edited(name: &str, edit: impl Fn(&str) -> String) -> (i32, String, String) {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/ok-fixed-target.json"),
    )
    .unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "{name}: the edit changed nothing");
    let path = scratch(name).join("s.json");
    std::fs::write(&path, edited).unwrap();
    reloc_sim(&["replay", path.to_str().unwrap()])
}

/// A bad-input failure: status 1 and one line naming the problem.
fn assert_bad_input(name: &str, (code, out, err): (i32, String, String), says: &str) {
    assert_eq!(code, 1, "{name}: {out}{err}");
    assert_eq!(err.lines().count(), 1, "{name}: {err}");
    assert!(err.contains(says), "{name}: {err}");
    assert!(!err.contains("untagged"), "{name}: {err}");
}

/// Issue 11: a negative, float, bool or 2^64 number said "data did not match any variant of
/// untagged enum Raw".
#[test]
fn bad_numbers_in_a_scenario_are_named() {
    let cr3 = r#""cr3": "0x300000""#;
    for (name, value, says) in [
        ("negative", "-4096", "-4096 is negative"),
        ("float", "1.5", "1.5 is not a whole number"),
        ("two-to-64", "18446744073709551616", "is not a whole number"),
        ("bool", "true", "invalid type: boolean `true`"),
    ] {
        let result = replay_edited(name, |t| t.replace(cr3, &format!(r#""cr3": {value}"#)));
        assert_bad_input(name, result, says);
    }
    // A plain number is fine, as the format says.
    let (code, out, err) = replay_edited("plain", |t| t.replace(cr3, r#""cr3": 3145728"#));
    assert_eq!(code, 0, "{out}{err}");
}

/// Issue 11: duplicate keys in `entries`, or two keys naming one entry, were accepted and key
/// order chose the value.
#[test]
fn an_entry_given_twice_is_an_error() {
    let entry = r#""0": "0x301063","#;
    let result = replay_edited("duplicate", |t| {
        t.replacen(entry, &format!(r#"{entry} "0": "0x305063","#), 1)
    });
    assert_bad_input("duplicate", result, "entry `0` is given twice");
    let result = replay_edited("alias", |t| {
        t.replacen(entry, &format!(r#"{entry} "00": "0x305063","#), 1)
    });
    assert_bad_input("alias", result, "keys `0` and `00` both name entry 0");
}

/// Issue 11: `target` as a JSON number was refused although numbers are allowed.
#[test]
fn target_may_be_a_plain_number() {
    let (code, out, err) = replay_edited("target", |t| {
        t.replace(r#""target": "0x1000000""#, r#""target": 16777216"#)
    });
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("new base          0x1000000 (given)"), "{out}");
    let result = replay_edited("target-negative", |t| {
        t.replace(r#""target": "0x1000000""#, r#""target": -1"#)
    });
    assert_bad_input("target-negative", result, "-1 is negative");
}

/// Issue 11: bad `virtual` data exited 4 ("a property check failed") instead of 1, a
/// virtual image passing 2^64 panicked (debug) in the warm-up, and MAXPHYADDR 0 with
/// `virtual` hid InvalidMaxPhysBits.
#[test]
fn bad_virtual_layouts_are_bad_input() {
    let rsp = r#""rsp": "0xffff82d0403fff00""#;
    // reloc-core's switch checks come first: a typed refusal (3), as for any stack it refuses.
    let (code, out, err) = replay_edited("rsp-misaligned", |t| {
        t.replace(rsp, r#""rsp": "0xffff82d0403fff04""#)
    });
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not 8-byte aligned"), "{err}");
    // The stack in a read-only leaf; half the image unmapped: the simulated code faults
    // before the move, which was exit 4 ("a property check failed").
    let result = replay_edited("stack-read-only", |t| {
        t.replace(
            r#""1": "0x80000000004001e3""#,
            r#""1": "0x80000000004001e1""#,
        )
    });
    assert_bad_input(
        "stack-read-only",
        result,
        "bad virtual layout: the image or stack is not usable at its virtual addresses before the move: write to read-only virtual address 0xffff82d0403fff00",
    );
    let result = replay_edited("half-unmapped", |t| {
        t.replace(r#""1": "0x80000000004001e3""#, r#""1": "0x0""#)
            .replace(
                r#""stack_top": "0xffff82d040400000""#,
                r#""stack_top": "0xffff82d040100000""#,
            )
            .replace(rsp, r#""rsp": "0xffff82d0400fff00""#)
    });
    assert_bad_input("half-unmapped", result, "page fault at 0xffff82d040200000");
    // A virtual image passing 2^64: reloc-core refuses the layout (it panicked in the
    // simulator's warm-up before).
    let result = replay_edited("wraps", |t| {
        t.replace("0xffff82d040000000", "0xfffffffffff00000")
            .replace("0xffff82d040400000", "0xfffffffffffff000")
            .replace("0xffff82d0403fff00", "0xffffffffffffef00")
    });
    assert!(result.0 == 1 || result.0 == 3, "{result:?}");
    assert_eq!(result.2.lines().count(), 1, "{result:?}");
    let (code, out, err) = replay_edited("maxphys-0", |t| {
        t.replace(r#""max_phys_bits": 46"#, r#""max_phys_bits": 0"#)
    });
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("MAXPHYADDR of 0 bits"), "{err}");
}

/// Issue 11: `--cr3 0x10K` was rejected while `0x10M` was accepted.
#[test]
fn hex_sizes_take_every_suffix() {
    let dir = scratch("suffix");
    let path = dir.join("mem.raw");
    let mut bytes = vec![0u8; 0x8000];
    let mut set = |pa: usize, v: u64| bytes[pa..pa + 8].copy_from_slice(&v.to_le_bytes());
    set(0x1000, 0x2003);
    set(0x2000, 0x3003);
    set(0x3000, 0x20_0000 | 0x83);
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap();
    let (code, hex_k, err) = reloc_sim(&["map", "--raw", p, "--cr3", "0x4K"]);
    assert_eq!(code, 0, "{err}");
    let (_, plain, _) = reloc_sim(&["map", "--raw", p, "--cr3", "0x1000"]);
    assert_eq!(hex_k, plain);
    assert!(!plain.is_empty());
}

/// Issue 11: `map` on a dump of 0xff bytes exited 0 with nothing printed; `map --leaves`
/// printed effective permissions where QEMU's `info tlb` prints the leaf entry's flags.
#[test]
fn map_says_when_nothing_is_mapped_and_leaves_read_as_info_tlb() {
    let dir = scratch("map");
    let ff = dir.join("ff.raw");
    std::fs::write(&ff, vec![0xffu8; 0x4000]).unwrap();
    let (code, out, err) = reloc_sim(&["map", "--raw", ff.to_str().unwrap(), "--cr3", "0x1000"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty());
    assert!(err.contains("nothing is mapped"), "{err}");
    assert!(
        err.contains("512 present entries have reserved bits set"),
        "{err}"
    );

    // L4[511] supervisor -> L3 -> L2 with a user 2 MiB leaf (NX clear) and a 4 KiB table.
    let path = dir.join("mem.raw");
    let mut bytes = vec![0u8; 0x8000];
    let mut set = |pa: usize, v: u64| bytes[pa..pa + 8].copy_from_slice(&v.to_le_bytes());
    set(0x1000 + 511 * 8, 0x2003 | (1 << 63));
    set(0x2000 + 511 * 8, 0x3003);
    set(0x3000, 0x20_0000 | 0x1e7);
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap();
    let (code, out, err) = reloc_sim(&["map", "--raw", p, "--cr3", "0x1000", "--leaves"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ffffffffc0000000: 0000000000200000 -GPDA--UW\n");
    let (code, out, err) = reloc_sim(&[
        "map",
        "--raw",
        p,
        "--cr3",
        "0x1000",
        "--leaves",
        "--effective",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "ffffffffc0000000-ffffffffc0200000 0000000000200000 0000000000200000 -rw-g\n"
    );
    let (code, _, _) = reloc_sim(&["map", "--raw", p, "--cr3", "0x1000", "--effective"]);
    assert_eq!(code, 2, "--effective needs --leaves");
}

/// Issue 11: `demo --memory 54G` failed with TooManyTables although the option accepts up to
/// 256 GiB.
#[test]
fn demo_with_54_gib_relocates() {
    let (code, out, err) = reloc_sim(&["demo", "--memory", "54G"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("54 GiB of RAM"), "{out}");
    assert!(out.contains("checks passed"), "{out}");
}

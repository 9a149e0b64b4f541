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

//! `cargo xtask fuzz`: builds the cargo-fuzz targets in `fuzz/` and runs each for a bounded
//! time from the checked-in seeds; any crash, timeout, leak or out-of-memory fails the run.
//!
//! Nightly with AddressSanitizer when a nightly toolchain is installed, else the pinned stable
//! with `-s none`. The build is cargo-fuzz's default (optimised, debug assertions and overflow
//! checks on, one codegen unit), as OSS-Fuzz builds it, through `fuzz/.cargo/config.toml`'s
//! rustc wrapper (`fuzz/sancov-scope.sh`: reloc-sim, the simulator and oracle, is built without
//! compare tracing and with function-entry counters instead of edge counters). One codegen unit
//! builds as fast as 16 here (28 s against 29 s from scratch) and runs `relocate` a third
//! faster. New inputs go to a scratch corpus, so the tree is not written; a finding is printed
//! in hex and copied to `fuzz/artifacts/<target>/` for `cargo fuzz run <target> <file>`.
//!
//! With `--coverage` (a campaign option; `cargo xtask ci` runs without it, to stay within
//! CI's time), each target's corpus (the run's and the seeds) is then replayed by
//! `cargo fuzz coverage` and `llvm-cov report` summarises reloc-core's sources: one line
//! per target, the full report in `fuzz/coverage/<target>/reloc-core.txt`, and a line for
//! all targets together (profiles merged) in `fuzz/coverage/reloc-core.txt`.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{describe, output, run, seconds, setup, step, succeeds, workspace_root, Error};

/// Seconds per target when none are given (also what CI runs).
pub const DEFAULT_SECONDS: u64 = 60;

/// Runs `targets` (empty: all) for `seconds` each, then, with `coverage`, reports reloc-core's
/// coverage by each target's corpus.
pub fn run_targets(
    seconds_per_target: u64,
    coverage: bool,
    targets: &[String],
) -> Result<(), Error> {
    let start = Instant::now();
    cargo_fuzz_installed()?;
    let nightly = setup::has_nightly();
    step(if nightly {
        "fuzz: nightly with AddressSanitizer"
    } else {
        "fuzz: nightly not installed; stable without sanitizer (-s none)"
    });
    let fuzz = || {
        let mut command = Command::new("cargo");
        command.current_dir(workspace_root().join("fuzz"));
        if nightly {
            command.arg("+nightly");
        }
        command.arg("fuzz");
        command
    };
    let options = |command: &mut Command| {
        if !nightly {
            command.args(["-s", "none"]);
        }
    };

    let targets: Vec<String> = if targets.is_empty() {
        output(fuzz().arg("list"))?
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    } else {
        targets.to_vec()
    };

    let mut build = fuzz();
    build.arg("build");
    options(&mut build);
    step(&describe(&build));
    let build_start = Instant::now();
    run(&mut build)?;
    step(&format!(
        "fuzz: build took {}",
        seconds(build_start.elapsed())
    ));

    let scratch = tempfile::Builder::new()
        .prefix("reloc-fuzz-")
        .tempdir()
        .map_err(|source| Error::Spawn {
            command: "create a scratch directory".into(),
            source,
        })?;
    let mut summary = Vec::new();
    let mut failed = Vec::new();
    for target in &targets {
        let corpus = scratch.path().join(format!("corpus-{target}"));
        let artifacts = scratch.path().join(format!("artifacts-{target}"));
        let log_path = scratch.path().join(format!("{target}.log"));
        let io_error = |source| Error::Spawn {
            command: format!("prepare {}", scratch.path().display()),
            source,
        };
        fs::create_dir_all(&corpus).map_err(io_error)?;
        fs::create_dir_all(&artifacts).map_err(io_error)?;
        let log = File::create(&log_path).map_err(io_error)?;
        let log_for_stderr = log.try_clone().map_err(io_error)?;

        let mut fuzz_run = fuzz();
        fuzz_run.arg("run");
        options(&mut fuzz_run);
        // The checked-in seeds come second: libFuzzer writes new inputs to the first corpus.
        fuzz_run
            .arg(target)
            .arg(&corpus)
            .arg(format!("corpus/{target}"))
            .arg("--")
            .arg(format!("-max_total_time={seconds_per_target}"))
            .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr);
        println!();
        step(&format!("fuzz {target} for {seconds_per_target} s"));
        let passed = fuzz_run
            .status()
            .map_err(|source| Error::Spawn {
                command: describe(&fuzz_run),
                source,
            })?
            .success();
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        if !passed {
            failed.push(target.clone());
            report_failure(target, &log, &artifacts);
        }
        let outcome = if passed { "ok" } else { "FAILED" };
        summary.push(format!("{target}: {outcome}; {}", Stats::parse(&log)));
    }

    let mut coverage_lines = Vec::new();
    if coverage {
        llvm_tools_installed()?;
        for target in &targets {
            let corpus = scratch.path().join(format!("corpus-{target}"));
            coverage_lines.push(coverage_report(target, &corpus)?);
        }
        if targets.len() > 1 {
            coverage_lines.push(format!("all targets: {}", union_report(&targets)?));
        }
    }

    println!("\n== fuzz summary ({seconds_per_target} s per target)");
    for line in &summary {
        println!("{line}");
    }
    if coverage {
        println!("== reloc-core coverage (regions, functions, lines) by each target's corpus");
        for line in &coverage_lines {
            println!("{line}");
        }
    }
    println!("fuzz: total {}", seconds(start.elapsed()));
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::FuzzFindings { targets: failed })
    }
}

/// The nightly toolchain's `llvm-cov` (from `llvm-tools-preview`): the LLVM that built the
/// coverage binaries.
fn llvm_cov() -> Result<std::path::PathBuf, Error> {
    let sysroot = output(
        Command::new("rustc")
            .args(["+nightly", "--print", "sysroot"])
            .current_dir(workspace_root()),
    )?;
    Ok(Path::new(sysroot.trim())
        .join("lib/rustlib/x86_64-unknown-linux-gnu/bin")
        .join("llvm-cov"))
}

fn llvm_tools_installed() -> Result<(), Error> {
    if llvm_cov()?.exists() {
        step("llvm-tools-preview (nightly): installed");
        return Ok(());
    }
    let mut install = Command::new("rustup");
    install.args([
        "component",
        "add",
        "--toolchain",
        "nightly",
        "llvm-tools-preview",
    ]);
    step(&format!(
        "llvm-tools-preview: missing, {}",
        describe(&install)
    ));
    run(&mut install)
}

/// `cargo fuzz coverage` over `corpus` and the seeds, then `llvm-cov report` restricted to
/// reloc-core's sources; the report goes to `fuzz/coverage/<target>/reloc-core.txt` and the
/// summary line is returned.
fn coverage_report(target: &str, corpus: &Path) -> Result<String, Error> {
    let fuzz_dir = workspace_root().join("fuzz");
    let mut build = Command::new("cargo");
    build
        .current_dir(&fuzz_dir)
        .args(["+nightly", "fuzz", "coverage", target])
        .arg(corpus)
        .arg(format!("corpus/{target}"));
    step(&describe(&build));
    run(&mut build)?;
    let binary = fuzz_dir
        .join("target/x86_64-unknown-linux-gnu/coverage/x86_64-unknown-linux-gnu/release")
        .join(target);
    let profile = fuzz_dir
        .join("coverage")
        .join(target)
        .join("coverage.profdata");
    let mut report = Command::new(llvm_cov()?);
    report
        .arg("report")
        .arg(&binary)
        .arg(format!("-instr-profile={}", profile.display()))
        .arg(workspace_root().join("reloc-core/src"));
    let text = output(&mut report)?;
    let saved = fuzz_dir
        .join("coverage")
        .join(target)
        .join("reloc-core.txt");
    if let Err(e) = fs::write(&saved, &text) {
        println!("xtask: cannot write {}: {e}", saved.display());
    }
    Ok(format!("{target}: {}", CoverageTotal::parse(&text)))
}

/// reloc-core's coverage by every target together: the targets' profiles merged with
/// `llvm-profdata`, reported over all their binaries; the report goes to
/// `fuzz/coverage/reloc-core.txt`.
fn union_report(targets: &[String]) -> Result<CoverageTotal, Error> {
    let fuzz_dir = workspace_root().join("fuzz");
    let tools = llvm_cov()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let merged = fuzz_dir.join("coverage").join("all.profdata");
    let mut merge = Command::new(tools.join("llvm-profdata"));
    merge.args(["merge", "-sparse", "-o"]).arg(&merged);
    for target in targets {
        merge.arg(
            fuzz_dir
                .join("coverage")
                .join(target)
                .join("coverage.profdata"),
        );
    }
    run(&mut merge)?;
    let binaries =
        fuzz_dir.join("target/x86_64-unknown-linux-gnu/coverage/x86_64-unknown-linux-gnu/release");
    let mut report = Command::new(llvm_cov()?);
    report.arg("report").arg(binaries.join(&targets[0]));
    for target in &targets[1..] {
        report.arg("-object").arg(binaries.join(target));
    }
    report
        .arg(format!("-instr-profile={}", merged.display()))
        .arg(workspace_root().join("reloc-core/src"));
    let text = output(&mut report)?;
    let saved = fuzz_dir.join("coverage").join("reloc-core.txt");
    if let Err(e) = fs::write(&saved, &text) {
        println!("xtask: cannot write {}: {e}", saved.display());
    }
    Ok(CoverageTotal::parse(&text))
}

/// The TOTAL line of an `llvm-cov report`: covered and total regions, functions and lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CoverageTotal {
    /// (covered, total) regions.
    pub regions: Option<(u64, u64)>,
    /// (covered, total) functions.
    pub functions: Option<(u64, u64)>,
    /// (covered, total) lines.
    pub lines: Option<(u64, u64)>,
}

impl CoverageTotal {
    /// Reads the `TOTAL` row: for regions, functions, lines and branches the total, the
    /// missed count and a percentage, in that order.
    pub fn parse(report: &str) -> Self {
        let Some(row) = report.lines().find(|l| l.starts_with("TOTAL")) else {
            return Self::default();
        };
        let numbers: Vec<u64> = row
            .split_whitespace()
            .skip(1)
            .filter(|w| !w.ends_with('%') && *w != "-")
            .filter_map(|w| w.parse().ok())
            .collect();
        let pair = |at: usize| {
            let (total, missed) = (*numbers.get(at)?, *numbers.get(at + 1)?);
            Some((total.checked_sub(missed)?, total))
        };
        Self {
            regions: pair(0),
            functions: pair(2),
            lines: pair(4),
        }
    }
}

impl std::fmt::Display for CoverageTotal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |what: &str, pair: Option<(u64, u64)>| match pair {
            Some((covered, total)) if total > 0 => format!(
                "{what} {covered}/{total} ({:.1} %)",
                covered as f64 * 100.0 / total as f64
            ),
            _ => format!("{what} ?"),
        };
        write!(
            f,
            "{}, {}, {}",
            show("regions", self.regions),
            show("functions", self.functions),
            show("lines", self.lines)
        )
    }
}

fn cargo_fuzz_installed() -> Result<(), Error> {
    if succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        step("cargo-fuzz: installed");
        return Ok(());
    }
    let mut install = crate::cargo();
    install.args(["install", "cargo-fuzz", "--locked"]);
    step(&format!("cargo-fuzz: missing, {}", describe(&install)));
    run(&mut install)
}

/// Prints the end of the log and every finding (in hex, `xxd -r -p` turns it back), and
/// copies the findings to `fuzz/artifacts/<target>/`.
fn report_failure(target: &str, log: &str, artifacts: &Path) {
    let lines: Vec<&str> = log.lines().collect();
    for line in &lines[lines.len().saturating_sub(60)..] {
        println!("{line}");
    }
    let kept = workspace_root().join("fuzz").join("artifacts").join(target);
    let Ok(entries) = fs::read_dir(artifacts) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(bytes) = fs::read(entry.path()) else {
            continue;
        };
        let name = entry.file_name();
        let copy = kept.join(&name);
        let copied = fs::create_dir_all(&kept).and_then(|()| fs::write(&copy, &bytes));
        let place = match copied {
            Ok(()) => copy.display().to_string(),
            Err(e) => format!("not copied to {}: {e}", kept.display()),
        };
        println!(
            "finding: {} ({} bytes; {place}), hex:",
            name.to_string_lossy(),
            bytes.len()
        );
        println!(
            "{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
    }
}

/// What a libFuzzer log says about a run, for the summary line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `stat::number_of_executed_units`.
    pub executions: Option<u64>,
    /// `stat::average_exec_per_sec`.
    pub exec_per_sec: Option<u64>,
    /// `cov:` and `ft:` of the last status line (`#N ...`).
    pub cov_ft: Option<(u64, u64)>,
}

impl Stats {
    /// Reads the final statistics (`-print_final_stats=1`) and the last status line.
    pub fn parse(log: &str) -> Self {
        let stat = |key: &str| {
            log.lines()
                .filter_map(|line| line.strip_prefix(key))
                .filter_map(|rest| rest.trim_start_matches(':').trim().parse().ok())
                .next_back()
        };
        let number_after = |words: &[&str], label: &str| {
            let at = words.iter().position(|word| *word == label)?;
            words.get(at + 1)?.parse().ok()
        };
        let cov_ft = log
            .lines()
            .filter(|line| line.starts_with('#'))
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                Some((number_after(&words, "cov:")?, number_after(&words, "ft:")?))
            })
            .next_back();
        Stats {
            executions: stat("stat::number_of_executed_units"),
            exec_per_sec: stat("stat::average_exec_per_sec"),
            cov_ft,
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or_unknown = |n: Option<u64>| n.map_or("?".to_owned(), |n| n.to_string());
        write!(
            f,
            "{} execs, {} exec/s, ",
            or_unknown(self.executions),
            or_unknown(self.exec_per_sec)
        )?;
        match self.cov_ft {
            Some((cov, ft)) => write!(f, "cov {cov} ft {ft}"),
            None => write!(f, "no cov line"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of a libFuzzer run with `-print_final_stats=1`.
    const LOG: &str = "\
INFO: Seed: 1234
#2\tINITED cov: 310 ft: 320 corp: 1/1b exec/s: 0 rss: 30Mb
#1024\tpulse  cov: 420 ft: 1100 corp: 40/2kb lim: 14 exec/s: 512 rss: 40Mb
#4096\tNEW    cov: 428 ft: 1237 corp: 61/3kb lim: 43 exec/s: 4096 rss: 41Mb L: 12/40 MS: 1 ChangeBit-
#3756059\tDONE   cov: 428 ft: 1237 corp: 61/3kb lim: 4096 exec/s: 6249 rss: 420Mb
Done 3756059 runs in 601 second(s)
stat::number_of_executed_units: 3756059
stat::average_exec_per_sec:     6249
stat::new_units_added:          60
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              420
";

    #[test]
    fn final_stats_and_last_status_line() {
        let stats = Stats::parse(LOG);
        assert_eq!(
            stats,
            Stats {
                executions: Some(3_756_059),
                exec_per_sec: Some(6249),
                cov_ft: Some((428, 1237)),
            }
        );
        assert_eq!(
            stats.to_string(),
            "3756059 execs, 6249 exec/s, cov 428 ft 1237"
        );
    }

    /// The end of an `llvm-cov report` (LLVM 19+: regions, functions, lines, branches).
    const REPORT: &str = "\
Filename                      Regions    Missed Regions     Cover   Functions  Missed Functions  Executed       Lines      Missed Lines     Cover    Branches   Missed Branches     Cover
-----------------------------------------------------------------------------------------------------------------------------------------------------------------------------------
plan/walk.rs                      400                40    90.00%          30                 3    90.00%         600                60    90.00%           0                 0         -
-----------------------------------------------------------------------------------------------------------------------------------------------------------------------------------
TOTAL                            1200               300    75.00%         100                20    80.00%        2000               400    80.00%           0                 0         -
";

    #[test]
    fn coverage_total_reads_the_total_row() {
        let total = CoverageTotal::parse(REPORT);
        assert_eq!(
            total,
            CoverageTotal {
                regions: Some((900, 1200)),
                functions: Some((80, 100)),
                lines: Some((1600, 2000)),
            }
        );
        assert_eq!(
            total.to_string(),
            "regions 900/1200 (75.0 %), functions 80/100 (80.0 %), lines 1600/2000 (80.0 %)"
        );
        assert_eq!(
            CoverageTotal::parse("no report").to_string(),
            "regions ?, functions ?, lines ?"
        );
    }

    /// What `fuzz/sancov-scope.sh` passes on to rustc, with `echo` standing in for rustc.
    fn wrapped(args: &[String]) -> Vec<String> {
        let out = Command::new("sh")
            .arg(workspace_root().join("fuzz/sancov-scope.sh"))
            .arg("echo")
            .args(args)
            .output()
            .expect("sh runs");
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .expect("echo prints what it got")
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn reloc_sim_alone_loses_compare_tracing_and_edge_counters() {
        const TRACE: &str = "-Cllvm-args=-sanitizer-coverage-trace-compares";
        const EDGES: &str = "-Cllvm-args=-sanitizer-coverage-level=4";
        const FUNCTIONS: &str = "-Cllvm-args=-sanitizer-coverage-level=1";
        let flags = [
            "-Cpasses=sancov-module",
            EDGES,
            "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
            TRACE,
            "-Zsanitizer=address",
        ];
        let args = |crate_name: &str| -> Vec<String> {
            ["--crate-name", crate_name, "--edition=2021", "src/lib.rs"]
                .iter()
                .chain(&flags)
                .map(|s| (*s).to_owned())
                .collect()
        };
        let sim = wrapped(&args("reloc_sim"));
        let expected: Vec<String> = args("reloc_sim")
            .into_iter()
            .filter(|a| a != TRACE)
            .map(|a| if a == EDGES { FUNCTIONS.to_owned() } else { a })
            .collect();
        assert_eq!(
            sim, expected,
            "reloc-sim keeps every flag but compare tracing, and counts functions, not edges"
        );

        for other in ["reloc_core", "reloc_fuzz", "arbitrary", "reloc_simulator"] {
            assert_eq!(wrapped(&args(other)), args(other), "{other}");
        }

        // The fuzz workspace's cargo configuration is what puts the wrapper in place.
        let config = fs::read_to_string(workspace_root().join("fuzz/.cargo/config.toml"))
            .expect("fuzz/.cargo/config.toml");
        assert!(
            config
                .lines()
                .any(|l| l.trim() == r#"rustc-wrapper = "./sancov-scope.sh""#),
            "{config}"
        );
    }

    #[test]
    fn a_crash_log_has_no_final_stats() {
        let crash = "#2\tINITED cov: 310 ft: 320 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                     ==1==ERROR: AddressSanitizer: heap-buffer-overflow\n";
        let stats = Stats::parse(crash);
        assert_eq!(stats.executions, None);
        assert_eq!(stats.cov_ft, Some((310, 320)));
        assert_eq!(stats.to_string(), "? execs, ? exec/s, cov 310 ft 320");
        assert_eq!(
            Stats::parse("").to_string(),
            "? execs, ? exec/s, no cov line"
        );
    }
}

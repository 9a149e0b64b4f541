//! `cargo xtask mutants`: mutation testing of reloc-core with cargo-mutants.
//!
//! cargo-mutants plants one bug at a time in reloc-core's source (a function body replaced by
//! a default value, an operator swapped, a `!` deleted, a match guard made `true`), builds it
//! and runs reloc-core's own tests (`cargo test -p reloc-core`: unit, integration and doc
//! tests). A mutant the tests still pass on is *missed*: a bug of that shape would go
//! unnoticed. Mutants that cargo-mutants' config (`.cargo/mutants.toml`) lists as equivalent
//! are never generated; each entry there says why it cannot change behaviour.
//!
//! The whole crate takes about an hour on 2 cores. `--in-diff FILE` (a unified diff) or
//! `--since REV` (the diff from REV to the working tree) test only the mutants on changed
//! lines, for use before a commit; CI runs `--since HEAD^` with a mutant cap
//! ([`CI_MAX_MUTANTS`]).
//!
//! `--iterate` re-tests only the mutants the previous run (in the same output directory) did
//! not catch, for the round of adding tests after a full run.
//!
//! The run's files stay in `target/mutants/mutants.out/` (`missed.txt`, `caught.txt`,
//! `outcomes.json`, a log per mutant in `log/`). It fails when any mutant is missed or times
//! out.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{describe, output, seconds, step, succeeds, workspace_root, Error};

/// The cargo-mutants release the counts in `fuzz/README.md` were measured with. Pinned so
/// that the same source gives the same mutants on every machine.
pub const CARGO_MUTANTS_VERSION: &str = "27.1.0";

/// At most this many mutants in CI's diff run (about 2.8 s each at `-j 2`, so about six
/// minutes, keeping CI under 30); a larger diff is sampled with `--shard`, and the output
/// says so.
pub const CI_MAX_MUTANTS: usize = 120;

/// A test run that takes longer than this many seconds counts as a timeout (reloc-core's
/// suite takes about 3 s; a mutant that makes a loop endless would otherwise hang the run).
const TEST_TIMEOUT_SECONDS: u32 = 30;

/// Which mutants to test.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every mutant of reloc-core.
    All,
    /// Only mutants on lines a unified diff adds or changes.
    InDiff(PathBuf),
    /// Only mutants on lines changed since this git revision (working tree included).
    Since(String),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub selection: Selection,
    /// Parallel builds (cargo-mutants `-j`).
    pub jobs: u32,
    /// Test at most this many mutants; more are sampled with `--shard` (the shard chosen by
    /// the current commit, so successive commits sample different mutants).
    pub max_mutants: Option<usize>,
    /// Re-test only what the previous run in `target/mutants` did not catch (cargo-mutants
    /// `--iterate`): after adding tests for its misses, without re-running the rest.
    pub iterate: bool,
}

/// What one run found, counted from cargo-mutants' `*.txt` outcome files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub caught: usize,
    pub missed: usize,
    pub timeout: usize,
    pub unviable: usize,
}

impl Counts {
    /// Caught as a share of the mutants that built and finished (caught, missed, timed out).
    pub fn score(&self) -> Option<f64> {
        let decided = self.caught + self.missed + self.timeout;
        (decided > 0).then(|| self.caught as f64 / decided as f64 * 100.0)
    }
}

/// CI's run: the mutants on the lines the last change touched (`HEAD^`, the first parent, so
/// a merge commit counts as the whole merged branch), at most [`CI_MAX_MUTANTS`]. A clone
/// without history (HEAD has no parent) tests nothing and says so.
pub fn run_for_ci() -> Result<(), Error> {
    if !succeeds(Command::new("git").current_dir(workspace_root()).args([
        "rev-parse",
        "--verify",
        "--quiet",
        "HEAD^",
    ])) {
        step("mutants: HEAD has no parent in this clone (shallow?); no diff to test");
        return Ok(());
    }
    run(&Options {
        selection: Selection::Since("HEAD^".to_owned()),
        jobs: 2,
        max_mutants: Some(CI_MAX_MUTANTS),
        iterate: false,
    })
}

/// Runs cargo-mutants over reloc-core as `options` says and prints the counts, the score and
/// the wall time, then every missed and timed-out mutant.
pub fn run(options: &Options) -> Result<(), Error> {
    let start = Instant::now();
    cargo_mutants_installed()?;
    let root = workspace_root();
    let out_dir = root.join("target").join("mutants");
    let diff = match &options.selection {
        Selection::All => None,
        Selection::InDiff(path) => Some(path.clone()),
        Selection::Since(rev) => Some(diff_since(rev, &out_dir)?),
    };

    if let Some(diff) = &diff {
        let empty = fs::metadata(diff).map_err(|source| Error::Io {
            path: diff.clone(),
            source,
        })?;
        if empty.len() == 0 {
            step("mutants: the diff does not touch reloc-core; nothing to test");
            return Ok(());
        }
    }

    check_exclusions(&root)?;

    let mut base = Command::new("cargo");
    base.current_dir(&root)
        .args(["mutants", "-p", "reloc-core"]);
    if let Some(diff) = &diff {
        base.arg("--in-diff").arg(diff);
    }

    let mut shard = None;
    if let Some(max) = options.max_mutants {
        let listed = output(
            Command::new(base.get_program())
                .args(base.get_args())
                .arg("--list")
                .current_dir(&root),
        )?;
        let count = listed
            .lines()
            .filter(|line| !line.trim().is_empty())
            .count();
        if count == 0 {
            step("mutants: the diff changes no line cargo-mutants can mutate; nothing to test");
            return Ok(());
        }
        if count > max {
            let shards = count.div_ceil(max);
            let index = commit_number()? % shards as u64;
            step(&format!(
                "mutants: {count} mutants in the diff, more than {max}: testing shard \
                 {index}/{shards} only (about {} mutants)",
                count / shards
            ));
            shard = Some(format!("{index}/{shards}"));
        }
    }

    let mut mutants = base;
    mutants
        .args(["--jobs", &options.jobs.to_string()])
        .args(["--timeout", &TEST_TIMEOUT_SECONDS.to_string()])
        .arg("--output")
        .arg(&out_dir);
    if let Some(shard) = &shard {
        mutants.args(["--shard", shard]);
    }
    if options.iterate {
        mutants.arg("--iterate");
    }
    step(&describe(&mutants));
    // cargo-mutants exits 2 when a mutant is missed and 3 on timeouts: the counts below say
    // which, so its status is only checked for the failures it alone can report (a build
    // that does not work unmutated, bad arguments).
    let status = mutants.status().map_err(|source| Error::Spawn {
        command: describe(&mutants),
        source,
    })?;
    let results = out_dir.join("mutants.out");
    let counts = read_counts(&results)?;
    let took = start.elapsed();
    report(&counts, took, shard.as_deref());
    if options.iterate {
        let earlier = read_lines(&results.join("previously_caught.txt"))?.len();
        step(&format!(
            "mutants: --iterate: {earlier} more were caught or unviable in earlier runs and not \
             re-tested (previously_caught.txt)"
        ));
    }
    for (kind, file) in [("missed", "missed.txt"), ("timeout", "timeout.txt")] {
        for line in read_lines(&results.join(file))? {
            println!("  {kind}: {line}");
        }
    }
    if counts.missed > 0 || counts.timeout > 0 {
        return Err(Error::Mutants {
            missed: counts.missed,
            timeout: counts.timeout,
            results,
        });
    }
    match status.code() {
        Some(0) => Ok(()),
        _ => Err(Error::Failed {
            command: describe(&mutants),
            status,
        }),
    }
}

fn report(counts: &Counts, took: Duration, shard: Option<&str>) {
    let score = counts.score().map_or_else(
        || "no mutant built".to_owned(),
        |score| format!("{score:.1} %"),
    );
    let sampled = shard.map_or_else(String::new, |shard| format!(" (shard {shard})"));
    step(&format!(
        "mutants{sampled}: {} caught, {} missed, {} timeout, {} unviable; score {score}; \
         wall time {}",
        counts.caught,
        counts.missed,
        counts.timeout,
        counts.unviable,
        seconds(took)
    ));
}

/// Counts the lines of cargo-mutants' outcome files (one mutant per line).
fn read_counts(results: &Path) -> Result<Counts, Error> {
    let count = |name: &str| read_lines(&results.join(name)).map(|lines| lines.len());
    Ok(Counts {
        caught: count("caught.txt")?,
        missed: count("missed.txt")?,
        timeout: count("timeout.txt")?,
        unviable: count("unviable.txt")?,
    })
}

fn read_lines(path: &Path) -> Result<Vec<String>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect()),
        // cargo-mutants writes no outcome files when the unmutated tree fails.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// One `exclude_re` entry of `.cargo/mutants.toml`: the regex and the comment lines above it.
#[derive(Debug, PartialEq, Eq)]
pub struct Exclusion {
    pub regex: String,
    pub reason: String,
}

/// Reads the `exclude_re` array of cargo-mutants' config. The project's format, which this
/// enforces: one TOML literal string (`'...'`, no escapes) per line, each preceded by `#`
/// comment lines giving the reason. An entry without a reason is an error.
pub fn parse_exclusions(config: &str) -> Result<Vec<Exclusion>, String> {
    let mut lines = config.lines().map(str::trim);
    if !lines.any(|line| line.starts_with("exclude_re") && line.ends_with('[')) {
        return Ok(Vec::new());
    }
    let mut exclusions = Vec::new();
    let mut reason = Vec::new();
    for line in lines {
        if line == "]" {
            return Ok(exclusions);
        }
        if let Some(comment) = line.strip_prefix('#') {
            reason.push(comment.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix('\'') {
            let regex = rest
                .strip_suffix("',")
                .or_else(|| rest.strip_suffix('\''))
                .ok_or_else(|| format!("exclude_re entry not on one line: {line}"))?;
            let text = reason.join(" ");
            if text.is_empty() {
                return Err(format!("exclude_re entry '{regex}' has no reason above it"));
            }
            exclusions.push(Exclusion {
                regex: regex.to_owned(),
                reason: text,
            });
            reason.clear();
        } else if !line.is_empty() {
            return Err(format!(
                "exclude_re: expected a '# reason' line or a 'literal' string, found: {line}"
            ));
        }
    }
    Err("exclude_re: no closing ]".to_owned())
}

/// Every exclusion must have a reason and still match a mutant: code moves, and an entry
/// that matches nothing would hide nothing and mislead the reader.
fn check_exclusions(root: &Path) -> Result<(), Error> {
    let path = root.join(".cargo").join("mutants.toml");
    let config = fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let exclusions = parse_exclusions(&config).map_err(|what| Error::Config {
        path: path.clone(),
        what,
    })?;
    for exclusion in &exclusions {
        let listed = output(
            Command::new("cargo")
                .current_dir(root)
                .args(["mutants", "-p", "reloc-core", "--list", "--no-config"])
                .args(["--re", &exclusion.regex]),
        )?;
        if listed.trim().is_empty() {
            return Err(Error::Config {
                path,
                what: format!(
                    "exclude_re '{}' matches no mutant any more (stale: the code moved or \
                     changed; re-check the reason: {})",
                    exclusion.regex, exclusion.reason
                ),
            });
        }
    }
    step(&format!(
        "mutants: {} exclusions in .cargo/mutants.toml, each with a reason, each matching",
        exclusions.len()
    ));
    Ok(())
}

/// Writes `git diff REV` (reloc-core only, working tree included) to a file under `out_dir`.
fn diff_since(rev: &str, out_dir: &Path) -> Result<PathBuf, Error> {
    let diff = output(Command::new("git").current_dir(workspace_root()).args([
        "diff",
        rev,
        "--",
        "reloc-core",
    ]))?;
    fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let path = out_dir.join("since.diff");
    fs::write(&path, diff).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The number of commits on HEAD: picks the sampled shard, different for each commit.
fn commit_number() -> Result<u64, Error> {
    let count = output(
        Command::new("git")
            .current_dir(workspace_root())
            .args(["rev-list", "--count", "HEAD"]),
    )?;
    Ok(count.trim().parse().unwrap_or(0))
}

fn cargo_mutants_installed() -> Result<(), Error> {
    let version = Command::new("cargo")
        .args(["mutants", "--version"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if let Some(version) = version {
        if version.ends_with(CARGO_MUTANTS_VERSION) {
            step(&format!("{version}: installed"));
            return Ok(());
        }
        step(&format!(
            "{version} installed; the counts were measured with {CARGO_MUTANTS_VERSION}"
        ));
        return Ok(());
    }
    let mut install = crate::cargo();
    install.args([
        "install",
        "cargo-mutants",
        "--locked",
        "--version",
        CARGO_MUTANTS_VERSION,
    ]);
    step(&format!("cargo-mutants: missing, {}", describe(&install)));
    crate::run(&mut install)?;
    if succeeds(Command::new("cargo").args(["mutants", "--version"])) {
        Ok(())
    } else {
        Err(Error::NotOnPath {
            program: "cargo-mutants",
            package: "cargo-mutants",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_is_caught_over_the_mutants_that_built_and_finished() {
        let counts = Counts {
            caught: 90,
            missed: 6,
            timeout: 4,
            unviable: 50,
        };
        assert_eq!(counts.score(), Some(90.0));
        assert_eq!(Counts::default().score(), None);
    }

    #[test]
    fn exclusions_need_a_reason_each_and_read_literal_strings() {
        let config = "profile = \"mutants\"\nexclude_re = [\n    # first reason,\n    # continued\n    'a\\.rs:1: replace \\+ with',\n\n    # second\n    'b'\n]\n";
        assert_eq!(
            parse_exclusions(config).unwrap(),
            vec![
                Exclusion {
                    regex: r"a\.rs:1: replace \+ with".to_owned(),
                    reason: "first reason, continued".to_owned(),
                },
                Exclusion {
                    regex: "b".to_owned(),
                    reason: "second".to_owned(),
                },
            ]
        );
        let no_reason = "exclude_re = [\n    # a reason\n    'a',\n    'b',\n]\n";
        assert!(parse_exclusions(no_reason)
            .unwrap_err()
            .contains("'b' has no reason"));
        assert!(parse_exclusions("exclude_re = [\n    \"a\",\n]\n").is_err());
        assert!(parse_exclusions("exclude_re = [\n    # r\n    'a',\n").is_err());
        assert_eq!(parse_exclusions("profile = \"mutants\"\n").unwrap(), vec![]);
        assert_eq!(parse_exclusions("exclude_re = [\n]\n").unwrap(), vec![]);
    }

    #[test]
    fn counts_come_from_the_outcome_files_and_ignore_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("caught.txt"),
            "a.rs:1:1: x\nb.rs:2:2: y\n\n",
        )
        .unwrap();
        fs::write(dir.path().join("missed.txt"), "c.rs:3:3: z\n").unwrap();
        // No timeout.txt or unviable.txt: read as none.
        assert_eq!(
            read_counts(dir.path()).unwrap(),
            Counts {
                caught: 2,
                missed: 1,
                timeout: 0,
                unviable: 0
            }
        );
    }
}

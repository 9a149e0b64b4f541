//! Project automation for reloc, run as `cargo xtask ...` (the alias is in
//! `.cargo/config.toml`; see the cargo-xtask convention). Every subcommand runs from the
//! workspace root, prints one line per step and exits non-zero on the first failure, with an
//! `error:` line saying what failed and, where something is missing, the command to install it.
//!
//! - `cargo xtask test`: makes sure the machine has what the tests need, then runs
//!   `cargo test --workspace`. The set-up, one line per step, skipping what is there:
//!   the `x86_64-unknown-none` target for the pinned toolchain (`rustup target add`; rustup
//!   adds the targets of `rust-toolchain.toml` only when it installs the toolchain itself), and
//!   the system packages in [`setup::PACKAGES`] (QEMU for the boot tests, binutils for
//!   `readelf`, GRUB's `grub-mkrescue` with its BIOS and x86_64-efi modules, xorriso and mtools
//!   for the GRUB boot tests, OVMF for the UEFI boots of the same images, Bochs
//!   for the `keep-pge` test). As root on Debian or Ubuntu it installs missing packages with `apt-get`
//!   (`apt-get update` first when the package lists do not know them); anywhere else it prints
//!   the one-line command for the platform (`sudo apt-get`, `dnf`, `brew`) and exits non-zero.
//! - `cargo xtask ci [--quick]`: everything CI checks, each step printed with its wall time:
//!   the `test` set-up plus the clippy and rustfmt components, `cargo fmt --check`, clippy for
//!   the host and for the bare-metal target (reloc-core, boot-stub), `cargo doc` with
//!   `-D warnings`, reloc-core in every combination of its features (host clippy, bare-metal
//!   build), `cargo check -p reloc-sim --no-default-features --lib` (the lean library),
//!   reloc-core's README example built as a user's crate outside the workspace for the
//!   bare-metal target (`readme_example`), `cargo publish --dry-run -p reloc-core -p reloc-sim`
//!   (packaging and a build from the packages alone; never an upload), `cargo test
//!   --workspace`, the main job (`cargo run -p reloc-sim --release -- demo`), the mutants of
//!   the last change (`HEAD^..HEAD`, at most [`mutants::CI_MAX_MUTANTS`]), Miri and the fuzz
//!   run.
//!   `--quick` skips the mutants, Miri and fuzzing. `.ci/run` only makes sure rustup and the toolchain
//!   exist, then calls this.
//! - `cargo xtask miri`: reloc-core's tests under Miri with strict provenance, installing the
//!   nightly toolchain and its `miri` and `rust-src` components when missing.
//! - `cargo xtask fuzz [--seconds N] [--coverage] [TARGET]...`: builds the cargo-fuzz targets in `fuzz/`
//!   and runs each (default: all) for N seconds (default 60) from the checked-in seeds,
//!   installing cargo-fuzz when missing. Any crash, timeout, leak or out-of-memory fails it.
//!   Details in `fuzz/README.md`.
//! - `cargo xtask mutants [--in-diff FILE | --since REV] [--iterate] [--jobs N] [--max-mutants N]`:
//!   mutation testing of reloc-core with cargo-mutants (installed when missing): prints
//!   caught / missed / timeout / unviable, the score and the wall time, and fails on any
//!   missed or timed-out mutant. The whole crate takes about an hour on 2 cores; `--in-diff`
//!   and `--since` test only the changed lines. Details in [`mutants`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};

mod ci;
mod fuzz;
mod mutants;
mod readme_example;
mod setup;

#[derive(Parser)]
#[command(
    bin_name = "cargo xtask",
    about = "reloc's project automation: set-up, CI, fuzzing, Miri, mutation testing"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the tests need (bare-metal target, QEMU, binutils), then run
    /// `cargo test --workspace`.
    Test,
    /// Everything CI checks: fmt, clippy, doc, tests, the main job, mutants, Miri, fuzzing.
    Ci {
        /// Skip the mutants, Miri and fuzzing.
        #[arg(long)]
        quick: bool,
    },
    /// reloc-core's tests under Miri (strict provenance), installing nightly Miri if missing.
    Miri,
    /// Run the fuzz targets for a bounded time each, installing cargo-fuzz if missing.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS)]
        seconds: u64,
        /// Then a coverage report of reloc-core's sources per target: `cargo fuzz coverage`
        /// over the run's corpus and the seeds, then `llvm-cov report` (installs nightly's
        /// llvm-tools-preview if missing). A campaign option: CI runs without it.
        #[arg(long)]
        coverage: bool,
        /// Targets to run (default: every target `cargo fuzz list` names).
        targets: Vec<String>,
    },
    /// Mutation testing of reloc-core (cargo-mutants, installed if missing); fails on any
    /// missed or timed-out mutant.
    Mutants {
        /// Only the mutants on lines this unified diff adds or changes.
        #[arg(long, value_name = "FILE", conflicts_with = "since")]
        in_diff: Option<PathBuf>,
        /// Only the mutants on lines changed since this git revision (`git diff REV`).
        #[arg(long, value_name = "REV")]
        since: Option<String>,
        /// Mutants built and tested at once.
        #[arg(long, default_value_t = 2)]
        jobs: u32,
        /// Test at most this many, sampling a shard of a larger set (chosen by the commit).
        #[arg(long, value_name = "N")]
        max_mutants: Option<usize>,
        /// Re-test only the mutants the previous run did not catch (cargo-mutants --iterate).
        #[arg(long)]
        iterate: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Test => setup::for_tests().and_then(|()| run_tests()),
        Task::Ci { quick } => ci::run_all(quick),
        Task::Miri => setup::for_miri().and_then(|()| run_miri()),
        Task::Fuzz {
            seconds,
            coverage,
            targets,
        } => fuzz::run_targets(seconds, coverage, &targets),
        Task::Mutants {
            in_diff,
            since,
            jobs,
            max_mutants,
            iterate,
        } => mutants::run(&mutants::Options {
            selection: match (in_diff, since) {
                (Some(diff), _) => mutants::Selection::InDiff(diff),
                (None, Some(rev)) => mutants::Selection::Since(rev),
                (None, None) => mutants::Selection::All,
            },
            jobs,
            max_mutants,
            iterate,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo test --workspace`: the suite the README names.
fn run_tests() -> Result<(), Error> {
    step("cargo test --workspace");
    run(cargo().args(["test", "--workspace"]))
}

/// reloc-core's tests under Miri. reloc-sim and `tests/` forbid unsafe code and boot-stub's
/// unsafe is bare-metal only, so reloc-core's `DirectMap` is the only host unsafe to check.
fn run_miri() -> Result<(), Error> {
    step("cargo +nightly miri test -p reloc-core (MIRIFLAGS=-Zmiri-strict-provenance)");
    run(cargo()
        .args(["+nightly", "miri", "test", "-p", "reloc-core"])
        .env("MIRIFLAGS", "-Zmiri-strict-provenance"))
}

/// Why a task failed.
#[derive(Debug)]
pub enum Error {
    /// A program could not be started (not installed, not executable).
    Spawn { command: String, source: io::Error },
    /// A command ran and exited unsuccessfully.
    Failed { command: String, status: ExitStatus },
    /// Something must be installed by hand; `install` is the one-line command for it.
    Missing { what: String, install: String },
    /// A package was installed but its program is still not on `PATH`.
    NotOnPath {
        program: &'static str,
        package: &'static str,
    },
    /// Fuzzing found something (the details were printed above).
    FuzzFindings { targets: Vec<String> },
    /// A file-system operation on `path` failed.
    Io { path: PathBuf, source: io::Error },
    /// A configuration file is not as the project requires.
    Config { path: PathBuf, what: String },
    /// Mutation testing found mutants the tests do not catch (listed above; logs in
    /// `results/log/`).
    Mutants {
        missed: usize,
        timeout: usize,
        results: PathBuf,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spawn { command, source } => write!(f, "cannot run `{command}`: {source}"),
            Error::Failed { command, status } => write!(f, "`{command}` failed ({status})"),
            Error::Missing { what, install } => {
                write!(f, "{what} missing; install with:\n{install}")
            }
            Error::NotOnPath { program, package } => write!(
                f,
                "installed {package}, but {program} is still not on PATH ({})",
                std::env::var("PATH").unwrap_or_default()
            ),
            Error::FuzzFindings { targets } => {
                write!(f, "fuzzing failed for {}", targets.join(", "))
            }
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Config { path, what } => write!(f, "{}: {what}", path.display()),
            Error::Mutants {
                missed,
                timeout,
                results,
            } => write!(
                f,
                "{missed} mutants missed and {timeout} timed out (listed above; details in {})",
                results.display()
            ),
        }
    }
}

/// The workspace root: every command runs there.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// Prints a step line.
pub fn step(text: &str) {
    println!("xtask: {text}");
}

/// `cargo` from `PATH` (rustup's proxy, so that `+nightly` works), in the workspace root.
/// Not `$CARGO`: that is the pinned toolchain's own cargo, which does not take `+toolchain`.
pub fn cargo() -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(workspace_root());
    command
}

/// A command in the workspace root.
pub fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    command.current_dir(workspace_root());
    command
}

/// `program arg arg ...`, for messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` with its output shown; fails when it cannot start or exits non-zero.
pub fn run(command: &mut Command) -> Result<(), Error> {
    let status = command.status().map_err(|source| Error::Spawn {
        command: describe(command),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Failed {
            command: describe(command),
            status,
        })
    }
}

/// Runs `command` quietly and returns its stdout; fails (printing what it said) when it
/// cannot start or exits non-zero.
pub fn output(command: &mut Command) -> Result<String, Error> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: describe(command),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        Err(Error::Failed {
            command: describe(command),
            status: out.status,
        })
    }
}

/// True when `command` starts and exits successfully (its output discarded): a probe.
pub fn succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Seconds with one decimal, for step timings.
pub fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

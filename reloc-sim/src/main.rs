//! `reloc-sim`: relocate on a simulated machine and prove it (`demo`), replay scenario files
//! (`replay`), list the mappings of a raw memory dump (`map`), read and lint an image's Xen
//! ELF notes (`notes`).
//!
//! Exit status: 0 success; 1 bad input (file, layout, a virtual layout the code cannot run
//! in before the move, a dump that maps nothing; for `notes`: not an ELF file, a malformed
//! note, or notes libelf rejects); 2 usage; 3 relocation rejected; 4 a property check failed
//! (for `notes`: a lint reported an error; warnings alone exit 0).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reloc_core::PagingMode;
use reloc_sim::demo::{demo_input, demo_options, DemoConfig, DEMO_PLAN_CAPACITY};
use reloc_sim::dump;
use reloc_sim::notes::NotesReport;
use reloc_sim::run::{run, run_with_capacity, RunError, RunReport};
use reloc_sim::scenario::{parse_u64, Hex, Scenario, Virtual};

const EXIT_INPUT: u8 = 1;
const EXIT_REJECTED: u8 = 3;
const EXIT_CHECK_FAILED: u8 = 4;

#[derive(Parser)]
#[command(
    name = "reloc-sim",
    version,
    about = "Simulated x86_64 machine that proves reloc-core relocations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Relocate a Xen-like image on a simulated QEMU pc machine, verify every property, report.
    Demo {
        /// Image size (bytes; suffixes K, M, G; hex with 0x).
        #[arg(long, default_value = "8M", value_parser = parse_size)]
        image_size: u64,
        /// Physical image base (2 MiB-aligned).
        #[arg(long, default_value = "2M", value_parser = parse_size)]
        image_base: u64,
        /// Guest memory, as QEMU's -m.
        #[arg(long, default_value = "4G", value_parser = parse_size)]
        memory: u64,
        /// Paging depth: 4 or 5 (LA57).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
        levels: u8,
        /// Map the directmap with 1 GiB leaves instead of 2 MiB.
        #[arg(long)]
        gib_directmap: bool,
        /// Use a random layout (shared tables, recursive slots, extra leaves, noisy flags)
        /// derived from this seed; the size options are then ignored.
        #[arg(long, value_parser = parse_size)]
        seed: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a scenario file and print the outcome.
    Replay {
        /// The scenario (JSON; format in reloc-sim's README).
        file: PathBuf,
        /// Write the resulting machine state as a scenario.
        #[arg(long)]
        dump: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the page-table mappings inside a raw physical memory dump (QEMU pmemsave).
    Map {
        /// The dump.
        #[arg(long)]
        raw: PathBuf,
        /// CR3 (top-level table; PCID and flag bits ignored).
        #[arg(long, value_parser = parse_size)]
        cr3: u64,
        /// Physical address of the dump's first byte.
        #[arg(long, default_value = "0", value_parser = parse_size)]
        base: u64,
        /// Five-level paging.
        #[arg(long)]
        la57: bool,
        /// One line per leaf, as QEMU's `info tlb` prints it: the leaf entry's own flags
        /// (XGPDACTUW), its frame as QEMU masks it.
        #[arg(long)]
        leaves: bool,
        /// With --leaves: the old per-leaf listing with effective permissions instead (U and
        /// W ANDed over every level, NX ORed), in the coalesced listing's format.
        #[arg(long, requires = "leaves")]
        effective: bool,
    },
    /// Print an image's Xen ELF notes and feature sets (libelf's rules), and lint them.
    Notes {
        /// The ELF image, or a gzip-compressed one (detected by its magic).
        image: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Sizes and addresses: decimal or 0x hex, optional K/M/G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    parse_u64(digits)?
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}` does not fit in 64 bits"))
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            image_size,
            image_base,
            memory,
            levels,
            gib_directmap,
            seed,
            json,
        } => {
            let config = DemoConfig {
                image_size,
                image_base,
                memory,
                paging: if levels == 5 {
                    PagingMode::FiveLevel
                } else {
                    PagingMode::FourLevel
                },
                gib_directmap,
                seed,
            };
            let (input, shares) = match demo_input(&config) {
                Ok(x) => x,
                Err(e) => return fail(EXIT_INPUT, e),
            };
            let title = match seed {
                Some(s) => format!("random layout from seed {s}"),
                None => format!(
                    "Xen-like {} image at {:#x}, {}-level paging, {} of RAM (QEMU pc), directmap with {} leaves",
                    human(image_size),
                    image_base,
                    levels,
                    human(memory),
                    if gib_directmap { "1 GiB" } else { "2 MiB" }
                ),
            };
            finish(
                run_with_capacity::<DEMO_PLAN_CAPACITY>(input, demo_options(shares)),
                &title,
                json,
                None,
            )
        }
        Command::Replay { file, dump, json } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => return fail(EXIT_INPUT, format!("cannot read {}: {e}", file.display())),
            };
            let scenario = match Scenario::from_json(&text) {
                Ok(s) => s,
                Err(e) => return fail(EXIT_INPUT, format!("{}: {e}", file.display())),
            };
            let input = match scenario.to_input() {
                Ok(i) => i,
                Err(e) => return fail(EXIT_INPUT, format!("{}: {e}", file.display())),
            };
            let title = format!("scenario {}", file.display());
            let dump_to = dump.map(|path| (path, scenario.virt));
            finish(
                run(input, demo_options(true)),
                &title,
                json,
                dump_to.as_ref(),
            )
        }
        Command::Map {
            raw,
            cr3,
            base,
            la57,
            leaves,
            effective,
        } => {
            let bytes = match std::fs::read(&raw) {
                Ok(b) => b,
                Err(e) => return fail(EXIT_INPUT, format!("cannot read {}: {e}", raw.display())),
            };
            let lines: Result<Vec<String>, _> = if leaves && !effective {
                dump::tlb_lines(&bytes, base, cr3, la57)
                    .map(|l| l.iter().map(ToString::to_string).collect())
            } else if leaves {
                dump::leaves(&bytes, base, cr3, la57)
                    .map(|l| l.iter().map(ToString::to_string).collect())
            } else {
                dump::mapped_ranges(&bytes, base, cr3, la57)
                    .map(|l| l.iter().map(ToString::to_string).collect())
            };
            match lines {
                Ok(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_INPUT, e),
            }
        }
        Command::Notes { image, json } => {
            let bytes = match std::fs::read(&image) {
                Ok(b) => b,
                Err(e) => return fail(EXIT_INPUT, format!("cannot read {}: {e}", image.display())),
            };
            let name = image.display().to_string();
            let report = match NotesReport::from_bytes(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"file": name, "error": e.to_string()})
                        );
                    }
                    return fail(EXIT_INPUT, format!("{name}: {e}"));
                }
            };
            if json {
                println!("{}", report.json(&name));
            } else {
                print!("{}", report.text(&name));
            }
            if report.has_errors() {
                ExitCode::from(EXIT_CHECK_FAILED)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

fn human(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes:#x} bytes")
    }
}

fn finish(
    result: Result<RunReport, RunError>,
    title: &str,
    json: bool,
    dump_to: Option<&(PathBuf, Option<Virtual>)>,
) -> ExitCode {
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"passed": false, "error_kind": e.kind(), "error": e.to_string()})
                );
            }
            let code = match e {
                RunError::Select(_)
                | RunError::Plan(_)
                | RunError::Switch(_)
                | RunError::Relocate(_) => EXIT_REJECTED,
                RunError::Virtual(_) => EXIT_INPUT,
                RunError::Access(_) => EXIT_CHECK_FAILED,
            };
            return fail(code, e);
        }
    };
    if let Some((path, virt)) = dump_to {
        let new = report.request.new_base.as_u64();
        let image = reloc_core::PhysRange::new(new, new + report.request.image.len());
        let maps: Vec<u64> = report
            .request
            .image_maps
            .iter()
            .map(|m| m.as_u64().wrapping_add(report.request.delta()))
            .collect();
        let virt = virt.map(|v| Virtual {
            rsp: Hex(report.machine.rsp),
            ..v
        });
        let s = Scenario::from_machine(
            &report.machine,
            image,
            &maps,
            virt,
            format!("state after {title}"),
        );
        if let Err(e) = std::fs::write(path, s.to_json()) {
            return fail(EXIT_INPUT, format!("cannot write {}: {e}", path.display()));
        }
    }
    if json {
        println!("{}", json_report(&report, title));
    } else {
        print!("{}", text_report(&report, title));
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        let (p, v) = report
            .first_violation()
            .map(|(p, v)| (p.name(), v.to_string()))
            .unwrap_or(("?", String::new()));
        fail(EXIT_CHECK_FAILED, format!("check {p} failed: {v}"))
    }
}

fn text_report(r: &RunReport, title: &str) -> String {
    let a = &r.apply;
    let s = &r.switch;
    let mut out = format!("reloc-sim: {title}\n");
    out += &format!("  old base          {:#x}\n", r.request.image.start);
    out += &format!(
        "  new base          {:#x}{}\n",
        r.request.new_base.as_u64(),
        if r.target_selected {
            " (reloc-core's selection)"
        } else {
            " (given)"
        }
    );
    out += &format!(
        "  bytes copied      {} ({})\n",
        a.bytes_copied,
        human(a.bytes_copied)
    );
    out += &format!(
        "  tables rebased    {} ({})\n",
        a.tables_rebased.total(),
        RunReport::per_level(&a.tables_rebased)
    );
    out += &format!(
        "  entries rebased   {} pointers ({}), {} image leaves\n",
        a.pointers_rebased.total(),
        RunReport::per_level(&a.pointers_rebased),
        a.image_leaves_rebased
    );
    out += &format!(
        "  TLB flushed       {} of {} entries (PGE toggle {}, CR3 load {}){}\n",
        s.tlb_flushed(),
        r.tlb_entries_before,
        s.tlb_flushed_by_pge,
        s.tlb_flushed_by_cr3,
        match r.stale_without_pge {
            Some(n) => format!("; without the PGE toggle {n} stale entries would remain"),
            None => String::new(),
        }
    );
    out += &format!(
        "  critical region   {} write(s) through the old mapping, {} rescued by the {}-byte stack re-copy\n",
        r.critical_writes, r.critical_writes_rescued, s.stack_bytes_recopied
    );
    out += &format!(
        "  verified          {} virtual ranges ({} leaves)\n",
        r.ranges_verified, r.leaves_verified
    );
    for p in &r.properties {
        match &p.result {
            Ok(detail) => out += &format!("    ok    {:<20} {detail}\n", p.property.name()),
            Err(v) => out += &format!("    FAIL  {:<20} {v}\n", p.property.name()),
        }
    }
    out += &format!(
        "  time              {:.1} ms\n",
        r.elapsed.as_secs_f64() * 1e3
    );
    let passed = r.properties.iter().filter(|p| p.result.is_ok()).count();
    out += &format!("result: {passed} of {} checks passed\n", r.properties.len());
    out
}

fn json_report(r: &RunReport, title: &str) -> serde_json::Value {
    use reloc_core::Level;
    let per_level = |c: &reloc_core::PerLevel| {
        serde_json::json!({
            "L5": c.get(Level::L5), "L4": c.get(Level::L4),
            "L3": c.get(Level::L3), "L2": c.get(Level::L2),
        })
    };
    serde_json::json!({
        "title": title,
        "passed": r.passed(),
        "old_base": format!("{:#x}", r.request.image.start),
        "new_base": format!("{:#x}", r.request.new_base.as_u64()),
        "target_selected": r.target_selected,
        "image_size": r.request.image.len(),
        "bytes_copied": r.apply.bytes_copied,
        "tables_rebased": per_level(&r.apply.tables_rebased),
        "pointers_rebased": per_level(&r.apply.pointers_rebased),
        "image_leaves_rebased": r.apply.image_leaves_rebased,
        "tlb_entries_before_switch": r.tlb_entries_before,
        "tlb_flushed": r.switch.tlb_flushed(),
        "tlb_flushed_by_pge_toggle": r.switch.tlb_flushed_by_pge,
        "tlb_flushed_by_cr3_load": r.switch.tlb_flushed_by_cr3,
        "stale_tlb_entries_without_pge_toggle": r.stale_without_pge,
        "stack_bytes_recopied": r.switch.stack_bytes_recopied,
        "critical_region_writes": r.critical_writes,
        "critical_region_writes_rescued": r.critical_writes_rescued,
        "virtual_ranges_verified": r.ranges_verified,
        "leaves_verified": r.leaves_verified,
        "properties": r.properties.iter().map(|p| serde_json::json!({
            "name": p.property.name(),
            "passed": p.result.is_ok(),
            "detail": match &p.result { Ok(d) => d.clone(), Err(v) => v.to_string() },
        })).collect::<Vec<_>>(),
        "elapsed_ms": r.elapsed.as_secs_f64() * 1e3,
    })
}

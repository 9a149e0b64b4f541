//! Fuzzing a hypervisor's own boot tables with reloc-sim's oracle, driven by `arbitrary`.
//!
//! [`fuzz_one`] is what a cargo-fuzz target calls (`fuzz_target!(|data: &[u8]| fuzz_one(data))`):
//! the fuzzer's bytes choose the machine ([`CaseSpec::case`]) and scribble over the
//! hypervisor's tables; reloc-core plans the move; an accepted plan is applied and checked,
//! a rejected one must leave memory bit-identical. Any violated property panics, which
//! the fuzzer reports. The tests below run it on a few fixed inputs.

#[path = "common/tables.rs"]
mod tables;

use arbitrary::Unstructured;
use reloc_core::Plan;
use reloc_sim::case::{CaseSpec, CHOICES};
use reloc_sim::paging::WalkConfig;
use reloc_sim::{check, Expectation, Snapshot};
use tables::write_boot_tables;

/// One fuzz input: decode, build, relocate, check. Panics on a violated property.
pub fn fuzz_one(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let choices: Vec<u64> = (0..CHOICES).map(|_| u.arbitrary().unwrap_or(0)).collect();
    let Ok(case) = CaseSpec::default().case(&choices) else {
        return;
    };
    let mut mem = case.memory();
    let tables = write_boot_tables(&mut mem, case.paging, case.image);
    // The fuzzer also corrupts table entries: reloc-core must reject what it cannot move
    // and move the rest exactly.
    let table_bytes = tables.next_free - case.image.start;
    // (`arbitrary` reads zeros once the bytes run out: stop there, and after 16 writes.)
    for _ in 0..16 {
        if u.is_empty() {
            break;
        }
        let offset = u.int_in_range(0..=table_bytes / 8 - 1).unwrap_or(0);
        let value: u64 = u.arbitrary().unwrap_or(0);
        let _ = mem.write(case.image.start + offset * 8, value);
    }
    let request = tables.request(case.paging, case.image, case.target);
    let paging = WalkConfig::of_request(&request);

    let before = Snapshot::of_memory(&mem, paging);
    let result = Plan::new(&mem, &request).map(|plan| plan.apply(&mut mem));
    let report = check(
        &before,
        &Snapshot::of_memory(&mem, paging),
        &Expectation::for_outcome(&request, &result),
    );
    report.assert_passed();
}

fn main() {
    let data = std::env::args().nth(1).unwrap_or_default();
    fuzz_one(data.as_bytes());
    println!("no property violated");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_inputs_hold() {
        let inputs: [&[u8]; 4] = [
            b"",
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00",
            &[0xff; 200],
            b"reloc-sim fuzzes a hypervisor's own tables, with a few corrupted entries at the end:\
              \x10\x00\x00\x00\x00\x00\x00\x00\xe3\x00\x00\x00\x00\x00\x00\x80",
        ];
        for input in inputs {
            fuzz_one(input);
        }
    }

    /// The oracle behind `fuzz_one` fails on a wrong move: the same inputs with the image
    /// leaves' rebase undone are caught.
    #[test]
    fn a_wrong_move_is_caught() {
        let case = CaseSpec::default().case(&[]).expect("a case");
        let mut mem = case.memory();
        let tables = write_boot_tables(&mut mem, case.paging, case.image);
        let request = tables.request(case.paging, case.image, case.target);
        let paging = WalkConfig::of_request(&request);
        let before = Snapshot::of_memory(&mem, paging);
        let plan = Plan::new(&mem, &request).expect("accepted");
        plan.apply(&mut mem);
        // Undo the rebase of the first image leaf in the new copy (a relocator that forgets
        // the image leaves).
        let delta = case.target - case.image.start;
        let leaf_at = tables.image_map[0].as_u64() + delta; // KERNEL_VIRT is L2 slot 0
        let leaf = mem.read(leaf_at).expect("in RAM");
        mem.write(leaf_at, leaf - delta).expect("in RAM");
        let report = check(
            &before,
            &Snapshot::of_memory(&mem, paging),
            &Expectation::moved(&request),
        );
        assert!(!report.passed(), "{report}");
    }
}

//! The CR4.PGE toggle on a CPU model that needs it: Bochs 2.7 keeps global TLB entries
//! across a CR3 load (`SetCR3` flushes only non-global entries while CR4.PGE is set;
//! `cpu/crregs.cc`, `cpu/tlb.h`), where QEMU's TCG and this machine's KVM flush them all.
//!
//! Three boots of the same GRUB image under Bochs:
//! - the normal stub (reloc-core's switch) relocates and verifies;
//! - `split-switch` (copy, rewrite a global, switch with the toggle) relocates and verifies;
//! - `keep-pge` (the same without the toggle) fails with MISMATCH lines: the rewritten
//!   global's page kept its global translation to the old copy, so the post-switch write
//!   landed there.
//!
//! Runs only where Bochs is installed (`cargo xtask test` installs it); elsewhere it prints,
//! past the harness's capture, that it did not run.

use std::time::Duration;

use reloc_tests::output::{check_relocation, StubOutput};
use reloc_tests::{bochs, grub, qemu};

/// A Bochs boot through GRUB takes 3 to 5 s here; the margin is for loaded machines.
const TIMEOUT: Duration = Duration::from_secs(180);

fn boot(stub_args: &str) -> bochs::BochsRun {
    let iso =
        grub::build(qemu::boot_stub_image(), stub_args, &[]).unwrap_or_else(|e| panic!("{e}"));
    let run = bochs::boot_iso(iso.iso(), TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !run.timed_out,
        "Bochs `{stub_args}` timed out after {:?}; serial:\n{}",
        run.elapsed, run.serial
    );
    eprintln!("Bochs `{stub_args}`: {:?}", run.elapsed);
    run
}

#[test]
fn bochs_shows_that_the_pge_toggle_is_needed() {
    if let Err(why) = bochs::check_installed(&std::env::var_os("PATH").unwrap_or_default()) {
        qemu::notice(&format!(
            "the Bochs keep-pge test did NOT run: {why}; `cargo xtask test` installs Bochs"
        ));
        return;
    }
    for args in ["", "split-switch"] {
        let run = boot(args);
        let out = StubOutput::parse(&run.serial).unwrap_or_else(|e| panic!("{e}\n{}", run.serial));
        check_relocation(&out, &run.serial);
    }

    let run = boot("keep-pge");
    assert!(
        run.serial
            .contains("reloc: FAILED: verification failed: 2 check(s) differ"),
        "keep-pge should fail under Bochs:\n{}",
        run.serial
    );
    for line in ["verify: global write read at new", "verify: global at old"] {
        assert!(
            run.serial
                .lines()
                .any(|l| l.starts_with(line) && l.ends_with("MISMATCH")),
            "`{line}` should differ:\n{}",
            run.serial
        );
    }
    // Everything else, the software walks of the new tables included, still agrees: the
    // tables are right, only the TLB is stale.
    let out = StubOutput::parse(&run.serial).unwrap();
    assert_eq!(out.checks_failed, 2, "{}", run.serial);
    assert!(out.summary.is_none());
}

//! Booting a GRUB rescue image under Bochs 2.7, a CPU model whose TLB keeps global entries
//! across a CR3 load (QEMU's TCG and this machine's KVM flush them).
//!
//! Debian's Bochs is built with its debugger, so it stops at a prompt first: `-rc` hands it
//! a file holding `c` (continue). Its `term` display needs a terminal, so it runs under
//! `script -qc ... /dev/null` (a pseudo-terminal). COM1 goes to a file, which the harness
//! polls for the stub's last line; then it kills Bochs, which has no exit device (the stub
//! halts).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bochs' configuration for `iso`, COM1 into `serial`: 256 MiB, one Sandy Bridge CPU (long
/// mode, PGE), no clock sync (run as fast as the host allows).
pub fn bochsrc(iso: &Path, serial: &Path) -> String {
    format!(
        "megs: 256\n\
         cpu: model=corei7_sandy_bridge_2600k, count=1, ips=200000000\n\
         romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
         vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
         ata0-master: type=cdrom, path={}, status=inserted\n\
         boot: cdrom\n\
         com1: enabled=1, mode=file, dev={}\n\
         display_library: term\n\
         panic: action=fatal\n\
         error: action=report\n\
         info: action=ignore\n\
         clock: sync=none\n",
        iso.display(),
        serial.display()
    )
}

/// The programs and files a Bochs boot needs, with their Debian packages.
const NEEDS: [(&str, &str); 5] = [
    ("bochs", "bochs"),
    ("script", "bsdutils"),
    ("/usr/share/bochs/BIOS-bochs-latest", "bochsbios"),
    ("/usr/share/vgabios/vgabios.bin", "vgabios"),
    (
        "/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so",
        "bochs-term",
    ),
];

/// How to install Bochs on Debian or Ubuntu.
pub const INSTALL_HINT: &str = "apt-get install -y bochs bochsbios vgabios bochs-term";

/// `Ok` when Bochs and everything it needs here is installed; otherwise what is missing.
pub fn check_installed(path_var: &std::ffi::OsStr) -> Result<(), String> {
    let missing = crate::missing_tools(&NEEDS, path_var);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing {} (`{INSTALL_HINT}`)", missing.join(", ")))
    }
}

/// How a Bochs boot ended.
#[derive(Clone, Debug)]
pub struct BochsRun {
    /// What the stub (and GRUB before it) printed on COM1, `\r` removed.
    pub serial: String,
    /// True when no last line came before the timeout.
    pub timed_out: bool,
    /// From start to the last line (or the timeout).
    pub elapsed: Duration,
}

/// The stub's last line of a run: the summary, a failure, or a panic.
fn finished(serial: &str) -> bool {
    // Only whole lines: the file is polled while Bochs writes it, and a summary line caught
    // half-written fails to parse.
    let complete = serial.rsplit_once('\n').map_or("", |(lines, _)| lines);
    complete.lines().any(|l| {
        l.starts_with("reloc: moved") || l.starts_with("reloc: FAILED") || l.starts_with("panic:")
    })
}

struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        // `script` runs Bochs in its own process group (set below): end the whole group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots `iso` under Bochs and returns what the stub printed once it printed its last line.
pub fn boot_iso(iso: &Path, timeout: Duration) -> Result<BochsRun, String> {
    use std::os::unix::process::CommandExt;

    let dir: PathBuf = crate::grub::temp_dir("bochs").map_err(|e| e.to_string())?;
    let serial = dir.join("com1.txt");
    let config = dir.join("bochsrc");
    let commands = dir.join("debugger.rc");
    std::fs::write(&config, bochsrc(iso, &serial)).map_err(|e| e.to_string())?;
    std::fs::write(&commands, "c\n").map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("bochs.out")).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child = Command::new("script")
        .arg("-qc")
        .arg(format!(
            "bochs -q -f {} -rc {} -log {}",
            config.display(),
            commands.display(),
            dir.join("bochs.log").display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start bochs under script: {e}"))?;
    let mut running = Running { child };
    let read = || {
        std::fs::read(&serial)
            .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
            .unwrap_or_default()
    };
    let result = loop {
        let text = read();
        if finished(&text) {
            break BochsRun {
                serial: text,
                timed_out: false,
                elapsed: started.elapsed(),
            };
        }
        if started.elapsed() >= timeout {
            break BochsRun {
                serial: text,
                timed_out: true,
                elapsed: started.elapsed(),
            };
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            let out = std::fs::read_to_string(dir.join("bochs.out")).unwrap_or_default();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!(
                "bochs exited ({status}) before the stub finished; serial:\n{}\nbochs:\n{out}",
                read()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_written_last_line_is_not_the_end() {
        assert!(!finished(
            "boot\nreloc: moved 0x200000+0x61000 -> 0xfc00000 tables=10"
        ));
        assert!(finished(
            "boot\nreloc: moved 0x200000+0x61000 -> 0xfc00000 tables=10 leaves=1 paging=4-level ok\n"
        ));
        assert!(finished("reloc: FAILED: verification failed\n"));
        assert!(!finished("panic: at"));
    }

    #[test]
    fn bochsrc_boots_the_cdrom_with_com1_to_a_file_and_the_term_display() {
        let rc = bochsrc(Path::new("/tmp/x.iso"), Path::new("/tmp/com1.txt"));
        for line in [
            "ata0-master: type=cdrom, path=/tmp/x.iso, status=inserted",
            "boot: cdrom",
            "com1: enabled=1, mode=file, dev=/tmp/com1.txt",
            "display_library: term",
        ] {
            assert!(rc.lines().any(|l| l == line), "no `{line}` in\n{rc}");
        }
    }

    #[test]
    fn a_run_ends_at_the_summary_a_failure_or_a_panic() {
        assert!(!finished("boot-stub: multiboot2 entry\nverify: x ok\n"));
        assert!(finished(
            "reloc: moved 0x200000+0x1 -> 0x400000 tables=1 leaves=1 paging=4-level ok\n"
        ));
        assert!(finished(
            "reloc: FAILED: verification failed: 2 check(s) differ\n"
        ));
        assert!(finished("panic: at stub.rs:1\n"));
    }

    #[test]
    fn missing_bochs_is_named_with_the_install_command() {
        let err =
            check_installed(std::ffi::OsStr::new("/nonexistent-dir-for-reloc-tests")).unwrap_err();
        assert!(err.contains("bochs (bochs)"), "{err}");
        assert!(err.contains(INSTALL_HINT), "{err}");
    }
}

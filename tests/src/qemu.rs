//! A small QEMU harness for the boot-stub.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The QEMU binary the tests use.
pub const QEMU: &str = "qemu-system-x86_64";

/// How long a boot may take before the harness kills QEMU. Boots take about 0.2 s; the
/// margin is for loaded CI machines.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The boot-stub's exit codes (`boot-stub/src/exit.rs`) as QEMU statuses, `(code << 1) | 1`.
pub mod status {
    /// 0x10: relocated and verified.
    pub const SUCCESS: i32 = 33;
    /// 0x11: bad `hvm_start_info`.
    pub const BAD_BOOT_INFO: i32 = 35;
    /// 0x12: no room for a second copy.
    pub const NO_ROOM: i32 = 37;
    /// 0x13: plan or switch-parameter error.
    pub const PLAN_ERROR: i32 = 39;
    /// 0x14: a post-switch check failed.
    pub const VERIFY_FAILED: i32 = 41;
    /// 0x15: panic, or a CPU exception the stub's IDT reported.
    pub const PANIC: i32 = 43;
    /// 0x16: the image lies over memory the map does not report as RAM.
    pub const IMAGE_NOT_RAM: i32 = 45;
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Finds `name` in the directories of `path_var` (a `PATH`-style list).
fn find_in_path(name: &str, path_var: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Locates QEMU in `path_var`, or explains how to install it.
pub fn find_qemu(path_var: &OsStr) -> Result<PathBuf, String> {
    find_in_path(QEMU, path_var).ok_or_else(|| {
        format!(
            "{QEMU} not found on PATH: the boot-stub tests need QEMU 7.2 or later. \
             Run `cargo xtask test`, which installs it (as root on Debian/Ubuntu: \
             `apt-get install -y qemu-system-x86`) or prints the command for this machine."
        )
    })
}

/// QEMU from `PATH`; panics with an install hint when it is missing (a failure, not a skip).
pub fn qemu_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_qemu(&path).unwrap_or_else(|hint| panic!("{hint}"))
}

/// Builds the boot-stub in release for `x86_64-unknown-none`, once per test process, in its
/// own target directory (`target/boot-stub`): a nested build in the outer `cargo test`'s
/// target directory would wait forever for its lock. Panics with cargo's output on failure.
pub fn boot_stub_image() -> &'static Path {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = IMAGE.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target").join("boot-stub");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "-p",
                "boot-stub",
                "--release",
                "--target",
                "x86_64-unknown-none",
            ])
            .env("CARGO_TARGET_DIR", &target_dir)
            .output()
            .map_err(|e| format!("cannot run cargo to build the boot-stub: {e}"))?;
        if !output.status.success() {
            return Err(build_failure(
                &output.status.to_string(),
                &String::from_utf8_lossy(&output.stderr),
            ));
        }
        Ok(target_dir
            .join("x86_64-unknown-none")
            .join("release")
            .join("boot-stub"))
    });
    match built {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// The message for a failed boot-stub build: cargo's output, led by the fix when the cause
/// is the bare-metal target missing from the toolchain (rustup adds the targets of
/// `rust-toolchain.toml` only when it installs the toolchain itself).
fn build_failure(status: &str, stderr: &str) -> String {
    let hint = if stderr.contains("the `x86_64-unknown-none` target may not be installed") {
        "the x86_64-unknown-none target is not installed for this toolchain: run \
         `cargo xtask test`, which installs it (`rustup target add x86_64-unknown-none`).\n"
    } else {
        ""
    };
    format!("{hint}building the boot-stub failed ({status}):\n{stderr}")
}

/// How QEMU is given the boot-stub.
#[derive(Clone, Debug)]
pub enum Medium {
    /// `-kernel IMAGE`: QEMU's own loader, which enters through the PVH note.
    Kernel(PathBuf),
    /// `-cdrom ISO`: firmware boots the disc (a GRUB rescue image, see [`crate::grub`]).
    Cdrom(PathBuf),
}

/// QEMU arguments that run a boot under KVM with the host CPU. `arch-capabilities` is off
/// because this machine's KVM refuses the MSR (0x10a) QEMU would otherwise set up.
pub const KVM_ARGS: [&str; 4] = ["-accel", "kvm", "-cpu", "host,-arch-capabilities"];

/// `Ok` when `/dev/kvm` can be opened for reading and writing (what QEMU needs for
/// `-accel kvm`); otherwise why not.
pub fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm is not usable: {e}"))
}

/// Writes `message` straight to the process's stderr, past the test harness's capture, so
/// that it shows in `cargo test` output even when the test passes (for "ran TCG only" and
/// "did not run" notices, which must not be silent).
pub fn notice(message: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "note: {message}");
}

/// `args` as a notice shows them: `{args:?}`, with any argument over 64 bytes (a long
/// command line) cut to its first 32 bytes and its length.
pub fn shown_args(args: &[&str]) -> String {
    let shown: Vec<String> = args
        .iter()
        .map(|arg| match arg.get(..32) {
            Some(head) if arg.len() > 64 => format!("{head}... ({} bytes)", arg.len()),
            _ => (*arg).to_owned(),
        })
        .collect();
    format!("{shown:?}")
}

/// What to start.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// Arguments after the fixed ones (`-m 6G`, `-machine q35`, `-append hold`, ...).
    pub args: Vec<String>,
    /// Start an HMP monitor on a unix socket.
    pub monitor: bool,
}

impl QemuConfig {
    /// The given extra arguments, no monitor.
    pub fn new<S: AsRef<str>>(args: &[S]) -> Self {
        Self {
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            monitor: false,
        }
    }

    /// Adds an HMP monitor on a unix socket.
    pub fn with_monitor(mut self) -> Self {
        self.monitor = true;
        self
    }
}

/// A running QEMU with the boot-stub: serial output collected in the background.
pub struct Qemu {
    child: Child,
    serial: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    monitor_path: Option<PathBuf>,
    monitor: Option<UnixStream>,
    started: Instant,
}

/// How a boot ended.
#[derive(Clone, Debug)]
pub struct Finished {
    /// QEMU's exit status code; `None` when killed by a signal (or by the timeout).
    pub status: Option<i32>,
    /// True when the harness killed QEMU at the timeout.
    pub timed_out: bool,
    /// Everything the stub printed on COM1, `\r` removed.
    pub serial: String,
    /// QEMU's own stderr.
    pub stderr: String,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl Finished {
    /// Panics unless QEMU (run with `args`) exited with [`status::SUCCESS`] before the
    /// timeout; then the stub's parsed output. The message carries the serial output.
    pub fn expect_success(&self, args: &[&str]) -> crate::output::StubOutput {
        assert!(
            !self.timed_out,
            "QEMU {args:?} timed out; serial:\n{}",
            self.serial
        );
        assert_eq!(
            self.status,
            Some(status::SUCCESS),
            "QEMU {args:?} exit status; serial:\n{}\nstderr:\n{}",
            self.serial,
            self.stderr
        );
        crate::output::StubOutput::parse(&self.serial)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.serial))
    }
}

fn collect<R: Read + Send + 'static>(source: R, sink: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut line = Vec::new();
        while let Ok(n) = reader.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            if let Ok(mut all) = sink.lock() {
                all.push_str(&text);
            }
            line.clear();
        }
    })
}

impl Qemu {
    /// Boots `image` through `-kernel` (PVH) with `config`.
    pub fn spawn(image: &Path, config: &QemuConfig) -> io::Result<Self> {
        Self::spawn_medium(&Medium::Kernel(image.to_path_buf()), config)
    }

    /// Boots `medium` with `config`.
    pub fn spawn_medium(medium: &Medium, config: &QemuConfig) -> io::Result<Self> {
        static INSTANCE: AtomicU32 = AtomicU32::new(0);
        let mut command = Command::new(qemu_binary());
        command
            .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        match medium {
            Medium::Kernel(image) => command.arg("-kernel").arg(image),
            Medium::Cdrom(iso) => command.arg("-cdrom").arg(iso),
        };
        command
            .args(&config.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let monitor_path = config.monitor.then(|| {
            std::env::temp_dir().join(format!(
                "reloc-qemu-{}-{}.sock",
                std::process::id(),
                INSTANCE.fetch_add(1, Ordering::Relaxed)
            ))
        });
        if let Some(path) = &monitor_path {
            let _ = std::fs::remove_file(path);
            command
                .arg("-monitor")
                .arg(format!("unix:{},server=on,wait=off", path.display()));
        }
        let started = Instant::now();
        let mut child = command.spawn()?;
        let serial = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(collect(out, serial.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect(err, stderr.clone()));
        }
        Ok(Self {
            child,
            serial,
            stderr,
            readers,
            monitor_path,
            monitor: None,
            started,
        })
    }

    /// The serial output so far.
    pub fn serial(&self) -> String {
        self.serial.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until a serial line contains `needle`; returns that line, or `None` at the
    /// timeout or when QEMU exits first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.serial().lines().find(|l| l.contains(needle)) {
                return Some(line.to_owned());
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                // One last look: the line may have arrived with the exit.
                return self
                    .serial()
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_owned);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one HMP command and returns its reply (the text between the echoed command and
    /// the next `(qemu)` prompt, escape sequences and `\r` removed). Connects on first use.
    pub fn monitor(&mut self, command: &str) -> io::Result<String> {
        if self.monitor.is_none() {
            let path = self.monitor_path.clone().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "started without a monitor")
            })?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let stream = loop {
                match UnixStream::connect(&path) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            };
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.monitor = Some(stream);
            read_until_prompt(self.monitor.as_mut().expect("just set"))?;
        }
        let stream = self.monitor.as_mut().expect("connected above");
        stream.write_all(command.as_bytes())?;
        stream.write_all(b"\n")?;
        let raw = read_until_prompt(stream)?;
        let clean = strip_escapes(&raw);
        // The monitor echoes the command line first.
        let reply = match clean.find('\n') {
            Some(end) if clean[..end].contains(command.trim()) => &clean[end + 1..],
            _ => &clean[..],
        };
        Ok(reply.trim_end().to_owned())
    }

    /// Waits for QEMU to exit, killing it at `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let deadline = self.started + timeout;
        let mut timed_out = false;
        let status: Option<ExitStatus> = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(_) => break None,
            }
        };
        let elapsed = self.started.elapsed();
        self.finish(status, timed_out, elapsed)
    }

    /// Kills QEMU (e.g. after a `hold`) and returns what it printed.
    pub fn kill(mut self) -> Finished {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        let elapsed = self.started.elapsed();
        self.finish(status, false, elapsed)
    }

    fn finish(
        &mut self,
        status: Option<ExitStatus>,
        timed_out: bool,
        elapsed: Duration,
    ) -> Finished {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Finished {
            status: if timed_out {
                None
            } else {
                status.and_then(|s| s.code())
            },
            timed_out,
            serial: self.serial(),
            stderr: self.stderr.lock().map(|s| s.clone()).unwrap_or_default(),
            elapsed,
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(path) = &self.monitor_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reads from the monitor until the `(qemu) ` prompt.
fn read_until_prompt(stream: &mut UnixStream) -> io::Result<String> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while !bytes.ends_with(b"(qemu) ") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "monitor closed",
            ));
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    bytes.truncate(bytes.len() - b"(qemu) ".len());
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) and `\r`.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            _ => out.push(c),
        }
    }
    out
}

/// Boots the stub with `args` and waits (up to [`DEFAULT_TIMEOUT`]).
pub fn boot<S: AsRef<str>>(args: &[S]) -> Finished {
    // QEMU first: a missing QEMU is the likelier problem and has the clearer message.
    qemu_binary();
    let image = boot_stub_image();
    boot_medium(&Medium::Kernel(image.to_path_buf()), args, DEFAULT_TIMEOUT)
}

/// Boots `medium` with `args` and waits up to `timeout`.
pub fn boot_medium<S: AsRef<str>>(medium: &Medium, args: &[S], timeout: Duration) -> Finished {
    let qemu = Qemu::spawn_medium(medium, &QemuConfig::new(args))
        .unwrap_or_else(|e| panic!("cannot start {QEMU}: {e}"));
    qemu.wait(timeout)
}

/// Boots the stub with `-append hold` plus `args` and a monitor, and waits until it has
/// relocated and halted (`reloc: holding`), so that its memory and registers can be read.
pub fn boot_and_hold<S: AsRef<str>>(args: &[S]) -> Qemu {
    qemu_binary();
    let image = boot_stub_image();
    let mut all: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    all.extend(["-append", "hold"]);
    let mut vm = Qemu::spawn(image, &QemuConfig::new(&all).with_monitor())
        .unwrap_or_else(|e| panic!("cannot start {QEMU}: {e}"));
    if vm
        .wait_for_line("reloc: holding", DEFAULT_TIMEOUT)
        .is_none()
    {
        panic!("the stub did not hold:\n{}", vm.serial());
    }
    vm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_qemu_gives_install_hint() {
        let err = find_qemu(OsStr::new("/nonexistent-dir-for-reloc-tests")).unwrap_err();
        assert!(err.contains(QEMU), "{err}");
        assert!(err.contains("apt-get install -y qemu-system-x86"), "{err}");
    }

    #[test]
    fn missing_qemu_names_cargo_xtask_test() {
        let err = find_qemu(OsStr::new("/nonexistent-dir-for-reloc-tests")).unwrap_err();
        assert!(err.contains("`cargo xtask test`"), "{err}");
    }

    /// The end of cargo's output building the stub for a target rustup has not added (here
    /// rustc 1.95.0's message, with the real target name).
    const MISSING_TARGET: &str = "   Compiling volatile v0.4.6
error[E0463]: can't find crate for `core`
  |
  = note: the `x86_64-unknown-none` target may not be installed
  = help: consider downloading the target with `rustup target add x86_64-unknown-none`

error: could not compile `volatile` (lib) due to 1 previous error
";

    #[test]
    fn missing_target_names_cargo_xtask_test_first() {
        let message = build_failure("exit status: 101", MISSING_TARGET);
        assert!(
            message.starts_with("the x86_64-unknown-none target is not installed"),
            "{message}"
        );
        assert!(message.contains("`cargo xtask test`"), "{message}");
        // cargo's own output follows.
        assert!(message.ends_with(MISSING_TARGET), "{message}");
    }

    #[test]
    fn other_build_failures_are_cargo_output_only() {
        let stderr = "error[E0425]: cannot find value `x` in this scope\n";
        assert_eq!(
            build_failure("exit status: 101", stderr),
            format!("building the boot-stub failed (exit status: 101):\n{stderr}")
        );
    }

    #[test]
    fn finds_a_binary_on_a_path() {
        let dir = std::env::temp_dir().join(format!("reloc-fake-qemu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(QEMU), b"").unwrap();
        assert_eq!(find_qemu(dir.as_os_str()), Ok(dir.join(QEMU)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_arguments_are_shown_cut_with_their_length() {
        let long = "a".repeat(100);
        assert_eq!(
            shown_args(&["-m", "3G", &long]),
            format!("[\"-m\", \"3G\", \"{}... (100 bytes)\"]", "a".repeat(32))
        );
        assert_eq!(shown_args(&["-append", "la57"]), "[\"-append\", \"la57\"]");
    }

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("info status\r\n\x1b[K\x1b[DVM status: running\r\n"),
            "info status\nVM status: running\n"
        );
    }
}

//! Making sure the machine has what a task needs: one line per step, skipping what is there.
//!
//! The checks look at the machine itself (`rustup ... list --installed`, programs on `PATH`,
//! `/etc/os-release`, `id -u`); what to do about a missing package is decided by the pure
//! [`package_action`], which the unit tests below cover for every platform and uid.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use crate::{command, output, run, step, succeeds, Error};

/// The bare-metal target the boot-stub is built for.
pub const BARE_TARGET: &str = "x86_64-unknown-none";

/// A system package the tests need.
#[derive(Debug)]
pub struct Package {
    /// A program the package installs; finding it on `PATH` is the check. An absolute path
    /// names a file instead, for packages that install no program (firmware, plugins).
    pub program: &'static str,
    /// Debian and Ubuntu (`apt-get`).
    pub apt: &'static str,
    /// Fedora and RHEL (`dnf`).
    pub dnf: &'static str,
    /// macOS (Homebrew).
    pub brew: &'static str,
}

/// Every system package `cargo xtask test` makes sure of, in install order. New test
/// prerequisites go here.
pub const PACKAGES: &[Package] = &[
    // The boot tests (`tests/`) boot the boot-stub under QEMU.
    Package {
        program: "qemu-system-x86_64",
        apt: "qemu-system-x86",
        dnf: "qemu-system-x86",
        brew: "qemu",
    },
    // Tests compare the boot-stub's ELF notes with `readelf -n`.
    Package {
        program: "readelf",
        apt: "binutils",
        dnf: "binutils",
        brew: "binutils",
    },
    // The GRUB boot tests (`tests/tests/grub.rs`) make a BIOS rescue image with
    // `grub-mkrescue`, which needs the i386-pc modules, xorriso and mtools.
    Package {
        program: "grub-mkrescue",
        apt: "grub-common",
        dnf: "grub2-tools-extra",
        brew: "x86_64-elf-grub",
    },
    Package {
        program: "/usr/lib/grub/i386-pc",
        apt: "grub-pc-bin",
        dnf: "grub2-pc-modules",
        brew: "x86_64-elf-grub",
    },
    // The same rescue image boots on UEFI firmware too (a hybrid ISO) when the x86_64-efi
    // modules are there; the OVMF tests boot it with Debian's OVMF build.
    Package {
        program: "/usr/lib/grub/x86_64-efi",
        apt: "grub-efi-amd64-bin",
        dnf: "grub2-efi-x64-modules",
        brew: "x86_64-elf-grub",
    },
    Package {
        program: "/usr/share/ovmf/OVMF.fd",
        apt: "ovmf",
        dnf: "edk2-ovmf",
        brew: "qemu",
    },
    Package {
        program: "xorriso",
        apt: "xorriso",
        dnf: "xorriso",
        brew: "xorriso",
    },
    Package {
        program: "mformat",
        apt: "mtools",
        dnf: "mtools",
        brew: "mtools",
    },
    // The Bochs test (`tests/tests/bochs.rs`): Bochs, its BIOS and VGA BIOS, and its
    // terminal display.
    Package {
        program: "bochs",
        apt: "bochs",
        dnf: "bochs",
        brew: "bochs",
    },
    Package {
        program: "/usr/share/bochs/BIOS-bochs-latest",
        apt: "bochsbios",
        dnf: "bochs-bios",
        brew: "bochs",
    },
    Package {
        program: "/usr/share/vgabios/vgabios.bin",
        apt: "vgabios",
        dnf: "bochs-bios",
        brew: "bochs",
    },
    Package {
        program: "/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so",
        apt: "bochs-term",
        dnf: "bochs",
        brew: "bochs",
    },
];

/// The package manager family of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// Debian, Ubuntu and derivatives: `apt-get`.
    Debian,
    /// Fedora, RHEL, CentOS and derivatives: `dnf`.
    Fedora,
    /// macOS: Homebrew.
    MacOs,
    /// Anything else: no command known.
    Other,
}

impl Platform {
    /// The platform this runs on.
    pub fn detect() -> Self {
        if cfg!(target_os = "macos") {
            return Platform::MacOs;
        }
        std::fs::read_to_string("/etc/os-release")
            .map(|text| Platform::from_os_release(&text))
            .unwrap_or(Platform::Other)
    }

    /// From the text of `/etc/os-release`: its `ID` and `ID_LIKE` words.
    pub fn from_os_release(text: &str) -> Self {
        let ids: Vec<&str> = text
            .lines()
            .filter_map(|line| {
                line.strip_prefix("ID=")
                    .or_else(|| line.strip_prefix("ID_LIKE="))
            })
            .flat_map(|value| value.trim_matches(['"', '\'']).split_whitespace())
            .collect();
        let any = |names: &[&str]| ids.iter().any(|id| names.contains(id));
        if any(&["debian", "ubuntu"]) {
            Platform::Debian
        } else if any(&["fedora", "rhel", "centos"]) {
            Platform::Fedora
        } else {
            Platform::Other
        }
    }
}

/// What to do about missing packages.
#[derive(Debug, PartialEq, Eq)]
pub enum PackageAction {
    /// Nothing is missing.
    Nothing,
    /// Root on Debian or Ubuntu: install these with `apt-get`.
    AptInstall(Vec<&'static str>),
    /// Anything else: the user must run this command (one line).
    AskUser(String),
}

/// Decides what to do about the `missing` packages on `platform`, as root or not.
pub fn package_action(platform: Platform, is_root: bool, missing: &[&Package]) -> PackageAction {
    if missing.is_empty() {
        return PackageAction::Nothing;
    }
    let names = |pick: fn(&Package) -> &'static str| -> Vec<&'static str> {
        missing.iter().map(|package| pick(package)).collect()
    };
    let sudo = if is_root { "" } else { "sudo " };
    match platform {
        Platform::Debian if is_root => PackageAction::AptInstall(names(|p| p.apt)),
        Platform::Debian => PackageAction::AskUser(format!(
            "{sudo}apt-get install -y {}",
            names(|p| p.apt).join(" ")
        )),
        Platform::Fedora => PackageAction::AskUser(format!(
            "{sudo}dnf install -y {}",
            names(|p| p.dnf).join(" ")
        )),
        // Homebrew refuses to run as root.
        Platform::MacOs => {
            PackageAction::AskUser(format!("brew install {}", names(|p| p.brew).join(" ")))
        }
        Platform::Other => PackageAction::AskUser(format!(
            "install {} with your package manager (Debian: apt-get install -y {})",
            missing
                .iter()
                .map(|p| p.program)
                .collect::<Vec<_>>()
                .join(" and "),
            names(|p| p.apt).join(" ")
        )),
    }
}

/// True when `apt-cache policy` output (for `packages`) lacks an install candidate for one of
/// them: the package lists are empty (a fresh container) or do not know the package, so
/// `apt-get update` must come first.
pub fn apt_needs_update(policy: &str, packages: &[&str]) -> bool {
    packages.iter().any(|package| {
        let header = format!("{package}:");
        let mut lines = policy.lines().skip_while(|line| line.trim_end() != header);
        if lines.next().is_none() {
            return true; // Unknown package: apt-cache prints nothing for it.
        }
        let candidate = lines
            .take_while(|line| line.starts_with(' '))
            .find_map(|line| line.trim().strip_prefix("Candidate:"))
            .map(str::trim);
        matches!(candidate, None | Some("(none)"))
    })
}

/// `name` in the directories of `path_var` (a `PATH`-style list); an absolute `name` is
/// looked for as it is.
pub fn find_program(name: &str, path_var: &OsStr) -> Option<PathBuf> {
    let absolute = std::path::Path::new(name);
    if absolute.is_absolute() {
        return absolute.exists().then(|| absolute.to_path_buf());
    }
    std::env::split_paths(path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// What `cargo xtask test` needs: the bare-metal target and the system packages.
pub fn for_tests() -> Result<(), Error> {
    rust_target(BARE_TARGET)?;
    system_packages()
}

/// What `cargo xtask ci` needs beyond the tests: clippy and rustfmt for the pinned toolchain
/// (rustup installs the components of `rust-toolchain.toml`, like its targets, only with the
/// toolchain).
pub fn for_ci() -> Result<(), Error> {
    for_tests()?;
    rust_components(None, &["clippy", "rustfmt"])
}

/// What `cargo xtask miri` needs: a nightly toolchain with `miri` and `rust-src`.
pub fn for_miri() -> Result<(), Error> {
    nightly()?;
    rust_components(Some("nightly"), &["miri", "rust-src"])
}

/// True when a nightly toolchain is installed.
pub fn has_nightly() -> bool {
    succeeds(command("rustup").args(["run", "nightly", "rustc", "--version"]))
}

fn nightly() -> Result<(), Error> {
    if has_nightly() {
        step("toolchain nightly: installed");
        return Ok(());
    }
    let mut install = command("rustup");
    install.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
    step(&format!(
        "toolchain nightly: missing, {}",
        crate::describe(&install)
    ));
    run(&mut install)
}

/// The rustup target `target` for the toolchain the workspace uses.
fn rust_target(target: &str) -> Result<(), Error> {
    let installed = output(command("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|line| line.trim() == target) {
        step(&format!("target {target}: installed"));
        return Ok(());
    }
    let mut add = command("rustup");
    add.args(["target", "add", target]);
    step(&format!(
        "target {target}: missing, {}",
        crate::describe(&add)
    ));
    run(&mut add)
}

/// The rustup components `names` for `toolchain` (default: the workspace's).
fn rust_components(toolchain: Option<&str>, names: &[&str]) -> Result<(), Error> {
    let toolchain_args: Vec<&str> = toolchain.map_or(vec![], |t| vec!["--toolchain", t]);
    let installed = output(
        command("rustup")
            .args(["component", "list", "--installed"])
            .args(&toolchain_args),
    )?;
    // Installed components are listed with their host triple, `clippy-x86_64-unknown-linux-gnu`,
    // except target-independent ones such as `rust-src`.
    let is_installed = |name: &str| {
        installed.lines().map(str::trim).any(|line| {
            line == name
                || line
                    .strip_prefix(name)
                    .is_some_and(|host| host.starts_with('-'))
        })
    };
    let missing: Vec<&str> = names.iter().copied().filter(|n| !is_installed(n)).collect();
    let which = toolchain.unwrap_or("pinned");
    if missing.is_empty() {
        step(&format!(
            "components {} ({which}): installed",
            names.join(", ")
        ));
        return Ok(());
    }
    let mut add = command("rustup");
    add.args(["component", "add"])
        .args(&toolchain_args)
        .args(&missing);
    step(&format!(
        "components {} ({which}): missing, {}",
        missing.join(", "),
        crate::describe(&add)
    ));
    run(&mut add)
}

/// The packages in [`PACKAGES`]: found on `PATH`, installed with `apt-get` (root on
/// Debian/Ubuntu), or an error carrying the command for the user.
fn system_packages() -> Result<(), Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut missing = Vec::new();
    for package in PACKAGES {
        match find_program(package.program, &path) {
            Some(found) => step(&format!("{}: {}", package.program, found.display())),
            None => {
                step(&format!("{}: missing", package.program));
                missing.push(package);
            }
        }
    }
    match package_action(Platform::detect(), is_root()?, &missing) {
        PackageAction::Nothing => Ok(()),
        PackageAction::AptInstall(packages) => {
            apt_install(&packages)?;
            // A package that installed its program outside `PATH` would fail every boot test.
            match missing
                .iter()
                .find(|p| find_program(p.program, &path).is_none())
            {
                Some(package) => Err(Error::NotOnPath {
                    program: package.program,
                    package: package.apt,
                }),
                None => Ok(()),
            }
        }
        PackageAction::AskUser(install) => Err(Error::Missing {
            what: missing
                .iter()
                .map(|p| p.program)
                .collect::<Vec<_>>()
                .join(", "),
            install,
        }),
    }
}

fn is_root() -> Result<bool, Error> {
    Ok(output(command("id").arg("-u"))?.trim() == "0")
}

/// `apt-get install -y packages`, after `apt-get update` when the lists do not know them, and
/// once more after an update when the install fails on stale lists.
fn apt_install(packages: &[&str]) -> Result<(), Error> {
    let policy = output(command("apt-cache").arg("policy").args(packages))?;
    let mut updated = false;
    if apt_needs_update(&policy, packages) {
        apt_update()?;
        updated = true;
    }
    let install = || {
        let mut install = apt_get();
        install.args(["install", "-y", "-q"]).args(packages);
        step(&crate::describe(&install));
        output(&mut install).map(drop)
    };
    match install() {
        Err(_) if !updated => {
            step("apt-get install failed; updating the package lists and trying again");
            apt_update()?;
            install()
        }
        result => result,
    }
}

fn apt_update() -> Result<(), Error> {
    let mut update = apt_get();
    update.args(["update", "-q"]);
    step(&crate::describe(&update));
    output(&mut update).map(drop)
}

fn apt_get() -> Command {
    let mut apt = command("apt-get");
    apt.env("DEBIAN_FRONTEND", "noninteractive");
    apt
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: &Package = &PACKAGES[0];
    const BINUTILS: &Package = &PACKAGES[1];

    #[test]
    fn nothing_missing_needs_nothing_anywhere() {
        for platform in [
            Platform::Debian,
            Platform::Fedora,
            Platform::MacOs,
            Platform::Other,
        ] {
            for root in [false, true] {
                assert_eq!(package_action(platform, root, &[]), PackageAction::Nothing);
            }
        }
    }

    #[test]
    fn root_on_debian_installs_with_apt() {
        assert_eq!(
            package_action(Platform::Debian, true, &[QEMU, BINUTILS]),
            PackageAction::AptInstall(vec!["qemu-system-x86", "binutils"])
        );
        assert_eq!(
            package_action(Platform::Debian, true, &[BINUTILS]),
            PackageAction::AptInstall(vec!["binutils"])
        );
    }

    #[test]
    fn non_root_on_debian_is_told_sudo_apt_get() {
        assert_eq!(
            package_action(Platform::Debian, false, &[QEMU]),
            PackageAction::AskUser("sudo apt-get install -y qemu-system-x86".into())
        );
    }

    #[test]
    fn fedora_is_told_dnf_with_sudo_only_when_not_root() {
        assert_eq!(
            package_action(Platform::Fedora, false, &[QEMU, BINUTILS]),
            PackageAction::AskUser("sudo dnf install -y qemu-system-x86 binutils".into())
        );
        assert_eq!(
            package_action(Platform::Fedora, true, &[QEMU]),
            PackageAction::AskUser("dnf install -y qemu-system-x86".into())
        );
    }

    #[test]
    fn macos_is_told_brew_without_sudo() {
        for root in [false, true] {
            assert_eq!(
                package_action(Platform::MacOs, root, &[QEMU, BINUTILS]),
                PackageAction::AskUser("brew install qemu binutils".into())
            );
        }
    }

    #[test]
    fn other_platforms_are_told_the_programs() {
        let PackageAction::AskUser(line) = package_action(Platform::Other, true, &[QEMU]) else {
            panic!("expected a command for the user");
        };
        assert!(line.contains("qemu-system-x86_64"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn os_release_families() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                      VERSION_ID=\"12\"\nID=debian\n";
        let ubuntu = "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n";
        let mint = "NAME=\"Linux Mint\"\nID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
        let fedora = "NAME=\"Fedora Linux\"\nID=fedora\n";
        let rocky = "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n";
        let arch = "NAME=\"Arch Linux\"\nID=arch\n";
        assert_eq!(Platform::from_os_release(debian), Platform::Debian);
        assert_eq!(Platform::from_os_release(ubuntu), Platform::Debian);
        assert_eq!(Platform::from_os_release(mint), Platform::Debian);
        assert_eq!(Platform::from_os_release(fedora), Platform::Fedora);
        assert_eq!(Platform::from_os_release(rocky), Platform::Fedora);
        assert_eq!(Platform::from_os_release(arch), Platform::Other);
        assert_eq!(Platform::from_os_release(""), Platform::Other);
    }

    /// `apt-cache policy qemu-system-x86 binutils` on Debian 12 with the lists in place.
    const POLICY_WITH_LISTS: &str = "\
qemu-system-x86:
  Installed: (none)
  Candidate: 1:7.2+dfsg-7+deb12u18+b3
  Version table:
     1:7.2+dfsg-7+deb12u18+b3 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
binutils:
  Installed: 2.40-2
  Candidate: 2.40-2
  Version table:
 *** 2.40-2 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
";

    #[test]
    fn apt_update_only_when_a_package_has_no_candidate() {
        let both = ["qemu-system-x86", "binutils"];
        assert!(!apt_needs_update(POLICY_WITH_LISTS, &both));
        // Empty lists: apt-cache prints nothing for a package it has never heard of.
        assert!(apt_needs_update("", &["qemu-system-x86"]));
        assert!(apt_needs_update(
            POLICY_WITH_LISTS,
            &["qemu-system-x86", "xorriso"]
        ));
        // Installed but not in the lists: no candidate to install from.
        let installed_only = "binutils:\n  Installed: 2.40-2\n  Candidate: (none)\n";
        assert!(apt_needs_update(installed_only, &["binutils"]));
        // `qemu-system-x86` must not match the block of `qemu-system-x86-xen`.
        let other_block = "qemu-system-x86-xen:\n  Installed: (none)\n  Candidate: 1:7.2\n";
        assert!(apt_needs_update(other_block, &["qemu-system-x86"]));
    }

    #[test]
    fn programs_are_found_on_a_path_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::join_paths(["/nonexistent-reloc-xtask", dir.path().to_str().unwrap()])
            .unwrap();
        assert_eq!(find_program("qemu-system-x86_64", &path), None);
        std::fs::write(dir.path().join("qemu-system-x86_64"), b"").unwrap();
        assert_eq!(
            find_program("qemu-system-x86_64", &path),
            Some(dir.path().join("qemu-system-x86_64"))
        );
    }

    #[test]
    fn absolute_names_are_files_not_programs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("BIOS-bochs-latest");
        let name = file.to_str().unwrap();
        // PATH plays no part.
        let path = std::env::join_paths([dir.path()]).unwrap();
        assert_eq!(find_program(name, &path), None);
        std::fs::write(&file, b"").unwrap();
        assert_eq!(find_program(name, &path), Some(file.clone()));
        assert_eq!(find_program(name, OsStr::new("")), Some(file));
    }

    #[test]
    fn the_grub_ovmf_and_bochs_packages_are_set_up() {
        let apt: Vec<&str> = PACKAGES.iter().map(|p| p.apt).collect();
        for package in [
            "grub-pc-bin",
            "grub-efi-amd64-bin",
            "ovmf",
            "grub-common",
            "xorriso",
            "mtools",
            "bochs",
            "bochsbios",
            "vgabios",
            "bochs-term",
        ] {
            assert!(apt.contains(&package), "{package} not in {apt:?}");
        }
    }
}

//! GRUB rescue images for the multiboot2 boot tests: a `grub.cfg` that boots the stub with
//! `multiboot2` (plus `module2` lines), made into an ISO with `grub-mkrescue` in a temporary
//! directory at test time. The image is a hybrid: SeaBIOS boots it through GRUB's i386-pc
//! side, OVMF ([`OVMF`]) through its x86_64-efi side. Images are never committed; the directory goes when the
//! [`GrubImage`] is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::qemu::Medium;

/// The programs and files `grub-mkrescue` needs for a hybrid rescue image that boots on BIOS
/// (i386-pc) and UEFI (x86_64-efi) firmware, with the Debian package providing each.
const NEEDS: [(&str, &str); 5] = [
    ("grub-mkrescue", "grub-common"),
    ("/usr/lib/grub/i386-pc", "grub-pc-bin"),
    ("/usr/lib/grub/x86_64-efi", "grub-efi-amd64-bin"),
    ("xorriso", "xorriso"),
    ("mformat", "mtools"),
];

/// How to install everything [`build`] needs on Debian or Ubuntu.
pub const INSTALL_HINT: &str =
    "apt-get install -y grub-pc-bin grub-efi-amd64-bin grub-common xorriso mtools";

/// UEFI firmware for QEMU (Debian's `ovmf`): `-bios OVMF` boots the rescue image's EFI side.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// `-bios` with [`OVMF`]; `Err` names the package and `cargo xtask test` when it is missing.
pub fn ovmf_args() -> Result<[&'static str; 2], String> {
    if std::path::Path::new(OVMF).is_file() {
        Ok(["-bios", OVMF])
    } else {
        Err(format!(
            "the OVMF boot tests need {OVMF} (ovmf): run `cargo xtask test`, which installs it \
             (as root on Debian/Ubuntu: `apt-get install -y ovmf`)"
        ))
    }
}

/// `Ok` when every program (on `path_var`) and file `grub-mkrescue` needs is there;
/// otherwise which are missing and how to install them.
pub fn check_tools(path_var: &std::ffi::OsStr) -> Result<(), String> {
    let missing = crate::missing_tools(&NEEDS, path_var);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the GRUB boot tests need {}: run `cargo xtask test`, which installs them (as root \
             on Debian/Ubuntu: `{INSTALL_HINT}`)",
            missing.join(", ")
        ))
    }
}

/// A boot module: a file of `size` bytes under `/boot/`, passed with `module2` and `args`.
#[derive(Clone, Debug)]
pub struct Module {
    /// File name under `/boot/`.
    pub name: String,
    /// Size in bytes (the file holds a repeating byte pattern).
    pub size: u64,
    /// The module's command line after its path.
    pub args: String,
}

/// The `grub.cfg` for the stub with `stub_args` and `modules`: serial console (COM1, where the
/// stub prints too), no menu delay, text mode (GRUB would otherwise leave a graphics mode
/// set, which Bochs' terminal display cannot show), one entry.
pub fn grub_cfg(stub_args: &str, modules: &[Module]) -> String {
    let mut cfg = String::from(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial\n\
         terminal_output serial\n\
         set timeout=0\n\
         set gfxpayload=text\n\
         menuentry \"boot-stub\" {\n",
    );
    cfg.push_str(&format!("  multiboot2 /boot/stub {stub_args}\n"));
    for module in modules {
        cfg.push_str(&format!(
            "  module2 /boot/{} {}\n",
            module.name, module.args
        ));
    }
    cfg.push_str("}\n");
    cfg
}

/// A GRUB rescue ISO in its own temporary directory, removed on drop.
#[derive(Debug)]
pub struct GrubImage {
    dir: PathBuf,
    iso: PathBuf,
}

impl GrubImage {
    /// The ISO file.
    pub fn iso(&self) -> &Path {
        &self.iso
    }

    /// The ISO as a QEMU boot medium (`-cdrom`).
    pub fn medium(&self) -> Medium {
        Medium::Cdrom(self.iso.clone())
    }
}

impl Drop for GrubImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh temporary directory for this process: `reloc-<what>-<pid>-<n>`.
pub fn temp_dir(what: &str) -> std::io::Result<PathBuf> {
    static INSTANCE: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "reloc-{what}-{}-{}",
        std::process::id(),
        INSTANCE.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Builds a GRUB rescue ISO that boots `stub` through multiboot2 with `stub_args` and
/// `modules`. Errors name what failed (a missing tool, with the install command, or
/// `grub-mkrescue`'s own output).
pub fn build(stub: &Path, stub_args: &str, modules: &[Module]) -> Result<GrubImage, String> {
    check_tools(&std::env::var_os("PATH").unwrap_or_default())?;
    let dir = temp_dir("grub").map_err(|e| format!("temporary directory: {e}"))?;
    let image = GrubImage {
        iso: dir.join("boot-stub.iso"),
        dir,
    };
    let tree = image.dir.join("iso");
    let boot = tree.join("boot");
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    std::fs::create_dir_all(boot.join("grub")).map_err(|e| io("iso tree", e))?;
    std::fs::copy(stub, boot.join("stub")).map_err(|e| io(&stub.display().to_string(), e))?;
    for module in modules {
        let pattern: Vec<u8> = (0..=255u8).collect();
        let bytes: Vec<u8> = pattern
            .iter()
            .copied()
            .cycle()
            .take(usize::try_from(module.size).map_err(|e| e.to_string())?)
            .collect();
        std::fs::write(boot.join(&module.name), bytes).map_err(|e| io(&module.name, e))?;
    }
    std::fs::write(
        boot.join("grub").join("grub.cfg"),
        grub_cfg(stub_args, modules),
    )
    .map_err(|e| io("grub.cfg", e))?;
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&image.iso)
        .arg(&tree)
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "grub-mkrescue failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_boots_the_stub_with_modules_on_the_serial_console() {
        let cfg = grub_cfg(
            "la57 hold",
            &[Module {
                name: "big".into(),
                size: 1,
                args: "first module".into(),
            }],
        );
        for line in [
            "serial --unit=0 --speed=115200",
            "terminal_output serial",
            "set timeout=0",
            "set gfxpayload=text",
            "  multiboot2 /boot/stub la57 hold",
            "  module2 /boot/big first module",
        ] {
            assert!(cfg.lines().any(|l| l == line), "no `{line}` in\n{cfg}");
        }
        assert!(cfg.ends_with("}\n"));
    }

    #[test]
    fn missing_tools_are_named_with_the_install_command() {
        let err =
            check_tools(std::ffi::OsStr::new("/nonexistent-dir-for-reloc-tests")).unwrap_err();
        assert!(err.contains("grub-mkrescue (grub-common)"), "{err}");
        assert!(err.contains("xorriso (xorriso)"), "{err}");
        assert!(err.contains("mformat (mtools)"), "{err}");
        assert!(err.contains(INSTALL_HINT), "{err}");
        assert!(err.contains("`cargo xtask test`"), "{err}");
    }
}

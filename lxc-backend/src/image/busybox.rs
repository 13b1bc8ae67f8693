//! The embedded busybox image, built in-process from the host's static
//! busybox binary.
//!
//! The root file system contains the binary, one symlink per applet in `bin`
//! and `sbin`, the usual top-level directories, and a shell-script
//! `/sbin/init` that keeps the container running until it receives a halt
//! signal. No download and no package manager are involved, so a template
//! is built in milliseconds and a clone starts in milliseconds.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::Path;

/// Path of the binary that the Debian package `busybox-static` installs.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// Changes whenever the layout below changes, so that templates built by an
/// older layout are not reused.
pub const LAYOUT_VERSION: u32 = 1;

/// Applets linked in `bin`. Each is present in Debian's busybox-static.
const BIN_APPLETS: &[&str] = &[
    "[", "[[", "ash", "awk", "basename", "cat", "chmod", "chown", "cp", "cut", "date", "dd", "df",
    "dirname", "dmesg", "du", "echo", "env", "false", "find", "free", "grep", "gunzip", "gzip",
    "head", "hostname", "id", "kill", "ln", "ls", "mkdir", "mknod", "mktemp", "more", "mount",
    "mv", "nc", "ping", "printf", "ps", "pwd", "readlink", "rm", "rmdir", "sed", "sh", "sleep",
    "sort", "stat", "sync", "tail", "tar", "tee", "test", "touch", "tr", "true", "umount", "uname",
    "uniq", "vi", "wc", "wget", "which", "xargs", "yes",
];

/// Applets linked in `sbin`.
const SBIN_APPLETS: &[&str] = &[
    "halt", "ifconfig", "ip", "poweroff", "reboot", "route", "udhcpc",
];

/// The container's init. It runs `/etc/rc.local` when present, then waits.
/// As PID 1 of the container it ignores every signal it has no handler
/// for. The trap makes liblxc's halt signal (SIGPWR by default) and the
/// usual shutdown signals end it, which stops the container.
const INIT_SCRIPT: &str = "#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
trap 'exit 0' PWR TERM INT USR1 USR2
[ -x /etc/rc.local ] && /etc/rc.local
while true; do
    sleep 2147483647 &
    wait $!
done
";

const DIRECTORIES: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("home", 0o755),
    ("mnt", 0o755),
    ("var", 0o755),
    ("var/log", 0o755),
    ("var/lib", 0o755),
    ("var/tmp", 0o1777),
];

fn write_file(path: &Path, content: &str, mode: u32) -> io::Result<()> {
    fs::write(path, content)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Fills the empty directory `rootfs` with the busybox image, copying the
/// static binary `busybox`.
pub fn build_rootfs(busybox: &Path, rootfs: &Path) -> io::Result<()> {
    for (directory, mode) in DIRECTORIES {
        let path = rootfs.join(directory);
        fs::DirBuilder::new().mode(*mode).create(&path)?;
        // The mode given to mkdir is reduced by the umask; set it exactly.
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))?;
    }

    let binary = rootfs.join("bin/busybox");
    fs::copy(busybox, &binary)?;
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755))?;
    for applet in BIN_APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    for applet in SBIN_APPLETS {
        symlink("../bin/busybox", rootfs.join("sbin").join(applet))?;
    }

    write_file(&rootfs.join("sbin/init"), INIT_SCRIPT, 0o755)?;
    write_file(
        &rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    write_file(&rootfs.join("etc/group"), "root:x:0:\n", 0o644)?;
    write_file(
        &rootfs.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
        0o644,
    )?;
    write_file(
        &rootfs.join("etc/os-release"),
        "NAME=busybox\nID=busybox\nPRETTY_NAME=\"busybox (berth)\"\n",
        0o644,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_layout() {
        let busybox = Path::new(DEFAULT_BUSYBOX);
        assert!(
            busybox.exists(),
            "{DEFAULT_BUSYBOX} is missing: apt-get install busybox-static"
        );
        let dir = tempfile::tempdir().unwrap();
        build_rootfs(busybox, dir.path()).unwrap();
        assert_eq!(
            fs::read_link(dir.path().join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(dir.path().join("sbin/ip")).unwrap(),
            Path::new("../bin/busybox")
        );
        let init = fs::metadata(dir.path().join("sbin/init")).unwrap();
        assert_eq!(init.permissions().mode() & 0o777, 0o755);
        let tmp = fs::metadata(dir.path().join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
        assert_eq!(
            fs::metadata(dir.path().join("bin/busybox")).unwrap().len(),
            fs::metadata(busybox).unwrap().len()
        );
    }
}

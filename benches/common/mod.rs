//! Shared set-up of the benchmarks that drive real liblxc, libvirtd and
//! peers. Everything they make lives under [`ROOT`] or carries the prefix
//! `bb` (bridges, containers, domains, volumes, Incus instances), and each
//! set-up first removes what a crashed earlier run left.

#![allow(dead_code)]

pub mod host;
pub mod lxc;
pub mod peers;
pub mod stats;
pub mod virt;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth::machine_file::sample_machine_config;
use berth_core::MachineConfig;

/// Directory that holds everything the benchmarks make on disk.
pub const ROOT: &str = "/var/lib/berth-bench";

/// Fails with the fix unless the process runs as root.
pub fn require_root() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "these benchmarks create containers, bridges and VMs and must run as root (uid is {uid})"
    );
}

/// Sends berth's logs to standard error, filtered by `RUST_LOG` (default:
/// warnings only, so that logging costs nothing measurable).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// Returns the valid sample configuration of machine `id` (such as `12`).
pub fn machine(id: &str) -> MachineConfig {
    sample_machine_config(id, "bookworm")
}

/// Returns the number in environment variable `name`, or `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Runs `program` with `args`, panicking with its error output when it
/// fails, and returns its standard output.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `program` with `args` and returns the wall time it took. Panics
/// when it fails, as [`run`] does.
pub fn timed_run(program: &str, args: &[&str]) -> Duration {
    let started = Instant::now();
    run(program, args);
    started.elapsed()
}

/// Runs `program` with `args`, ignoring its result: for clean-up of objects
/// that may not exist.
pub fn run_quietly(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Removes `path` and everything below it, when it exists.
pub fn remove_tree(path: &Path) {
    if path.exists() {
        std::fs::remove_dir_all(path)
            .unwrap_or_else(|error| panic!("remove {}: {error}", path.display()));
    }
}

/// Returns `ROOT/name`.
pub fn bench_dir(name: &str) -> PathBuf {
    Path::new(ROOT).join(name)
}

/// Converts a duration to milliseconds.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

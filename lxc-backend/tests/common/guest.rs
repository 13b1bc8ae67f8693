//! Fixtures of the real-guest container tests: the shared guest image and
//! tools server, and commands run inside a container.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../../../guest-image/fixture.rs"]
mod fixture;

pub use fixture::*;

/// Exit status and standard output of a command run in a container.
pub struct Attached {
    /// Whether the command exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `command` inside container `name` with a clean environment and
/// returns how it ended, failing only when lxc-attach cannot be started.
pub fn try_attach(lxc_path: &Path, name: &str, command: &[&str]) -> Attached {
    let output = Command::new("lxc-attach")
        .arg("-P")
        .arg(lxc_path)
        .args(["-n", name, "--clear-env", "--"])
        .args(command)
        .output()
        .expect("run lxc-attach (apt-get install lxc)");
    Attached {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Polls `systemctl is-system-running` in container `name` until systemd
/// answers with a state, and returns that state. Before systemd runs, the
/// command fails without printing a state.
pub fn wait_for_systemd(lxc_path: &Path, name: &str, timeout: Duration) -> String {
    let started = Instant::now();
    loop {
        let attached = try_attach(lxc_path, name, &["systemctl", "is-system-running"]);
        let state = attached.stdout.trim();
        if !state.is_empty() && state != "offline" {
            return state.to_owned();
        }
        assert!(
            started.elapsed() < timeout,
            "systemd in {name} did not answer within {timeout:?}: {} {}",
            attached.stdout,
            attached.stderr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

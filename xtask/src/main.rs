//! `cargo xtask`: prepares a Debian 12 host for berth, runs the demo and
//! runs every test tier.
//!
//! This program may run subprocesses freely (apt-get, the daemons, cargo):
//! it is the operator's and CI's entry point, not part of berth's create,
//! destroy or list paths.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Debian packages berth builds, runs and tests with, from bookworm.
const PACKAGES: &[&str] = &[
    "pkg-config",
    "lxc",
    "lxc-dev",
    "busybox-static",
    "iproute2",
    "libvirt-dev",
    "libvirt-daemon-system",
    "libvirt-clients",
    "python3-yaml",
    "debootstrap",
    "curl",
    "dosfstools",
    "btrfs-progs",
    "e2fsprogs",
];

/// Packages taken from bookworm-backports: bookworm's own qemu-system-x86
/// (7.2) conflicts with the qemu-utils 10.0 that this host image ships.
const BACKPORTS_PACKAGES: &[&str] = &["qemu-system-x86"];

/// apt source file that adds bookworm-backports when no source has it.
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/berth-bookworm-backports.sources";

const LIBVIRT_SOCKET: &str = "/run/libvirt/libvirt-sock";
const VIRTLOGD_SOCKET: &str = "/run/libvirt/virtlogd-sock";

const USAGE: &str = "usage: cargo xtask <command>

commands:
  prepare   install the Debian packages berth needs and start virtlogd and libvirtd (idempotent)
  demo      prepare, build berth and run `berth demo` on the embedded busybox image
  test      prepare, run clippy and every test tier, then fuzz each target; fails when a real tier did not run
  fuzz      run each fuzz target for BERTH_FUZZ_SECONDS seconds (default 60), installing cargo-fuzz if missing";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("prepare") => prepare(),
        Some("demo") => prepare().and_then(|()| demo(&args[1..])),
        Some("test") => prepare().and_then(|()| test()),
        Some("fuzz") => fuzz(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs `command`, failing with its name and exit status.
fn run(command: &mut Command) -> Result {
    let shown = format!("{command:?}");
    eprintln!("xtask: running {shown}");
    let status = command
        .status()
        .map_err(|error| format!("could not start {shown}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed: {status}"))
    }
}

fn prepare() -> Result {
    if !is_root() {
        return Err("preparing the host needs root: run as root (CI does)".into());
    }
    install_packages()?;
    start_daemons()?;
    eprintln!("xtask: host ready");
    Ok(())
}

fn is_root() -> bool {
    // The Uid line of /proc/self/status lists the real, effective, saved and
    // file system uids; the second is the effective one.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn install_packages() -> Result {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    let missing_backports: Vec<&str> = BACKPORTS_PACKAGES
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() && missing_backports.is_empty() {
        eprintln!("xtask: all packages present");
        return Ok(());
    }
    if !missing_backports.is_empty() {
        ensure_backports_source()?;
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    let apt = || {
        let mut command = Command::new("apt-get");
        command.env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
        ]);
        command
    };
    if !missing.is_empty() {
        run(apt().args(&missing))?;
    }
    if !missing_backports.is_empty() {
        run(apt()
            .args(["-t", "bookworm-backports"])
            .args(&missing_backports))?;
    }
    Ok(())
}

fn ensure_backports_source() -> Result {
    let mut sources = String::new();
    for dir in ["/etc/apt/sources.list", "/etc/apt/sources.list.d"] {
        let path = Path::new(dir);
        let files: Vec<PathBuf> = if path.is_dir() {
            std::fs::read_dir(path)
                .map_err(|error| format!("could not read {dir}: {error}"))?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .collect()
        } else {
            vec![path.to_path_buf()]
        };
        for file in files {
            sources.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
    }
    if sources
        .lines()
        .any(|line| !line.trim_start().starts_with('#') && line.contains("bookworm-backports"))
    {
        return Ok(());
    }
    let text = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\n\
                Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
    std::fs::write(BACKPORTS_SOURCE, text)
        .map_err(|error| format!("could not write {BACKPORTS_SOURCE}: {error}"))?;
    eprintln!("xtask: added {BACKPORTS_SOURCE}");
    Ok(())
}

fn socket_accepts(path: &str) -> bool {
    UnixStream::connect(path).is_ok()
}

fn wait_for_socket(path: &str, daemon: &str) -> Result {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if socket_accepts(path) {
            return Ok(());
        }
        sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{daemon} did not open {path} within 30 s; see /var/log/libvirt/"
    ))
}

/// Starts virtlogd and libvirtd unless their sockets already accept connections.
/// This host has no service manager, so the daemons are started directly.
fn start_daemons() -> Result {
    for dir in ["/var/log/libvirt", "/run/libvirt"] {
        std::fs::create_dir_all(dir).map_err(|error| format!("could not create {dir}: {error}"))?;
    }
    if !socket_accepts(VIRTLOGD_SOCKET) {
        run(Command::new("virtlogd").arg("-d"))?;
        wait_for_socket(VIRTLOGD_SOCKET, "virtlogd")?;
    }
    if !socket_accepts(LIBVIRT_SOCKET) {
        run(Command::new("libvirtd").arg("-d"))?;
        wait_for_socket(LIBVIRT_SOCKET, "libvirtd")?;
    }
    eprintln!("xtask: virtlogd and libvirtd accept connections");
    Ok(())
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn demo(args: &[String]) -> Result {
    run(cargo()
        .args(["run", "--release", "--bin", "berth", "--", "demo"])
        .args(args))
}

fn test() -> Result {
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let required = real_tier_targets()?;
    let results = run_tests()?;
    check_real_tiers(&required, &results)?;
    fuzz()?;
    // The closing line, after the fuzz step's output, counts every test.
    let passed: u64 = results.iter().map(|result| result.passed).sum();
    let failed: u64 = results.iter().map(|result| result.failed).sum();
    println!("{passed} passed, {failed} failed");
    Ok(())
}

/// The result line of one test binary.
#[derive(Debug)]
struct TargetResult {
    /// The path cargo printed after `Running`, such as `tests/real.rs`.
    target: String,
    passed: u64,
    failed: u64,
}

/// Returns the real-tier test files of the workspace: every `tests/real*.rs`
/// of every package, as `<package dir>/tests/<file>`.
fn real_tier_targets() -> Result<Vec<String>> {
    let root = workspace_root();
    let mut targets = Vec::new();
    let mut package_dirs = vec![root.clone()];
    for entry in std::fs::read_dir(&root).map_err(|error| error.to_string())? {
        let path = entry.map_err(|error| error.to_string())?.path();
        if path.join("Cargo.toml").is_file() {
            package_dirs.push(path);
        }
    }
    for dir in package_dirs {
        let Ok(entries) = std::fs::read_dir(dir.join("tests")) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("real") && name.ends_with(".rs") {
                let relative = entry
                    .path()
                    .strip_prefix(&root)
                    .expect("under the root")
                    .to_string_lossy()
                    .into_owned();
                targets.push(relative);
            }
        }
    }
    targets.sort();
    Ok(targets)
}

/// Runs every test of the workspace, echoing the output, and returns the
/// result of each test binary. Fails when any test failed.
fn run_tests() -> Result<Vec<TargetResult>> {
    let (reader, writer) = std::io::pipe().map_err(|error| error.to_string())?;
    let mut command = cargo();
    command
        .args(["test", "--workspace", "--no-fail-fast"])
        .env("BERTH_REQUIRE_REAL_TESTS", "1")
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(|error| error.to_string())?)
        .stderr(writer);
    eprintln!("xtask: running {command:?}");
    let mut child = command
        .spawn()
        .map_err(|error| format!("could not start cargo test: {error}"))?;
    drop(command);

    let mut results = Vec::new();
    let mut current: Option<String> = None;
    let stdout = std::io::stdout();
    for line in BufReader::new(reader).lines() {
        let line = line.map_err(|error| error.to_string())?;
        let _ = writeln!(stdout.lock(), "{line}");
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("Running ") {
            current = Some(rest.split(" (").next().unwrap_or(rest).to_owned());
        } else if trimmed.starts_with("Doc-tests ") {
            current = Some(trimmed.to_owned());
        } else if let Some(summary) = trimmed.strip_prefix("test result: ")
            && let Some(target) = current.take()
        {
            results.push(TargetResult {
                target,
                passed: count(summary, "passed"),
                failed: count(summary, "failed"),
            });
        }
    }
    let status = child.wait().map_err(|error| error.to_string())?;
    if !status.success() {
        return Err(format!("cargo test failed: {status}"));
    }
    Ok(results)
}

/// Reads the number before `word` in a summary such as
/// `ok. 3 passed; 0 failed; 1 ignored`.
fn count(summary: &str, word: &str) -> u64 {
    summary
        .split(';')
        .filter_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .split_once(' ')
        })
        .find(|(_, name)| *name == word)
        .and_then(|(number, _)| number.parse().ok())
        .unwrap_or(0)
}

/// Returns `tests/<file name>` of a test file, the form cargo prints after
/// `Running`: cargo prints the path relative to the file's package.
fn printed_target(path: &str) -> String {
    let file = Path::new(path)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("tests/{file}")
}

fn check_real_tiers(required: &[String], results: &[TargetResult]) -> Result {
    if required.is_empty() {
        return Err("no real-tier test files (tests/real*.rs) were found".into());
    }
    // Cargo prints test paths relative to their package, so two packages'
    // real-tier files could not be distinguished if they shared a name.
    let mut printed: Vec<String> = required.iter().map(|path| printed_target(path)).collect();
    printed.sort();
    if let Some(pair) = printed.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(format!(
            "two real-tier test files are named {}; give each a unique name",
            pair[0]
        ));
    }
    let mut problems = Vec::new();
    for target in required {
        let printed = printed_target(target);
        match results.iter().find(|result| result.target == printed) {
            None => problems.push(format!("{target} did not run")),
            Some(result) if result.passed == 0 => problems.push(format!("{target} ran no test")),
            Some(result) if result.failed > 0 => {
                problems.push(format!("{target} had {} failures", result.failed))
            }
            Some(result) => eprintln!("xtask: real tier {target}: {} passed", result.passed),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("real tiers incomplete: {}", problems.join("; ")))
    }
}

/// Fuzz targets of the `fuzz` crate, each run for a bounded time.
const FUZZ_TARGETS: &[&str] = &["machine_config", "network", "user_data"];
/// Environment variable that sets how many seconds each fuzz target runs.
const FUZZ_SECONDS_VAR: &str = "BERTH_FUZZ_SECONDS";
const DEFAULT_FUZZ_SECONDS: u64 = 60;
/// cargo-fuzz release installed when `cargo fuzz` is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Builds the fuzz targets, runs each for a bounded time and then replays
/// the checked-in corpus and the inputs the runs found through the crate's
/// unit tests, which also read the rendered user data with PyYAML. Fails on
/// any crash.
///
/// cargo-fuzz passes nightly-only compiler flags (sanitizer coverage and
/// AddressSanitizer). `RUSTC_BOOTSTRAP=1` lets the stable compiler accept
/// them, and it is set only for the fuzz crate, which is a workspace of its
/// own.
fn fuzz() -> Result {
    let seconds = fuzz_seconds()?;
    ensure_cargo_fuzz()?;
    let fuzz_dir = workspace_root().join("fuzz");
    let grown = std::env::temp_dir().join(format!("berth-fuzz-corpus-{}", std::process::id()));
    let result = fuzz_in(&fuzz_dir, &grown, seconds);
    if let Err(error) = std::fs::remove_dir_all(&grown)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!(
            "xtask: warning: could not remove {}: {error}",
            grown.display()
        );
    }
    result
}

fn fuzz_in(fuzz_dir: &Path, grown: &Path, seconds: u64) -> Result {
    let cargo_fuzz = || {
        let mut command = cargo();
        command
            .current_dir(fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .arg("fuzz");
        command
    };
    run(cargo_fuzz().arg("build"))?;
    let mut summaries = Vec::new();
    for target in FUZZ_TARGETS {
        // New inputs go to a temporary folder, the first corpus folder,
        // so that the checked-in corpus only seeds the run.
        let new_inputs = grown.join(target);
        std::fs::create_dir_all(&new_inputs)
            .map_err(|error| format!("could not create {}: {error}", new_inputs.display()))?;
        let seeds = fuzz_dir.join("corpus").join(target);
        let mut command = cargo_fuzz();
        command
            .args(["run", target])
            .arg(&new_inputs)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1");
        let executions = run_fuzz_target(command).map_err(|error| {
            format!(
                "fuzz target {target}: {error}; the crashing input is in {}; \
                 reproduce it with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run {target} <file>",
                fuzz_dir.join("artifacts").join(target).display()
            )
        })?;
        let found = std::fs::read_dir(&new_inputs)
            .map(|entries| entries.count())
            .unwrap_or(0);
        summaries.push(format!(
            "{target}: {executions} executions in {seconds} s, {found} new corpus inputs"
        ));
    }
    run(cargo()
        .current_dir(fuzz_dir)
        .args(["test", "--lib"])
        .env("BERTH_FUZZ_EXTRA_CORPUS", grown))?;
    for summary in summaries {
        eprintln!("xtask: fuzz {summary}, no crash");
    }
    Ok(())
}

fn fuzz_seconds() -> Result<u64> {
    match std::env::var(FUZZ_SECONDS_VAR) {
        Err(_) => Ok(DEFAULT_FUZZ_SECONDS),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(seconds) if seconds > 0 => Ok(seconds),
            _ => Err(format!(
                "{FUZZ_SECONDS_VAR}={text:?} is invalid: it must be a whole number of seconds greater than 0"
            )),
        },
    }
}

/// Installs cargo-fuzz from crates.io unless `cargo fuzz` already runs.
fn ensure_cargo_fuzz() -> Result {
    let present = cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if present {
        return Ok(());
    }
    run(cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

/// Runs one `cargo fuzz run`, echoing its output, and returns the number
/// of inputs libFuzzer executed, read from its final statistics.
fn run_fuzz_target(mut command: Command) -> Result<u64> {
    let (reader, writer) = std::io::pipe().map_err(|error| error.to_string())?;
    command
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(|error| error.to_string())?)
        .stderr(writer);
    eprintln!("xtask: running {command:?}");
    let mut child = command
        .spawn()
        .map_err(|error| format!("could not start cargo fuzz: {error}"))?;
    // Dropping the command closes this process's copies of the pipe's write
    // end. Without that, the read below never reaches the end of the output.
    drop(command);

    let mut executions = None;
    let stderr = std::io::stderr();
    for line in BufReader::new(reader).lines() {
        let line = line.map_err(|error| error.to_string())?;
        // libFuzzer prints a status line per new input and a line per
        // newly covered function; echo the rest.
        if !line.starts_with('#') && !line.starts_with("\tNEW_FUNC") {
            let _ = writeln!(stderr.lock(), "{line}");
        }
        if let Some(number) = line.strip_prefix("stat::number_of_executed_units:") {
            executions = number.trim().parse::<u64>().ok();
        }
    }
    let status = child.wait().map_err(|error| error.to_string())?;
    if !status.success() {
        return Err(format!("cargo fuzz run failed: {status}"));
    }
    executions.ok_or_else(|| "libFuzzer printed no final statistics".to_owned())
}

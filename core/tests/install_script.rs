//! The install script of the user data, run for real: curl downloads the
//! tools from an HTTP server on loopback, `sha256sum` checks them and `tar`
//! unpacks them. Only `systemctl` is a stub, which records its arguments
//! and the proxy it saw, because the test host's systemd must not start
//! anything.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_core::MachineConfig;
use common::{machine, render_and_load, written_content};

/// Serves `body` to every HTTP GET on `path` and 404 to anything else, from
/// a thread, on a loopback port. Returns the base URL.
fn serve(path: &'static str, body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let found = request_line.split_whitespace().nth(1) == Some(path);
            let (status, content): (&str, &[u8]) = if found {
                ("200 OK", &body)
            } else {
                ("404 Not Found", b"")
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                content.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(content);
        }
    });
    format!("http://{address}")
}

/// Builds a gzip tarball that contains an executable `jujud` and returns it
/// with its SHA-256.
fn tools_tarball(dir: &Path) -> (Vec<u8>, String) {
    let source = dir.join("tools-source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("jujud"), "#!/bin/sh\necho jujud\n").unwrap();
    std::fs::set_permissions(
        source.join("jujud"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let tarball = dir.join("tools.tgz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&source)
        .arg("jujud")
        .status()
        .unwrap();
    assert!(status.success());
    let output = Command::new("sha256sum").arg(&tarball).output().unwrap();
    let sha256 = String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    (std::fs::read(&tarball).unwrap(), sha256)
}

struct Setup {
    dir: tempfile::TempDir,
    machine: MachineConfig,
    sha256: String,
}

const HOSTILE_PROXY: &str = "http://us'er:p\"a$HOME w@proxy.invalid:3128";

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (tarball, sha256) = tools_tarball(dir.path());
    let base = serve("/tools/3.5.1-ubuntu-amd64.tgz", tarball);
    let mut machine = machine();
    machine.data_dir = dir.path().join("data dir's $x");
    machine.tools.url = format!("{base}/tools/3.5.1-ubuntu-amd64.tgz");
    machine.tools.sha256 = sha256.to_ascii_uppercase();
    // The proxy does not exist; no_proxy sends curl straight to loopback.
    machine.proxy.http = HOSTILE_PROXY.into();
    machine.proxy.no_proxy = "127.0.0.1".into();
    Setup {
        dir,
        machine,
        sha256,
    }
}

/// Renders the user data, takes the script as PyYAML reads it and runs it
/// the way `runcmd` does, with a `systemctl` stub first on `PATH`.
fn run_install_script(setup: &Setup) -> (Output, PathBuf) {
    let document = render_and_load(&setup.machine, "juju-machine-1-lxc-0");
    let script_path = setup.machine.data_dir.join("install-machine-1-lxc-0.sh");
    let script = written_content(&document, script_path.to_str().unwrap());
    assert_eq!(document["runcmd"][0][1], script_path.to_str().unwrap());
    std::fs::create_dir_all(&setup.machine.data_dir).unwrap();
    std::fs::write(&script_path, script).unwrap();

    let stubs = setup.dir.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let systemctl = stubs.join("systemctl");
    std::fs::write(
        &systemctl,
        "#!/bin/sh\nprintf '%s|%s\\n' \"$*\" \"$http_proxy\" >> \"$SYSTEMCTL_LOG\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let log = setup.dir.path().join("systemctl.log");

    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        stubs.display()
    );
    let output = Command::new("/bin/sh")
        .arg(&script_path)
        .env_clear()
        .env("PATH", path)
        .env("SYSTEMCTL_LOG", &log)
        .current_dir(setup.dir.path())
        .output()
        .unwrap();
    (output, log)
}

fn tools_root(setup: &Setup) -> PathBuf {
    setup.machine.data_dir.join("tools")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[test]
fn matching_tools_installed_and_started() {
    let setup = setup();
    let (output, log) = run_install_script(&setup);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "script failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("SHA-256 of agent tools matches"),
        "{stdout}"
    );

    let tools = tools_root(&setup);
    assert_eq!(entries(&tools), ["3.5.1-ubuntu-amd64", "machine-1-lxc-0"]);
    assert_eq!(
        std::fs::read_link(tools.join("machine-1-lxc-0")).unwrap(),
        Path::new("3.5.1-ubuntu-amd64")
    );
    let agent = std::fs::read_to_string(tools.join("machine-1-lxc-0/jujud")).unwrap();
    assert_eq!(agent, "#!/bin/sh\necho jujud\n");

    let calls = std::fs::read_to_string(&log).unwrap();
    let expected = format!(
        "daemon-reload|{HOSTILE_PROXY}\nenable --now jujud-machine-1-lxc-0.service|{HOSTILE_PROXY}\n"
    );
    assert_eq!(calls, expected);
    assert!(!setup.dir.path().join("$x").exists());
}

#[test]
fn mismatching_tools_rejected() {
    let mut setup = setup();
    let wrong = format!("{}0", &setup.sha256[..63]);
    let wrong = if wrong == setup.sha256 {
        format!("{}1", &setup.sha256[..63])
    } else {
        wrong
    };
    setup.machine.tools.sha256 = wrong.clone();
    let (output, log) = run_install_script(&setup);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(
        !output.status.success(),
        "script accepted tools with a wrong SHA-256"
    );
    assert!(stderr.contains("rejected agent tools"), "{stderr}");
    assert!(
        stderr.contains(&format!("SHA-256 is {}, expected {wrong}", setup.sha256)),
        "{stderr}"
    );
    assert!(stderr.contains("not starting the agent"), "{stderr}");
    assert_eq!(
        entries(&tools_root(&setup)),
        Vec::<String>::new(),
        "something was unpacked or left"
    );
    assert!(
        !log.exists(),
        "systemctl was called: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn failed_download_rejected() {
    let mut setup = setup();
    setup.machine.tools.url = setup.machine.tools.url.replace("/tools/", "/missing/");
    let (output, log) = run_install_script(&setup);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("download of http://127.0.0.1:"), "{stderr}");
    assert_eq!(entries(&tools_root(&setup)), Vec::<String>::new());
    assert!(!log.exists());
}

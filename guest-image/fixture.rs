//! Fixtures shared by the real-guest tests of the LXC and libvirt
//! backends: the Debian guest image that `build.sh` builds and caches, a
//! fake agent tools tarball, and an HTTP server for it that runs in a
//! network namespace on the test's bridge.
//!
//! Each backend's tests include this file with a `#[path]` module. It uses
//! only the standard library, `sha2` and `hex`, which both crates have.

#![allow(dead_code)]

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Directory under which `build.sh` caches guest images, one directory
/// per key. It lies outside the repository and outside the folders a
/// second libvirtd hides under tmpfs.
pub const CACHE_ROOT: &str = "/var/cache/berth-test/guest";
/// Prefix of the lines that the image's report service prints on the
/// console.
pub const REPORT_PREFIX: &str = "berth-guest: ";
/// File the fake jujud writes its arguments to when it starts, relative
/// to the machine's data directory. The image's report service reads the
/// same file.
pub const FAKE_JUJUD_MARKER: &str = "fake-jujud.started";
/// Agent version of the fake tools.
pub const TOOLS_VERSION: &str = "3.5.1-ubuntu-amd64";
/// Port of the tools server.
pub const TOOLS_PORT: u16 = 8080;

/// The outputs of `build.sh`.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// Cache key, a hash of the image's inputs.
    pub key: String,
    /// Uncompressed tarball of the root file system, for the LXC manager.
    pub rootfs_tarball: PathBuf,
    /// Raw ext4 disk image of the tree with the cloud kernel installed.
    pub disk: PathBuf,
    /// SHA-256 of the disk image in hex.
    pub disk_sha256: String,
    /// The cloud kernel.
    pub kernel: PathBuf,
    /// Its initramfs.
    pub initrd: PathBuf,
    /// Time `build.sh` took: well under a second when the image was cached,
    /// one to five minutes when it was built.
    pub elapsed: Duration,
}

/// Runs a command and returns its standard output, or panics with both
/// outputs.
pub fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Returns the guest image, building it first when the cache has no build
/// of the current inputs. The build's log goes to standard error.
pub fn guest_image() -> GuestImage {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-image/build.sh");
    let started = Instant::now();
    let output = Command::new("sh")
        .arg(&script)
        .arg(CACHE_ROOT)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({}); its log is above",
        script.display(),
        output.status
    );
    let elapsed = started.elapsed();
    let text = String::from_utf8(output.stdout).expect("build.sh prints UTF-8");
    let value = |name: &str| -> String {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("build.sh printed no {name}= line: {text}"))
            .to_owned()
    };
    let image = GuestImage {
        key: value("key"),
        rootfs_tarball: value("rootfs-tarball").into(),
        disk: value("disk").into(),
        disk_sha256: value("disk-sha256"),
        kernel: value("kernel").into(),
        initrd: value("initrd").into(),
        elapsed,
    };
    for path in [
        &image.rootfs_tarball,
        &image.disk,
        &image.kernel,
        &image.initrd,
    ] {
        assert!(
            path.is_file(),
            "build.sh output {} is missing",
            path.display()
        );
    }
    image
}

/// The fake agent tools: a gzip tarball holding a `jujud` shell script
/// that writes its arguments to [`FAKE_JUJUD_MARKER`] in the data
/// directory it is given, then sleeps.
#[derive(Debug, Clone)]
pub struct FakeTools {
    /// The tarball.
    pub path: PathBuf,
    /// Its SHA-256 in hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

const FAKE_JUJUD: &str = r#"#!/bin/sh
# Fake machine agent of berth's real-guest tests: records that it started,
# with its arguments, then stays running like an agent.
arguments="$*"
data_dir=/var/lib/juju
while [ "$#" -gt 0 ]; do
    if [ "$1" = --data-dir ] && [ "$#" -gt 1 ]; then
        data_dir=$2
        shift
    fi
    shift
done
printf '%s\n' "$arguments" >"$data_dir/fake-jujud.started"
echo "fake jujud started"
exec sleep infinity
"#;

/// Writes the fake tools tarball to `directory/<file_name>`.
pub fn write_fake_tools(directory: &Path, file_name: &str) -> FakeTools {
    let source = directory.join("fake-tools-source");
    fs::create_dir_all(&source).unwrap();
    let jujud = source.join("jujud");
    fs::write(&jujud, FAKE_JUJUD).unwrap();
    fs::set_permissions(&jujud, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        FAKE_JUJUD.contains(FAKE_JUJUD_MARKER),
        "the fake jujud writes another marker"
    );
    let path = directory.join(file_name);
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "-czf"])
        .arg(&path)
        .arg("-C")
        .arg(&source)
        .arg("jujud"));
    let data = fs::read(&path).unwrap();
    FakeTools {
        sha256: hex::encode(Sha256::digest(&data)),
        size: data.len() as u64,
        path,
    }
}

/// An HTTP server in a network namespace of its own, joined to a test
/// bridge through a veth pair: the guests on that bridge reach it, and
/// nothing else does. The server is Python's `http.server` serving one
/// directory; its request log is kept for the tests to read.
pub struct ToolsServer {
    /// Network namespace name.
    pub netns: String,
    /// Host end of the veth pair, a port of the bridge.
    pub veth: String,
    /// Address the server listens on.
    pub address: Ipv4Addr,
    /// Directory served.
    pub root: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl ToolsServer {
    /// Removes the namespace and veth that a crashed earlier run of the
    /// same test left, after killing the server processes still running in
    /// that namespace. Deleting the namespace deletes the veth end inside
    /// it, and with it the host end, once no process runs there.
    pub fn remove_leftovers(netns: &str, veth: &str) {
        if Path::new("/run/netns").join(netns).exists() {
            let pids = Command::new("ip")
                .args(["netns", "pids", netns])
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
                .unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
        if Path::new("/sys/class/net").join(veth).exists() {
            let _ = Command::new("ip").args(["link", "del", veth]).status();
        }
    }

    /// Creates namespace `netns` with address `address/prefix` on a veth
    /// whose host end `veth` joins `bridge`, and starts the server there on
    /// [`TOOLS_PORT`], serving `root`. Returns once the server listens.
    pub fn start(
        netns: &str,
        veth: &str,
        bridge: &str,
        address: Ipv4Addr,
        prefix: u8,
        root: &Path,
    ) -> Self {
        Self::remove_leftovers(netns, veth);
        let peer = format!("{veth}p");
        assert!(
            peer.len() <= 15,
            "interface name {peer} is longer than 15 bytes"
        );
        let log = root.with_extension("log");
        let mut server = Self {
            netns: netns.to_owned(),
            veth: veth.to_owned(),
            address,
            root: root.to_owned(),
            log: log.clone(),
            child: None,
        };
        run(Command::new("ip").args(["netns", "add", netns]));
        run(Command::new("ip").args([
            "link", "add", veth, "type", "veth", "peer", "name", &peer, "netns", netns,
        ]));
        run(Command::new("ip").args(["link", "set", veth, "master", bridge, "up"]));
        let inside = |args: &[&str]| {
            run(Command::new("ip").args(["-n", netns]).args(args));
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", &format!("{address}/{prefix}"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);

        // `ip netns exec` enters the namespace and execs the command, so
        // the child's PID is the server's.
        let log_file = fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "/usr/bin/python3",
                "-u",
                "-m",
                "http.server",
            ])
            .arg(TOOLS_PORT.to_string())
            .args(["--bind", &address.to_string(), "--directory"])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start python3 -m http.server (apt-get install python3)");
        server.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.log().contains("Serving HTTP on") {
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the tools server exited ({status}): {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "the tools server did not listen within 20 s: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Returns the URL of `path` (which starts with `/`) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{TOOLS_PORT}{path}", self.address)
    }

    /// Returns the server's output: the listen line and one line per
    /// request, such as `10.0.0.2 - - [...] "GET /x HTTP/1.1" 200 -`.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ToolsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Self::remove_leftovers(&self.netns, &self.veth);
    }
}

/// Returns the `berth-guest:` report lines in `console`, without the
/// prefix and with carriage returns removed.
pub fn report_lines(console: &str) -> Vec<String> {
    console
        .lines()
        .filter_map(|line| {
            let start = line.find(REPORT_PREFIX)?;
            Some(
                line[start + REPORT_PREFIX.len()..]
                    .trim_end_matches('\r')
                    .to_owned(),
            )
        })
        .collect()
}

/// Returns the value of the report line that starts with `name `, or
/// `None` when the report has no such line.
pub fn report_value<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name} ");
    lines.iter().find_map(|line| line.strip_prefix(&prefix))
}

/// Waits until `path` contains `needle`, polling every 100 ms, and returns
/// the time it took and the whole content. Fails with the content so far
/// after `timeout`.
pub fn wait_for_text(path: &Path, needle: &str, timeout: Duration) -> (Duration, String) {
    let started = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned();
        if text.contains(needle) {
            return (started.elapsed(), text);
        }
        assert!(
            started.elapsed() < timeout,
            "{needle:?} did not appear in {} within {timeout:?}; it holds:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

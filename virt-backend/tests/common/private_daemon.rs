//! A libvirtd and virtlogd of a test's own, in a private mount namespace,
//! reached over TCP on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The shell that runs both daemons, and where their PIDs and config are.
pub struct Launch {
    /// `unshare` running the shell; both daemons are its children.
    pub shell: Child,
    /// The libvirtd config file, which makes it listen on loopback TCP.
    pub conf: PathBuf,
    /// Where the shell wrote virtlogd's PID.
    pub virtlogd_pid_file: PathBuf,
    /// Where the shell wrote libvirtd's PID.
    pub libvirtd_pid_file: PathBuf,
    /// `qemu+tcp://127.0.0.1:PORT/system` of this libvirtd.
    pub uri: String,
}

/// Starts virtlogd and a listening libvirtd in a new mount namespace with
/// tmpfs over libvirt's state directories and a private copy of
/// /etc/libvirt, so that the system daemon never sees what they do. Files
/// go in `dir`; the daemon's stderr is `dir/libvirtd.stderr`.
pub fn launch(dir: &Path) -> Launch {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let conf = dir.join("libvirtd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen_tcp = 1\nlisten_tls = 0\nlisten_addr = \"127.0.0.1\"\nauth_tcp = \"none\"\ntcp_port = \"{port}\"\n"
        ),
    )
    .unwrap();
    let virtlogd_pid_file = dir.join("virtlogd.pid");
    let libvirtd_pid_file = dir.join("libvirtd.pid");
    // Both daemons run in the foreground as children of the shell, which
    // writes their PIDs where the test reads them and reaps them when they
    // exit. /etc/libvirt contains persistent definitions (pools, domains),
    // so the daemon gets a private copy of it too.
    let script = format!(
        "set -e\n\
         cp -a /etc/libvirt {etc}\n\
         mount --bind {etc} /etc/libvirt\n\
         for d in /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do mkdir -p $d; mount -t tmpfs tmpfs $d; done\n\
         mkdir -p /var/lib/libvirt/images\n\
         virtlogd -p /run/libvirt/virtlogd.pid & echo $! > {virtlogd_pid}\n\
         libvirtd --listen -f {conf} -p /run/libvirt/libvirtd.pid & echo $! > {libvirtd_pid}\n\
         wait\n",
        etc = dir.join("etc-libvirt").display(),
        virtlogd_pid = virtlogd_pid_file.display(),
        libvirtd_pid = libvirtd_pid_file.display(),
        conf = conf.display(),
    );
    let shell = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("libvirtd.stderr")).unwrap(),
        ))
        .spawn()
        .expect("cannot run unshare (util-linux)");
    Launch {
        shell,
        conf,
        virtlogd_pid_file,
        libvirtd_pid_file,
        uri: format!("qemu+tcp://127.0.0.1:{port}/system"),
    }
}

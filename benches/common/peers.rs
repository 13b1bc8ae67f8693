//! The peers berth is compared with, driven the way an agent that shells
//! out drives them: the lxc command-line tools, Incus through its `incus`
//! client, and libvirt through `virsh` and `qemu-img`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::lxc::destroy_all;
use super::stats::Samples;
use super::{remove_tree, run, run_quietly, timed_run};

/// Configuration items of the lxc tools' template. They match what berth
/// sets on each container (see `base_items` and `network_items` of
/// berth-lxc's create), so both start the same container: a veth on the
/// same bridge, no ttys, the same mounts, capabilities and log level. The
/// log files sit in the template's directory, which `lxc-copy` rewrites to
/// the clone's directory.
fn tools_template_config(lxc_path: &Path, template: &str, bridge: &str, log_dir: &Path) -> String {
    let dir = lxc_path.join(template);
    format!(
        "lxc.uts.name = {template}\n\
         lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed\n\
         lxc.autodev = 1\n\
         lxc.tty.max = 0\n\
         lxc.pty.max = 16\n\
         lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio\n\
         lxc.start.auto = 0\n\
         lxc.console.logfile = {dir}/console.log\n\
         lxc.log.file = {dir}/container.log\n\
         lxc.log.level = INFO\n\
         lxc.mount.entry = {log_dir} var/log/juju none bind,create=dir 0 0\n\
         lxc.net.0.type = veth\n\
         lxc.net.0.link = {bridge}\n\
         lxc.net.0.flags = up\n\
         lxc.net.0.name = eth0\n",
        dir = dir.display(),
        log_dir = log_dir.display(),
    )
}

/// The lxc command-line tools on a template of their own, in their own lxc
/// path.
pub struct ToolsPeer {
    /// The tools' lxc path.
    pub lxc_path: PathBuf,
}

impl ToolsPeer {
    /// Name of the tools' template container.
    pub const TEMPLATE: &str = "bb-tools-tmpl";

    /// Creates the template with `lxc-create`, through a template script
    /// that copies `rootfs` (the same busybox root file system berth uses),
    /// configured with a veth on `bridge`.
    pub fn setup(base: &Path, rootfs: &Path, bridge: &str, log_dir: &Path) -> Self {
        let lxc_path = base.join("tools-lxc");
        destroy_all(&lxc_path);
        remove_tree(&lxc_path);
        fs::create_dir_all(&lxc_path).unwrap();

        let script = base.join("tools-template.sh");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 # lxc-create template script: copies the benchmark's busybox root file system.\n\
                 set -e\n\
                 while [ $# -gt 0 ]; do\n\
                 \x20   case \"$1\" in\n\
                 \x20       --rootfs) rootfs=\"$2\"; shift 2 ;;\n\
                 \x20       --rootfs=*) rootfs=\"${{1#--rootfs=}}\"; shift ;;\n\
                 \x20       *) shift ;;\n\
                 \x20   esac\n\
                 done\n\
                 cp -a {source}/. \"$rootfs\"/\n",
                source = rootfs.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();

        let config = base.join("tools-template.conf");
        fs::write(
            &config,
            tools_template_config(&lxc_path, Self::TEMPLATE, bridge, log_dir),
        )
        .unwrap();
        run(
            "lxc-create",
            &[
                "-P",
                lxc_path.to_str().unwrap(),
                "-n",
                Self::TEMPLATE,
                "-f",
                config.to_str().unwrap(),
                "-t",
                script.to_str().unwrap(),
            ],
        );
        Self { lxc_path }
    }

    fn path(&self) -> &str {
        self.lxc_path.to_str().unwrap()
    }

    /// Clones the template with `lxc-copy -s -B overlay`, writes the NoCloud
    /// seed into the clone's upper layer (in-process, as an agent would) and
    /// starts it with `lxc-start`, recording `clone`, `seed` and `start`.
    pub fn create(&self, name: &str, user_data: &[u8], samples: &mut Samples) {
        let path = self.path();
        samples.add(
            "clone",
            timed_run(
                "lxc-copy",
                &[
                    "-P",
                    path,
                    "-n",
                    Self::TEMPLATE,
                    "-N",
                    name,
                    "-s",
                    "-B",
                    "overlay",
                ],
            ),
        );

        let started = Instant::now();
        let seed = self.upper_dir(name).join("var/lib/cloud/seed/nocloud-net");
        fs::create_dir_all(&seed).unwrap();
        fs::write(seed.join("user-data"), user_data).unwrap();
        fs::write(
            seed.join("meta-data"),
            format!("instance-id: {name}\nlocal-hostname: {name}\n"),
        )
        .unwrap();
        samples.add("seed", started.elapsed());

        samples.add("start", timed_run("lxc-start", &["-P", path, "-n", name]));
    }

    /// Returns the upper (writable) layer of overlay clone `name`, read from
    /// its `lxc.rootfs.path` (`overlay:LOWER:UPPER`).
    pub fn upper_dir(&self, name: &str) -> PathBuf {
        let config = fs::read_to_string(self.lxc_path.join(name).join("config")).unwrap();
        let rootfs = config
            .lines()
            .find_map(|line| line.strip_prefix("lxc.rootfs.path = "))
            .expect("the clone's config sets lxc.rootfs.path");
        let upper = rootfs.rsplit(':').next().unwrap();
        PathBuf::from(upper)
    }

    /// Stops `name` with `lxc-stop -k` and destroys it with `lxc-destroy`,
    /// recording `stop` and `destroy`.
    pub fn destroy(&self, name: &str, samples: &mut Samples) {
        let path = self.path();
        samples.add(
            "stop",
            timed_run("lxc-stop", &["-P", path, "-n", name, "-k"]),
        );
        samples.add(
            "destroy",
            timed_run("lxc-destroy", &["-P", path, "-n", name]),
        );
    }

    /// Destroys every container of the tools' lxc path and removes it.
    pub fn cleanup(&self) {
        destroy_all(&self.lxc_path);
        remove_tree(&self.lxc_path);
    }
}

/// Incus, its daemon confined to a network namespace that holds only
/// loopback and a bridge made there.
pub struct IncusPeer {
    daemon: Option<Child>,
}

/// Shell script that runs incusd. It is started by `unshare --net --mount
/// --propagation private`, so the daemon's network namespace holds only
/// loopback and `bb-incbr0`, and nothing it does can leave the machine.
/// sysfs is mounted again so that /sys/class/net lists that namespace's
/// devices (incusd checks a NIC's parent there); the cgroup mounts are kept.
const INCUSD_SCRIPT: &str = "#!/bin/sh
set -e
ip link set lo up
ip link add bb-incbr0 type bridge
ip link set bb-incbr0 up
mkdir -p /run/bb-incus-cgroup
mount --rbind /sys/fs/cgroup /run/bb-incus-cgroup
mount -t sysfs sysfs /sys
mount --rbind /run/bb-incus-cgroup /sys/fs/cgroup
exec /usr/libexec/incus/incusd --group root --logfile \"$1\"
";

/// Path of the Incus daemon binary in Debian's package.
const INCUSD: &str = "/usr/libexec/incus/incusd";

impl IncusPeer {
    /// Alias of the imported busybox image.
    pub const IMAGE: &str = "bb-busybox";
    /// Profile every benchmark instance is launched with: a root disk on the
    /// `bb-dir` pool and a bridged NIC on `bb-incbr0`.
    pub const PROFILE: &str = "bb-bench";

    /// Starts incusd in its namespace unless one already responds, creates the
    /// `bb-dir` pool and the profile, and imports `rootfs` as an image.
    /// Returns why Incus cannot run here instead of panicking.
    pub fn setup(base: &Path, rootfs: &Path) -> Result<Self, String> {
        if Command::new("incus").arg("--version").output().is_err() || !Path::new(INCUSD).exists() {
            return Err(
                "Incus is not installed (apt-get install -t bookworm-backports incus)".into(),
            );
        }
        let mut peer = Self { daemon: None };
        if !Self::answering() {
            let script = base.join("incusd-netns.sh");
            fs::write(&script, INCUSD_SCRIPT).unwrap();
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
            let log = base.join("incusd.log");
            let child = Command::new("unshare")
                .args(["--net", "--mount", "--propagation", "private"])
                .arg(&script)
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|error| format!("cannot start incusd under unshare: {error}"))?;
            peer.daemon = Some(child);
            let ready = Command::new(INCUSD)
                .args(["waitready", "--timeout", "60"])
                .status();
            if !ready.is_ok_and(|status| status.success()) {
                return Err(format!(
                    "incusd did not become ready within 60 s; see {}",
                    log.display()
                ));
            }
        }
        peer.remove_instances();
        run_quietly("incus", &["storage", "create", "bb-dir", "dir"]);
        run_quietly("incus", &["profile", "create", Self::PROFILE]);
        run_quietly(
            "incus",
            &[
                "profile",
                "device",
                "add",
                Self::PROFILE,
                "root",
                "disk",
                "path=/",
                "pool=bb-dir",
            ],
        );
        run_quietly(
            "incus",
            &[
                "profile",
                "device",
                "add",
                Self::PROFILE,
                "eth0",
                "nic",
                "nictype=bridged",
                "parent=bb-incbr0",
                "name=eth0",
            ],
        );

        let image_dir = base.join("incus-image");
        remove_tree(&image_dir);
        fs::create_dir_all(&image_dir).unwrap();
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        fs::write(
            image_dir.join("metadata.yaml"),
            format!(
                "architecture: x86_64\ncreation_date: {created}\nproperties:\n  os: busybox\n  description: berth benchmark busybox\n"
            ),
        )
        .unwrap();
        let tarball = base.join("incus-busybox.tar.gz");
        run(
            "tar",
            &[
                "-czf",
                tarball.to_str().unwrap(),
                "-C",
                image_dir.to_str().unwrap(),
                "metadata.yaml",
                "--transform",
                "s,^\\./,rootfs/,",
                "-C",
                rootfs.to_str().unwrap(),
                ".",
            ],
        );
        run_quietly("incus", &["image", "delete", Self::IMAGE]);
        run(
            "incus",
            &[
                "image",
                "import",
                tarball.to_str().unwrap(),
                "--alias",
                Self::IMAGE,
            ],
        );
        Ok(peer)
    }

    /// Returns true when an Incus daemon responds on its socket.
    fn answering() -> bool {
        Command::new(INCUSD)
            .args(["waitready", "--timeout", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Launches (creates and starts) `name`, recording `launch`.
    pub fn launch(&self, name: &str, samples: &mut Samples) {
        samples.add(
            "launch",
            timed_run(
                "incus",
                &[
                    "launch",
                    Self::IMAGE,
                    name,
                    "--profile",
                    Self::PROFILE,
                    "-q",
                ],
            ),
        );
    }

    /// Force-stops and deletes `name`, recording `stop` and `delete`.
    pub fn destroy(&self, name: &str, samples: &mut Samples) {
        samples.add("stop", timed_run("incus", &["stop", "--force", name]));
        samples.add("delete", timed_run("incus", &["delete", name]));
    }

    /// Returns the PID of the incusd this peer started, if it started one.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Deletes every instance whose name starts with `bb-`.
    fn remove_instances(&self) {
        let Ok(output) = Command::new("incus")
            .args(["list", "--format", "csv", "--columns", "n"])
            .output()
        else {
            return;
        };
        for name in String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|name| name.starts_with("bb-"))
        {
            run_quietly("incus", &["delete", "--force", name]);
        }
    }

    /// Deletes the instances, image, profile and pool this peer made, and
    /// shuts the daemon down when this peer started it.
    pub fn cleanup(&mut self) {
        self.remove_instances();
        run_quietly("incus", &["image", "delete", Self::IMAGE]);
        run_quietly("incus", &["profile", "delete", Self::PROFILE]);
        run_quietly("incus", &["storage", "delete", "bb-dir"]);
        if let Some(mut child) = self.daemon.take() {
            run_quietly("incus", &["admin", "shutdown", "--timeout", "30"]);
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if child.try_wait().ok().flatten().is_none() {
                eprintln!(
                    "warning: incusd (pid {}) did not stop; killing it",
                    child.id()
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for IncusPeer {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Files a VM boots from: Debian's cloud kernel and a busybox initramfs
/// whose init prints a line and sleeps, and an empty qcow2 base disk.
pub struct VmFiles {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initial RAM disk.
    pub initrd: PathBuf,
    /// Base disk image (qcow2).
    pub base: PathBuf,
}

impl VmFiles {
    /// Returns the files under `ROOT/vm`, panicking with the commands that
    /// make them when one is missing.
    pub fn find() -> Self {
        let dir = super::bench_dir("vm");
        let files = Self {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            base: dir.join("base.qcow2"),
        };
        for file in [&files.kernel, &files.initrd, &files.base] {
            assert!(
                file.exists(),
                "{} is missing; make the VM files as BENCHMARKS.md describes (section \"VM boot files\")",
                file.display()
            );
        }
        files
    }
}

/// libvirt through `virsh`, with root disks made by `qemu-img` and seeds by
/// `cloud-localds` (an ISO 9660 image made by genisoimage), in a directory
/// pool.
pub struct VirshPeer {
    /// Connection URI.
    pub uri: String,
    /// Storage pool name.
    pub pool: String,
    /// The pool's directory.
    pub pool_dir: PathBuf,
    /// Directory of the peer's seed inputs and console logs.
    pub work_dir: PathBuf,
    /// The bridge of the VMs' NIC.
    pub bridge: String,
    /// Boot files.
    pub files: VmFiles,
    /// The peer's copy of the base disk in the pool.
    pub base: PathBuf,
}

impl VirshPeer {
    /// Copies the base disk into `pool_dir` (which must belong to pool
    /// `pool`) and prepares a work directory.
    pub fn setup(
        uri: &str,
        pool: &str,
        pool_dir: &Path,
        work_dir: &Path,
        bridge: &str,
        files: VmFiles,
    ) -> Self {
        fs::create_dir_all(work_dir).unwrap();
        let base = pool_dir.join("bb-peer-base.qcow2");
        fs::copy(&files.base, &base).unwrap();
        run("virsh", &["-q", "-c", uri, "pool-refresh", pool]);
        Self {
            uri: uri.into(),
            pool: pool.into(),
            pool_dir: pool_dir.into(),
            work_dir: work_dir.into(),
            bridge: bridge.into(),
            files,
            base,
        }
    }

    fn virsh(&self, args: &[&str]) -> Duration {
        let mut all = vec!["-q", "-c", self.uri.as_str()];
        all.extend_from_slice(args);
        timed_run("virsh", &all)
    }

    /// Creates VM `name`: `qemu-img create` of a qcow2 overlay of the base,
    /// `cloud-localds` of the seed, `virsh pool-refresh` so that libvirt
    /// sees both volumes, `virsh define` and `virsh start`. Records each.
    pub fn create(&self, name: &str, user_data: &[u8], mac: &str, samples: &mut Samples) {
        let root = self.pool_dir.join(format!("{name}-root.qcow2"));
        samples.add(
            "qemu-img create",
            timed_run(
                "qemu-img",
                &[
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "qcow2",
                    "-b",
                    self.base.to_str().unwrap(),
                    root.to_str().unwrap(),
                ],
            ),
        );

        let seed = self.pool_dir.join(format!("{name}-seed.img"));
        let user_data_file = self.work_dir.join(format!("{name}.user-data"));
        let meta_data_file = self.work_dir.join(format!("{name}.meta-data"));
        let started = Instant::now();
        fs::write(&user_data_file, user_data).unwrap();
        fs::write(
            &meta_data_file,
            format!("instance-id: {name}\nlocal-hostname: {name}\n"),
        )
        .unwrap();
        run(
            "cloud-localds",
            &[
                seed.to_str().unwrap(),
                user_data_file.to_str().unwrap(),
                meta_data_file.to_str().unwrap(),
            ],
        );
        samples.add("seed (cloud-localds)", started.elapsed());

        samples.add("pool-refresh", self.virsh(&["pool-refresh", &self.pool]));

        let xml = self.work_dir.join(format!("{name}.xml"));
        fs::write(&xml, self.domain_xml(name, &root, &seed, mac)).unwrap();
        samples.add("define", self.virsh(&["define", xml.to_str().unwrap()]));
        samples.add("start", self.virsh(&["start", name]));
    }

    /// Destroys VM `name`: `virsh destroy`, `virsh undefine`, and `virsh
    /// vol-delete` of its two volumes. Records each.
    pub fn destroy(&self, name: &str, samples: &mut Samples) {
        samples.add("destroy", self.virsh(&["destroy", name]));
        samples.add("undefine", self.virsh(&["undefine", name]));
        let root = format!("{name}-root.qcow2");
        let seed = format!("{name}-seed.img");
        samples.add(
            "vol-delete",
            self.virsh(&["vol-delete", "--pool", &self.pool, &root]),
        );
        samples.add(
            "vol-delete seed",
            self.virsh(&["vol-delete", "--pool", &self.pool, &seed]),
        );
    }

    /// Returns a domain like berth's: software emulation, 512 MiB, one CPU,
    /// ACPI and APIC, direct kernel boot, a virtio qcow2 root disk and a
    /// read-only seed disk, a virtio NIC on the bridge and a serial console
    /// logged to a file.
    fn domain_xml(&self, name: &str, root: &Path, seed: &Path, mac: &str) -> String {
        format!(
            "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='KiB'>524288</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{root}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{seed}'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='{bridge}'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <log file='{log}' append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
",
            kernel = self.files.kernel.display(),
            initrd = self.files.initrd.display(),
            root = root.display(),
            seed = seed.display(),
            bridge = self.bridge,
            log = self.work_dir.join(format!("{name}.console.log")).display(),
        )
    }

    /// Destroys and undefines every domain named `bb-peer-...` and deletes
    /// its volumes.
    pub fn cleanup(&self) {
        remove_virsh_leftovers(&self.uri, &self.pool, "bb-peer-");
        let _ = fs::remove_file(&self.base);
        run_quietly(
            "virsh",
            &["-q", "-c", &self.uri, "pool-refresh", &self.pool],
        );
    }
}

/// Destroys, undefines and deletes the volumes of every domain of `uri`
/// whose name starts with `prefix`, and deletes the pool's volumes with that
/// prefix.
pub fn remove_virsh_leftovers(uri: &str, pool: &str, prefix: &str) {
    let Ok(output) = Command::new("virsh")
        .args(["-q", "-c", uri, "list", "--all", "--name"])
        .output()
    else {
        return;
    };
    for name in String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|name| name.starts_with(prefix))
    {
        run_quietly("virsh", &["-q", "-c", uri, "destroy", name]);
        run_quietly("virsh", &["-q", "-c", uri, "undefine", name, "--nvram"]);
        run_quietly("virsh", &["-q", "-c", uri, "undefine", name]);
    }
    run_quietly("virsh", &["-q", "-c", uri, "pool-refresh", pool]);
    let Ok(output) = Command::new("virsh")
        .args(["-q", "-c", uri, "vol-list", pool])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some(volume) = line
            .split_whitespace()
            .next()
            .filter(|volume| volume.starts_with(prefix))
        {
            run_quietly(
                "virsh",
                &["-q", "-c", uri, "vol-delete", "--pool", pool, volume],
            );
        }
    }
}

/// Writes `text` to standard output and flushes it, so progress shows while
/// a long benchmark runs.
pub fn say(text: &str) {
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

//! berth's libvirt manager on `qemu:///system` or libvirt's test driver,
//! with a pool, bridge and directories of its own.

use std::path::PathBuf;

use berth_core::{ManagerConfig, NetworkConfig};
use berth_virt::handle::Connection;
use berth_virt::{VirtInitialiser, VirtManager};

use super::peers::{VmFiles, remove_virsh_leftovers, say};
use super::{bench_dir, remove_tree, run, run_quietly};

/// Connection URI of the system QEMU driver.
pub const QEMU_URI: &str = "qemu:///system";

/// Starts virtlogd and libvirtd unless libvirtd already responds.
pub fn ensure_libvirtd() {
    let responding = std::process::Command::new("virsh")
        .args(["-q", "-c", QEMU_URI, "version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !responding {
        say("libvirtd does not respond; starting virtlogd and libvirtd");
        std::fs::create_dir_all("/var/log/libvirt").unwrap();
        std::fs::create_dir_all("/run/libvirt").unwrap();
        run("virtlogd", &["-d"]);
        run("libvirtd", &["-d"]);
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// A pool `bb-<tag>`, bridge `bb-<tag>` and manager `bb<tag>` of one
/// benchmark.
pub struct VirtEnv {
    /// Root of everything on disk: `ROOT/<tag>`.
    pub base: PathBuf,
    /// Connection URI.
    pub uri: String,
    /// Storage pool and bridge name.
    pub pool: String,
    /// The bridge of the VMs' NIC.
    pub bridge: String,
    /// Manager name.
    pub manager_name: String,
}

impl VirtEnv {
    /// Prepares `qemu:///system` (starting libvirtd when it does not
    /// respond): removes what an earlier run with `tag` left, then creates
    /// the bridge. The pool is made by berth's initialiser in [`Self::manager`].
    pub fn system(tag: &str) -> Self {
        ensure_libvirtd();
        let env = Self {
            base: bench_dir(tag),
            uri: QEMU_URI.into(),
            pool: format!("bb-{tag}"),
            bridge: format!("bb-{tag}"),
            manager_name: format!("bb{tag}"),
        };
        env.cleanup();
        std::fs::create_dir_all(&env.base).unwrap();
        berth_lxc::bridge::ensure_bridge(&env.bridge, None).unwrap();
        env
    }

    /// Returns the pool's directory.
    pub fn pool_dir(&self) -> PathBuf {
        self.base.join("pool")
    }

    /// Returns the manager configuration: direct kernel boot of the
    /// benchmark's VM files, software emulation, everything under `base`.
    pub fn config(&self, files: &VmFiles) -> ManagerConfig {
        let path = |name: &str| self.base.join(name).to_str().unwrap().to_owned();
        ManagerConfig::new()
            .with("name", self.manager_name.as_str())
            .with("uri", self.uri.as_str())
            .with("pool", self.pool.as_str())
            .with("pool-dir", self.pool_dir().to_str().unwrap())
            .with("containers-dir", path("containers"))
            .with("removed-dir", path("removed"))
            .with("lock-dir", path("locks"))
            .with("image", files.base.to_str().unwrap())
            .with("kernel", files.kernel.to_str().unwrap())
            .with("initrd", files.initrd.to_str().unwrap())
            .with("cmdline", "console=ttyS0 panic=-1")
            // Nested KVM fails on the hosts this was written on, so the
            // choice is fixed rather than detected.
            .with("virt-type", "qemu")
    }

    /// Prepares the pool with berth's initialiser and returns a manager.
    pub fn manager(&self, files: &VmFiles) -> VirtManager {
        let config = self.config(files);
        VirtInitialiser::new(config.clone())
            .unwrap()
            .initialise_with_report()
            .expect("prepare the libvirt pool");
        VirtManager::new(config).expect("create libvirt manager")
    }

    /// Returns the network of every VM: a NIC on the bridge.
    pub fn network(&self) -> NetworkConfig {
        NetworkConfig::bridge(&self.bridge).unwrap()
    }

    /// Returns the name of container `id`.
    pub fn container_name(&self, id: &str) -> String {
        berth_core::container_name(&self.manager_name, id).unwrap()
    }

    /// Removes the domains and volumes of this benchmark and of the virsh
    /// peer, the pool, the bridge and `base`.
    pub fn cleanup(&self) {
        remove_virsh_leftovers(&self.uri, &self.pool, &format!("{}-", self.manager_name));
        remove_virsh_leftovers(&self.uri, &self.pool, "bb-peer-");
        run_quietly(
            "virsh",
            &["-q", "-c", &self.uri, "pool-destroy", &self.pool],
        );
        run_quietly(
            "virsh",
            &["-q", "-c", &self.uri, "pool-undefine", &self.pool],
        );
        let _ = berth_lxc::bridge::delete_bridge(&self.bridge);
        remove_tree(&self.base);
    }
}

impl Drop for VirtEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// libvirt's test driver with state of its own (a `test:///` URI of a node
/// file), a pool and a 1 MiB raw base image; the test driver reads no
/// volume contents, so no bootable image is needed.
pub struct TestDriverEnv {
    /// Directory of the node file, pool, image and container directories.
    pub dir: tempfile::TempDir,
    /// Connection URI.
    pub uri: String,
}

impl TestDriverEnv {
    /// Creates the node file and base image.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bb-virt-test-")
            .tempdir()
            .unwrap();
        let node = dir.path().join("node.xml");
        std::fs::write(&node, "<node/>\n").unwrap();
        std::fs::write(dir.path().join("base.img"), vec![1u8; 1 << 20]).unwrap();
        let uri = format!("test://{}", node.display());
        Self { dir, uri }
    }

    /// Returns a manager named `bbtest` on a prepared connection.
    pub fn manager(&self) -> VirtManager {
        let path = |name: &str| self.dir.path().join(name).to_str().unwrap().to_owned();
        let config = ManagerConfig::new()
            .with("name", "bbtest")
            .with("uri", self.uri.as_str())
            .with("pool", "bb-test")
            .with("pool-dir", path("pool"))
            .with("containers-dir", path("containers"))
            .with("removed-dir", path("removed"))
            .with("lock-dir", path("locks"))
            .with("image", path("base.img"));
        let connection = Connection::open(&self.uri).expect("open the test driver");
        VirtInitialiser::new(config.clone())
            .unwrap()
            .initialise_with(&connection)
            .expect("prepare the test pool");
        VirtManager::with_connection(config, connection).expect("create libvirt manager")
    }
}

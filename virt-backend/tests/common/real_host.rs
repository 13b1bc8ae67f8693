//! Fixtures of the tests that run real VMs: host checks, a boot kernel
//! from Debian's cloud kernel package, a busybox initramfs, test bridges
//! and clean-up of earlier runs.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_virt::handle::{Connection, DomainHandle, PoolHandle};

/// Cache of downloaded and built boot files, outside the repository and
/// outside the folders a second libvirtd hides under tmpfs.
pub const CACHE_DIR: &str = "/var/cache/berth-test";
/// Storage pool of the real-tier tests.
pub const REAL_POOL: &str = "berth-test";
/// Marker lines the initramfs prints on the serial console.
pub const MARK: &str = "berth-test:";

/// Modules the guest loads, with their dependencies resolved at build time.
const WANTED_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "vfat",
    "nls_cp437",
    "nls_utf8",
    "nls_ascii",
];

/// Fails the test, with what to start, unless it runs as root and
/// libvirtd accepts connections at `qemu:///system`. Real-tier tests never
/// skip.
pub fn require_real_host() -> Connection {
    crate::common::init_logging();
    assert!(
        nix::unistd::geteuid().is_root(),
        "the real-tier tests need root: they define domains in qemu:///system and create bridges"
    );
    match Connection::open("qemu:///system") {
        Ok(connection) => connection,
        Err(error) => panic!(
            "libvirtd does not answer at qemu:///system ({error}); start it with: \
             mkdir -p /var/log/libvirt /var/run/libvirt; virtlogd -d; libvirtd -d"
        ),
    }
}

/// Boot files for direct kernel boot.
pub struct BootFiles {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Returns the newest `linux-image-6.1.0-N-cloud-amd64` package in apt's
/// package lists.
fn cloud_kernel_package() -> String {
    let listing = run(Command::new("apt-cache").args([
        "search",
        "--names-only",
        "^linux-image-6.1.0-[0-9]+-cloud-amd64$",
    ]));
    let newest = listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let number = name
                .strip_prefix("linux-image-6.1.0-")?
                .strip_suffix("-cloud-amd64")?;
            Some((number.parse::<u32>().ok()?, name.to_owned()))
        })
        .max();
    match newest {
        Some((_, name)) => name,
        None => {
            panic!("apt-cache knows no linux-image-6.1.0-*-cloud-amd64 package; run apt-get update")
        }
    }
}

/// Downloads and unpacks the cloud kernel into the cache once, under a
/// lock, and builds the initramfs. Returns the boot files.
pub fn boot_files() -> BootFiles {
    fs::create_dir_all(CACHE_DIR).unwrap();
    let lock_file = fs::File::create(Path::new(CACHE_DIR).join(".lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).unwrap();

    let unpacked = Path::new(CACHE_DIR).join("kernel");
    if !unpacked.join("done").exists() {
        let package = cloud_kernel_package();
        let download = Path::new(CACHE_DIR).join("download");
        let _ = fs::remove_dir_all(&download);
        let _ = fs::remove_dir_all(&unpacked);
        fs::create_dir_all(&download).unwrap();
        run(Command::new("apt-get")
            .arg("download")
            .arg(&package)
            .current_dir(&download));
        let deb = fs::read_dir(&download)
            .unwrap()
            .next()
            .expect("apt-get download wrote a file")
            .unwrap()
            .path();
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
        fs::write(unpacked.join("done"), package).unwrap();
        fs::remove_dir_all(&download).unwrap();
    }
    let boot = unpacked.join("boot");
    let kernel = fs::read_dir(&boot)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .expect("the package holds a vmlinuz");
    let version = kernel
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    let modules = unpacked.join("lib/modules").join(&version);

    let initrd = Path::new(CACHE_DIR).join("berth-test-initrd.cpio");
    let image = build_initramfs(&modules);
    let temp = initrd.with_extension("tmp");
    fs::write(&temp, image).unwrap();
    fs::rename(&temp, &initrd).unwrap();
    BootFiles { kernel, initrd }
}

/// Finds every `.ko` under `dir` by module name (`-` read as `_`).
fn index_modules(dir: &Path, index: &mut std::collections::BTreeMap<String, PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            index_modules(&path, index);
        } else if let Some(name) = path
            .file_name()
            .unwrap()
            .to_str()
            .and_then(|n| n.strip_suffix(".ko"))
        {
            index.insert(name.replace('-', "_"), path);
        }
    }
}

/// Reads the `depends=` entry of a module's `.modinfo` section.
fn module_depends(data: &[u8]) -> Vec<String> {
    let needle = b"\0depends=";
    let Some(start) = data.windows(needle.len()).position(|w| w == needle) else {
        return Vec::new();
    };
    let rest = &data[start + needle.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// Returns the wanted modules and their dependencies, dependencies first.
fn module_load_order(index: &std::collections::BTreeMap<String, PathBuf>) -> Vec<String> {
    fn visit(
        name: &str,
        index: &std::collections::BTreeMap<String, PathBuf>,
        order: &mut Vec<String>,
    ) {
        if order.iter().any(|n| n == name) {
            return;
        }
        let path = index
            .get(name)
            .unwrap_or_else(|| panic!("module {name} is not in the kernel package"));
        for dependency in module_depends(&fs::read(path).unwrap()) {
            visit(&dependency, index, order);
        }
        order.push(name.to_owned());
    }
    let mut order = Vec::new();
    for name in WANTED_MODULES {
        visit(name, index, &mut order);
    }
    order
}

/// Returns the guest's init script. It loads the modules, mounts the seed
/// disk, prints its label, instance-id, the NIC's MAC and MTU, then idles.
fn init_script(order: &[String]) -> String {
    let mut script = String::from(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
    );
    for name in order {
        script.push_str(&format!(
            "insmod /lib/modules/{name}.ko || echo \"{MARK} insmod {name} failed\"\n"
        ));
    }
    script.push_str(&format!(
        "i=0; while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
         echo \"{MARK} seed label $(dd if=/dev/vdb bs=1 skip=43 count=11 2>/dev/null)\"\n\
         mkdir -p /mnt\n\
         if mount -t vfat -o ro /dev/vdb /mnt; then\n\
           echo \"{MARK} files $(ls /mnt | tr '\\n' ' ')\"\n\
           echo \"{MARK} $(grep instance-id /mnt/meta-data)\"\n\
         else echo \"{MARK} mount failed\"; fi\n\
         i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
         echo \"{MARK} nic $(cat /sys/class/net/eth0/address) mtu $(cat /sys/class/net/eth0/mtu)\"\n\
         echo \"{MARK} ready\"\n\
         while true; do sleep 3600; done\n"
    ));
    script
}

/// Builds an uncompressed newc cpio archive: busybox, the init script and
/// the modules.
fn build_initramfs(modules_dir: &Path) -> Vec<u8> {
    let mut index = std::collections::BTreeMap::new();
    index_modules(&modules_dir.join("kernel"), &mut index);
    let order = module_load_order(&index);
    let mut archive = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "mnt", "lib", "lib/modules"] {
        archive.directory(dir);
    }
    let busybox =
        fs::read("/bin/busybox").expect("/bin/busybox (package busybox-static) is needed");
    archive.file("bin/busybox", 0o755, &busybox);
    archive.file("init", 0o755, init_script(&order).as_bytes());
    for name in &order {
        archive.file(
            &format!("lib/modules/{name}.ko"),
            0o644,
            &fs::read(&index[name]).unwrap(),
        );
    }
    archive.finish()
}

#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            write!(self.bytes, "{field:08x}").unwrap();
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn directory(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    fn file(&mut self, name: &str, permissions: u32, data: &[u8]) {
        self.entry(name, 0o100000 | permissions, data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}

/// A bridge with no uplink that the test created; deleted when dropped.
pub struct TestBridge {
    pub name: String,
}

impl TestBridge {
    pub fn create(name: &str, mtu: u32) -> Self {
        delete_link(name);
        run(Command::new("ip").args(["link", "add", name, "type", "bridge"]));
        run(Command::new("ip").args(["link", "set", name, "mtu", &mtu.to_string(), "up"]));
        Self {
            name: name.to_owned(),
        }
    }

    pub fn mtu(&self) -> u32 {
        fs::read_to_string(format!("/sys/class/net/{}/mtu", self.name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        delete_link(&self.name);
    }
}

/// Deletes a network link the tests made, if it exists.
pub fn delete_link(name: &str) {
    if Path::new("/sys/class/net").join(name).exists() {
        let _ = Command::new("ip").args(["link", "del", name]).status();
    }
}

/// Removes domains and volumes whose names start with `prefix`, left by a
/// crashed earlier run, through `connection`.
pub fn remove_leftovers(connection: &Connection, prefix: &str, pool: &str) {
    for domain in connection
        .list_all_domains(0)
        .unwrap()
        .into_iter()
        .map(DomainHandle::new)
    {
        if domain.name().unwrap().starts_with(prefix) {
            let _ = domain.destroy();
            let _ = domain.undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM);
            let _ = domain.undefine();
        }
    }
    if let Ok(pool) = connection
        .lookup_storage_pool_by_name(pool)
        .map(PoolHandle::new)
    {
        let _ = pool.refresh(0);
        for name in pool.list_volumes().unwrap_or_default() {
            if name.starts_with(prefix)
                && let Ok(volume) = pool.lookup_storage_vol_by_name(&name)
            {
                let _ = berth_virt::handle::VolumeHandle::new(volume).delete(0);
            }
        }
    }
}

/// Waits until `log` contains `needle`, returning the whole log, or fails
/// with the log so far.
pub fn wait_for_console(log: &Path, needle: &str, timeout: Duration) -> String {
    let started = Instant::now();
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            started.elapsed() < timeout,
            "{needle:?} did not appear in {} within {timeout:?}:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes the raw base image of the real-tier tests into the cache (same
/// content every run, so its base volume is imported once and reused).
pub fn base_image() -> PathBuf {
    let path = Path::new(CACHE_DIR).join("berth-test-base.img");
    if !path.exists() {
        let temp = path.with_extension("tmp");
        crate::common::write_raw_image(&temp, 1 << 20);
        fs::rename(&temp, &path).unwrap();
    }
    path
}

//! [`VirtInitialiser`]: prepares a host for the libvirt backend.

use std::process::Command;

use berth_core::{Error, Initialiser, ManagerConfig, Result};
use tracing::{info, warn};

use crate::config::VirtConfig;
use crate::handle::{Connection, PoolHandle};
use crate::manager::connect;
use crate::platform::{GuestPlatform, backend, choose_platform};
use crate::xml::storage::{PoolTarget, StoragePool};
use crate::xml::{from_xml, to_xml};

/// Debian packages a local QEMU host needs: the daemon (with virtlogd),
/// the emulator of this host's architecture, and qemu-img, which libvirt
/// runs itself to create qcow2 volumes.
pub fn required_packages() -> Vec<&'static str> {
    let emulator = match std::env::consts::ARCH {
        "aarch64" | "arm" => "qemu-system-arm",
        "powerpc64" => "qemu-system-ppc",
        "s390x" => "qemu-system-s390x",
        _ => "qemu-system-x86",
    };
    vec!["libvirt-daemon-system", emulator, "qemu-utils"]
}

/// Changes made by one initialisation. On a ready host every flag is false
/// and nothing was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// Packages installed by this run.
    pub installed_packages: Vec<String>,
    /// The storage pool was defined by this run.
    pub pool_defined: bool,
    /// The storage pool was built (its directory made) by this run.
    pub pool_built: bool,
    /// The storage pool was started by this run.
    pub pool_started: bool,
    /// Autostart of the storage pool was turned on by this run.
    pub pool_autostart_set: bool,
    /// The guest platform VMs will use. Its `virt_type` is `kvm` when KVM
    /// is usable.
    pub platform: GuestPlatform,
}

/// An [`Initialiser`] for the libvirt backend. It reads the same
/// configuration keys as [`crate::VirtManager`].
#[derive(Debug)]
pub struct VirtInitialiser {
    config: VirtConfig,
}

impl VirtInitialiser {
    /// Creates an initialiser from `config`, checking every key.
    pub fn new(config: ManagerConfig) -> Result<Self> {
        Ok(Self {
            config: VirtConfig::from_manager_config(config)?,
        })
    }

    /// Makes the host ready and reports what it changed: installs missing
    /// packages (for a local `qemu:///` URI, through apt), checks that the
    /// daemon accepts connections at the URI, defines, builds, starts and autostarts
    /// the storage pool as needed, and reports whether KVM is usable.
    pub fn initialise_with_report(&self) -> Result<InitReport> {
        let installed_packages = if self.config.uri.starts_with("qemu:///") {
            install_missing_packages(&required_packages())?
        } else {
            Vec::new()
        };
        let connection = connect(&self.config.uri)?;
        let mut report = self.initialise_with(&connection)?;
        report.installed_packages = installed_packages;
        Ok(report)
    }

    /// Prepares the storage pool through `connection` and reports the
    /// guest platform, as [`VirtInitialiser::initialise_with_report`]
    /// does, without checking packages.
    pub fn initialise_with(&self, connection: &Connection) -> Result<InitReport> {
        let report = self.ensure_pool(connection)?;
        if report.platform.virt_type == "kvm" {
            info!(reason = report.platform.reason.as_str(), "KVM is usable");
        } else {
            warn!(
                virt_type = report.platform.virt_type.as_str(),
                reason = report.platform.reason.as_str(),
                "KVM is not usable; VMs will run without hardware virtualisation"
            );
        }
        Ok(report)
    }

    /// Returns the validated configuration.
    pub fn config(&self) -> &VirtConfig {
        &self.config
    }

    fn ensure_pool(&self, connection: &Connection) -> Result<InitReport> {
        let name = &self.config.pool;
        let mut pool_defined = false;
        let pool = match connection.lookup_storage_pool_by_name(name) {
            Ok(pool) => PoolHandle::new(pool),
            Err(error)
                if crate::volumes::has_code(&error, virt::error::ErrorNumber::NoStoragePool) =>
            {
                let document = StoragePool {
                    pool_type: "dir".into(),
                    name: name.clone(),
                    uuid: None,
                    target: PoolTarget {
                        path: self.config.pool_dir.clone(),
                    },
                };
                let xml = to_xml(&document)
                    .map_err(|error| backend("write the storage pool XML", error))?;
                let pool = connection
                    .define_storage_pool_xml(&xml, 0)
                    .map(PoolHandle::new)
                    .map_err(|error| backend(format!("define storage pool {name:?}"), error))?;
                info!(
                    pool = name.as_str(),
                    dir = self.config.pool_dir.as_str(),
                    "defined storage pool"
                );
                pool_defined = true;
                pool
            }
            Err(error) => return Err(backend(format!("look up storage pool {name:?}"), error)),
        };
        if let Ok(text) = pool.xml_desc(0).map(|text: String| text)
            && let Ok(existing) = from_xml::<StoragePool>(&text)
            && existing.target.path != self.config.pool_dir
        {
            warn!(
                pool = name.as_str(),
                dir = existing.target.path.as_str(),
                configured = self.config.pool_dir.as_str(),
                "the storage pool exists with another directory; keeping it"
            );
        }

        let active = pool
            .is_active()
            .map_err(|error| backend(format!("read the state of storage pool {name:?}"), error))?;
        let (mut pool_built, mut pool_started) = (false, false);
        if !active {
            pool.build(0)
                .map_err(|error| backend(format!("build storage pool {name:?}"), error))?;
            pool_built = true;
            pool.create(0)
                .map_err(|error| backend(format!("start storage pool {name:?}"), error))?;
            pool_started = true;
            info!(pool = name.as_str(), "started storage pool");
        }
        let autostart = pool
            .autostart()
            .map_err(|error| backend(format!("read autostart of storage pool {name:?}"), error))?;
        let mut pool_autostart_set = false;
        if !autostart {
            pool.set_autostart(true)
                .map_err(|error| backend(format!("autostart storage pool {name:?}"), error))?;
            pool_autostart_set = true;
        }
        let platform = choose_platform(connection, self.config.virt_type)?;
        Ok(InitReport {
            installed_packages: Vec::new(),
            pool_defined,
            pool_built,
            pool_started,
            pool_autostart_set,
            platform,
        })
    }
}

impl Initialiser for VirtInitialiser {
    fn initialise(&self) -> Result<()> {
        self.initialise_with_report().map(|_| ())
    }
}

/// Installs those of `packages` that dpkg does not list as installed, and
/// returns their names. Hosts without dpkg are left alone with a warning.
fn install_missing_packages(packages: &[&str]) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for package in packages {
        let output = match Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", package])
            .output()
        {
            Ok(output) => output,
            Err(error) => {
                warn!(error = %error, "dpkg-query is not available; not checking packages");
                return Ok(Vec::new());
            }
        };
        let status = String::from_utf8_lossy(&output.stdout);
        if !(output.status.success() && status.ends_with("install ok installed")) {
            missing.push((*package).to_owned());
        }
    }
    if missing.is_empty() {
        return Ok(missing);
    }
    info!(packages = ?missing, "installing missing packages");
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|error| Error::Host {
            message: "cannot run apt-get".into(),
            source: Some(Box::new(error)),
        })?;
    if !status.success() {
        return Err(Error::Host {
            message: format!(
                "apt-get install {} failed ({status}); install them by hand",
                missing.join(" ")
            ),
            source: None,
        });
    }
    Ok(missing)
}

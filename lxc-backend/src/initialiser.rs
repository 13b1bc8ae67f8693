//! Preparing a host for the LXC backend.
//!
//! The initialiser installs the Debian packages the backend needs (only the
//! missing ones, through apt), checks the kernel features containers use,
//! creates the lxc path and the log directory, and creates the configured
//! bridge through netlink. Every part is idempotent: on a ready host it
//! changes nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_core::config::{CONFIG_KEY_LOG_DIR, DEFAULT_LOG_DIR};
use berth_core::network::{validate_interface_name, validate_mtu};
use berth_core::{Error, Initialiser, InvalidValue, ManagerConfig, Result};

use crate::bridge;
use crate::config::{IMAGE_BUSYBOX, KEY_BACKING_STORE, KEY_IMAGE, KEY_LXC_PATH};

/// Bridge to create (optional; without it no bridge is made).
pub const KEY_BRIDGE: &str = "bridge";
/// MTU of a bridge the initialiser creates (optional).
pub const KEY_BRIDGE_MTU: &str = "bridge-mtu";

/// Packages every LXC host needs: the library and its shared files.
pub const BASE_PACKAGES: &[&str] = &["liblxc1", "liblxc-common"];
/// Package that provides the static busybox of the embedded image.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Package liblxc runs to copy a root file system for full-copy clones.
pub const RSYNC_PACKAGE: &str = "rsync";
/// Namespaces a container needs, as named in `/proc/self/ns`.
pub const NAMESPACES: &[&str] = &["mnt", "uts", "ipc", "pid", "net", "cgroup"];

/// Prepares a host for [`crate::LxcManager`].
#[derive(Debug, Clone)]
pub struct LxcInitialiser {
    bridge: Option<String>,
    bridge_mtu: Option<u32>,
    packages: Vec<String>,
    /// The manager's `backing-store` value; it decides whether overlay is needed.
    backing_store: String,
    lxc_path: Option<PathBuf>,
    log_dir: PathBuf,
}

impl LxcInitialiser {
    /// Creates an initialiser from `config`. It reads [`KEY_BRIDGE`] and
    /// [`KEY_BRIDGE_MTU`], and the manager's `lxc-path`, `log-dir`, `image`
    /// and `backing-store` to know what the manager will need. It removes
    /// no key, so the same configuration can build the manager.
    pub fn new(config: &ManagerConfig) -> Result<Self> {
        let bridge = config
            .get(KEY_BRIDGE)
            .filter(|name| !name.is_empty())
            .map(str::to_owned);
        if let Some(name) = &bridge {
            validate_interface_name(name).map_err(|error| InvalidValue {
                field: KEY_BRIDGE.into(),
                ..error
            })?;
        }
        let bridge_mtu = match config.get(KEY_BRIDGE_MTU).filter(|value| !value.is_empty()) {
            None => None,
            Some(text) => {
                let mtu = text.parse::<u32>().map_err(|_| {
                    InvalidValue::new(KEY_BRIDGE_MTU, text, "must be a number of bytes")
                })?;
                validate_mtu(mtu)?;
                Some(mtu)
            }
        };
        let mut packages: Vec<String> = BASE_PACKAGES
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        if config
            .get(KEY_IMAGE)
            .is_none_or(|image| image.is_empty() || image == IMAGE_BUSYBOX)
        {
            packages.push(BUSYBOX_PACKAGE.into());
        }
        if config.get(KEY_BACKING_STORE) == Some("copy") {
            packages.push(RSYNC_PACKAGE.into());
        }
        Ok(Self {
            bridge,
            bridge_mtu,
            packages,
            backing_store: config
                .get(KEY_BACKING_STORE)
                .filter(|store| !store.is_empty())
                .unwrap_or("auto")
                .to_owned(),
            lxc_path: config
                .get(KEY_LXC_PATH)
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
            log_dir: PathBuf::from(
                config
                    .get(CONFIG_KEY_LOG_DIR)
                    .filter(|path| !path.is_empty())
                    .unwrap_or(DEFAULT_LOG_DIR),
            ),
        })
    }

    /// Returns the packages this host lacks, asking dpkg.
    pub fn missing_packages(&self) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for package in &self.packages {
            let output = Command::new("dpkg-query")
                .args(["-W", "-f=${db:Status-Status}", package])
                .output()
                .map_err(|error| Error::Host {
                    message: "could not run dpkg-query to check packages; this initialiser needs a Debian-based host"
                        .into(),
                    source: Some(Box::new(error)),
                })?;
            if String::from_utf8_lossy(&output.stdout).trim() != "installed" {
                missing.push(package.clone());
            }
        }
        Ok(missing)
    }

    /// Installs `packages` with apt-get.
    fn install(packages: &[String]) -> Result<()> {
        tracing::info!(?packages, "installing packages");
        let output = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map_err(|error| Error::Host {
                message: "could not run apt-get".into(),
                source: Some(Box::new(error)),
            })?;
        if !output.status.success() {
            return Err(Error::Host {
                message: format!(
                    "apt-get install {} failed: {}",
                    packages.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                source: None,
            });
        }
        Ok(())
    }

    /// Returns true when the manager will make overlay clones: with
    /// `backing-store` set to `overlay`, or to `auto` on an lxc path that is
    /// not on btrfs.
    fn needs_overlay(&self) -> bool {
        match self.backing_store.as_str() {
            "overlay" => true,
            "auto" => {
                let lxc_path = self
                    .lxc_path
                    .clone()
                    .or_else(|| crate::container::default_lxc_path().map(PathBuf::from));
                !lxc_path.is_some_and(|path| crate::template::is_on_btrfs(&path).unwrap_or(false))
            }
            _ => false,
        }
    }

    /// Checks the kernel features containers use: namespaces, cgroups and,
    /// for overlay clones, the overlay file system.
    pub fn check_kernel(&self) -> Result<()> {
        let missing: Vec<&str> = NAMESPACES
            .iter()
            .copied()
            .filter(|name| !Path::new("/proc/self/ns").join(name).exists())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Host {
                message: format!("the kernel lacks namespaces: {}", missing.join(", ")),
                source: None,
            });
        }
        let cgroups = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        if cgroups.trim().is_empty() {
            return Err(Error::Host {
                message: "the kernel has no cgroups (/proc/self/cgroup is empty)".into(),
                source: None,
            });
        }
        if self.needs_overlay() {
            let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
            if !filesystems
                .lines()
                .any(|line| line.split_whitespace().last() == Some("overlay"))
            {
                return Err(Error::Host {
                    message: "the kernel has no overlay file system (load it with modprobe overlay, or set backing-store to copy)".into(),
                    source: None,
                });
            }
        }
        Ok(())
    }
}

impl Initialiser for LxcInitialiser {
    fn initialise(&self) -> Result<()> {
        let missing = self.missing_packages()?;
        if missing.is_empty() {
            tracing::debug!(packages = ?self.packages, "packages already installed");
        } else {
            Self::install(&missing)?;
        }
        self.check_kernel()?;

        let mut directories = vec![self.log_dir.clone()];
        directories.extend(
            self.lxc_path
                .clone()
                .or_else(|| crate::container::default_lxc_path().map(PathBuf::from)),
        );
        for directory in directories {
            fs::create_dir_all(&directory)
                .map_err(|error| Error::io("create directory", directory, error))?;
        }

        if let Some(name) = &self.bridge {
            bridge::ensure_bridge(name, self.bridge_mtu).map_err(|error| Error::Host {
                message: format!("could not create bridge {name:?}"),
                source: Some(Box::new(error)),
            })?;
        }
        tracing::info!(bridge = ?self.bridge, "host ready for lxc containers");
        Ok(())
    }
}

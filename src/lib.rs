//! berth: machine containers for a machine agent, through liblxc and libvirt
//! in-process.
//!
//! This crate re-exports the contract of [`berth_core`] and the backends
//! enabled by the cargo features `lxc` (module [`lxc`]) and `virt` (module
//! [`virt`]), and picks a backend by name with [`new_manager`] and
//! [`new_initialiser`].

use std::fmt;
use std::str::FromStr;

pub use berth_core::*;

#[cfg(feature = "lxc")]
pub use berth_lxc as lxc;
#[cfg(feature = "virt")]
pub use berth_virt as virt;

pub mod machine_file;

/// Manager config key of the bridge an initialiser creates.
pub const CONFIG_KEY_BRIDGE: &str = "bridge";
/// Manager config key of the image containers are made from.
pub const CONFIG_KEY_IMAGE: &str = "image";
/// Manager config key of the root of per-container directories.
pub const CONFIG_KEY_CONTAINERS_DIR: &str = "containers-dir";
/// Manager config key of the root that removed directories are moved into.
pub const CONFIG_KEY_REMOVED_DIR: &str = "removed-dir";
/// Bridge that `berth init` creates when none is named.
pub const DEFAULT_BRIDGE: &str = "berthbr0";
/// Network of `berth create` when none is given.
pub const DEFAULT_NETWORK: &str = "bridge:berthbr0";

/// A backend berth can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// LXC system containers through liblxc.
    Lxc,
    /// Virtual machines through libvirt.
    Virt,
}

impl Backend {
    /// Returns `lxc` or `virt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lxc => "lxc",
            Self::Virt => "virt",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = InvalidValue;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text {
            "lxc" => Ok(Self::Lxc),
            "virt" => Ok(Self::Virt),
            _ => Err(InvalidValue::new("backend", text, "must be lxc or virt")),
        }
    }
}

fn not_built(backend: Backend) -> Error {
    Error::Invalid(InvalidValue::new(
        "backend",
        backend.as_str(),
        format!(
            "this build of berth has no {backend} backend; build with the cargo feature `{backend}`"
        ),
    ))
}

/// Creates the manager of `backend` from `config`, which must hold at least
/// the `name` key. The backend warns about keys it does not know.
pub fn new_manager(backend: Backend, config: ManagerConfig) -> Result<Box<dyn Manager>> {
    match backend {
        #[cfg(feature = "lxc")]
        Backend::Lxc => Ok(Box::new(lxc::LxcManager::new(config)?)),
        #[cfg(feature = "virt")]
        Backend::Virt => Ok(Box::new(virt::VirtManager::new(config)?)),
        #[allow(unreachable_patterns)]
        other => {
            let _ = config;
            Err(not_built(other))
        }
    }
}

/// Creates the initialiser of `backend` from `config`.
pub fn new_initialiser(backend: Backend, config: ManagerConfig) -> Result<Box<dyn Initialiser>> {
    match backend {
        #[cfg(feature = "lxc")]
        Backend::Lxc => Ok(Box::new(lxc::LxcInitialiser::new(&config)?)),
        #[cfg(feature = "virt")]
        Backend::Virt => {
            // The libvirt initialiser makes no bridge: VMs join an existing one.
            let mut config = config;
            config.pop_value(CONFIG_KEY_BRIDGE);
            Ok(Box::new(virt::VirtInitialiser::new(config)?))
        }
        #[allow(unreachable_patterns)]
        other => {
            let _ = config;
            Err(not_built(other))
        }
    }
}

/// Returns the container directories that a manager built from `config`
/// uses: the `containers-dir` and `removed-dir` keys, else the defaults.
pub fn container_dirs_of(config: &ManagerConfig) -> ContainerDirs {
    let defaults = ContainerDirs::default();
    ContainerDirs::new(
        config
            .get(CONFIG_KEY_CONTAINERS_DIR)
            .unwrap_or(&defaults.containers_root().to_string_lossy())
            .to_owned(),
        config
            .get(CONFIG_KEY_REMOVED_DIR)
            .unwrap_or(&defaults.removed_root().to_string_lossy())
            .to_owned(),
    )
}

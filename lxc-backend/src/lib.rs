//! The LXC backend of berth: LXC system containers through liblxc,
//! in-process, with no `lxc-*` subprocess on the create, destroy or list
//! paths.
//!
//! - [`LxcManager`] implements [`berth_core::Manager`]: overlay snapshot
//!   clones of a per-image template, configured with `set_config_item`,
//!   seeded for cloud-init's NoCloud data source and started daemonised.
//! - [`LxcInitialiser`] implements [`berth_core::Initialiser`]: packages,
//!   kernel features and the bridge.
//! - [`container`] contains the safe liblxc handle types, [`bridge`] the
//!   netlink helpers that create bridges and veth pairs.
//!
//! # Configuration keys
//!
//! The constants in [`config`]: `name` (required), `log-dir`, `lxc-path`,
//! `containers-dir`, `removed-dir`, `image`, `image-cache-dir`, `image-os`,
//! `image-variant`, `backing-store`, `shutdown-timeout`, `start-timeout`,
//! `autostart` and `extra-config`.
//!
//! # Limitations
//!
//! - Clones are overlay snapshots or full copies; btrfs, ZFS and LVM
//!   snapshot clones are not implemented.
//! - A `root-disk` constraint is not enforced, because an overlay clone has
//!   no size of its own.

pub mod bridge;
pub mod cgroup;
pub mod config;
pub mod container;
mod create;
mod destroy;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod image;
pub mod initialiser;
mod list;
pub mod manager;
pub mod seed;
pub mod template;

pub use create::{CONSOLE_LOG, CONTAINER_LOG};
pub use initialiser::LxcInitialiser;
pub use list::status_of;
pub use manager::LxcManager;

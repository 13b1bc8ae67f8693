//! The libvirt backend of berth: VMs through libvirt, in-process.
//!
//! [`VirtManager`] implements [`berth_core::Manager`] over the `virt` crate
//! (libvirt's C library), and [`VirtInitialiser`] prepares a host. No
//! `virsh`, `qemu-img` or ISO tool runs on the create, destroy or list
//! paths: domain and volume XML come from typed structs ([`xml`]), volume
//! contents travel through libvirt's upload streams, and the NoCloud seed
//! disk is a FAT image built in memory ([`fat`], [`seed`]).
//!
//! A VM gets, in the storage pool (key `pool`): a qcow2 root disk that
//! overlays the base image of its series ([`image`]), imported once per
//! series and source; and a seed disk labelled `cidata`. Its domain has
//! ACPI, one virtio NIC on a bridge or a macvtap passthrough device, and a
//! serial console logged to `console.log` in the container directory.
//!
//! Configuration keys are listed in [`config`], and constraint defaults
//! and minimums in [`spec`].
//!
//! # Tests
//!
//! - `cargo test -p berth-virt --lib --test testdriver` runs the unit tests
//!   and the tests against libvirt's test driver: no daemon, no root.
//! - `cargo test -p berth-virt --test real_virt --test real_remote` boots real VMs
//!   under software emulation. It needs root, a running system libvirtd
//!   and virtlogd (`mkdir -p /var/log/libvirt /var/run/libvirt;
//!   virtlogd -d; libvirtd -d`), the packages busybox-static, qemu-utils
//!   and qemu-system-x86, and apt package lists that name Debian's
//!   `linux-image-6.1.0-*-cloud-amd64` (the tests download it into
//!   `/var/cache/berth-test`). Without root or the daemon these tests
//!   fail with the command to run; they never skip.

pub mod config;
mod create_lock;
pub mod fat;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod handle;
pub mod image;
pub mod initialiser;
pub mod manager;
pub mod platform;
mod reconnect;
pub mod seed;
pub mod spec;
pub mod volumes;
pub mod xml;

pub use config::VirtConfig;
pub use initialiser::{InitReport, VirtInitialiser};
pub use manager::VirtManager;
pub use platform::GuestPlatform;

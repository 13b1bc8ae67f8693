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
//! Configuration keys are listed in [`config`]; constraint defaults and
//! minimums in [`spec`].

pub mod config;
pub mod fat;
pub mod handle;
pub mod image;
pub mod initialiser;
pub mod manager;
pub mod platform;
pub mod seed;
pub mod spec;
pub mod volumes;
pub mod xml;

pub use config::VirtConfig;
pub use initialiser::{InitReport, VirtInitialiser};
pub use manager::VirtManager;
pub use platform::GuestPlatform;

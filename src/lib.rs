//! berth: machine containers for a machine agent, through liblxc and libvirt
//! in-process.
//!
//! This crate re-exports the contract of [`berth_core`] and the backends
//! enabled by the cargo features `lxc` and `virt`.

pub use berth_core as core;
pub use berth_core::*;

//! The libvirt backend.

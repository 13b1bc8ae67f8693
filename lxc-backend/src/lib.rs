//! The LXC backend.

//! Raw liblxc bindings.

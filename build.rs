//! Checks that the system libraries behind the enabled backends are present,
//! and names the Debian package to install when one is missing.

fn probe(feature: &str, library: &str, package: &str) {
    if std::env::var_os(format!("CARGO_FEATURE_{}", feature.to_uppercase())).is_none() {
        return;
    }
    if let Err(error) = pkg_config::Config::new()
        .cargo_metadata(false)
        .probe(library)
    {
        panic!(
            "the `{feature}` backend needs {library} (pkg-config name `{library}`), which was not found: {error}\n\
             install it with: apt-get install {package}\n\
             or build without this backend: --no-default-features --features <other backend>"
        );
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    probe("lxc", "lxc", "lxc-dev");
    probe("virt", "libvirt", "libvirt-dev");
}

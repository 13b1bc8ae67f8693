//! Checks that the checked-in bindings match the liblxc this build links.

use std::ffi::CStr;

use berth_lxc_sys as sys;

#[test]
fn linked_version_matches_header() {
    // SAFETY: lxc_get_version takes no arguments and returns a pointer to a
    // static NUL-terminated string owned by liblxc.
    let version = unsafe { CStr::from_ptr(sys::lxc_get_version()) }
        .to_str()
        .unwrap()
        .to_owned();
    let header = CStr::from_bytes_with_nul(sys::LXC_VERSION)
        .unwrap()
        .to_str()
        .unwrap();
    let major = |text: &str| text.split('.').next().unwrap().to_owned();
    assert_eq!(
        major(&version),
        major(header),
        "liblxc {version} linked, bindings made from {header} headers"
    );
    assert_eq!(major(&version), sys::LXC_VERSION_MAJOR.to_string());
}

#[test]
fn container_struct_round_trip() {
    let dir = std::env::temp_dir().join(format!("berth-lxc-sys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: both arguments are valid NUL-terminated strings that outlive
    // the call; liblxc copies them.
    let container = unsafe { sys::lxc_container_new(c"berth-sys-probe".as_ptr(), path.as_ptr()) };
    assert!(!container.is_null(), "lxc_container_new returned NULL");
    // SAFETY: `container` is a live handle from lxc_container_new, and the
    // function pointers in it are set by liblxc.
    let defined = unsafe { ((*container).is_defined.unwrap())(container) };
    assert!(!defined, "a fresh lxc path holds no container");
    // SAFETY: reading the name field of the live handle; liblxc set it to a
    // copy of the name passed in.
    let name = unsafe { CStr::from_ptr((*container).name) }
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(name, "berth-sys-probe");
    // SAFETY: drops the one reference lxc_container_new returned.
    let freed = unsafe { sys::lxc_container_put(container) };
    assert_eq!(freed, 1, "the last reference frees the handle");
    std::fs::remove_dir_all(&dir).unwrap();
    // liblxc made a lock directory for this lxc path under /run/lxc/lock.
    let locks = std::path::Path::new("/run/lxc/lock").join(dir.strip_prefix("/").unwrap());
    let _ = std::fs::remove_dir_all(locks);
}

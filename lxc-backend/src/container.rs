//! Safe handles over liblxc's `struct lxc_container`.
//!
//! [`Container`] owns one reference to a liblxc container handle and drops
//! it with `lxc_container_put`. Every call into liblxc, including the
//! final put, runs while holding one process-wide mutex, [`LIBLXC`].
//!
//! # Threads
//!
//! liblxc keeps per-process state that its functions do not guard for
//! concurrent callers: the `current_config` used by its logging, the cached
//! global configuration and the state of its own log. Several calls
//! (`start`, `clone`, `get_ips`) fork and run liblxc code in the child.
//! Running all calls one at a time removes every data race between them,
//! and no other thread is inside liblxc while one of them forks.
//! The lock is held only for the duration of a single call. Waiting for a
//! container to stop polls its state between calls, so a slow shutdown
//! never blocks other containers.
//!
//! [`Container`] is `Send` and `Sync` because of that lock: the handle is a
//! heap object that liblxc does not tie to the thread that created it, and
//! every access to it from `&self` goes through the lock, so two threads
//! sharing a `Container` never touch the handle at the same time.
//!
//! `start` always runs daemonised: a non-daemonised start keeps the
//! container's monitor inside the calling process, which fails in any
//! process with more than one thread.

use std::ffi::{CStr, CString, c_char, c_int};
use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, PoisonError};

use berth_lxc_sys as sys;

/// The lock every call into liblxc runs under (see the module docs).
static LIBLXC: Mutex<()> = Mutex::new(());

/// Takes the liblxc lock. A panic while it was held leaves no state behind
/// on the Rust side, so a poisoned lock is taken over as it is.
fn lock() -> MutexGuard<'static, ()> {
    LIBLXC.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A failed liblxc call, with liblxc's own error string and number where it
/// set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LxcError {
    /// The container the call was made on.
    pub container: String,
    /// The liblxc operation, such as `clone` or `start`.
    pub operation: &'static str,
    /// `error_string` of the handle, or a description of what failed.
    pub message: Option<String>,
    /// `error_num` of the handle; 0 when liblxc did not set it.
    pub errno: i32,
}

impl LxcError {
    fn new(container: &str, operation: &'static str, message: impl Into<Option<String>>) -> Self {
        Self {
            container: container.to_owned(),
            operation,
            message: message.into(),
            errno: 0,
        }
    }
}

impl fmt::Display for LxcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "liblxc {} failed", self.operation)?;
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        if self.errno != 0 {
            write!(f, " (error {})", self.errno)?;
        }
        Ok(())
    }
}

impl std::error::Error for LxcError {}

/// State of a container as liblxc reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    /// Not running.
    Stopped,
    /// Being started.
    Starting,
    /// Running.
    Running,
    /// Being stopped.
    Stopping,
    /// Start is being aborted.
    Aborting,
    /// Being frozen.
    Freezing,
    /// Frozen.
    Frozen,
    /// Thawed after being frozen (running).
    Thawed,
    /// A state name this crate does not know.
    Unknown,
}

impl ContainerState {
    fn from_name(name: &str) -> Self {
        match name {
            "STOPPED" => Self::Stopped,
            "STARTING" => Self::Starting,
            "RUNNING" => Self::Running,
            "STOPPING" => Self::Stopping,
            "ABORTING" => Self::Aborting,
            "FREEZING" => Self::Freezing,
            "FROZEN" => Self::Frozen,
            "THAWED" => Self::Thawed,
            _ => Self::Unknown,
        }
    }
}

/// Clone flags of [`Container::clone_to`].
pub mod clone_flags {
    use berth_lxc_sys as sys;

    /// Do not edit the new root file system to change its hostname.
    pub const KEEP_NAME: i32 = sys::LXC_CLONE_KEEPNAME as i32;
    /// Keep the MAC addresses of the NICs in the configuration.
    pub const KEEP_MAC_ADDRESS: i32 = sys::LXC_CLONE_KEEPMACADDR as i32;
    /// Snapshot the root file system instead of copying it.
    pub const SNAPSHOT: i32 = sys::LXC_CLONE_SNAPSHOT as i32;
    /// Snapshot where the backing store can, else copy.
    pub const MAYBE_SNAPSHOT: i32 = sys::LXC_CLONE_MAYBE_SNAPSHOT as i32;
}

fn c_string(
    container: &str,
    operation: &'static str,
    what: &str,
    value: &str,
) -> Result<CString, LxcError> {
    CString::new(value).map_err(|_| {
        LxcError::new(
            container,
            operation,
            format!("{what} {value:?} contains a NUL byte"),
        )
    })
}

fn path_string(container: &str, operation: &'static str, path: &Path) -> Result<CString, LxcError> {
    let text = path.to_str().ok_or_else(|| {
        LxcError::new(
            container,
            operation,
            format!("path {} is not UTF-8", path.display()),
        )
    })?;
    c_string(container, operation, "path", text)
}

/// Copies a C string that liblxc allocated with malloc and frees it.
///
/// # Safety
///
/// `text` is NULL or a NUL-terminated string allocated with malloc that the
/// caller owns and does not use afterwards.
unsafe fn take_malloced_string(text: *mut c_char) -> Option<String> {
    if text.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees a valid NUL-terminated string.
    let copy = unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: the caller owns the allocation and gives it up here.
    unsafe { libc::free(text.cast()) };
    Some(copy)
}

/// One reference to a liblxc container handle (see the module docs for the
/// locking and thread rules).
pub struct Container {
    handle: NonNull<sys::lxc_container>,
    name: String,
}

// SAFETY: the handle is a heap object not bound to its creating thread, and
// every use of it, including the put in Drop, holds the LIBLXC lock.
unsafe impl Send for Container {}
// SAFETY: all methods take &self and access the handle only while holding
// the LIBLXC lock, so concurrent use from shared references is serialised.
unsafe impl Sync for Container {}

impl fmt::Debug for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Container")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Calls function pointer `$field` of the handle `$c` with the remaining
/// arguments. liblxc fills every function pointer of a handle it returns,
/// so a missing one is a broken library and becomes an error.
macro_rules! lxc_call {
    ($self:ident, $c:ident, $field:ident $(, $arg:expr)*) => {{
        match (*$c).$field {
            Some(function) => Ok(function($c $(, $arg)*)),
            None => Err(LxcError::new(&$self.name, stringify!($field), "liblxc handle has no such function".to_owned())),
        }
    }};
}

impl Container {
    /// Opens a handle on container `name` in `lxc_path`. The container
    /// need not exist: liblxc returns a handle whose `is_defined` is false.
    pub fn new(name: &str, lxc_path: &Path) -> Result<Self, LxcError> {
        let c_name = c_string(name, "container_new", "container name", name)?;
        let c_path = path_string(name, "container_new", lxc_path)?;
        let _guard = lock();
        // SAFETY: both strings are valid and NUL-terminated for the call,
        // and liblxc copies them into the handle.
        let raw = unsafe { sys::lxc_container_new(c_name.as_ptr(), c_path.as_ptr()) };
        let handle = NonNull::new(raw).ok_or_else(|| {
            LxcError::new(
                name,
                "container_new",
                format!(
                    "liblxc returned no handle for lxc path {}",
                    lxc_path.display()
                ),
            )
        })?;
        Ok(Self {
            handle,
            name: name.to_owned(),
        })
    }

    /// Wraps a handle that liblxc returned with one reference owned by the
    /// caller.
    ///
    /// # Safety
    ///
    /// `handle` is a live `lxc_container` whose one reference passes to the
    /// returned value.
    unsafe fn from_owned(handle: NonNull<sys::lxc_container>, name: String) -> Self {
        Self { handle, name }
    }

    /// Returns the container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `work` on the raw handle under the liblxc lock.
    fn with<T>(&self, work: impl FnOnce(*mut sys::lxc_container) -> T) -> T {
        let _guard = lock();
        work(self.handle.as_ptr())
    }

    /// Builds the error of a failed `operation`, reading the handle's
    /// `error_string` and `error_num`. Call it with the lock held, right
    /// after the failed call.
    ///
    /// # Safety
    ///
    /// `c` is this container's live handle and the caller holds the lock.
    unsafe fn last_error(
        &self,
        c: *mut sys::lxc_container,
        operation: &'static str,
        fallback: &str,
    ) -> LxcError {
        // SAFETY: reading two plain fields of the live handle under the lock.
        let (text, errno) = unsafe { ((*c).error_string, (*c).error_num) };
        let message = if text.is_null() {
            fallback.to_owned()
        } else {
            // SAFETY: liblxc keeps error_string NULL or a valid C string.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        LxcError {
            container: self.name.clone(),
            operation,
            message: Some(message),
            errno,
        }
    }

    /// Returns true when the container has a configuration on disk.
    pub fn is_defined(&self) -> Result<bool, LxcError> {
        // SAFETY: `c` is the live handle and the lock is held by `with`.
        self.with(|c| unsafe { lxc_call!(self, c, is_defined) })
    }

    /// Returns the container's state.
    pub fn state(&self) -> Result<ContainerState, LxcError> {
        self.with(|c| {
            // SAFETY: live handle under the lock; `state` returns a pointer
            // to a static string or NULL.
            let text = unsafe { lxc_call!(self, c, state) }?;
            if text.is_null() {
                return Ok(ContainerState::Unknown);
            }
            // SAFETY: a non-NULL result is a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(text) }.to_string_lossy();
            Ok(ContainerState::from_name(&name))
        })
    }

    /// Returns the PID of the container's init on the host, or `None` when
    /// it is not running.
    pub fn init_pid(&self) -> Result<Option<i32>, LxcError> {
        // SAFETY: live handle under the lock.
        let pid = self.with(|c| unsafe { lxc_call!(self, c, init_pid) })?;
        Ok((pid > 0).then_some(pid))
    }

    /// Sets configuration item `key` to `value` in memory. Call
    /// [`Container::save_config`] to write it.
    pub fn set_config_item(&self, key: &str, value: &str) -> Result<(), LxcError> {
        let c_key = c_string(&self.name, "set_config_item", "config key", key)?;
        let c_value = c_string(&self.name, "set_config_item", "config value", value)?;
        self.with(|c| {
            // SAFETY: live handle under the lock; both strings are valid for
            // the call and liblxc copies them.
            let done =
                unsafe { lxc_call!(self, c, set_config_item, c_key.as_ptr(), c_value.as_ptr()) }?;
            if done {
                Ok(())
            } else {
                // SAFETY: live handle, lock held, right after the failure.
                Err(unsafe {
                    self.last_error(
                        c,
                        "set_config_item",
                        &format!("liblxc rejected {key} = {value:?}"),
                    )
                })
            }
        })
    }

    /// Clears configuration item `key` (all entries of a list such as
    /// `lxc.net`).
    pub fn clear_config_item(&self, key: &str) -> Result<(), LxcError> {
        let c_key = c_string(&self.name, "clear_config_item", "config key", key)?;
        self.with(|c| {
            // SAFETY: live handle under the lock; the key outlives the call.
            let done = unsafe { lxc_call!(self, c, clear_config_item, c_key.as_ptr()) }?;
            if done {
                Ok(())
            } else {
                // SAFETY: live handle, lock held, right after the failure.
                Err(unsafe {
                    self.last_error(
                        c,
                        "clear_config_item",
                        &format!("liblxc could not clear {key}"),
                    )
                })
            }
        })
    }

    /// Returns the value of configuration item `key`, or `None` when it is
    /// unset or unknown.
    pub fn get_config_item(&self, key: &str) -> Result<Option<String>, LxcError> {
        let c_key = c_string(&self.name, "get_config_item", "config key", key)?;
        self.with(|c| {
            // SAFETY: live handle under the lock; a NULL buffer of length 0
            // requests the length only.
            let length = unsafe {
                lxc_call!(
                    self,
                    c,
                    get_config_item,
                    c_key.as_ptr(),
                    std::ptr::null_mut(),
                    0
                )
            }?;
            if length <= 0 {
                return Ok(None);
            }
            let mut buffer = vec![0u8; length as usize + 1];
            // SAFETY: the buffer has length + 1 bytes, as liblxc needs for
            // the value and its NUL.
            let written = unsafe {
                lxc_call!(
                    self,
                    c,
                    get_config_item,
                    c_key.as_ptr(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len() as c_int
                )
            }?;
            if written < 0 {
                return Ok(None);
            }
            let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
            Ok(Some(String::from_utf8_lossy(&buffer[..end]).into_owned()))
        })
    }

    /// Writes the configuration to `path`, or to the container's own config
    /// file when `path` is `None`.
    pub fn save_config(&self, path: Option<&Path>) -> Result<(), LxcError> {
        let c_path = path
            .map(|path| path_string(&self.name, "save_config", path))
            .transpose()?;
        self.with(|c| {
            let target = c_path
                .as_ref()
                .map_or(std::ptr::null(), |path| path.as_ptr());
            // SAFETY: live handle under the lock; `target` is NULL or a valid
            // string that outlives the call.
            let done = unsafe { lxc_call!(self, c, save_config, target) }?;
            if done {
                Ok(())
            } else {
                // SAFETY: live handle, lock held, right after the failure.
                Err(unsafe {
                    self.last_error(c, "save_config", "could not write the configuration file")
                })
            }
        })
    }

    /// Starts the container daemonised, with its configured init. Returns
    /// once liblxc reports it running, or with an error when the start
    /// failed.
    pub fn start(&self) -> Result<(), LxcError> {
        self.with(|c| {
            // SAFETY: live handle under the lock.
            unsafe { lxc_call!(self, c, want_daemonize, true) }?;
            // SAFETY: live handle under the lock; a NULL argv makes liblxc
            // run the configured init.
            let done = unsafe { lxc_call!(self, c, start, 0, std::ptr::null()) }?;
            if done {
                Ok(())
            } else {
                // SAFETY: live handle, lock held, right after the failure.
                Err(unsafe { self.last_error(c, "start", "the container did not reach RUNNING") })
            }
        })
    }

    /// Sends the container's halt signal to its init and returns without
    /// waiting. Poll [`Container::state`] to see it stop.
    pub fn request_shutdown(&self) -> Result<(), LxcError> {
        self.with(|c| {
            // SAFETY: live handle under the lock; timeout 0 only sends the
            // signal.
            let done = unsafe { lxc_call!(self, c, shutdown, 0) }?;
            if done {
                Ok(())
            } else {
                // SAFETY: live handle, lock held, right after the failure.
                Err(unsafe {
                    self.last_error(c, "shutdown", "could not signal the container's init")
                })
            }
        })
    }

    /// Kills the container and waits until it is stopped.
    pub fn stop(&self) -> Result<(), LxcError> {
        self.with(|c| {
            // SAFETY: live handle under the lock.
            let done = unsafe { lxc_call!(self, c, stop) }?;
            if done {
                Ok(())
            } else {
                // SAFETY: live handle, lock held, right after the failure.
                Err(unsafe { self.last_error(c, "stop", "could not kill the container") })
            }
        })
    }

    /// Destroys the stopped container: its storage and its directory in the
    /// lxc path.
    pub fn destroy(&self) -> Result<(), LxcError> {
        self.with(|c| {
            // SAFETY: live handle under the lock.
            let done = unsafe { lxc_call!(self, c, destroy) }?;
            if done {
                Ok(())
            } else {
                // SAFETY: live handle, lock held, right after the failure.
                Err(unsafe {
                    self.last_error(
                        c,
                        "destroy",
                        "could not remove the container's storage or directory",
                    )
                })
            }
        })
    }

    /// Clones this stopped container into `new_name` in `lxc_path`, with
    /// `flags` from [`clone_flags`] and backing store `backing_store`
    /// (`None` keeps the original's). Returns the new container.
    pub fn clone_to(
        &self,
        new_name: &str,
        lxc_path: &Path,
        flags: i32,
        backing_store: Option<&str>,
    ) -> Result<Container, LxcError> {
        let c_name = c_string(new_name, "clone", "container name", new_name)?;
        let c_path = path_string(new_name, "clone", lxc_path)?;
        let c_store = backing_store
            .map(|store| c_string(new_name, "clone", "backing store", store))
            .transpose()?;
        let raw = self.with(|c| {
            let store = c_store
                .as_ref()
                .map_or(std::ptr::null(), |store| store.as_ptr());
            // SAFETY: live handle under the lock; every string outlives the
            // call; a NULL bdevdata, size 0 and NULL hook arguments are the
            // documented defaults.
            let raw = unsafe {
                lxc_call!(
                    self,
                    c,
                    clone,
                    c_name.as_ptr(),
                    c_path.as_ptr(),
                    flags,
                    store,
                    std::ptr::null(),
                    0,
                    std::ptr::null_mut()
                )
            }?;
            match NonNull::new(raw) {
                Some(raw) => Ok(raw),
                // SAFETY: live handle, lock held, right after the failure.
                None => Err(unsafe {
                    self.last_error(
                        c,
                        "clone",
                        &format!("could not clone {} into {new_name}", self.name),
                    )
                }),
            }
        })?;
        // SAFETY: clone returns a new handle with one reference for the
        // caller.
        Ok(unsafe { Container::from_owned(raw, new_name.to_owned()) })
    }

    /// Returns the container's IP addresses, as text, on all its interfaces
    /// but loopback. liblxc reads them inside the container's network
    /// namespace, so this is empty for a stopped container.
    pub fn ip_addresses(&self) -> Result<Vec<String>, LxcError> {
        self.with(|c| {
            // SAFETY: live handle under the lock; NULL interface and family
            // mean all of them, scope 0 is global.
            let list =
                unsafe { lxc_call!(self, c, get_ips, std::ptr::null(), std::ptr::null(), 0) }?;
            // SAFETY: get_ips returns NULL or a NULL-terminated array of
            // malloced strings, all owned by the caller.
            Ok(unsafe { take_null_terminated(list) })
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _guard = lock();
        // SAFETY: this value owns one reference to the live handle and gives
        // it up here; the handle is not used afterwards.
        let result = unsafe { sys::lxc_container_put(self.handle.as_ptr()) };
        if result < 0 {
            tracing::warn!(container = self.name.as_str(), "lxc_container_put failed");
        }
    }
}

/// Copies and frees a NULL-terminated array of malloced strings.
///
/// # Safety
///
/// `list` is NULL or a malloced, NULL-terminated array of malloced strings
/// that the caller owns and does not use afterwards.
unsafe fn take_null_terminated(list: *mut *mut c_char) -> Vec<String> {
    let mut values = Vec::new();
    if list.is_null() {
        return values;
    }
    let mut index = 0;
    loop {
        // SAFETY: the array is NULL-terminated, so every index up to and
        // including the terminator is in bounds.
        let entry = unsafe { *list.add(index) };
        if entry.is_null() {
            break;
        }
        // SAFETY: each entry is a malloced string owned by the caller.
        if let Some(value) = unsafe { take_malloced_string(entry) } {
            values.push(value);
        }
        index += 1;
    }
    // SAFETY: the array itself was malloced and is owned by the caller.
    unsafe { libc::free(list.cast()) };
    values
}

/// Selection of containers that [`list_containers`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// Containers with a configuration in the lxc path.
    Defined,
    /// Running containers.
    Active,
    /// Both.
    All,
}

/// Lists the names of the containers of `kind` in `lxc_path`, sorted.
pub fn list_containers(lxc_path: &Path, kind: ListKind) -> Result<Vec<String>, LxcError> {
    let c_path = path_string("", "list_containers", lxc_path)?;
    let mut names: *mut *mut c_char = std::ptr::null_mut();
    let count = {
        let _guard = lock();
        let function = match kind {
            ListKind::Defined => sys::list_defined_containers,
            ListKind::Active => sys::list_active_containers,
            ListKind::All => sys::list_all_containers,
        };
        // SAFETY: the path is valid for the call, and `names` receives a
        // malloced array. With a NULL handle array liblxc does not open the
        // containers.
        unsafe { function(c_path.as_ptr(), &mut names, std::ptr::null_mut()) }
    };
    if count < 0 {
        return Err(LxcError::new(
            "",
            "list_containers",
            format!(
                "liblxc could not list the containers in {}",
                lxc_path.display()
            ),
        ));
    }
    let mut result = Vec::with_capacity(count as usize);
    if !names.is_null() {
        for index in 0..count as usize {
            // SAFETY: liblxc returned `count` entries; each is a malloced
            // string owned by the caller. The array is not NULL-terminated,
            // so the count is the only bound.
            let entry = unsafe { *names.add(index) };
            // SAFETY: `entry` is a malloced string owned by the caller.
            if let Some(name) = unsafe { take_malloced_string(entry) } {
                result.push(name);
            }
        }
        // SAFETY: the array was malloced by liblxc and is owned by the
        // caller; its entries were freed above.
        unsafe { libc::free(names.cast()) };
    }
    result.sort();
    Ok(result)
}

/// Lists the names of the containers defined in `lxc_path` whose name
/// starts with `prefix`, sorted. A container is defined when
/// `<lxc_path>/<name>/config` exists, the rule of liblxc's
/// `list_defined_containers`.
///
/// liblxc's function sorts its whole array again after adding each name,
/// so its time grows with the square of the number of containers (on one
/// 2-CPU host, 14 of the 17 ms of a berth list of 1,000). This reads the
/// directory once, checks only names with the prefix, and sorts once.
pub fn defined_container_names(lxc_path: &Path, prefix: &str) -> Result<Vec<String>, LxcError> {
    let read_error = |error: std::io::Error| {
        LxcError::new(
            "",
            "list_defined_containers",
            format!("could not read lxc path {}: {error}", lxc_path.display()),
        )
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(lxc_path).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(prefix) && lxc_path.join(&name).join("config").exists() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Returns liblxc's default lxc path (`lxc.lxcpath` of its global
/// configuration), such as `/var/lib/lxc`.
pub fn default_lxc_path() -> Option<String> {
    let _guard = lock();
    // SAFETY: the key is a valid C string. The result is NULL or a string
    // that liblxc caches for the life of the process, which the caller must
    // not free.
    let value = unsafe { sys::lxc_get_global_config_item(c"lxc.lxcpath".as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: non-NULL results are valid NUL-terminated strings.
    Some(
        unsafe { CStr::from_ptr(value) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Returns the version of the liblxc this process runs with.
pub fn liblxc_version() -> String {
    let _guard = lock();
    // SAFETY: lxc_get_version returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::lxc_get_version()) }
        .to_string_lossy()
        .into_owned()
}

/// Returns true when this liblxc accepts configuration key `key`.
pub fn config_item_is_supported(key: &str) -> bool {
    let Ok(c_key) = CString::new(key) else {
        return false;
    };
    let _guard = lock();
    // SAFETY: the key is a valid C string for the call.
    unsafe { sys::lxc_config_item_is_supported(c_key.as_ptr()) }
}

/// Returns the file liblxc locks to serialise operations on container
/// `name` of `lxc_path` across processes: for root,
/// `/run/lxc/lock/<lxc path>/.<name>` (liblxc's `lxclock_name`). liblxc
/// creates it on first use and never deletes it.
pub fn lock_file_path(lxc_path: &Path, name: &str) -> PathBuf {
    let relative = lxc_path.strip_prefix("/").unwrap_or(lxc_path);
    Path::new("/run/lxc/lock")
        .join(relative)
        .join(format!(".{name}"))
}

/// Deletes liblxc's lock file of container `name` once the container is
/// gone, so that a destroyed container leaves nothing behind in `/run`.
/// Only a regular file is removed.
pub fn remove_lock_file(lxc_path: &Path, name: &str) {
    let path = lock_file_path(lxc_path, name);
    if std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_file())
        && let Err(error) = std::fs::remove_file(&path)
    {
        tracing::warn!(container = name, path = %path.display(), %error, "could not remove liblxc lock file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defined_names_need_config_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["juju-b", "juju-a", "juju-empty", "other-c", "jujux-d"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        for name in ["juju-b", "juju-a", "other-c", "jujux-d"] {
            std::fs::write(dir.path().join(name).join("config"), "").unwrap();
        }
        std::fs::write(dir.path().join("juju-file"), "").unwrap();

        let names = defined_container_names(dir.path(), "juju-").unwrap();
        assert_eq!(names, ["juju-a", "juju-b"]);
    }

    #[test]
    fn defined_names_missing_path_fails() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let error = defined_container_names(&missing, "juju-").unwrap_err();
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
    }
}

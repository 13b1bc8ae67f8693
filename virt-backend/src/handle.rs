//! Owning handles for libvirt objects.
//!
//! The `virt` crate releases its reference in `Drop` and panics when
//! libvirt reports a failure there. A panic in `Drop` during unwinding
//! aborts the process, so berth wraps every object it keeps in a handle
//! whose `Drop` releases the reference itself and logs a failure instead.
//! The wrapped `virt` value is never dropped, so its own `Drop` never runs.
//!
//! libvirt's public API is thread safe: one connection and the objects
//! looked up through it may be used from several threads at once, and
//! reference counts are atomic. The `virt` types are `Send + Sync` for that
//! reason, and so are these handles.

use std::mem::ManuallyDrop;
use std::net::IpAddr;
use std::ops::Deref;

use virt::sys;

macro_rules! owning_handle {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $free:ident, $what:literal) => {
        $(#[$doc])*
        pub struct $name(ManuallyDrop<$inner>);

        impl $name {
            /// Takes ownership of the reference `inner` holds.
            pub fn new(inner: $inner) -> Self {
                Self(ManuallyDrop::new(inner))
            }
        }

        impl Deref for $name {
            type Target = $inner;

            fn deref(&self) -> &$inner {
                &self.0
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: the handle owns exactly one reference to a valid
                // libvirt object (taken over from the `virt` value, whose
                // own `Drop` never runs because it sits in a
                // `ManuallyDrop`), and nothing uses the pointer after this.
                let result = unsafe { sys::$free(self.0.as_ptr()) };
                if result < 0 {
                    let error = virt::error::Error::last_error();
                    tracing::warn!(error = %error, concat!("releasing a libvirt ", $what, " reference failed"));
                }
            }
        }
    };
}

owning_handle!(
    /// A connection to a libvirt driver.
    Connection,
    virt::connect::Connect,
    virConnectClose,
    "connection"
);
owning_handle!(
    /// A domain (virtual machine).
    DomainHandle,
    virt::domain::Domain,
    virDomainFree,
    "domain"
);
owning_handle!(
    /// A storage pool.
    PoolHandle,
    virt::storage_pool::StoragePool,
    virStoragePoolFree,
    "storage pool"
);
owning_handle!(
    /// A storage volume.
    VolumeHandle,
    virt::storage_vol::StorageVol,
    virStorageVolFree,
    "storage volume"
);
owning_handle!(
    /// A data stream, used to upload volume contents. berth never
    /// registers an event callback on it, so releasing the reference is
    /// all its `Drop` has to do.
    StreamHandle,
    virt::stream::Stream,
    virStreamFree,
    "stream"
);

impl Connection {
    /// Opens a connection to `uri` and stops libvirt from printing its
    /// errors to standard error, since berth returns them instead.
    pub fn open(uri: &str) -> Result<Self, virt::error::Error> {
        virt::error::clear_error_callback();
        virt::connect::Connect::open(Some(uri)).map(Self::new)
    }
}

impl StreamHandle {
    /// Creates a stream on `connection`.
    pub fn create(connection: &Connection) -> Result<Self, virt::error::Error> {
        virt::stream::Stream::new(connection, 0).map(Self::new)
    }

    /// Sends all of `data`, retrying short writes.
    pub fn send_all(&self, mut data: &[u8]) -> Result<(), virt::error::Error> {
        while !data.is_empty() {
            let sent = usize::try_from(self.send(data)?).unwrap_or(0);
            // A blocking stream sends at least one byte or fails; treat
            // anything else as a failure rather than spin.
            if sent == 0 {
                return Err(virt::error::Error::last_error());
            }
            data = &data[sent.min(data.len())..];
        }
        Ok(())
    }

    /// Completes the transfer; libvirt reports any error on the far side
    /// here.
    pub fn finish(&self) -> Result<(), virt::error::Error> {
        // SAFETY: the pointer is valid while the handle lives; finishing
        // does not release the reference.
        let result = unsafe { sys::virStreamFinish(self.0.as_ptr()) };
        if result < 0 {
            Err(virt::error::Error::last_error())
        } else {
            Ok(())
        }
    }

    /// Abandons the transfer.
    pub fn abort(&self) -> Result<(), virt::error::Error> {
        // SAFETY: as for `finish`.
        let result = unsafe { sys::virStreamAbort(self.0.as_ptr()) };
        if result < 0 {
            Err(virt::error::Error::last_error())
        } else {
            Ok(())
        }
    }
}

/// The source libvirt reads a running domain's addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// The DHCP leases of libvirt's own virtual networks.
    Lease,
    /// The host's ARP table.
    Arp,
    /// The QEMU guest agent inside the domain.
    Agent,
}

impl DomainHandle {
    /// Returns the IP addresses libvirt reads for this domain's interfaces
    /// from `source`.
    pub fn ip_addresses(&self, source: AddressSource) -> Result<Vec<IpAddr>, virt::error::Error> {
        let source = match source {
            AddressSource::Lease => sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            AddressSource::Arp => sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
            AddressSource::Agent => sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
        };
        let mut interfaces: *mut sys::virDomainInterfacePtr = std::ptr::null_mut();
        // SAFETY: the domain pointer is valid while the handle lives, and
        // `interfaces` is an out pointer libvirt fills with an array it
        // allocates.
        let count = unsafe {
            sys::virDomainInterfaceAddresses(self.0.as_ptr(), &mut interfaces, source, 0)
        };
        if count < 0 {
            return Err(virt::error::Error::last_error());
        }
        let count = usize::try_from(count).unwrap_or(0);
        let mut addresses = Vec::new();
        for index in 0..count {
            // SAFETY: libvirt returned `count` valid interface pointers in
            // the array; each is read once and then freed with the
            // function libvirt documents for it.
            unsafe {
                let interface = *interfaces.add(index);
                if interface.is_null() {
                    continue;
                }
                let naddrs = usize::try_from((*interface).naddrs).unwrap_or(0);
                for a in 0..naddrs {
                    let address = (*interface).addrs.add(a);
                    if (*address).addr.is_null() {
                        continue;
                    }
                    let text = std::ffi::CStr::from_ptr((*address).addr).to_string_lossy();
                    if let Ok(ip) = text.parse::<IpAddr>() {
                        addresses.push(ip);
                    }
                }
                sys::virDomainInterfaceFree(interface);
            }
        }
        if !interfaces.is_null() {
            // SAFETY: libvirt allocated the array with its allocator, which
            // is the C library's malloc; the elements were freed above.
            unsafe { libc_free(interfaces.cast()) };
        }
        Ok(addresses)
    }
}

unsafe extern "C" {
    #[link_name = "free"]
    fn libc_free(pointer: *mut std::ffi::c_void);
}

//! Bridges and veth pairs on the host, through rtnetlink in-process.
//!
//! The messages are built by hand and sent over a `NETLINK_ROUTE` socket. A
//! request is one `nlmsghdr`, one `ifinfomsg` and its attributes. Every
//! request sets `NLM_F_ACK`, so the kernel's errno comes back with the
//! request it belongs to. Everything here works in the network namespace of
//! the calling thread.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

use berth_core::network::validate_interface_name;

const NLMSG_HEADER_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const IFF_UP: u32 = 0x1;

/// A failed netlink request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkError {
    /// Operation requested, such as `create bridge`.
    pub operation: &'static str,
    /// The network device the request was about.
    pub device: String,
    /// The kernel's error.
    pub errno: Errno,
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} failed: {}",
            self.operation,
            self.device,
            self.errno.desc()
        )
    }
}

impl std::error::Error for NetlinkError {}

/// Kernel's description of one network device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: i32,
    /// Interface name.
    pub name: String,
    /// MTU in bytes.
    pub mtu: u32,
    /// Link kind (`bridge`, `veth`, ...), absent for physical NICs.
    pub kind: Option<String>,
    /// Index of the bridge or bond this device is a port of.
    pub master: Option<i32>,
    /// True when the device is administratively up.
    pub up: bool,
}

impl LinkInfo {
    /// Returns true when the device is a Linux bridge.
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }
}

/// One netlink request under construction.
struct Request {
    buffer: Vec<u8>,
}

impl Request {
    fn new(kind: u16, flags: u16, index: i32, ifi_flags: u32, ifi_change: u32) -> Self {
        let mut buffer = Vec::with_capacity(256);
        buffer.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buffer.extend_from_slice(&kind.to_ne_bytes());
        buffer.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buffer.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set by finish
        buffer.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        push_ifinfomsg(&mut buffer, index, ifi_flags, ifi_change);
        Self { buffer }
    }

    fn attribute(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        push_attribute(&mut self.buffer, kind, data);
        self
    }

    fn name(&mut self, name: &str) -> &mut Self {
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        self.attribute(IFLA_IFNAME, &data)
    }

    fn finish(mut self, sequence: u32) -> Vec<u8> {
        let length = self.buffer.len() as u32;
        self.buffer[0..4].copy_from_slice(&length.to_ne_bytes());
        self.buffer[8..12].copy_from_slice(&sequence.to_ne_bytes());
        self.buffer
    }
}

fn push_ifinfomsg(buffer: &mut Vec<u8>, index: i32, flags: u32, change: u32) {
    buffer.push(libc::AF_UNSPEC as u8); // family
    buffer.push(0); // padding
    buffer.extend_from_slice(&0u16.to_ne_bytes()); // device type
    buffer.extend_from_slice(&index.to_ne_bytes());
    buffer.extend_from_slice(&flags.to_ne_bytes());
    buffer.extend_from_slice(&change.to_ne_bytes());
}

fn align4(length: usize) -> usize {
    (length + 3) & !3
}

fn push_attribute(buffer: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let length = 4 + data.len();
    buffer.extend_from_slice(&(length as u16).to_ne_bytes());
    buffer.extend_from_slice(&kind.to_ne_bytes());
    buffer.extend_from_slice(data);
    buffer.resize(align4(buffer.len()), 0);
}

/// Builds a nested attribute from its already encoded content.
fn nested(kind: u16, content: &[u8]) -> Vec<u8> {
    let mut buffer = Vec::new();
    push_attribute(&mut buffer, kind | NLA_F_NESTED, content);
    buffer
}

fn attribute_bytes(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut buffer = Vec::new();
    push_attribute(&mut buffer, kind, data);
    buffer
}

/// Splits `data` into (type, payload) attributes.
fn attributes(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    while data.len() >= 4 {
        let length = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if length < 4 || length > data.len() {
            break;
        }
        found.push((kind, &data[4..length]));
        data = &data[align4(length).min(data.len())..];
    }
    found
}

fn read_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

fn read_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn parse_link(payload: &[u8]) -> Option<LinkInfo> {
    if payload.len() < IFINFOMSG_LEN {
        return None;
    }
    let index = i32::from_ne_bytes(payload[4..8].try_into().ok()?);
    let flags = u32::from_ne_bytes(payload[8..12].try_into().ok()?);
    let mut link = LinkInfo {
        index,
        name: String::new(),
        mtu: 0,
        kind: None,
        master: None,
        up: flags & IFF_UP != 0,
    };
    for (kind, data) in attributes(&payload[IFINFOMSG_LEN..]) {
        match kind {
            IFLA_IFNAME => link.name = read_string(data),
            IFLA_MTU => link.mtu = read_u32(data).unwrap_or(0),
            IFLA_MASTER => link.master = read_u32(data).map(|master| master as i32),
            IFLA_LINKINFO => {
                for (info_kind, info) in attributes(data) {
                    if info_kind == IFLA_INFO_KIND {
                        link.kind = Some(read_string(info));
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

static SEQUENCE: AtomicU32 = AtomicU32::new(1);

/// Sends `request` on a new socket and reads replies until the kernel
/// acknowledges it. Returns the links the kernel sent along the way.
fn transact(
    request: Request,
    operation: &'static str,
    device: &str,
) -> Result<Vec<LinkInfo>, NetlinkError> {
    let fail = |errno: Errno| NetlinkError {
        operation,
        device: device.to_owned(),
        errno,
    };
    let socket: OwnedFd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(fail)?;
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let message = request.finish(sequence);
    sendto(
        socket.as_raw_fd(),
        &message,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(fail)?;

    let mut links = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let received = recv(socket.as_raw_fd(), &mut buffer, MsgFlags::empty()).map_err(fail)?;
        let mut data = &buffer[..received];
        while data.len() >= NLMSG_HEADER_LEN {
            let length = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes([data[4], data[5]]);
            let reply_sequence = u32::from_ne_bytes(data[8..12].try_into().expect("4 bytes"));
            if length < NLMSG_HEADER_LEN || length > data.len() {
                return Err(fail(Errno::EBADMSG));
            }
            let payload = &data[NLMSG_HEADER_LEN..length];
            data = &data[align4(length).min(data.len())..];
            if reply_sequence != sequence {
                continue;
            }
            match kind {
                NLMSG_ERROR => {
                    let code = payload.get(..4).map_or(-libc::EBADMSG, |raw| {
                        i32::from_ne_bytes(raw.try_into().expect("4 bytes"))
                    });
                    return if code == 0 {
                        Ok(links)
                    } else {
                        Err(fail(Errno::from_raw(-code)))
                    };
                }
                NLMSG_DONE => return Ok(links),
                RTM_NEWLINK => links.extend(parse_link(payload)),
                _ => {}
            }
        }
    }
}

fn check_name(name: &str, operation: &'static str) -> Result<(), NetlinkError> {
    validate_interface_name(name).map_err(|_| NetlinkError {
        operation,
        device: name.to_owned(),
        errno: Errno::EINVAL,
    })
}

/// Returns what the kernel reports about device `name`, or `None` when
/// there is no such device.
pub fn link(name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
    check_name(name, "look up device")?;
    let mut request = Request::new(RTM_GETLINK, 0, 0, 0, 0);
    request.name(name);
    match transact(request, "look up device", name) {
        Ok(links) => Ok(links.into_iter().next()),
        Err(error) if error.errno == Errno::ENODEV => Ok(None),
        Err(error) => Err(error),
    }
}

/// Creates bridge `name` and brings it up, unless a device of that name
/// exists. With `mtu`, a new bridge gets that MTU, set after creation so the
/// kernel keeps it when ports with another MTU join. An existing bridge is
/// left as it is. Returns true when this call created the bridge.
pub fn ensure_bridge(name: &str, mtu: Option<u32>) -> Result<bool, NetlinkError> {
    if let Some(existing) = link(name)? {
        if existing.is_bridge() {
            tracing::debug!(bridge = name, "bridge exists, left as it is");
            return Ok(false);
        }
        return Err(NetlinkError {
            operation: "create bridge",
            device: name.to_owned(),
            errno: Errno::EEXIST,
        });
    }
    let mut request = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0, 0, 0);
    request.name(name);
    let kind = attribute_bytes(IFLA_INFO_KIND, b"bridge");
    request
        .buffer
        .extend_from_slice(&nested(IFLA_LINKINFO, &kind));
    match transact(request, "create bridge", name) {
        Ok(_) => {}
        // Another caller created it between the look-up and this request.
        Err(error) if error.errno == Errno::EEXIST => {
            if link(name)?.is_some_and(|link| link.is_bridge()) {
                return Ok(false);
            }
            return Err(error);
        }
        Err(error) => return Err(error),
    }
    if let Some(mtu) = mtu {
        set_mtu(name, mtu)?;
    }
    set_up(name, true)?;
    tracing::info!(bridge = name, mtu, "created bridge");
    Ok(true)
}

/// Deletes bridge `name`. Returns false when there is no such device, and
/// fails without deleting anything when `name` is not a bridge.
pub fn delete_bridge(name: &str) -> Result<bool, NetlinkError> {
    match link(name)? {
        None => Ok(false),
        Some(existing) if !existing.is_bridge() => Err(NetlinkError {
            operation: "delete bridge",
            device: name.to_owned(),
            errno: Errno::EINVAL,
        }),
        Some(_) => delete_link(name),
    }
}

/// Deletes network device `name`, of any kind. Deleting one end of a veth
/// pair deletes both. Returns false when there is no such device.
pub fn delete_link(name: &str) -> Result<bool, NetlinkError> {
    check_name(name, "delete device")?;
    let mut request = Request::new(RTM_DELLINK, 0, 0, 0, 0);
    request.name(name);
    match transact(request, "delete device", name) {
        Ok(_) => {
            tracing::debug!(device = name, "deleted network device");
            Ok(true)
        }
        Err(error) if error.errno == Errno::ENODEV => Ok(false),
        Err(error) => Err(error),
    }
}

fn index_of(name: &str, operation: &'static str) -> Result<i32, NetlinkError> {
    link(name)?
        .map(|link| link.index)
        .ok_or_else(|| NetlinkError {
            operation,
            device: name.to_owned(),
            errno: Errno::ENODEV,
        })
}

/// Sets the MTU of device `name`.
pub fn set_mtu(name: &str, mtu: u32) -> Result<(), NetlinkError> {
    let index = index_of(name, "set MTU of")?;
    let mut request = Request::new(RTM_SETLINK, 0, index, 0, 0);
    request.attribute(IFLA_MTU, &mtu.to_ne_bytes());
    transact(request, "set MTU of", name).map(drop)
}

/// Brings device `name` up or down.
pub fn set_up(name: &str, up: bool) -> Result<(), NetlinkError> {
    let index = index_of(name, "set state of")?;
    let flags = if up { IFF_UP } else { 0 };
    transact(
        Request::new(RTM_SETLINK, 0, index, flags, IFF_UP),
        "set state of",
        name,
    )
    .map(drop)
}

/// Creates a veth pair `name` and `peer` (both down). Tests use one end as
/// the host NIC handed to a container.
pub fn create_veth_pair(name: &str, peer: &str) -> Result<(), NetlinkError> {
    check_name(name, "create veth pair")?;
    check_name(peer, "create veth pair")?;
    let mut request = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0, 0, 0);
    request.name(name);

    let mut peer_message = Vec::new();
    push_ifinfomsg(&mut peer_message, 0, 0, 0);
    let mut peer_name = peer.as_bytes().to_vec();
    peer_name.push(0);
    push_attribute(&mut peer_message, IFLA_IFNAME, &peer_name);

    let mut info = attribute_bytes(IFLA_INFO_KIND, b"veth");
    info.extend_from_slice(&nested(
        IFLA_INFO_DATA,
        &nested(VETH_INFO_PEER, &peer_message),
    ));
    request
        .buffer
        .extend_from_slice(&nested(IFLA_LINKINFO, &info));
    transact(request, "create veth pair", name).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut buffer = Vec::new();
        push_attribute(&mut buffer, IFLA_IFNAME, b"br0\0");
        push_attribute(&mut buffer, IFLA_MTU, &9000u32.to_ne_bytes());
        buffer.extend_from_slice(&nested(
            IFLA_LINKINFO,
            &attribute_bytes(IFLA_INFO_KIND, b"bridge"),
        ));
        let found = attributes(&buffer);
        assert_eq!(found.len(), 3);
        assert_eq!(read_string(found[0].1), "br0");
        assert_eq!(read_u32(found[1].1), Some(9000));
        assert_eq!(found[2].0, IFLA_LINKINFO);
        assert_eq!(read_string(attributes(found[2].1)[0].1), "bridge");
    }

    #[test]
    fn truncated_attribute_ignored() {
        let mut buffer = Vec::new();
        push_attribute(&mut buffer, IFLA_IFNAME, b"eth0\0");
        buffer.extend_from_slice(&[40, 0, 4, 0]);
        assert_eq!(attributes(&buffer).len(), 1);
    }

    #[test]
    fn invalid_name_rejected_before_request() {
        let error = link("name/with/slash").unwrap_err();
        assert_eq!(error.errno, Errno::EINVAL);
        assert_eq!(error.device, "name/with/slash");
    }
}

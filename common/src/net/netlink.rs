//! A small synchronous rtnetlink client: just the messages kist needs to
//! build a bridge network (create a bridge, create a veth pair with its
//! peer placed straight into a container's network namespace by fd, enslave
//! and bring up links, add IPv4 addresses and a default route, delete a
//! link). One request at a time, each acknowledged (NLM_F_ACK), on a socket
//! that lives in the network namespace of the thread that opened it.
//! Written here rather than pulled from a crate: it is about two hundred
//! lines, has no async runtime, and keeps ctr-spawn's start-up small.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("{what}: {source}")]
    Request {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: no such interface")]
    NoSuchLink { what: String },
}

impl NetlinkError {
    /// The errno the kernel answered with, if it answered.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { source, .. } => source.raw_os_error(),
            NetlinkError::NoSuchLink { .. } => Some(libc::ENODEV),
            NetlinkError::Socket(_) => None,
        }
    }
}

const NLMSG_HDRLEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NLA_F_NESTED: u16 = 1 << 15;

/// A request being built: the header is filled in by [`Socket::request`].
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(kind: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        Msg { buf }
    }

    fn align(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// struct ifinfomsg.
    fn ifinfo(&mut self, index: i32, flags: u32, change: u32) {
        self.buf.push(libc::AF_UNSPEC as u8);
        self.buf.push(0);
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.align();
    }

    fn attr_str(&mut self, kind: u16, s: &str) {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(kind, &d);
    }

    /// Opens a nested attribute; [`Msg::end`] closes it with its length.
    fn begin(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        self.align();
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// An rtnetlink socket in the network namespace of the thread that opened it.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open() -> Result<Socket, NetlinkError> {
        Socket::open_proto(libc::NETLINK_ROUTE)
    }

    /// A NETLINK_NETFILTER socket, for [`Socket::nft_elements`].
    pub fn open_netfilter() -> Result<Socket, NetlinkError> {
        Socket::open_proto(libc::NETLINK_NETFILTER)
    }

    fn open_proto(proto: libc::c_int) -> Result<Socket, NetlinkError> {
        // SAFETY: a plain socket call.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(NetlinkError::Socket(std::io::Error::last_os_error()));
        }
        // SAFETY: the kernel just gave us this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Socket { fd, seq: 0 })
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(&mut self, m: Msg, what: &str) -> Result<(), NetlinkError> {
        self.send(vec![m], 0, what)
    }

    /// Sends `msgs` in one datagram (a batch) and waits for the
    /// acknowledgement of message `acked`; an error answer to any fails.
    fn send(&mut self, msgs: Vec<Msg>, acked: usize, what: &str) -> Result<(), NetlinkError> {
        let first = self.seq.wrapping_add(1);
        let mut all = Vec::new();
        for mut m in msgs {
            self.seq = self.seq.wrapping_add(1);
            let len = m.buf.len() as u32;
            m.buf[0..4].copy_from_slice(&len.to_ne_bytes());
            m.buf[8..12].copy_from_slice(&self.seq.to_ne_bytes());
            all.extend_from_slice(&m.buf);
        }
        let m = Msg { buf: all };
        let want = first.wrapping_add(acked as u32);
        let last = self.seq;
        let err = |source| NetlinkError::Request { what: what.to_string(), source };
        // SAFETY: sending a buffer we own, of its length, to the kernel (a
        // zeroed sockaddr_nl with the family set addresses the kernel).
        let sent = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                m.buf.as_ptr().cast(),
                m.buf.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: receiving into a buffer of its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(err(e));
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + NLMSG_HDRLEN <= n {
                let mlen = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap_or_default());
                let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap_or_default());
                if mlen < NLMSG_HDRLEN {
                    break;
                }
                let ours = seq.wrapping_sub(first) <= last.wrapping_sub(first);
                if ours && kind == libc::NLMSG_ERROR as u16 && off + NLMSG_HDRLEN + 4 <= n {
                    let code = i32::from_ne_bytes(
                        buf[off + NLMSG_HDRLEN..off + NLMSG_HDRLEN + 4].try_into().unwrap_or_default(),
                    );
                    if code != 0 {
                        return Err(err(std::io::Error::from_raw_os_error(-code)));
                    }
                    if seq == want {
                        return Ok(());
                    }
                }
                off += (mlen + 3) & !3;
            }
        }
    }

    /// Creates a bridge (EEXIST if it exists).
    pub fn add_bridge(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut m = Msg::new(libc::RTM_NEWLINK, flags_create());
        m.ifinfo(0, 0, 0);
        m.attr_str(IFLA_IFNAME, name);
        let li = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "bridge");
        m.end(li);
        self.request(m, &format!("create bridge {name}"))
    }

    /// Creates a veth pair: `host` here, `peer` in the network namespace `netns`.
    pub fn add_veth(&mut self, host: &str, peer: &str, netns: RawFd) -> Result<(), NetlinkError> {
        let mut m = Msg::new(libc::RTM_NEWLINK, flags_create());
        m.ifinfo(0, 0, 0);
        m.attr_str(IFLA_IFNAME, host);
        let li = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        let data = m.begin(IFLA_INFO_DATA);
        let p = m.begin(VETH_INFO_PEER);
        m.ifinfo(0, 0, 0);
        m.attr_str(IFLA_IFNAME, peer);
        m.attr(IFLA_NET_NS_FD, &(netns as u32).to_ne_bytes());
        m.end(p);
        m.end(data);
        m.end(li);
        self.request(m, &format!("create veth {host}"))
    }

    /// Brings link `index` up, enslaved to `master` if given.
    pub fn set_up(&mut self, index: i32, master: Option<i32>) -> Result<(), NetlinkError> {
        let mut m = Msg::new(libc::RTM_NEWLINK, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16);
        m.ifinfo(index, libc::IFF_UP as u32, libc::IFF_UP as u32);
        if let Some(master) = master {
            m.attr(IFLA_MASTER, &(master as u32).to_ne_bytes());
        }
        self.request(m, &format!("set link {index} up"))
    }

    /// Takes link `name` down (ENODEV if it is gone). Cheap, unlike a
    /// delete: no RCU barrier; a bridge port that is down forwards nothing
    /// and loses its forwarding entries at once.
    pub fn set_down(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut m = Msg::new(libc::RTM_NEWLINK, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16);
        m.ifinfo(0, 0, libc::IFF_UP as u32);
        m.attr_str(IFLA_IFNAME, name);
        self.request(m, &format!("set link {name} down"))
    }

    /// Deletes a link by name (a veth takes its peer along).
    pub fn del_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut m = Msg::new(libc::RTM_DELLINK, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16);
        m.ifinfo(0, 0, 0);
        m.attr_str(IFLA_IFNAME, name);
        self.request(m, &format!("delete link {name}"))
    }

    /// Adds `addr/prefix` to link `index` (EEXIST if present).
    pub fn add_addr(&mut self, index: i32, addr: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        let mut m = Msg::new(libc::RTM_NEWADDR, flags_create());
        m.buf.push(libc::AF_INET as u8);
        m.buf.push(prefix);
        m.buf.push(0);
        m.buf.push(0); // RT_SCOPE_UNIVERSE
        m.buf.extend_from_slice(&(index as u32).to_ne_bytes());
        m.attr(IFA_LOCAL, &addr.octets());
        m.attr(IFA_ADDRESS, &addr.octets());
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
        let bcast = Ipv4Addr::from(u32::from(addr) | !mask);
        m.attr(IFA_BROADCAST, &bcast.octets());
        self.request(m, &format!("add address {addr}/{prefix}"))
    }

    /// Adds the default route via `gateway` on link `index`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr, index: i32) -> Result<(), NetlinkError> {
        let mut m = Msg::new(libc::RTM_NEWROUTE, flags_create());
        m.buf.extend_from_slice(&[
            libc::AF_INET as u8,
            0,
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
        ]);
        m.buf.extend_from_slice(&0u32.to_ne_bytes());
        m.attr(RTA_GATEWAY, &gateway.octets());
        m.attr(RTA_OIF, &(index as u32).to_ne_bytes());
        self.request(m, &format!("add default route via {gateway}"))
    }
}

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

/// One element of an nftables map: key and (for an add) data, encoded as
/// the kernel stores concatenations (each field in network byte order,
/// padded to 4 bytes).
pub struct SetElem {
    pub key: Vec<u8>,
    pub data: Option<Vec<u8>>,
}

fn nfgen(kind: u16, flags: u16, family: u8, res_id: u16) -> Msg {
    let mut m = Msg::new(kind, flags);
    m.buf.push(family);
    m.buf.push(0); // NFNETLINK_V0
    m.buf.extend_from_slice(&res_id.to_be_bytes());
    m
}

impl Socket {
    /// Adds (or with `delete`, removes) elements of map `set` in table
    /// `ip TABLE` in one transaction: what `nft add element` does, without
    /// running nft.
    pub fn nft_elements(
        &mut self,
        table: &str,
        set: &str,
        elems: &[SetElem],
        delete: bool,
    ) -> Result<(), NetlinkError> {
        let req = libc::NLM_F_REQUEST as u16;
        let begin = nfgen(NFNL_MSG_BATCH_BEGIN, req, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES);
        let (op, flags) = if delete {
            (NFT_MSG_DELSETELEM, req | libc::NLM_F_ACK as u16)
        } else {
            (NFT_MSG_NEWSETELEM, req | (libc::NLM_F_ACK | libc::NLM_F_CREATE) as u16)
        };
        let mut m = nfgen((NFNL_SUBSYS_NFTABLES << 8) | op, flags, libc::NFPROTO_IPV4 as u8, 0);
        m.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
        m.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        let list = m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
        for e in elems {
            let el = m.begin(NFTA_LIST_ELEM);
            let k = m.begin(NFTA_SET_ELEM_KEY);
            m.attr(NFTA_DATA_VALUE, &e.key);
            m.end(k);
            if let Some(d) = &e.data {
                let dd = m.begin(NFTA_SET_ELEM_DATA);
                m.attr(NFTA_DATA_VALUE, d);
                m.end(dd);
            }
            m.end(el);
        }
        m.end(list);
        let end = nfgen(NFNL_MSG_BATCH_END, req, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES);
        self.send(vec![begin, m, end], 1, &format!("nftables map {set}"))
    }
}

fn flags_create() -> u16 {
    (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16
}

/// The index of link `name` in the calling thread's network namespace.
pub fn index(name: &str) -> Result<i32, NetlinkError> {
    let c = std::ffi::CString::new(name).map_err(|_| NetlinkError::NoSuchLink { what: name.to_string() })?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(NetlinkError::NoSuchLink { what: name.to_string() })
    } else {
        Ok(i as i32)
    }
}

/// True if link `name` exists in the calling thread's network namespace.
pub fn exists(name: &str) -> bool {
    index(name).is_ok()
}

/// Runs `f` on a thread that joined the network namespace `netns`
/// (network namespaces are per thread; the caller's stays as it is).
pub fn in_netns<T: Send>(netns: RawFd, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only, with a descriptor the caller keeps open.
            if unsafe { libc::setns(netns, libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("network namespace thread panicked")))
    })
}

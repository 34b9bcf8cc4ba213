//! Published ports: Docker's `-p [IP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/tcp|udp]`
//! parsed once into a [`PortSpec`], expanded at start into concrete
//! [`PortBinding`]s, each backed by a host socket kist binds (and, for TCP,
//! listens on) for as long as the container runs. The socket is the
//! reservation: a port another process holds fails the start with Docker's
//! words, two containers cannot publish one port, and `-P`/`-p 80` get a
//! free port from the kernel. Traffic never reaches these sockets: the
//! nftables DNAT (see [`super::nft`]) takes every packet for the port first.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid port specification {spec:?}: {why}")]
    Invalid { spec: String, why: String },
    #[error("Bind for {addr}:{port} failed: port is already allocated")]
    InUse { addr: Ipv4Addr, port: u16 },
    #[error("cannot reserve {addr}:{port}/{proto}: {source}")]
    Bind {
        addr: Ipv4Addr,
        port: u16,
        proto: Proto,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `-p` argument (or one exposed port with `-P`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    /// The host address to publish on; every address when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// The host port range; a free port when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<(u16, u16)>,
    pub container: (u16, u16),
    pub proto: Proto,
}

fn range(s: &str, spec: &str) -> Result<(u16, u16), PortError> {
    let bad = |why: &str| PortError::Invalid { spec: spec.to_string(), why: why.to_string() };
    let num = |p: &str| -> Result<u16, PortError> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad(&format!("{p:?} is not a port number (1-65535)"))),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if b < a {
                return Err(bad("the end of a range is below its start"));
            }
            Ok((a, b))
        }
        None => {
            let n = num(s)?;
            Ok((n, n))
        }
    }
}

impl PortSpec {
    /// Parses Docker's `-p` syntax (IPv4 host addresses only).
    pub fn parse(spec: &str) -> Result<PortSpec, PortError> {
        let bad = |why: &str| PortError::Invalid { spec: spec.to_string(), why: why.to_string() };
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((r, "tcp")) => (r, Proto::Tcp),
            Some((r, "udp")) => (r, Proto::Udp),
            Some((_, p)) => return Err(bad(&format!("unsupported protocol {p:?} (tcp or udp)"))),
            None => (spec, Proto::Tcp),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [ip, h, c] => (Some(*ip), Some(*h).filter(|h| !h.is_empty()), *c),
            _ => {
                return Err(bad(
                    "expected [IP:][HOSTPORT:]CONTAINERPORT (IPv6 host addresses are not supported)",
                ))
            }
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(a) => {
                Some(a.parse::<Ipv4Addr>().map_err(|_| bad(&format!("{a:?} is not an IPv4 address")))?)
            }
        };
        let container = range(container, spec)?;
        let host = host.map(|h| range(h, spec)).transpose()?;
        if let Some(h) = host {
            let (hl, cl) = (h.1 - h.0, container.1 - container.0);
            if cl > 0 && hl != cl {
                return Err(bad("host and container port ranges differ in length"));
            }
        }
        Ok(PortSpec { host_ip: host_ip.filter(|a| !a.is_unspecified()), host, container, proto })
    }

    /// An image's ExposedPorts entry (`80/tcp`), published on a free port by `-P`.
    pub fn exposed(entry: &str) -> Result<PortSpec, PortError> {
        PortSpec::parse(entry).and_then(|p| {
            if p.host.is_some() || p.host_ip.is_some() {
                Err(PortError::Invalid {
                    spec: entry.to_string(),
                    why: "an exposed port has no host part".into(),
                })
            } else {
                Ok(p)
            }
        })
    }
}

/// A published port as it is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortBinding {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl std::fmt::Display for PortBinding {
    /// `docker ps`' PORTS: `0.0.0.0:8081->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}->{}/{}", self.host_ip, self.host_port, self.container_port, self.proto)
    }
}

/// A host port held for a running container.
#[derive(Debug)]
pub struct Reservation {
    pub binding: PortBinding,
    _socket: OwnedFd,
}

impl Reservation {
    /// The socket that holds the port, for a monitor that takes it over.
    pub fn into_socket(self) -> OwnedFd {
        self._socket
    }
}

/// Binds (and for TCP listens on) `addr:port`; port 0 asks for a free one.
fn bind(addr: Ipv4Addr, port: u16, proto: Proto) -> Result<(OwnedFd, u16), PortError> {
    let kind = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    let err = |source: std::io::Error| {
        if source.raw_os_error() == Some(libc::EADDRINUSE) {
            PortError::InUse { addr, port }
        } else {
            PortError::Bind { addr, port, proto, source }
        }
    };
    // SAFETY: a plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just gave us this descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_in is plain data; the pointers passed cover it.
    unsafe {
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from(addr).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // As Go's listeners (docker-proxy) do: connections of an earlier
        // server in TIME_WAIT must not keep the port from being published
        // again. A listening socket still holds it exclusively on Linux.
        let one: libc::c_int = 1;
        if proto == Proto::Tcp
            && libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
        {
            return Err(err(std::io::Error::last_os_error()));
        }
        if libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        if proto == Proto::Tcp && libc::listen(fd.as_raw_fd(), 1) != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut glen = len;
        if libc::getsockname(fd.as_raw_fd(), (&mut got as *mut libc::sockaddr_in).cast(), &mut glen) != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Ok((fd, u16::from_be(got.sin_port)))
    }
}

/// Expands the specs into bindings and reserves every host port; all or none.
pub fn reserve(specs: &[PortSpec]) -> Result<Vec<Reservation>, PortError> {
    let mut out = Vec::new();
    for s in specs {
        let addr = s.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        for (i, cport) in (s.container.0..=s.container.1).enumerate() {
            let (fd, hport) = match s.host {
                None => bind(addr, 0, s.proto)?,
                Some((a, b)) if s.container.0 == s.container.1 && b > a => {
                    // One container port, a host range: the first free one.
                    let mut last = None;
                    let mut found = None;
                    for p in a..=b {
                        match bind(addr, p, s.proto) {
                            Ok(r) => {
                                found = Some(r);
                                break;
                            }
                            Err(e) => last = Some(e),
                        }
                    }
                    match (found, last) {
                        (Some(r), _) => r,
                        (None, Some(e)) => return Err(e),
                        (None, None) => return Err(PortError::InUse { addr, port: a }),
                    }
                }
                Some((a, _)) => bind(addr, a + i as u16, s.proto)?,
            };
            out.push(Reservation {
                binding: PortBinding {
                    host_ip: addr,
                    host_port: hport,
                    container_port: cport,
                    proto: s.proto,
                },
                _socket: fd,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_time_wait_is_published_again_but_a_listened_one_is_not() {
        use std::io::Read;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = l.accept().unwrap();
        // The server side closes first: its end of the connection, on `port`, waits in TIME_WAIT.
        drop(server);
        let _ = client.read(&mut [0u8; 1]);
        drop(client);
        drop(l);
        let (held, got) = bind(Ipv4Addr::LOCALHOST, port, Proto::Tcp).unwrap();
        assert_eq!(got, port);
        assert!(matches!(bind(Ipv4Addr::LOCALHOST, port, Proto::Tcp), Err(PortError::InUse { .. })));
        drop(held);
    }

    #[test]
    fn docker_syntax() {
        let p = PortSpec::parse("127.0.0.1:18081:80").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.host, Some((18081, 18081)));
        assert_eq!(p.container, (80, 80));
        assert_eq!(p.proto, Proto::Tcp);
        let p = PortSpec::parse("8000-8002:80-82/udp").unwrap();
        assert_eq!((p.host, p.container, p.proto), (Some((8000, 8002)), (80, 82), Proto::Udp));
        let p = PortSpec::parse("127.0.0.1::53/udp").unwrap();
        assert_eq!((p.host, p.container), (None, (53, 53)));
        assert_eq!(PortSpec::parse("80").unwrap().host, None);
        assert_eq!(PortSpec::parse("0.0.0.0:81:80").unwrap().host_ip, None);
        for bad in ["", "x", "80/sctp", "1-2:80-90", "0:80", "70000", "a:b:c:d", "::1:80:80", "9-8:80"] {
            assert!(PortSpec::parse(bad).is_err(), "{bad}");
        }
        assert!(PortSpec::exposed("80/tcp").is_ok());
    }

    #[test]
    fn shown_like_docker_ps() {
        let b = PortBinding {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 8081,
            container_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(b.to_string(), "0.0.0.0:8081->80/tcp");
    }

    #[test]
    fn reservation_excludes_and_picks_free_ports() {
        let r = reserve(&[PortSpec::parse("127.0.0.1::80").unwrap()]).unwrap();
        let port = r[0].binding.host_port;
        assert!(port > 0);
        let again = PortSpec::parse(&format!("127.0.0.1:{port}:80")).unwrap();
        assert!(matches!(reserve(std::slice::from_ref(&again)), Err(PortError::InUse { .. })));
        drop(r);
        assert!(reserve(&[again]).is_ok());
    }
}

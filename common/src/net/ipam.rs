//! IPv4 subnets and address allocation: a [`Subnet`] parsed once from
//! `A.B.C.D/N`, the default subnet chosen among candidates that neither the
//! host's routing table nor another kist network uses, and the first free
//! address of a network's leases.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid subnet {0:?}: expected A.B.C.D/N with N between 8 and 30")]
    BadSubnet(String),
    #[error("no free subnet: every candidate (172.17-31.0.0/16, 192.168.*.0/20) is routed or in use; give one with --subnet")]
    NoSubnet,
    #[error("network {network}: no free address left in {subnet}")]
    Exhausted { network: String, subnet: Subnet },
    #[error("address {addr} is not in network {network}'s subnet {subnet}")]
    OutOfSubnet { addr: Ipv4Addr, network: String, subnet: Subnet },
    #[error("address {addr} is already in use on network {network}")]
    Taken { addr: Ipv4Addr, network: String },
}

/// An IPv4 network: its address (host bits cleared) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Subnet {
        let mask = mask(prefix);
        Subnet { addr: Ipv4Addr::from(u32::from(addr) & mask), prefix }
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask(self.prefix) == u32::from(self.addr)
    }

    pub fn overlaps(&self, o: &Subnet) -> bool {
        let m = mask(self.prefix.min(o.prefix));
        u32::from(self.addr) & m == u32::from(o.addr) & m
    }

    /// The `n`th address (0 is the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + n)
    }

    /// Addresses in the subnet, network and broadcast included.
    pub fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix))
    }

    /// Docker's gateway: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }
}

pub fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl std::str::FromStr for Subnet {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Subnet, IpamError> {
        let bad = || IpamError::BadSubnet(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        Ok(Subnet::new(addr, prefix))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Subnet, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The destinations the host routes (in this network namespace), from
/// /proc/net/route, the default route left out.
pub fn routed() -> Vec<Subnet> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let m = u32::from_str_radix(f.get(7)?, 16).ok()?;
            if m == 0 {
                return None;
            }
            // The kernel prints the network-order value as a native u32.
            let dst = Ipv4Addr::from(dst.to_ne_bytes());
            let prefix = u32::from_be_bytes(m.to_ne_bytes()).leading_ones() as u8;
            Some(Subnet::new(dst, prefix))
        })
        .collect()
}

/// Docker's default address pools: 172.17-31.0.0/16, then 192.168.0.0/16 in /20s.
pub fn candidates() -> impl Iterator<Item = Subnet> {
    (17u8..=31)
        .map(|b| Subnet::new(Ipv4Addr::new(172, b, 0, 0), 16))
        .chain((0u8..16).map(|i| Subnet::new(Ipv4Addr::new(192, 168, i * 16, 0), 20)))
}

/// The first candidate that overlaps neither a route nor `taken`.
pub fn choose_subnet(taken: &[Subnet]) -> Result<Subnet, IpamError> {
    let routes = routed();
    candidates().find(|c| !routes.iter().chain(taken).any(|t| t.overlaps(c))).ok_or(IpamError::NoSubnet)
}

/// An address for a new lease: `want` if free, else the first free host
/// address after the gateway.
pub fn allocate(
    network: &str,
    subnet: Subnet,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
    want: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, IpamError> {
    if let Some(a) = want {
        if !subnet.contains(a) || a == subnet.nth(0) || a == subnet.nth(subnet.size() - 1) {
            return Err(IpamError::OutOfSubnet { addr: a, network: network.to_string(), subnet });
        }
        if a == gateway || used.contains(&a) {
            return Err(IpamError::Taken { addr: a, network: network.to_string() });
        }
        return Ok(a);
    }
    (1..subnet.size() - 1)
        .map(|n| subnet.nth(n))
        .find(|a| *a != gateway && !used.contains(a))
        .ok_or(IpamError::Exhausted { network: network.to_string(), subnet })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s: Subnet = "172.18.3.4/16".parse().unwrap();
        assert_eq!(s.to_string(), "172.18.0.0/16");
        assert!(s.contains(Ipv4Addr::new(172, 18, 200, 1)));
        assert!(!s.contains(Ipv4Addr::new(172, 19, 0, 1)));
        assert!(s.overlaps(&"172.18.5.0/24".parse().unwrap()));
        assert!(!s.overlaps(&"172.19.0.0/16".parse().unwrap()));
        assert!("1.2.3.4".parse::<Subnet>().is_err());
        assert!("1.2.3.4/31".parse::<Subnet>().is_err());
    }

    #[test]
    fn allocation() {
        let s: Subnet = "10.0.0.0/29".parse().unwrap();
        let gw = s.gateway();
        let mut used = BTreeSet::new();
        let a = allocate("n", s, gw, &used, None).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 2));
        used.insert(a);
        assert_eq!(allocate("n", s, gw, &used, None).unwrap(), Ipv4Addr::new(10, 0, 0, 3));
        assert!(allocate("n", s, gw, &used, Some(a)).is_err());
        assert!(allocate("n", s, gw, &used, Some(Ipv4Addr::new(10, 0, 1, 3))).is_err());
        for n in 3..7 {
            used.insert(s.nth(n));
        }
        assert!(matches!(allocate("n", s, gw, &used, None), Err(IpamError::Exhausted { .. })));
    }

    #[test]
    fn candidates_skip_taken() {
        let taken: Vec<Subnet> = vec!["172.17.0.0/16".parse().unwrap(), "172.16.0.0/12".parse().unwrap()];
        let c = candidates().find(|c| !taken.iter().any(|t| t.overlaps(c))).unwrap();
        assert_eq!(c.to_string(), "192.168.0.0/20");
    }
}

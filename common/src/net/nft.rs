//! kist's firewall: one nftables table of its own, `table ip kist`, fed
//! to `nft -f -` as one atomic transaction; no other table is touched.
//!
//! Chains are re-declared and flushed and their rules rewritten on every
//! change (so the rules are always exactly these, whatever happened
//! before), while the per-container state lives in maps and a set whose
//! elements are added and deleted one by one:
//! - `pub_any`  (proto . host port → container address . port): ports
//!   published on every address;
//! - `pub_addr` (host address . proto . host port → ...): ports published on
//!   one address (`-p 127.0.0.1:8080:80`);
//! - `subnets`: the networks' subnets, whose traffic leaving them is
//!   masqueraded.
//!
//! DNAT applies to packets for a local address in prerouting (from
//! elsewhere) and in output (from the host itself, 127.0.0.1 included:
//! the bridges get route_localnet, and loopback-sourced packets leaving on
//! a kist bridge are masqueraded, so the container answers its gateway).
//! Releasing a container deletes exactly the elements its lease names, and
//! `nft list table ip kist` shows at a glance what is left.

use std::io::Write;
use std::process::{Command, Stdio};

use super::ipam::Subnet;
use super::ports::PortBinding;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft (install the nftables package): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft rejected kist's rules: {0}")]
    Rejected(String),
}

pub const TABLE: &str = "kist";
/// Bumped whenever [`base`] changes, so that existing tables get the new rules.
pub const VERSION: u32 = 1;

/// The table, its maps, set and chains, with their rules rewritten.
pub fn base() -> String {
    format!(
        "add table ip {TABLE}\n\
         add map ip {TABLE} pub_any {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}\n\
         add map ip {TABLE} pub_addr {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}\n\
         add set ip {TABLE} subnets {{ type ipv4_addr; flags interval; }}\n\
         add chain ip {TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         add chain ip {TABLE} output {{ type nat hook output priority -100; policy accept; }}\n\
         add chain ip {TABLE} publish\n\
         add chain ip {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain ip {TABLE} prerouting\n\
         flush chain ip {TABLE} output\n\
         flush chain ip {TABLE} publish\n\
         flush chain ip {TABLE} postrouting\n\
         add rule ip {TABLE} prerouting fib daddr type local jump publish\n\
         add rule ip {TABLE} output fib daddr type local jump publish\n\
         add rule ip {TABLE} publish dnat ip to ip daddr . meta l4proto . th dport map @pub_addr\n\
         add rule ip {TABLE} publish dnat ip to meta l4proto . th dport map @pub_any\n\
         add rule ip {TABLE} postrouting ip saddr @subnets ip daddr != @subnets masquerade\n\
         add rule ip {TABLE} postrouting ip saddr 127.0.0.0/8 oifname \"kist*\" masquerade\n"
    )
}

pub fn add_subnet(s: &Subnet) -> String {
    format!("add element ip {TABLE} subnets {{ {s} }}\n")
}

pub fn delete_subnet(s: &Subnet) -> String {
    format!("delete element ip {TABLE} subnets {{ {s} }}\n")
}

fn key(b: &PortBinding) -> (String, &'static str) {
    if b.host_ip.is_unspecified() {
        (format!("{} . {}", b.proto, b.host_port), "pub_any")
    } else {
        (format!("{} . {} . {}", b.host_ip, b.proto, b.host_port), "pub_addr")
    }
}

/// The element publishing `b` to `addr`.
pub fn add_port(b: &PortBinding, addr: std::net::Ipv4Addr) -> String {
    let (k, map) = key(b);
    format!("add element ip {TABLE} {map} {{ {k} : {addr} . {} }}\n", b.container_port)
}

pub fn delete_port(b: &PortBinding) -> String {
    let (k, map) = key(b);
    format!("delete element ip {TABLE} {map} {{ {k} }}\n")
}

fn proto_num(p: super::ports::Proto) -> u8 {
    match p {
        super::ports::Proto::Tcp => libc::IPPROTO_TCP as u8,
        super::ports::Proto::Udp => libc::IPPROTO_UDP as u8,
    }
}

/// The map and encoded element publishing `b` (to `to`, for an add), as
/// [`add_port`] and [`delete_port`] would write them, for
/// netlink::Socket::nft_elements: concatenated fields in network order,
/// each padded to 4 bytes.
pub fn port_elem(b: &PortBinding, to: Option<std::net::Ipv4Addr>) -> (&'static str, super::netlink::SetElem) {
    let pad = |v: &[u8]| {
        let mut x = v.to_vec();
        x.resize(4, 0);
        x
    };
    let mut key = Vec::new();
    let map = if b.host_ip.is_unspecified() {
        "pub_any"
    } else {
        key.extend_from_slice(&b.host_ip.octets());
        "pub_addr"
    };
    key.extend(pad(&[proto_num(b.proto)]));
    key.extend(pad(&b.host_port.to_be_bytes()));
    let data = to.map(|a| {
        let mut d = a.octets().to_vec();
        d.extend(pad(&b.container_port.to_be_bytes()));
        d
    });
    (map, super::netlink::SetElem { key, data })
}

/// Adds or deletes port elements over netlink, one transaction per map.
pub fn port_elements(
    bindings: &[(PortBinding, Option<std::net::Ipv4Addr>)],
    delete: bool,
) -> Result<(), super::netlink::NetlinkError> {
    if bindings.is_empty() {
        return Ok(());
    }
    let mut sock = super::netlink::Socket::open_netfilter()?;
    for map in ["pub_any", "pub_addr"] {
        let elems: Vec<super::netlink::SetElem> = bindings
            .iter()
            .map(|(b, to)| port_elem(b, *to))
            .filter(|(m, _)| *m == map)
            .map(|(_, e)| e)
            .collect();
        if !elems.is_empty() {
            sock.nft_elements(TABLE, map, &elems, delete)?;
        }
    }
    Ok(())
}

/// Runs one transaction: all of `script` or nothing.
pub fn apply(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Rejected(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// Deletes elements one transaction each, so that one already gone (a
/// table flushed by hand) does not keep the others.
pub fn delete_each(lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    if apply(&lines.concat()).is_err() {
        for l in lines {
            let _ = apply(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ports::Proto;
    use std::net::Ipv4Addr;

    #[test]
    fn elements() {
        let b = PortBinding {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 8080,
            container_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(
            add_port(&b, Ipv4Addr::new(172, 17, 0, 2)),
            "add element ip kist pub_addr { 127.0.0.1 . tcp . 8080 : 172.17.0.2 . 80 }\n"
        );
        let any = PortBinding { host_ip: Ipv4Addr::UNSPECIFIED, ..b };
        assert_eq!(delete_port(&any), "delete element ip kist pub_any { tcp . 8080 }\n");
    }
}

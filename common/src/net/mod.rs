//! Container networking: bridge networks described by
//! `networks/<name>.json` (bridge, subnet, gateway and one lease per
//! attached container), and the mechanism that attaches a container to one
//! and releases it again.
//!
//! Attaching (done by the process that owns the container's init, after
//! the init is cloned into its new network namespace and before it is let
//! go) happens under one lock, `locks/networks.lock`:
//! collect leases whose owner is gone (a SIGKILLed monitor), make sure the
//! bridge, its address, the sysctls and kist's nftables table exist,
//! reserve the published host ports (bound sockets the owner holds), lease
//! an address, create the veth pair with its peer (`eth0`) placed straight
//! into the container's namespace, configure eth0 from a thread that joined
//! that namespace, add the port elements, save the lease and rewrite the
//! `/etc/hosts` of the network's containers. Releasing (the owner after the
//! init's exit, any remover through kist_common::teardown, and the
//! collection of dead owners' leases) undoes exactly what the lease names.
//! See docs/networking.md.

pub mod ipam;
pub mod netlink;
pub mod nft;
pub mod ports;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{FsError, Lock};
use crate::root::StateRoot;
use ipam::Subnet;
use ports::{PortBinding, PortSpec, Reservation};

/// The default network's name, as Docker calls it.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The default network's bridge.
pub const DEFAULT_BRIDGE: &str = "kist0";
/// The container's end of its veth pair.
pub const CONTAINER_IFNAME: &str = "eth0";
pub const NETWORK_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("invalid network name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    #[error("network {name} has active endpoints: {containers}")]
    InUse { name: String, containers: String },
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    #[error("subnet {subnet} overlaps network {other}'s {theirs}")]
    Overlap { subnet: Subnet, other: String, theirs: Subnet },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid network file")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot set {path}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter the container's network namespace: {0}")]
    Netns(#[source] std::io::Error),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
    #[error(transparent)]
    Port(#[from] ports::PortError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl crate::HasExitCode for NetError {
    fn exit_code(&self) -> crate::ExitCode {
        match self {
            NetError::NotFound(_) => crate::ExitCode::NotFound,
            NetError::Exists(_)
            | NetError::InUse { .. }
            | NetError::Overlap { .. }
            | NetError::Predefined(_) => crate::ExitCode::Conflict,
            NetError::BadName(_) => crate::ExitCode::Usage,
            NetError::Port(ports::PortError::Invalid { .. }) => crate::ExitCode::Usage,
            NetError::Port(ports::PortError::InUse { .. }) => crate::ExitCode::Conflict,
            NetError::Ipam(ipam::IpamError::BadSubnet(_)) => crate::ExitCode::Usage,
            NetError::Read { source, .. } => crate::exit::io_exit_code(source),
            NetError::Parse { .. } => crate::ExitCode::Integrity,
            NetError::Fs(e) => e.exit_code(),
            _ => crate::ExitCode::Failure,
        }
    }
}

/// `networks/<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default = "network_version")]
    pub schema_version: u32,
    pub name: String,
    /// 64 hex digits.
    pub id: String,
    pub driver: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub created: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Attached containers by id.
    #[serde(default)]
    pub leases: BTreeMap<String, Lease>,
}

fn network_version() -> u32 {
    NETWORK_VERSION
}

/// One container's attachment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub address: Ipv4Addr,
    /// The container's name, and the aliases it is found by on a user network.
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub hostname: String,
    /// The host end of the veth pair.
    pub veth: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortBinding>,
    /// The container's hosts file (bind-mounted at /etc/hosts), rewritten in place.
    pub hosts_file: PathBuf,
    /// `--add-host` entries (`IP NAME`), kept on every rewrite.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<(String, Ipv4Addr)>,
    /// The process holding the lease (monitor or attached ctr-spawn) and
    /// its start time: when it is gone, the lease is collected.
    pub owner_pid: i32,
    pub owner_start: f64,
    /// The inode of the container's network namespace: at release, if no
    /// process is left in it, the namespace dies and the kernel removes
    /// the veth pair with it, so the slow explicit delete is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
}

/// What a container asks of its network (ctr-spawn keeps it in spawn.json).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<(String, Ipv4Addr)>,
}

/// Parses `--add-host NAME:IP` (Docker also accepts `NAME=IP`).
pub fn parse_add_host(s: &str) -> Option<(String, Ipv4Addr)> {
    let (name, ip) = s.split_once('=').or_else(|| s.split_once(':'))?;
    let ip = ip.parse().ok()?;
    (!name.is_empty()).then(|| (name.to_string(), ip))
}

pub fn valid_name(name: &str) -> bool {
    crate::container::valid_name(name)
}

fn networks_lock(root: &StateRoot) -> PathBuf {
    root.locks_dir().join("networks.lock")
}

pub fn network_path(root: &StateRoot, name: &str) -> PathBuf {
    root.networks_dir().join(format!("{name}.json"))
}

/// Reads `networks/<name>.json`.
pub fn load(root: &StateRoot, name: &str) -> Result<Network, NetError> {
    let path = network_path(root, name);
    let bytes = std::fs::read(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            NetError::NotFound(name.to_string())
        } else {
            NetError::Read { path: path.clone(), source }
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|source| NetError::Parse { path, source })
}

/// Replaces the network file atomically, without fsync: its leases mean
/// nothing after a power loss (their owners are gone and the next attach
/// collects them), and the fsyncs would dominate a container's start.
fn save(root: &StateRoot, net: &Network) -> Result<(), NetError> {
    std::fs::create_dir_all(root.networks_dir())
        .map_err(|source| FsError::Write { path: root.networks_dir(), source })?;
    let path = network_path(root, &net.name);
    let mut bytes = serde_json::to_vec_pretty(net)
        .map_err(|e| FsError::Write { path: path.clone(), source: std::io::Error::other(e) })?;
    bytes.push(b'\n');
    Ok(crate::fsutil::atomic_write_nosync(&path, &bytes)?)
}

/// `networks/.nft-applied`: which network namespace (inode), boot and
/// ruleset version kist's base rules were last applied for, and the
/// subnets added since. When it matches, an attach adds only its elements
/// (one short nft run, or none without published ports); when the table
/// was removed behind kist's back, the element run fails and the whole
/// ruleset is applied again.
fn applied_path(root: &StateRoot) -> PathBuf {
    root.networks_dir().join(".nft-applied")
}

fn netns_key() -> String {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0);
    format!("{ino} {} {}", crate::container::boot_id(), nft::VERSION)
}

/// The subnets recorded as applied for this namespace, if the base rules are.
fn applied(root: &StateRoot) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(applied_path(root)).ok()?;
    let mut lines = text.lines();
    (lines.next()? == netns_key()).then(|| lines.map(String::from).collect())
}

fn record_applied(root: &StateRoot, subnets: &[String]) {
    let mut text = netns_key();
    for s in subnets {
        text.push('\n');
        text.push_str(s);
    }
    let _ = crate::fsutil::atomic_write_nosync(&applied_path(root), text.as_bytes());
}

/// Applies this attachment's firewall elements, and the base rules when
/// they are not known to be in place.
fn apply_rules(
    root: &StateRoot,
    subnet: &Subnet,
    elements: &str,
    ports: &[(PortBinding, Option<Ipv4Addr>)],
) -> Result<(), NetError> {
    let sub = subnet.to_string();
    if let Some(mut known) = applied(root) {
        let fresh = !known.contains(&sub);
        // The port elements over netlink (no nft run); a new subnet through nft.
        let ok = (!fresh || nft::apply(&nft::add_subnet(subnet)).is_ok())
            && nft::port_elements(ports, false).is_ok();
        if ok {
            if fresh {
                known.push(sub);
                record_applied(root, &known);
            }
            return Ok(());
        }
    }
    let mut script = nft::base();
    script.push_str(&nft::add_subnet(subnet));
    script.push_str(elements);
    nft::apply(&script)?;
    record_applied(root, &[sub]);
    Ok(())
}

/// Every network file, by name.
pub fn list(root: &StateRoot) -> Result<Vec<Network>, NetError> {
    let dir = root.networks_dir();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(NetError::Read { path: dir, source }),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_suffix(".json").filter(|n| !n.starts_with('.')) {
            out.push(load(root, n)?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A new network's description (not yet saved).
fn describe(
    root: &StateRoot,
    name: &str,
    subnet: Option<Subnet>,
    gateway: Option<Ipv4Addr>,
) -> Result<Network, NetError> {
    let others = list(root)?;
    if others.iter().any(|n| n.name == name) {
        return Err(NetError::Exists(name.to_string()));
    }
    let taken: Vec<Subnet> = others.iter().map(|n| n.subnet).collect();
    let subnet = match subnet {
        Some(s) => {
            if let Some(o) = others.iter().find(|o| o.subnet.overlaps(&s)) {
                return Err(NetError::Overlap { subnet: s, other: o.name.clone(), theirs: o.subnet });
            }
            s
        }
        None => ipam::choose_subnet(&taken)?,
    };
    let id = random_id();
    let bridge =
        if name == DEFAULT_NETWORK { DEFAULT_BRIDGE.to_string() } else { format!("kist-{}", &id[..10]) };
    Ok(Network {
        schema_version: NETWORK_VERSION,
        name: name.to_string(),
        id,
        driver: "bridge".into(),
        bridge,
        subnet,
        gateway: gateway.unwrap_or_else(|| subnet.gateway()),
        created: crate::container::now_rfc3339(),
        labels: BTreeMap::new(),
        leases: BTreeMap::new(),
    })
}

/// `ctr-net create`: a user network; its bridge appears with its first container.
pub fn create(
    root: &StateRoot,
    name: &str,
    subnet: Option<Subnet>,
    gateway: Option<Ipv4Addr>,
    labels: BTreeMap<String, String>,
) -> Result<Network, NetError> {
    if !valid_name(name) {
        return Err(NetError::BadName(name.to_string()));
    }
    if let (Some(s), Some(g)) = (subnet, gateway) {
        if !s.contains(g) {
            return Err(ipam::IpamError::OutOfSubnet { addr: g, network: name.to_string(), subnet: s }.into());
        }
    }
    let _lock = Lock::exclusive(&networks_lock(root))?;
    let mut net = describe(root, name, subnet, gateway)?;
    net.labels = labels;
    save(root, &net)?;
    Ok(net)
}

/// `ctr-net rm`: refuses while containers are attached (after collecting
/// leases of dead owners); removes the bridge and the subnet's element.
pub fn remove(root: &StateRoot, name: &str) -> Result<Network, NetError> {
    if name == DEFAULT_NETWORK {
        return Err(NetError::Predefined(name.to_string()));
    }
    let _lock = Lock::exclusive(&networks_lock(root))?;
    let mut net = load(root, name)?;
    collect(root, &mut net)?;
    if !net.leases.is_empty() {
        let containers = net.leases.values().map(|l| l.name.clone()).collect::<Vec<_>>().join(", ");
        save(root, &net)?;
        return Err(NetError::InUse { name: name.to_string(), containers });
    }
    teardown_bridge(&net);
    if let Some(mut known) = applied(root) {
        known.retain(|s| *s != net.subnet.to_string());
        record_applied(root, &known);
    }
    let path = network_path(root, name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(FsError::Write { path, source }.into()),
    }
    Ok(net)
}

fn teardown_bridge(net: &Network) {
    if let Ok(mut nl) = netlink::Socket::open() {
        let _ = nl.del_link(&net.bridge);
    }
    if nft_present() {
        nft::delete_each(&[nft::delete_subnet(&net.subnet)]);
    }
}

/// True if kist's table exists.
fn nft_present() -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "ip", nft::TABLE])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn sysctl(path: &str, value: &str) -> Result<(), NetError> {
    let p = PathBuf::from(path);
    match std::fs::read_to_string(&p) {
        Ok(v) if v.trim() == value => return Ok(()),
        _ => {}
    }
    std::fs::write(&p, value).map_err(|source| NetError::Sysctl { path: p, source })
}

/// Creates the bridge if missing, with its gateway address, up, and
/// route_localnet (for DNAT of 127.0.0.1); forwarding on.
fn ensure_bridge(nl: &mut netlink::Socket, net: &Network) -> Result<i32, NetError> {
    if !netlink::exists(&net.bridge) {
        match nl.add_bridge(&net.bridge) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let idx = netlink::index(&net.bridge)?;
    match nl.add_addr(idx, net.gateway, net.subnet.prefix) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    nl.set_up(idx, None)?;
    sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    sysctl(&format!("/proc/sys/net/ipv4/conf/{}/route_localnet", net.bridge), "1")?;
    Ok(idx)
}

/// The host end of a container's veth pair (15 characters at most).
pub fn veth_name(container_id: &str) -> String {
    format!("vk{}", &container_id[..container_id.len().min(12)])
}

/// The start time of process `pid` (seconds since boot's epoch), if alive.
fn process_start(host: &crate::lifecycle::Host, pid: i32) -> Option<f64> {
    host.process_start(pid)
}

/// True if some process is still in the network namespace with inode
/// `ino`, or a bind mount (`ip netns add`) holds it: then it outlives the
/// container's init and its veth must be deleted explicitly. A scan of
/// /proc costs a fraction of a millisecond; the delete 10 to 30 ms. Each
/// process's link is read (`net:[INODE]`), not followed: a stat of
/// /proc/N/ns/net resolves the namespace's nsfs dentry and costs about
/// twice as much, and the scan runs at every release.
fn netns_in_use(ino: u64) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(rd) = std::fs::read_dir("/proc") else { return true };
    let mark = format!("net:[{ino}]");
    let mut path = PathBuf::from("/proc");
    for e in rd.flatten() {
        let name = e.file_name();
        if name.as_bytes().is_empty() || !name.as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        path.push(&name);
        path.push("ns/net");
        let same = std::fs::read_link(&path).is_ok_and(|l| l.as_os_str().as_bytes() == mark.as_bytes());
        path.pop();
        path.pop();
        path.pop();
        if same {
            return true;
        }
    }
    let mark = format!(" {mark} ");
    std::fs::read_to_string("/proc/self/mountinfo").map(|m| m.contains(&mark)).unwrap_or(true)
}

/// Releases what `lease` holds (nft elements, the veth); the caller
/// removes it from the network and saves.
///
/// The veth: deleting it makes the kernel wait for RCU grace periods in
/// unregister_netdevice (10 to 30 ms), and when the container's network
/// namespace has no process left (its init is gone and nobody joined it
/// with `--network container:`) the kernel removes the pair by itself as
/// the namespace dies, asynchronously. Then the host end is only taken
/// down (well under a millisecond): it leaves the bridge's data path at
/// once, so the released address cannot be answered for by the dying
/// namespace. A namespace someone still uses (a joiner, as Docker removes
/// the interfaces when the owner stops) or an unknown one gets the delete.
/// A veth name still being destroyed cannot be taken by another
/// container (the name is derived from the container id); the same
/// container starting again waits for it (see [`attach`]).
fn release_lease(lease: &Lease, nl: Option<&mut netlink::Socket>) {
    let bindings: Vec<_> = lease.ports.iter().map(|b| (*b, None)).collect();
    if nft::port_elements(&bindings, true).is_err() {
        // Some element already gone: one nft run per element, so that the
        // others still go.
        let deletes: Vec<String> = lease.ports.iter().map(nft::delete_port).collect();
        nft::delete_each(&deletes);
    }
    if let Some(nl) = nl {
        match lease.netns {
            Some(ino) if !netns_in_use(ino) => {
                let _ = nl.set_down(&lease.veth);
            }
            _ => {
                let _ = nl.del_link(&lease.veth);
            }
        }
    }
}

/// Drops the leases whose owner process is gone.
fn collect(root: &StateRoot, net: &mut Network) -> Result<bool, NetError> {
    let host = crate::lifecycle::Host::probe();
    let dead: Vec<String> = net
        .leases
        .iter()
        .filter(|(_, l)| match process_start(&host, l.owner_pid) {
            Some(s) => (s - l.owner_start).abs() > 1.0,
            None => true,
        })
        .map(|(id, _)| id.clone())
        .collect();
    if dead.is_empty() {
        return Ok(false);
    }
    let mut nl = netlink::Socket::open().ok();
    for id in dead {
        if let Some(l) = net.leases.remove(&id) {
            release_lease(&l, nl.as_mut());
        }
    }
    let _ = root;
    Ok(true)
}

/// Collects the leases of dead owners on every network; returns how many
/// leases were released (`ctr-net prune`, and every attach).
pub fn collect_all(root: &StateRoot) -> Result<usize, NetError> {
    let _lock = Lock::exclusive(&networks_lock(root))?;
    let mut n = 0;
    for mut net in list(root)? {
        let before = net.leases.len();
        if collect(root, &mut net)? {
            n += before - net.leases.len();
            save(root, &net)?;
            write_hosts_files(&net, None);
        }
    }
    Ok(n)
}

/// Docker's /etc/hosts: loopback lines, `--add-host` entries, the
/// container's own address and name, then (on user networks) its peers.
pub fn hosts_text(
    extra: &[(String, Ipv4Addr)],
    own: Option<(Ipv4Addr, &str)>,
    peers: &[(Ipv4Addr, Vec<String>)],
) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (name, ip) in extra {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    if let Some((ip, host)) = own {
        s.push_str(&format!("{ip}\t{host}\n"));
    }
    for (ip, names) in peers {
        s.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    s
}

/// Rewrites, in place (the file is bind-mounted: a rename would not be
/// seen), the hosts file of every container on `net` after `joined` was
/// attached (None: after a release). On the default network containers
/// do not see each other, so only the one attached gets its file.
fn write_hosts_files(net: &Network, joined: Option<&str>) {
    let user = net.name != DEFAULT_NETWORK;
    for (id, l) in &net.leases {
        if !user && joined != Some(id.as_str()) {
            continue;
        }
        let peers: Vec<(Ipv4Addr, Vec<String>)> = if user {
            net.leases
                .iter()
                .filter(|(other, _)| *other != id)
                .map(|(_, p)| {
                    let mut names = vec![p.name.clone()];
                    names.extend(p.aliases.iter().cloned());
                    if p.hostname != p.name {
                        names.push(p.hostname.clone());
                    }
                    (p.address, names)
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut own = l.hostname.clone();
        if user {
            for a in std::iter::once(&l.name).chain(&l.aliases) {
                if a != &l.hostname {
                    own.push(' ');
                    own.push_str(a);
                }
            }
        }
        let text = hosts_text(&l.extra_hosts, Some((l.address, &own)), &peers);
        rewrite_in_place(&l.hosts_file, text.as_bytes());
    }
}

fn rewrite_in_place(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).truncate(true).open(path) {
        let _ = f.write_all(bytes);
    }
}

/// A container's attachment, held by the owner of its init for as long as
/// it runs: the reserved host ports live here. Dropping it releases the
/// lease (see [`detach`]).
#[derive(Debug)]
pub struct Attachment {
    pub root: StateRoot,
    pub network: String,
    pub container_id: String,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub subnet: Subnet,
    pub reservations: Vec<Reservation>,
}

impl Attachment {
    pub fn bindings(&self) -> Vec<PortBinding> {
        self.reservations.iter().map(|r| r.binding).collect()
    }

    /// Hands the attachment to another owner (the monitor, across exec):
    /// the network's name, whose lease it must [`detach`] when the
    /// container exits, and the sockets holding the host ports. Dropping
    /// what is left releases nothing.
    pub fn hand_over(mut self) -> (String, Vec<OwnedFd>) {
        let network = std::mem::take(&mut self.network);
        let sockets =
            std::mem::take(&mut self.reservations).into_iter().map(Reservation::into_socket).collect();
        (network, sockets)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // Handed over (see hand_over): the new owner releases the lease.
        if self.network.is_empty() {
            return;
        }
        let _ = detach(&self.root, &self.network, &self.container_id);
    }
}

/// Who the container is, for its lease.
pub struct Endpoint<'a> {
    pub container_id: &'a str,
    pub name: &'a str,
    pub hostname: &'a str,
    pub hosts_file: &'a Path,
}

/// Attaches the container whose network namespace is `netns` (see the
/// module header). On failure nothing of the attachment is left.
pub fn attach(
    root: &StateRoot,
    req: &Request,
    who: &Endpoint<'_>,
    netns: RawFd,
) -> Result<Attachment, NetError> {
    let _lock = Lock::exclusive(&networks_lock(root))?;
    let mut net = match load(root, &req.network) {
        Ok(n) => n,
        Err(NetError::NotFound(_)) if req.network == DEFAULT_NETWORK => {
            let n = describe(root, DEFAULT_NETWORK, None, None)?;
            save(root, &n)?;
            n
        }
        Err(e) => return Err(e),
    };
    let mut changed = collect(root, &mut net)?;
    let mut nl = netlink::Socket::open()?;
    if let Some(old) = net.leases.remove(who.container_id) {
        // A restart whose earlier release did not happen.
        release_lease(&old, Some(&mut nl));
        changed = true;
    }
    if changed {
        save(root, &net)?;
    }
    let bridge = ensure_bridge(&mut nl, &net)?;
    let reservations = ports::reserve(&req.ports)?;
    let used: BTreeSet<Ipv4Addr> = net.leases.values().map(|l| l.address).collect();
    let address = ipam::allocate(&net.name, net.subnet, net.gateway, &used, req.ip)?;
    let veth = veth_name(who.container_id);
    if let Err(e) = nl.add_veth(&veth, CONTAINER_IFNAME, netns) {
        if e.errno() != Some(libc::EEXIST) {
            return Err(e.into());
        }
        replace_stale_veth(root, &mut nl, &veth, who.container_id, netns)?;
    }
    let undo_veth = |nl: &mut netlink::Socket| {
        let _ = nl.del_link(&veth);
    };
    let configured = (|| -> Result<(), NetError> {
        nl.set_up(netlink::index(&veth)?, Some(bridge))?;
        let (gw, prefix) = (net.gateway, net.subnet.prefix);
        netlink::in_netns(netns, move || -> Result<(), NetError> {
            let mut inner = netlink::Socket::open()?;
            let idx = netlink::index(CONTAINER_IFNAME)?;
            inner.add_addr(idx, address, prefix)?;
            inner.set_up(idx, None)?;
            inner.add_default_route(gw, idx)?;
            Ok(())
        })
        .map_err(NetError::Netns)??;
        let elements: String = reservations.iter().map(|r| nft::add_port(&r.binding, address)).collect();
        let ports: Vec<_> = reservations.iter().map(|r| (r.binding, Some(address))).collect();
        apply_rules(root, &net.subnet, &elements, &ports)
    })();
    if let Err(e) = configured {
        undo_veth(&mut nl);
        return Err(e);
    }
    let host = crate::lifecycle::Host::probe();
    let me = std::process::id() as i32;
    net.leases.insert(
        who.container_id.to_string(),
        Lease {
            address,
            name: who.name.to_string(),
            aliases: req.aliases.clone(),
            hostname: who.hostname.to_string(),
            veth,
            ports: reservations.iter().map(|r| r.binding).collect(),
            hosts_file: who.hosts_file.to_path_buf(),
            extra_hosts: req.extra_hosts.clone(),
            owner_pid: me,
            owner_start: process_start(&host, me).unwrap_or(0.0),
            netns: netns_inode(netns),
        },
    );
    if let Err(e) = save(root, &net) {
        if let Some(l) = net.leases.remove(who.container_id) {
            release_lease(&l, Some(&mut nl));
        }
        return Err(e);
    }
    write_hosts_files(&net, Some(who.container_id));
    Ok(Attachment {
        root: root.clone(),
        network: net.name.clone(),
        container_id: who.container_id.to_string(),
        address,
        gateway: net.gateway,
        subnet: net.subnet,
        reservations,
    })
}

/// The inode of the network namespace `fd` refers to.
fn netns_inode(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat into a zeroed stat buffer, on a descriptor the caller holds.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
}

/// The container's veth name exists already: left by an earlier run of
/// this container (a restart soon after an exit, or a killed owner), its
/// namespace maybe still being destroyed by the kernel. Never another
/// live container's: that would be a 48-bit id prefix collision, refused
/// rather than broken. Deletes it (or waits, a bounded time, for the
/// kernel to finish) and creates the pair.
fn replace_stale_veth(
    root: &StateRoot,
    nl: &mut netlink::Socket,
    veth: &str,
    id: &str,
    netns: RawFd,
) -> Result<(), NetError> {
    let others = list(root)?;
    if others.iter().flat_map(|n| n.leases.iter()).any(|(other, l)| l.veth == veth && other != id) {
        return Err(NetError::Netlink(netlink::NetlinkError::Request {
            what: format!("create veth {veth}"),
            source: std::io::Error::from_raw_os_error(libc::EEXIST),
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let _ = nl.del_link(veth);
        match nl.add_veth(veth, CONTAINER_IFNAME, netns) {
            Err(e) if e.errno() == Some(libc::EEXIST) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// Releases container `id`'s lease on `network`, if it has one.
pub fn detach(root: &StateRoot, network: &str, id: &str) -> Result<(), NetError> {
    let _lock = Lock::exclusive(&networks_lock(root))?;
    let mut net = match load(root, network) {
        Ok(n) => n,
        Err(NetError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(lease) = net.leases.remove(id) else { return Ok(()) };
    let mut nl = netlink::Socket::open().ok();
    release_lease(&lease, nl.as_mut());
    save(root, &net)?;
    write_hosts_files(&net, None);
    Ok(())
}

/// Releases container `id`'s leases on every network (container removal).
pub fn release_container(root: &StateRoot, id: &str) -> Result<(), NetError> {
    let dir = root.networks_dir();
    if !dir.is_dir() {
        return Ok(());
    }
    for net in list(root)? {
        if net.leases.contains_key(id) {
            detach(root, &net.name, id)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_in_use_sees_this_process() {
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let own = own.to_string_lossy();
        let ino: u64 = own.trim_start_matches("net:[").trim_end_matches(']').parse().unwrap();
        assert!(netns_in_use(ino), "{own}");
        // No namespace has inode 1 (nsfs inodes come from the proc inode allocator).
        assert!(!netns_in_use(1));
    }

    #[test]
    fn add_host_syntax() {
        assert_eq!(parse_add_host("db:10.0.0.5"), Some(("db".into(), Ipv4Addr::new(10, 0, 0, 5))));
        assert_eq!(parse_add_host("db=10.0.0.5"), Some(("db".into(), Ipv4Addr::new(10, 0, 0, 5))));
        assert_eq!(parse_add_host("db"), None);
        assert_eq!(parse_add_host(":1.2.3.4"), None);
    }

    #[test]
    fn hosts_lists_peers() {
        let t = hosts_text(
            &[("db".into(), Ipv4Addr::new(10, 0, 0, 5))],
            Some((Ipv4Addr::new(172, 18, 0, 2), "web")),
            &[(Ipv4Addr::new(172, 18, 0, 3), vec!["other".into(), "o2".into()])],
        );
        assert!(t.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(t.contains("10.0.0.5\tdb\n172.18.0.2\tweb\n172.18.0.3\tother o2\n"), "{t}");
    }
}

//! The translation of `docker run`'s options and the image's config into an
//! OCI runtime bundle: `config.json` with what Docker (moby) puts there by
//! default — mounts, masked and read-only paths, namespaces, capabilities,
//! seccomp, rlimits, device rules and resources — and the container's
//! generated `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`.

use std::path::{Path, PathBuf};

use kist_common::container::ContainerPaths;
use kist_common::record::RunConfig;
use kist_common::security::{caps, rlimits, seccomp};
use oci_spec::runtime::{LinuxCapabilities, Spec};
use serde_json::{json, Value};

use crate::options::{MountSpec, Network, Options, Seccomp};
use crate::Error;

/// Docker's default PATH for containers whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// moby's default masked paths.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// moby's default read-only paths.
pub const READONLY_PATHS: &[&str] =
    &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// A named volume the container uses and whether it must be filled from
/// the image's content at its mount point: Docker copies that content in
/// when the container is created, and only into an empty volume. kist can
/// read the image's tree only once the rootfs is mounted, so the decision
/// is taken at create (the volume was empty then) and the copy is made at
/// the first start, without replacing anything written in between (what
/// Docker's later writes on top of its copy would leave).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VolumeUse {
    pub name: String,
    pub data: PathBuf,
    pub target: String,
    pub fill: bool,
    pub anonymous: bool,
}

impl VolumeUse {
    /// Held while a volume's emptiness is judged and while it is filled, so
    /// two containers never fill one volume at once.
    pub fn fill_lock(data: &Path) -> PathBuf {
        data.with_file_name("fill.lock")
    }

    /// Present once a container filled the volume: another container that
    /// saw it empty at its own create must not fill it again (Docker's copy
    /// was made when the first one was created).
    pub fn filled_marker(data: &Path) -> PathBuf {
        data.with_file_name("filled")
    }
}

/// Whether a new container must fill the volume at `data`: Docker's rule,
/// "copy the image's content in only if the volume is empty", judged now
/// with the volume's fill lock held. An empty volume that was filled and
/// emptied since is filled again, as Docker does.
fn volume_wants_fill(data: &Path) -> Result<bool, Error> {
    let _lock = kist_common::fsutil::Lock::exclusive(&VolumeUse::fill_lock(data))?;
    let empty = std::fs::read_dir(data).map_err(Error::io("cannot read volume", data))?.next().is_none();
    if empty {
        match std::fs::remove_file(VolumeUse::filled_marker(data)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot reset volume", VolumeUse::filled_marker(data))(e)),
        }
    }
    Ok(empty)
}

/// Everything the runtime needs beyond config.json.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub paths: ContainerPaths,
    pub spec: Spec,
    /// Overlay lower directories, highest layer first.
    pub lowerdirs: Vec<PathBuf>,
    pub volumes: Vec<VolumeUse>,
    pub init: bool,
    pub interactive: bool,
    /// `--rm`: the overlay is mounted `volatile` (no sync of the upper
    /// directory at unmount; nothing of it survives the run anyway).
    pub ephemeral: bool,
    /// `--log-opt`: how the json-file log of the container's output rotates.
    pub log: crate::restart::LogOpts,
    /// `kist/<id>`: the cgroup path under each hierarchy.
    pub cgroup_path: String,
    pub hostname: String,
    /// The bridge or user network to attach to at every start.
    pub network: Option<kist_common::net::Request>,
    /// `--network container:ID`: the container whose network namespace is joined.
    pub join_network: Option<String>,
}

/// Inputs that are not in [`Options`].
pub struct Inputs<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub paths: &'a ContainerPaths,
    pub image: &'a RunConfig,
    /// Snapshot directories, lowest first.
    pub snapshots: &'a [PathBuf],
    pub volumes_dir: &'a Path,
    /// With `--network container:`: the container joined (its id, files and hostname).
    pub joined: Option<&'a kist_common::container::ContainerState>,
}

/// Builds the bundle's spec and the plan; creates the named volumes that
/// do not exist yet. Warnings (clamped rlimits) go to stderr.
pub fn plan(opts: &Options, inp: &Inputs<'_>) -> Result<Plan, Error> {
    let lowerdirs: Vec<PathBuf> = inp.snapshots.iter().rev().cloned().collect();
    let hostname = if opts.uts_host || opts.network == Network::Host {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    } else if let Some(j) = inp.joined {
        j.hostname.clone()
    } else {
        opts.hostname.clone().unwrap_or_else(|| inp.id[..12].to_string())
    };

    // The process.
    let passwd = kist_common::user::read_from_layers(&lowerdirs, Path::new("etc/passwd"));
    let group = kist_common::user::read_from_layers(&lowerdirs, Path::new("etc/group"));
    let user_spec = opts.user.clone().unwrap_or_else(|| inp.image.user.clone());
    let user =
        kist_common::user::resolve(&user_spec, &passwd, &group).map_err(|e| Error::Usage(e.to_string()))?;
    let args = command_line(opts, inp.image)?;
    let env = environment(opts, inp.image, &hostname, &user.home);
    let cwd = opts
        .workdir
        .clone()
        .or_else(|| Some(inp.image.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());

    // Security.
    let capabilities: LinuxCapabilities = if opts.privileged {
        caps::all_supported().map_err(|e| Error::Security(e.to_string()))?
    } else {
        caps::adjust(&caps::docker_default(), &opts.cap_add, &opts.cap_drop)
            .map_err(|e| Error::Security(e.to_string()))?
    };
    let seccomp_profile = if opts.privileged {
        None
    } else {
        match &opts.seccomp {
            Seccomp::Unconfined => None,
            Seccomp::Default => Some(seccomp::docker_default(&capabilities, seccomp::native_arch())),
            Seccomp::File(f) => {
                let bytes = std::fs::read(f).map_err(Error::io("cannot read seccomp profile", f))?;
                seccomp::parse_docker_profile(&bytes, &capabilities, seccomp::native_arch())
                    .map_err(|e| Error::Security(format!("seccomp profile {}: {e}", f.display())))?
            }
        }
    };
    let mut limits = rlimits::docker_default().map_err(|e| Error::Security(e.to_string()))?;
    let mut overrides = Vec::new();
    for u in &opts.ulimits {
        overrides.push(rlimits::parse_ulimit(u).map_err(|e| Error::Usage(e.to_string()))?);
    }
    limits = rlimits::merge(&limits, &overrides);
    let (limits, warnings) = rlimits::clamp_to_host(&limits);
    for w in warnings {
        kist_common::warn!("{w}");
    }

    // Mounts: Docker's defaults, minus those a user mount replaces, then
    // the user's, parents before children.
    let (user_mounts, volumes) = user_mounts(opts, inp)?;
    let taken = |dst: &str| user_mounts.iter().any(|m| m["destination"] == dst);
    let mut mounts: Vec<Value> = Vec::new();
    let sys_opts = if opts.privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let cgroup_opts = if opts.privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["ro", "nosuid", "noexec", "nodev"])
    };
    let defaults = [
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": cgroup_opts}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
    ];
    for m in defaults {
        let dst = m["destination"].as_str().unwrap_or_default().to_string();
        if dst == "/dev/mqueue" && opts.ipc_host {
            continue;
        }
        if !taken(&dst) {
            mounts.push(m);
        }
    }
    // With --network container: the joined container's files, as Docker shares them.
    let files = match inp.joined {
        Some(j) => ContainerPaths { dir: inp.paths.dir.with_file_name(&j.id) },
        None => inp.paths.clone(),
    };
    for (file, dst) in [
        (files.resolv_conf(), "/etc/resolv.conf"),
        (files.hostname(), "/etc/hostname"),
        (files.hosts(), "/etc/hosts"),
    ] {
        if !taken(dst) {
            mounts.push(
                json!({"destination": dst, "type": "bind", "source": file, "options": ["rbind", "rprivate"]}),
            );
        }
    }
    let mut user_mounts = user_mounts;
    user_mounts.sort_by_key(|m| m["destination"].as_str().map(|d| d.matches('/').count()).unwrap_or(0));
    mounts.extend(user_mounts);

    let mut namespaces = vec![json!({"type": "mount"})];
    if !opts.pid_host {
        namespaces.push(json!({"type": "pid"}));
    }
    if !opts.ipc_host {
        namespaces.push(json!({"type": "ipc"}));
    }
    if !opts.uts_host && opts.network != Network::Host {
        namespaces.push(json!({"type": "uts"}));
    }
    match (&opts.network, inp.joined) {
        (Network::Host, _) => {}
        // The path names the joined container's namespace as it was at
        // creation; the runtime looks the container up again at every start.
        (Network::Container(_), Some(j)) => namespaces
            .push(json!({"type": "network", "path": format!("/proc/{}/ns/net", j.pid.unwrap_or(0))})),
        _ => namespaces.push(json!({"type": "network"})),
    }
    if cgroup2_only() {
        namespaces.push(json!({"type": "cgroup"}));
    }

    let cgroup_path = cgroup_path(inp.id);
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources(opts),
        "cgroupsPath": format!("/{cgroup_path}"),
    });
    if !opts.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    if let Some(s) = &seccomp_profile {
        linux["seccomp"] = serde_json::to_value(s).map_err(|e| Error::Security(e.to_string()))?;
    }
    let spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": opts.tty,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": serde_json::to_value(&capabilities).map_err(|e| Error::Security(e.to_string()))?,
            "rlimits": serde_json::to_value(&limits).map_err(|e| Error::Security(e.to_string()))?,
            "noNewPrivileges": opts.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": opts.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    });
    let spec: Spec =
        serde_json::from_value(spec).map_err(|e| Error::Sys(format!("building config.json: {e}")))?;
    Ok(Plan {
        id: inp.id.to_string(),
        name: inp.name.to_string(),
        paths: inp.paths.clone(),
        spec,
        lowerdirs,
        volumes,
        init: opts.init,
        interactive: opts.interactive,
        ephemeral: opts.rm,
        log: opts.log,
        cgroup_path,
        hostname,
        network: None,
        join_network: inp.joined.map(|j| j.id.clone()),
    })
}

/// A container's cgroup, relative to each hierarchy's root (the bundle's
/// cgroupsPath without its leading slash).
pub fn cgroup_path(id: &str) -> String {
    format!("kist/{id}")
}

/// The cgroup resources config.json carries for `opts` ([`resources`]), typed.
pub fn linux_resources(opts: &Options) -> Result<oci_spec::runtime::LinuxResources, Error> {
    serde_json::from_value(resources(opts))
        .map_err(|e| Error::Sys(format!("building the cgroup resources: {e}")))
}

/// True on a pure cgroup v2 host, where Docker gives containers a cgroup namespace.
pub fn cgroup2_only() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Docker's rules: `--entrypoint` replaces the image's entrypoint and then
/// the image's Cmd is dropped; arguments replace Cmd.
pub fn command_line(opts: &Options, image: &RunConfig) -> Result<Vec<String>, Error> {
    let (entrypoint, cmd): (Vec<String>, Vec<String>) = match &opts.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), opts.command.clone()),
        Some(e) => (vec![e.clone()], opts.command.clone()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            if opts.command.is_empty() {
                image.cmd.clone().unwrap_or_default()
            } else {
                opts.command.clone()
            },
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::Usage("no command specified".into()));
    }
    Ok(args)
}

/// Docker's environment: PATH, HOSTNAME, TERM (with -t), then the image's
/// Env and the user's `-e`/`--env-file`, later ones replacing earlier ones
/// of the same name in place; HOME from the user's passwd entry if unset.
pub fn environment(opts: &Options, image: &RunConfig, hostname: &str, home: &str) -> Vec<String> {
    let mut env: Vec<String> = vec![format!("PATH={DEFAULT_PATH}"), format!("HOSTNAME={hostname}")];
    if opts.tty {
        env.push("TERM=xterm".into());
    }
    let key = |e: &str| e.split('=').next().unwrap_or_default().to_string();
    for e in image.env.iter().chain(opts.env.iter()) {
        let k = key(e);
        match env.iter_mut().find(|x| key(x) == k) {
            Some(slot) => *slot = e.clone(),
            None => env.push(e.clone()),
        }
    }
    if !env.iter().any(|e| key(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    env
}

/// Docker's cgroup resources: memory (swap defaults to twice the memory),
/// CPU quota over a 100 ms period for --cpus, shares, pids, cpuset, and the
/// default device rules (deny all, then the standard character devices).
pub fn resources(opts: &Options) -> Value {
    let r = &opts.resources;
    let mut res = json!({});
    if let (Some(limit), swap) =
        kist_common::cgroup::docker_memory(r.memory.filter(|m| *m > 0), r.memory_swap)
    {
        res["memory"] = json!({"limit": limit, "swap": swap});
    }
    let mut cpu = json!({});
    if let Some((quota, period)) = r.cpus.and_then(kist_common::cgroup::docker_cpus) {
        cpu["quota"] = json!(quota);
        cpu["period"] = json!(period);
    }
    if let Some(s) = r.cpu_shares {
        cpu["shares"] = json!(s);
    }
    if let Some(set) = &r.cpuset_cpus {
        cpu["cpus"] = json!(set);
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        res["cpu"] = cpu;
    }
    if let Some(p) = r.pids_limit.filter(|p| *p != 0) {
        res["pids"] = json!({"limit": p});
    }
    res["devices"] = if opts.privileged {
        json!([{"allow": true, "access": "rwm"}])
    } else {
        serde_json::to_value(kist_common::cgroup::docker_default_devices()).unwrap_or_default()
    };
    res
}

/// The user's mounts as config.json entries, and the volumes they use.
/// Named volumes are created here (`volumes/<name>/_data`); the image's
/// VOLUME entries not covered by a mount get anonymous volumes.
fn user_mounts(opts: &Options, inp: &Inputs<'_>) -> Result<(Vec<Value>, Vec<VolumeUse>), Error> {
    let mut out = Vec::new();
    let mut volumes = Vec::new();
    let mut specs = opts.mounts.clone();
    for v in &inp.image.volumes {
        if !specs.iter().any(|m| m.target() == v) && v.starts_with('/') {
            specs.push(MountSpec::Volume { name: None, target: v.clone(), readonly: false, nocopy: false });
        }
    }
    for m in specs {
        match m {
            MountSpec::Bind { source, target, readonly } => {
                let source = std::fs::canonicalize(&source).map_err(|e| {
                    Error::Usage(format!(
                        "invalid mount config for type \"bind\": bind source path does not exist: {}: {e}",
                        source.display()
                    ))
                })?;
                let mut o = vec!["rbind", "rprivate"];
                if readonly {
                    o.push("ro");
                }
                out.push(json!({"destination": target, "type": "bind", "source": source, "options": o}));
            }
            MountSpec::Volume { name, target, readonly, nocopy } => {
                let anonymous = name.is_none();
                let name = match name {
                    Some(n) => n,
                    None => crate::names::new_id().map_err(|e| Error::Sys(format!("random: {e}")))?,
                };
                let dir = inp.volumes_dir.join(&name);
                let data = dir.join("_data");
                let created =
                    match std::fs::create_dir_all(inp.volumes_dir).and_then(|_| std::fs::create_dir(&dir)) {
                        Ok(()) => true,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                        Err(e) => return Err(Error::io("cannot create volume", &dir)(e)),
                    };
                if created {
                    std::fs::create_dir(&data).map_err(Error::io("cannot create volume", &data))?;
                }
                let mut o = vec!["rbind", "rprivate"];
                if readonly {
                    o.push("ro");
                }
                out.push(json!({"destination": target, "type": "bind", "source": data, "options": o}));
                let fill = !nocopy && volume_wants_fill(&data)?;
                volumes.push(VolumeUse { name, data, target, fill, anonymous });
            }
            MountSpec::Tmpfs { target, options } => {
                let mut o: Vec<String> = vec!["noexec".into(), "nosuid".into(), "nodev".into()];
                o.extend(options);
                out.push(json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": o}));
            }
        }
    }
    Ok((out, volumes))
}

/// Docker's /etc/hosts as it is before the container's network is
/// attached (a bridge network adds the container's address at each start).
pub fn hosts_file(network: &Network, extra: &[(String, std::net::Ipv4Addr)]) -> Vec<u8> {
    if *network == Network::Host {
        let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        for (name, ip) in extra {
            text.push_str(&format!("{ip}\t{name}\n"));
        }
        return text.into_bytes();
    }
    kist_common::net::hosts_text(extra, None, &[]).into_bytes()
}

/// The host's resolv.conf as Docker passes it on: with the host network
/// unchanged; otherwise without loopback nameservers (they do not answer
/// inside another network namespace), falling back to systemd-resolved's
/// upstream file and then to Google's public servers, as Docker does.
pub fn resolv_conf(network: &Network, net: &crate::options::NetOpts) -> Vec<u8> {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let text = if *network == Network::Host { host } else { without_loopback(&host) };
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut replace = |key: &str, values: &[String], joined: bool| {
        if values.is_empty() {
            return;
        }
        lines.retain(|l| l.split_whitespace().next() != Some(key));
        if joined {
            lines.push(format!("{key} {}", values.join(" ")));
        } else {
            lines.extend(values.iter().map(|v| format!("{key} {v}")));
        }
    };
    replace("nameserver", &net.dns, false);
    replace("search", &net.dns_search, true);
    replace("options", &net.dns_options, true);
    let mut s = lines.join("\n");
    s.push('\n');
    s.into_bytes()
}

fn without_loopback(host: &str) -> String {
    let host = host.to_string();
    let is_loopback_ns = |l: &str| {
        let mut f = l.split_whitespace();
        f.next() == Some("nameserver") && f.next().is_some_and(|a| a.starts_with("127.") || a == "::1")
    };
    let mut text = host.clone();
    let only_loopback = !host.lines().any(|l| l.trim_start().starts_with("nameserver") && !is_loopback_ns(l));
    if only_loopback {
        if let Ok(upstream) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            text = upstream;
        }
    }
    let mut out: Vec<String> = text.lines().filter(|l| !is_loopback_ns(l)).map(String::from).collect();
    if !out.iter().any(|l| l.trim_start().starts_with("nameserver")) {
        out.push("nameserver 8.8.8.8".into());
        out.push("nameserver 8.8.4.4".into());
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        let m = crate::command().try_get_matches_from(["ctr-spawn", "--root", "/tmp/x"]).unwrap();
        Options::from_matches(&m).unwrap()
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        let img = RunConfig {
            entrypoint: Some(vec!["/ep".into()]),
            cmd: Some(vec!["a".into()]),
            ..Default::default()
        };
        let mut o = opts();
        assert_eq!(command_line(&o, &img).unwrap(), vec!["/ep", "a"]);
        o.command = vec!["b".into()];
        assert_eq!(command_line(&o, &img).unwrap(), vec!["/ep", "b"]);
        o.entrypoint = Some("/x".into());
        o.command = vec![];
        assert_eq!(command_line(&o, &img).unwrap(), vec!["/x"]);
        o.entrypoint = Some(String::new());
        assert!(command_line(&o, &img).is_err());
    }

    #[test]
    fn env_order_and_override() {
        let img = RunConfig { env: vec!["PATH=/bin".into(), "A=1".into()], ..Default::default() };
        let mut o = opts();
        o.env = vec!["A=2".into(), "B=3".into()];
        assert_eq!(
            environment(&o, &img, "h", "/root"),
            vec!["PATH=/bin", "HOSTNAME=h", "A=2", "B=3", "HOME=/root"]
        );
    }
}

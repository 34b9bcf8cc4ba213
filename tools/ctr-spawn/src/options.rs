//! The command line parsed once into types, with Docker's syntax for sizes,
//! volumes, `--mount`, `--tmpfs`, `--env-file` and `--security-opt`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kist_common::StateRoot;

use crate::Error;

/// How the network namespace is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A new network namespace with only the loopback interface, up.
    None,
    Host,
    /// A new network namespace attached to a bridge network: `bridge`
    /// (the default) or a user network made with ctr-net.
    Bridge(String),
    /// The network namespace of another container (`container:NAME`).
    Container(String),
}

/// What a bridge-networked container asks for besides its network.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetOpts {
    pub publish: Vec<kist_common::net::ports::PortSpec>,
    pub publish_all: bool,
    pub ip: Option<std::net::Ipv4Addr>,
    pub aliases: Vec<String>,
    pub add_hosts: Vec<(String, std::net::Ipv4Addr)>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    Default,
    Unconfined,
    File(PathBuf),
}

/// One mount asked for by `-v`, `--mount` or `--tmpfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    /// A named volume (`name` is None for an anonymous one).
    Volume {
        name: Option<String>,
        target: String,
        readonly: bool,
        nocopy: bool,
    },
    Tmpfs {
        target: String,
        options: Vec<String>,
    },
}

impl MountSpec {
    pub fn target(&self) -> &str {
        match self {
            MountSpec::Bind { target, .. }
            | MountSpec::Volume { target, .. }
            | MountSpec::Tmpfs { target, .. } => target,
        }
    }
}

/// Resource limits for the cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub pids_limit: Option<i64>,
    pub cpuset_cpus: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub root: StateRoot,
    pub image_ref: Option<String>,
    pub name: Option<String>,
    pub rm: bool,
    pub interactive: bool,
    pub tty: bool,
    pub init: bool,
    pub read_only: bool,
    pub privileged: bool,
    /// `KEY=VALUE` pairs from `--env-file` then `-e`, in order.
    pub env: Vec<String>,
    pub entrypoint: Option<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<MountSpec>,
    pub network: Network,
    pub net: NetOpts,
    pub pid_host: bool,
    pub ipc_host: bool,
    pub uts_host: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp: Seccomp,
    pub ulimits: Vec<String>,
    pub resources: Resources,
    pub cidfile: Option<PathBuf>,
    pub record: Option<PathBuf>,
    pub command: Vec<String>,
    /// `-d`: run under a monitor and return.
    pub detach: bool,
    pub restart: crate::restart::Policy,
    pub log: crate::restart::LogOpts,
}

fn strings(m: &clap::ArgMatches, id: &str) -> Vec<String> {
    m.get_many::<String>(id).map(|v| v.cloned().collect()).unwrap_or_default()
}

fn one(m: &clap::ArgMatches, id: &str) -> Option<String> {
    m.get_one::<String>(id).cloned()
}

impl Options {
    pub fn from_matches(m: &clap::ArgMatches) -> Result<Options, Error> {
        let root = StateRoot::resolve(m.get_one::<PathBuf>("root").map(|p| p.as_path()))?;
        let mut env = Vec::new();
        for file in strings(m, "env-file") {
            let text = std::fs::read_to_string(&file).map_err(Error::io("cannot read env file", &file))?;
            env.extend(parse_env_file(&text));
        }
        for e in strings(m, "env") {
            env.extend(env_entry(&e));
        }
        let mut labels = BTreeMap::new();
        for l in strings(m, "label") {
            let (k, v) = l.split_once('=').unwrap_or((&l, ""));
            labels.insert(k.to_string(), v.to_string());
        }
        let mut mounts = Vec::new();
        for v in strings(m, "volume") {
            mounts.push(parse_volume(&v)?);
        }
        for v in strings(m, "mount") {
            mounts.push(parse_mount(&v)?);
        }
        for t in strings(m, "tmpfs") {
            let (target, opts) = t.split_once(':').unwrap_or((&t, ""));
            mounts.push(MountSpec::Tmpfs { target: absolute(target)?, options: split_opts(opts) });
        }
        let network = match one(m, "network").as_deref() {
            None | Some("") | Some("default") | Some("bridge") => {
                Network::Bridge(kist_common::net::DEFAULT_NETWORK.to_string())
            }
            Some("none") => Network::None,
            Some("host") => Network::Host,
            Some(c) if c.starts_with("container:") => {
                let target = &c["container:".len()..];
                if target.is_empty() {
                    return Err(Error::Usage("--network container: needs a container name or id".into()));
                }
                Network::Container(target.to_string())
            }
            Some(other) if kist_common::net::valid_name(other) => Network::Bridge(other.to_string()),
            Some(other) => return Err(Error::Usage(format!("invalid --network {other:?}"))),
        };
        let mut net = NetOpts {
            publish_all: m.get_flag("publish-all"),
            aliases: strings(m, "network-alias"),
            dns: strings(m, "dns"),
            dns_search: strings(m, "dns-search"),
            dns_options: strings(m, "dns-option"),
            ..NetOpts::default()
        };
        for p in strings(m, "publish") {
            net.publish
                .push(kist_common::net::ports::PortSpec::parse(&p).map_err(|e| Error::Usage(e.to_string()))?);
        }
        for h in strings(m, "add-host") {
            net.add_hosts.push(kist_common::net::parse_add_host(&h).ok_or_else(|| {
                Error::Usage(format!("invalid argument {h:?} for \"--add-host\" flag: expected NAME:IPv4"))
            })?);
        }
        if let Some(ip) = one(m, "ip") {
            net.ip = Some(
                ip.parse()
                    .map_err(|_| Error::Usage(format!("invalid --ip {ip:?}: expected an IPv4 address")))?,
            );
        }
        let bridged = matches!(network, Network::Bridge(_));
        if !bridged && (!net.publish.is_empty() || net.publish_all) {
            // Docker ignores published ports outside a bridge network; say so.
            kist_common::warn!(
                "published ports are discarded when using host, none or container network mode"
            );
            net.publish.clear();
            net.publish_all = false;
        }
        if !bridged && (net.ip.is_some() || !net.aliases.is_empty()) {
            return Err(Error::Usage("--ip and --network-alias need a bridge or user network".into()));
        }
        if net.aliases.iter().any(|a| !kist_common::net::valid_name(a)) {
            return Err(Error::Usage(
                "invalid --network-alias: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed".into(),
            ));
        }
        if matches!(network, Network::Container(_))
            && (m.get_one::<String>("hostname").is_some() || !net.dns.is_empty() || !net.add_hosts.is_empty())
        {
            return Err(Error::Usage("conflicting options: --hostname, --dns and --add-host cannot be used with --network container:".into()));
        }
        let host_or_private = |id: &str| -> Result<bool, Error> {
            match one(m, id).as_deref() {
                None | Some("") | Some("private") | Some("shareable") => Ok(false),
                Some("host") => Ok(true),
                Some(other) => Err(Error::Usage(format!("invalid --{id} value {other:?}: expected host"))),
            }
        };
        let mut no_new_privileges = false;
        let mut seccomp = Seccomp::Default;
        for o in strings(m, "security-opt") {
            let (k, v) = o.split_once(['=', ':']).unwrap_or((&o, ""));
            match k {
                "no-new-privileges" => {
                    no_new_privileges = match v {
                        "" | "true" => true,
                        "false" => false,
                        _ => return Err(Error::Usage(format!("invalid --security-opt {o:?}"))),
                    }
                }
                "seccomp" if v == "unconfined" => seccomp = Seccomp::Unconfined,
                "seccomp" if !v.is_empty() => seccomp = Seccomp::File(PathBuf::from(v)),
                "label" | "apparmor" => {}
                _ => return Err(Error::Usage(format!("invalid --security-opt {o:?}"))),
            }
        }
        let size = |id: &str| -> Result<Option<i64>, Error> {
            one(m, id)
                .map(|s| {
                    if s == "-1" {
                        Ok(-1)
                    } else {
                        parse_size(&s).map_err(|e| Error::Usage(format!("--{id}: {e}")))
                    }
                })
                .transpose()
        };
        let resources = Resources {
            memory: size("memory")?,
            memory_swap: size("memory-swap")?,
            cpus: one(m, "cpus")
                .map(|s| match s.parse::<f64>() {
                    Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
                    _ => Err(Error::Usage(format!("invalid --cpus {s:?}"))),
                })
                .transpose()?,
            cpu_shares: one(m, "cpu-shares")
                .map(|s| s.parse::<u64>().map_err(|_| Error::Usage(format!("invalid --cpu-shares {s:?}"))))
                .transpose()?,
            pids_limit: one(m, "pids-limit")
                .map(|s| s.parse::<i64>().map_err(|_| Error::Usage(format!("invalid --pids-limit {s:?}"))))
                .transpose()?,
            cpuset_cpus: one(m, "cpuset-cpus"),
        };
        if let (Some(mem), Some(swap)) = (resources.memory, resources.memory_swap) {
            if swap != -1 && swap < mem {
                return Err(Error::Usage(
                    "minimum memoryswap limit should be larger than memory limit, see usage".into(),
                ));
            }
        }
        if resources.memory_swap.is_some() && resources.memory.is_none() {
            return Err(Error::Usage(
                "you should always set the memory limit when using memoryswap limit".into(),
            ));
        }
        if let Some(mem) = resources.memory {
            if mem > 0 && mem < 6 * 1024 * 1024 {
                return Err(Error::Usage("minimum memory limit allowed is 6MB".into()));
            }
        }
        let opts = Options {
            root,
            image_ref: one(m, "image"),
            name: one(m, "name"),
            rm: m.get_flag("rm"),
            interactive: m.get_flag("interactive"),
            tty: m.get_flag("tty"),
            init: m.get_flag("init"),
            read_only: m.get_flag("read-only"),
            privileged: m.get_flag("privileged"),
            env,
            entrypoint: one(m, "entrypoint"),
            workdir: one(m, "workdir"),
            user: one(m, "user"),
            hostname: one(m, "hostname"),
            labels,
            mounts,
            network,
            net,
            pid_host: host_or_private("pid")?,
            ipc_host: host_or_private("ipc")?,
            uts_host: host_or_private("uts")?,
            cap_add: strings(m, "cap-add"),
            cap_drop: strings(m, "cap-drop"),
            no_new_privileges,
            seccomp,
            ulimits: strings(m, "ulimit"),
            resources,
            cidfile: one(m, "cidfile").map(PathBuf::from),
            record: one(m, "record").map(PathBuf::from),
            command: strings(m, "command"),
            detach: m.get_flag("detach"),
            restart: match one(m, "restart") {
                Some(r) => crate::restart::Policy::parse(&r)?,
                None => crate::restart::Policy::No,
            },
            log: crate::restart::LogOpts::parse(&strings(m, "log-opt"))?,
        };
        if opts.rm && opts.restart != crate::restart::Policy::No {
            return Err(Error::Usage("conflicting options: cannot specify both --restart and --rm".into()));
        }
        if let Some(w) = &opts.workdir {
            if !w.starts_with('/') {
                return Err(Error::Usage(format!(
                    "the working directory '{w}' is invalid, it needs to be an absolute path"
                )));
            }
        }
        if let Some(n) = &opts.name {
            if !kist_common::container::valid_name(n) {
                return Err(Error::Usage(format!(
                    "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )));
            }
        }
        Ok(opts)
    }
}

/// `-e KEY=VALUE`, or `-e KEY` taking the value from ctr-spawn's own
/// environment (dropped when unset), as Docker does.
fn env_entry(e: &str) -> Option<String> {
    if e.contains('=') {
        Some(e.to_string())
    } else {
        std::env::var(e).ok().map(|v| format!("{e}={v}"))
    }
}

/// Docker's env-file format: one `KEY=VALUE` or `KEY` per line, `#` comments.
pub fn parse_env_file(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_start())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(env_entry)
        .collect()
}

/// Docker's RAMInBytes: a number with an optional b, k, m, g, t suffix (binary units).
pub use kist_common::restart::parse_size;

fn absolute(target: &str) -> Result<String, Error> {
    if !target.starts_with('/') {
        return Err(Error::Usage(format!("invalid mount config: mount path must be absolute: {target:?}")));
    }
    if target == "/" {
        return Err(Error::Usage("invalid mount config: destination can't be '/'".into()));
    }
    Ok(target.to_string())
}

fn split_opts(s: &str) -> Vec<String> {
    s.split(',').filter(|o| !o.is_empty()).map(String::from).collect()
}

/// `-v SRC:DST[:OPTS]`, `-v NAME:DST[:OPTS]` or `-v DST` (anonymous volume).
pub fn parse_volume(v: &str) -> Result<MountSpec, Error> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [dst] => (None, *dst, ""),
        [src, dst] => (Some(*src), *dst, ""),
        [src, dst, opts] => (Some(*src), *dst, *opts),
        _ => return Err(Error::Usage(format!("invalid volume specification: {v:?}"))),
    };
    let target = absolute(dst)?;
    let mut readonly = false;
    let mut nocopy = false;
    for o in split_opts(opts) {
        match o.as_str() {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "nocopy" => nocopy = true,
            "z" | "Z" | "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "delegated"
            | "cached" | "consistent" => {}
            _ => return Err(Error::Usage(format!("invalid mode: {o}"))),
        }
    }
    match src {
        Some(s) if s.starts_with('/') || s.starts_with('.') => {
            Ok(MountSpec::Bind { source: PathBuf::from(s), target, readonly })
        }
        Some(s) => {
            if !kist_common::container::valid_name(s) {
                return Err(Error::Usage(format!(
                    "{s:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
                )));
            }
            Ok(MountSpec::Volume { name: Some(s.to_string()), target, readonly, nocopy })
        }
        None => Ok(MountSpec::Volume { name: None, target, readonly, nocopy }),
    }
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,…]`.
pub fn parse_mount(v: &str) -> Result<MountSpec, Error> {
    let mut kind = "volume".to_string();
    let mut source = None;
    let mut target = None;
    let mut readonly = false;
    let mut nocopy = false;
    let mut tmpfs_opts = Vec::new();
    for field in v.split(',') {
        let (k, val) = match field.split_once('=') {
            Some((k, val)) => (k.trim().to_ascii_lowercase(), Some(val.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let boolean = |val: Option<&str>| -> Result<bool, Error> {
            match val {
                None | Some("1") | Some("true") => Ok(true),
                Some("0") | Some("false") => Ok(false),
                Some(o) => Err(Error::Usage(format!("invalid value for {k}: {o}"))),
            }
        };
        match k.as_str() {
            "type" => kind = val.unwrap_or_default().to_string(),
            "source" | "src" => source = val.map(String::from),
            "target" | "dst" | "destination" => target = val.map(String::from),
            "readonly" | "ro" => readonly = boolean(val)?,
            "volume-nocopy" => nocopy = boolean(val)?,
            "tmpfs-size" => {
                let bytes = parse_size(val.unwrap_or_default()).map_err(Error::Usage)?;
                tmpfs_opts.push(format!("size={bytes}"));
            }
            "tmpfs-mode" => tmpfs_opts.push(format!("mode={}", val.unwrap_or_default())),
            "bind-propagation" | "consistency" | "bind-nonrecursive" | "volume-driver" | "volume-label" => {}
            "" => {}
            _ => return Err(Error::Usage(format!("unexpected key '{k}' in '{field}'"))),
        }
    }
    let target = absolute(
        target.as_deref().ok_or_else(|| Error::Usage("invalid argument: target is required".into()))?,
    )?;
    match kind.as_str() {
        "bind" => {
            let s = source.ok_or_else(|| {
                Error::Usage("invalid mount config for type \"bind\": field Source must not be empty".into())
            })?;
            Ok(MountSpec::Bind { source: PathBuf::from(s), target, readonly })
        }
        "volume" => Ok(MountSpec::Volume { name: source, target, readonly, nocopy }),
        "tmpfs" => {
            if source.is_some() {
                return Err(Error::Usage(
                    "invalid mount config for type \"tmpfs\": field Source must be empty".into(),
                ));
            }
            if readonly {
                tmpfs_opts.push("ro".into());
            }
            Ok(MountSpec::Tmpfs { target, options: tmpfs_opts })
        }
        other => Err(Error::Usage(format!("invalid mount type {other:?}: expected bind, volume or tmpfs"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary() {
        assert_eq!(parse_size("32m").unwrap(), 32 << 20);
        assert_eq!(parse_size("32MB").unwrap(), 32 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("100b").unwrap(), 100);
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn volumes() {
        assert_eq!(
            parse_volume("/a:/b:ro").unwrap(),
            MountSpec::Bind { source: "/a".into(), target: "/b".into(), readonly: true }
        );
        assert!(
            matches!(parse_volume("data:/d").unwrap(), MountSpec::Volume { name: Some(n), .. } if n == "data")
        );
        assert!(matches!(parse_volume("/d").unwrap(), MountSpec::Volume { name: None, .. }));
        assert!(parse_volume("/a:rel").is_err());
        assert!(matches!(
            parse_mount("type=tmpfs,target=/t,tmpfs-size=1m").unwrap(),
            MountSpec::Tmpfs { options, .. } if options == vec!["size=1048576".to_string()]
        ));
        assert!(matches!(
            parse_mount("type=bind,src=/x,dst=/y,readonly").unwrap(),
            MountSpec::Bind { readonly: true, .. }
        ));
    }

    #[test]
    fn env_files() {
        assert_eq!(parse_env_file("# c\nA=1\n\nB=two words\n"), vec!["A=1", "B=two words"]);
    }
}

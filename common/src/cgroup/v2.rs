//! cgroup v2 (unified) containers: one directory, controllers enabled in
//! every ancestor's `cgroup.subtree_control`, OCI values converted to the v2
//! files as runc and crun do (cpu.weight from shares, memory.swap.max from
//! memory+swap, cpu.max from quota and period).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use super::{
    keyed, mkdir_levels, parse_u64, read_file, read_pids, rmdir_retry, wait_empty, write_file, CgroupError,
    CgroupFs, CgroupLayout, CgroupManager, Result, Stats,
};

/// Controllers kist enables for its cgroups when the host offers them.
const WANTED: [&str; 5] = ["cpuset", "cpu", "io", "memory", "pids"];

#[derive(Debug, Clone)]
pub struct V2Cgroup {
    fs: Arc<dyn CgroupFs>,
    dir: PathBuf,
}

/// The OCI conversion of cgroup v1 cpu.shares [2, 262144] to cgroup v2
/// cpu.weight [1, 10000] (runtime-spec's cgroup v2 mapping, as in crun and
/// runc up to 1.2): 1024 shares become weight 39.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// memory.swap.max from the OCI memory limit and memory+swap limit.
pub fn swap_max(limit: Option<i64>, swap: Option<i64>) -> Result<Option<String>> {
    match swap {
        None | Some(0) => Ok(None),
        Some(-1) => Ok(Some("max".into())),
        Some(s) if s < 0 => Err(CgroupError::BadValue(format!("memory+swap {s}"))),
        Some(s) => match limit {
            Some(l) if l > 0 => {
                if s < l {
                    Err(CgroupError::BadValue(format!(
                        "memory+swap limit {s} should be larger than the memory limit {l}"
                    )))
                } else {
                    Ok(Some((s - l).to_string()))
                }
            }
            _ => Err(CgroupError::BadValue("memory+swap limit set without a memory limit".into())),
        },
    }
}

fn enable_controllers(fs: &dyn CgroupFs, parent: &Path) -> Result<()> {
    let available = read_file(fs, &parent.join("cgroup.controllers"))?;
    let enabled = fs.read(&parent.join("cgroup.subtree_control")).unwrap_or_default();
    for c in WANTED {
        let offered = available.split_whitespace().any(|x| x == c);
        let on = enabled.split_whitespace().any(|x| x == c);
        if offered && !on {
            // One at a time: a controller the kernel refuses here (e.g. cpu
            // with realtime tasks) must not keep the others off. A missing
            // controller shows later, when a limit needs it.
            let _ = fs.write(&parent.join("cgroup.subtree_control"), &format!("+{c}"));
        }
    }
    Ok(())
}

impl V2Cgroup {
    /// See [`super::Placement`]: the cgroup itself, no v1 hierarchy.
    pub(crate) fn placement(&self) -> super::Placement {
        super::Placement { cgroup2: Some(self.dir.clone()), v1_tasks: Vec::new() }
    }

    pub(crate) fn open(layout: &CgroupLayout, rel: &Path) -> V2Cgroup {
        let root = layout.unified.clone().unwrap_or_else(|| layout.root.clone());
        V2Cgroup { fs: layout.fs.clone(), dir: root.join(rel) }
    }

    pub(crate) fn create(layout: &CgroupLayout, rel: &Path) -> Result<V2Cgroup> {
        let cg = V2Cgroup::open(layout, rel);
        let root = layout.unified.clone().unwrap_or_else(|| layout.root.clone());
        let fs = layout.fs.as_ref();
        mkdir_levels(fs, &root, rel, |parent| enable_controllers(fs, parent), |_, _| Ok(()))?;
        Ok(cg)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, value: &str) -> Result<()> {
        let path = self.file(name);
        if !self.fs.exists(&path) {
            let controller = match name.split('.').next() {
                Some("memory") => "memory",
                Some("cpu") => "cpu",
                Some("cpuset") => "cpuset",
                Some("pids") => "pids",
                Some("io") => "io",
                _ => "cgroup",
            };
            return Err(CgroupError::MissingController(self.dir.clone(), controller));
        }
        write_file(self.fs.as_ref(), &path, value)
    }

    fn read_u64(&self, name: &str) -> Option<u64> {
        parse_u64(&self.fs.read(&self.file(name)).ok()?)
    }

    fn wait_frozen(&self, want: &'static str) -> Result<()> {
        let state = if want == "1" { "frozen" } else { "thawed" };
        for _ in 0..1000 {
            let events = read_file(self.fs.as_ref(), &self.file("cgroup.events"))?;
            if keyed(&events, "frozen").map(|v| v.to_string()).as_deref() == Some(want) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(CgroupError::FreezeTimeout(self.dir.clone(), state))
    }
}

impl CgroupManager for V2Cgroup {
    fn apply(&self, r: &LinuxResources) -> Result<()> {
        if let Some(m) = r.memory() {
            if let Some(l) = m.limit() {
                self.write("memory.max", &if l > 0 { l.to_string() } else { "max".into() })?;
            }
            if let Some(v) = swap_max(m.limit(), m.swap())? {
                // Without swap accounting there is no memory.swap.max; Docker
                // warns and runs without the swap limit.
                if self.fs.exists(&self.file("memory.swap.max")) {
                    self.write("memory.swap.max", &v)?;
                }
            }
            if let Some(v) = m.reservation() {
                self.write("memory.low", &if v > 0 { v.to_string() } else { "0".into() })?;
            }
        }
        if let Some(c) = r.cpu() {
            if let Some(s) = c.shares() {
                let w = shares_to_weight(s);
                if w > 0 {
                    self.write("cpu.weight", &w.to_string())?;
                }
            }
            if c.quota().is_some() || c.period().is_some() {
                let period = c.period().unwrap_or(100_000);
                let quota = match c.quota() {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".into(),
                };
                self.write("cpu.max", &format!("{quota} {period}"))?;
            }
            if let Some(v) = c.cpus() {
                self.write("cpuset.cpus", v)?;
            }
            if let Some(v) = c.mems() {
                self.write("cpuset.mems", v)?;
            }
        }
        if let Some(p) = r.pids() {
            let v = if p.limit() > 0 { p.limit().to_string() } else { "max".into() };
            self.write("pids.max", &v)?;
        }
        if let Some(w) = r.block_io().as_ref().and_then(|b| b.weight()) {
            // blkio.weight [10, 1000] -> io.weight [1, 10000], runc's mapping.
            let w = 1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990;
            self.write("io.weight", &format!("default {w}"))?;
        }
        if let Some(rules) = r.devices() {
            let rules: Vec<_> = super::dedup_device_rules(rules).into_iter().cloned().collect();
            let prog = super::devices::compile(&rules);
            self.fs.attach_devices(&self.dir, &prog).map_err(|source| CgroupError::Io {
                op: "attach device program to",
                path: self.dir.clone(),
                source,
            })?;
        }
        if let Some(u) = r.unified() {
            let mut keys: Vec<_> = u.keys().collect();
            keys.sort();
            for k in keys {
                if k.contains('/') || k.starts_with('.') {
                    return Err(CgroupError::BadValue(format!("unified key {k:?}")));
                }
                self.write(k, &u[k])?;
            }
        }
        Ok(())
    }

    fn add_pid(&self, pid: u32) -> Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    fn pids(&self) -> Result<Vec<u32>> {
        read_pids(self.fs.as_ref(), &self.file("cgroup.procs"))
    }

    fn oom_killed(&self) -> Result<bool> {
        match self.fs.read(&self.file("memory.events")) {
            Ok(t) => Ok(keyed(&t, "oom_kill").unwrap_or(0) > 0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(CgroupError::Io { op: "read", path: self.file("memory.events"), source: e }),
        }
    }

    fn freeze(&self) -> Result<()> {
        self.write("cgroup.freeze", "1")?;
        self.wait_frozen("1")
    }

    fn thaw(&self) -> Result<()> {
        self.write("cgroup.freeze", "0")?;
        self.wait_frozen("0")
    }

    fn stats(&self) -> Result<Stats> {
        let fs = self.fs.as_ref();
        let cpu = fs.read(&self.file("cpu.stat")).ok();
        let mem = fs.read(&self.file("memory.stat")).ok();
        let io = fs.read(&self.file("io.stat")).ok().map(|t| {
            let mut r = 0u64;
            let mut w = 0u64;
            for field in t.split_whitespace() {
                if let Some(v) = field.strip_prefix("rbytes=") {
                    r = r.saturating_add(v.parse().unwrap_or(0));
                } else if let Some(v) = field.strip_prefix("wbytes=") {
                    w = w.saturating_add(v.parse().unwrap_or(0));
                }
            }
            (r, w)
        });
        Ok(Stats {
            cpu_usage_ns: cpu.as_deref().and_then(|s| keyed(s, "usage_usec")).map(|u| u.saturating_mul(1000)),
            memory_usage: self.read_u64("memory.current"),
            memory_limit: self.read_u64("memory.max"),
            memory_inactive_file: mem.as_deref().and_then(|s| keyed(s, "inactive_file")),
            pids_current: self.read_u64("pids.current"),
            pids_limit: self.read_u64("pids.max"),
            io_read_bytes: io.map(|v| v.0),
            io_write_bytes: io.map(|v| v.1),
        })
    }

    fn destroy(&self, timeout: Duration) -> Result<()> {
        if !self.fs.is_dir(&self.dir) {
            return Ok(());
        }
        wait_empty(&self.dir, timeout, || self.pids())?;
        rmdir_retry(self.fs.as_ref(), &self.dir)
    }

    fn devices_enforced(&self) -> bool {
        true
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }
}

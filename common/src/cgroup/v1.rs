//! cgroup v1 (and hybrid) containers: one directory per mounted hierarchy,
//! plus one in the unified mount of a hybrid host, where only membership is
//! recorded (it carries no controllers).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use super::{
    device_rule_text, keyed, mkdir_levels, parse_u64, read_file, read_pids, rmdir_retry, wait_empty,
    write_file, CgroupError, CgroupFs, CgroupLayout, CgroupManager, Result, Stats,
};

/// v1 reports "unlimited" as a huge page-aligned number; anything above
/// this is taken as no limit.
const V1_UNLIMITED: u64 = 1 << 62;

#[derive(Debug, Clone)]
pub struct V1Cgroup {
    fs: Arc<dyn CgroupFs>,
    /// (controllers of the hierarchy, the container's directory in it).
    dirs: Vec<(Vec<String>, PathBuf)>,
    /// Hybrid hosts: the container's directory in the unified mount.
    unified: Option<PathBuf>,
}

impl V1Cgroup {
    /// See [`super::Placement`]: the unified directory of a hybrid host,
    /// and every hierarchy's `tasks`.
    pub(crate) fn placement(&self) -> super::Placement {
        super::Placement {
            cgroup2: self.unified.clone(),
            v1_tasks: self.dirs.iter().map(|(_, d)| d.join("tasks")).collect(),
        }
    }

    pub(crate) fn open(layout: &CgroupLayout, rel: &Path) -> V1Cgroup {
        V1Cgroup {
            fs: layout.fs.clone(),
            dirs: layout.hierarchies.iter().map(|h| (h.controllers.clone(), h.dir.join(rel))).collect(),
            unified: layout.unified.as_ref().map(|u| u.join(rel)),
        }
    }

    pub(crate) fn create(layout: &CgroupLayout, rel: &Path) -> Result<V1Cgroup> {
        let fs = layout.fs.as_ref();
        let cg = V1Cgroup::open(layout, rel);
        let mut made: Vec<PathBuf> = Vec::new();
        let result = (|| {
            for h in &layout.hierarchies {
                let cpuset = h.controllers.iter().any(|c| c == "cpuset");
                made.extend(mkdir_levels(
                    fs,
                    &h.dir,
                    rel,
                    |_| Ok(()),
                    |parent, dir| {
                        if cpuset {
                            // A new cpuset cgroup starts with no cpus and mems,
                            // and refuses processes until it gets some.
                            inherit_cpuset(fs, parent, dir)?;
                        }
                        Ok(())
                    },
                )?);
            }
            if let Some(u) = &layout.unified {
                made.extend(mkdir_levels(fs, u, rel, |_| Ok(()), |_, _| Ok(()))?);
            }
            Ok(())
        })();
        if let Err(e) = result {
            for d in made.iter().rev() {
                let _ = rmdir_retry(fs, d);
            }
            return Err(e);
        }
        Ok(cg)
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|(c, _)| c.iter().any(|x| x == controller)).map(|(_, d)| d.as_path())
    }

    fn need(&self, controller: &'static str) -> Result<&Path> {
        self.dir(controller).ok_or_else(|| {
            CgroupError::MissingController(
                self.dirs.first().map(|d| d.1.clone()).unwrap_or_default(),
                controller,
            )
        })
    }

    fn write(&self, dir: &Path, file: &str, value: &str) -> Result<()> {
        write_file(self.fs.as_ref(), &dir.join(file), value)
    }

    fn read_u64(&self, controller: &str, file: &str) -> Option<u64> {
        let d = self.dir(controller)?;
        parse_u64(&self.fs.read(&d.join(file)).ok()?)
    }

    fn apply_memory(&self, r: &LinuxResources) -> Result<()> {
        let Some(m) = r.memory() else {
            return Ok(());
        };
        if m.limit().is_none()
            && m.swap().is_none()
            && m.reservation().is_none()
            && m.swappiness().is_none()
            && m.disable_oom_killer() != Some(true)
        {
            return Ok(());
        }
        let dir = self.need("memory")?;
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        let has_swap = self.fs.exists(&memsw);
        match (m.limit(), m.swap().filter(|_| has_swap)) {
            (Some(l), Some(s)) => {
                // memsw must stay >= limit at every step: raise memsw first
                // when the new limit would exceed the current memsw.
                if self.write(dir, "memory.limit_in_bytes", &l.to_string()).is_err() {
                    self.write(dir, "memory.memsw.limit_in_bytes", &s.to_string())?;
                    self.write(dir, "memory.limit_in_bytes", &l.to_string())?;
                } else {
                    self.write(dir, "memory.memsw.limit_in_bytes", &s.to_string())?;
                }
            }
            (Some(l), None) => self.write(dir, "memory.limit_in_bytes", &l.to_string())?,
            (None, Some(s)) => self.write(dir, "memory.memsw.limit_in_bytes", &s.to_string())?,
            (None, None) => {}
        }
        if let Some(v) = m.reservation() {
            self.write(dir, "memory.soft_limit_in_bytes", &v.to_string())?;
        }
        if let Some(v) = m.swappiness() {
            if v > 100 {
                return Err(CgroupError::BadValue(format!("memory swappiness {v} (0-100)")));
            }
            self.write(dir, "memory.swappiness", &v.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            self.write(dir, "memory.oom_control", "1")?;
        }
        Ok(())
    }

    fn apply_cpu(&self, r: &LinuxResources) -> Result<()> {
        let Some(c) = r.cpu() else {
            return Ok(());
        };
        if c.shares().is_some() || c.quota().is_some() || c.period().is_some() {
            let dir = self.need("cpu")?;
            if let Some(s) = c.shares() {
                self.write(dir, "cpu.shares", &s.to_string())?;
            }
            if let Some(p) = c.period() {
                self.write(dir, "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = c.quota() {
                self.write(dir, "cpu.cfs_quota_us", &q.to_string())?;
            }
        }
        if c.cpus().is_some() || c.mems().is_some() {
            let dir = self.need("cpuset")?;
            if let Some(v) = c.cpus() {
                self.write(dir, "cpuset.cpus", v)?;
            }
            if let Some(v) = c.mems() {
                self.write(dir, "cpuset.mems", v)?;
            }
        }
        Ok(())
    }

    fn apply_pids(&self, r: &LinuxResources) -> Result<()> {
        let Some(p) = r.pids() else {
            return Ok(());
        };
        let dir = self.need("pids")?;
        let v = if p.limit() > 0 { p.limit().to_string() } else { "max".into() };
        self.write(dir, "pids.max", &v)
    }

    fn apply_devices(&self, r: &LinuxResources) -> Result<()> {
        let Some(rules) = r.devices() else {
            return Ok(());
        };
        let Some(dir) = self.dir("devices") else {
            // No devices controller: nothing enforces the rules (see mod.rs).
            return Ok(());
        };
        for d in super::dedup_device_rules(rules) {
            let file = if d.allow() { "devices.allow" } else { "devices.deny" };
            self.write(dir, file, &device_rule_text(d))?;
        }
        Ok(())
    }

    fn apply_blkio(&self, r: &LinuxResources) -> Result<()> {
        let Some(b) = r.block_io() else {
            return Ok(());
        };
        if let Some(w) = b.weight() {
            let dir = self.need("blkio")?;
            self.write(dir, "blkio.weight", &w.to_string())?;
        }
        Ok(())
    }

    fn freezer_set(&self, state: &'static str) -> Result<()> {
        let dir = self.need("freezer")?;
        self.write(dir, "freezer.state", state)?;
        for _ in 0..1000 {
            let now = read_file(self.fs.as_ref(), &dir.join("freezer.state"))?;
            if now.trim() == state {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
            // FREEZING may need a nudge when new tasks arrived meanwhile.
            self.write(dir, "freezer.state", state)?;
        }
        Err(CgroupError::FreezeTimeout(dir.to_path_buf(), state))
    }
}

fn inherit_cpuset(fs: &dyn CgroupFs, parent: &Path, dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mine = read_file(fs, &dir.join(file))?;
        if mine.trim().is_empty() {
            let theirs = read_file(fs, &parent.join(file))?;
            write_file(fs, &dir.join(file), theirs.trim())?;
        }
    }
    Ok(())
}

/// Sums the "Read" and "Write" lines of blkio.throttle.io_service_bytes.
fn blkio_bytes(text: &str) -> (u64, u64) {
    let mut r = 0u64;
    let mut w = 0u64;
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [_, op, v] = f[..] {
            let v: u64 = v.parse().unwrap_or(0);
            match op {
                "Read" => r = r.saturating_add(v),
                "Write" => w = w.saturating_add(v),
                _ => {}
            }
        }
    }
    (r, w)
}

impl CgroupManager for V1Cgroup {
    fn apply(&self, r: &LinuxResources) -> Result<()> {
        self.apply_memory(r)?;
        self.apply_cpu(r)?;
        self.apply_pids(r)?;
        self.apply_devices(r)?;
        self.apply_blkio(r)?;
        Ok(())
    }

    fn add_pid(&self, pid: u32) -> Result<()> {
        let pid = pid.to_string();
        for (_, d) in &self.dirs {
            self.write(d, "cgroup.procs", &pid)?;
        }
        if let Some(u) = &self.unified {
            self.write(u, "cgroup.procs", &pid)?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<u32>> {
        let dir = self
            .dir("pids")
            .or_else(|| self.dir("memory"))
            .or_else(|| self.dirs.first().map(|d| d.1.as_path()));
        match dir {
            Some(d) => read_pids(self.fs.as_ref(), &d.join("cgroup.procs")),
            None => Ok(Vec::new()),
        }
    }

    fn oom_killed(&self) -> Result<bool> {
        let Some(dir) = self.dir("memory") else {
            return Ok(false);
        };
        let text = read_file(self.fs.as_ref(), &dir.join("memory.oom_control"))?;
        Ok(keyed(&text, "oom_kill").unwrap_or(0) > 0)
    }

    fn freeze(&self) -> Result<()> {
        self.freezer_set("FROZEN")
    }

    fn thaw(&self) -> Result<()> {
        self.freezer_set("THAWED")
    }

    fn stats(&self) -> Result<Stats> {
        let fs = self.fs.as_ref();
        let mem_stat = self.dir("memory").and_then(|d| fs.read(&d.join("memory.stat")).ok());
        let io = self.dir("blkio").and_then(|d| {
            fs.read(&d.join("blkio.throttle.io_service_bytes_recursive"))
                .or_else(|_| fs.read(&d.join("blkio.throttle.io_service_bytes")))
                .ok()
        });
        let io = io.map(|t| blkio_bytes(&t));
        Ok(Stats {
            cpu_usage_ns: self.read_u64("cpuacct", "cpuacct.usage"),
            memory_usage: self.read_u64("memory", "memory.usage_in_bytes"),
            memory_limit: self.read_u64("memory", "memory.limit_in_bytes").filter(|v| *v < V1_UNLIMITED),
            memory_inactive_file: mem_stat.as_deref().and_then(|s| keyed(s, "total_inactive_file")),
            pids_current: self.read_u64("pids", "pids.current"),
            pids_limit: self.read_u64("pids", "pids.max"),
            io_read_bytes: io.map(|v| v.0),
            io_write_bytes: io.map(|v| v.1),
        })
    }

    fn destroy(&self, timeout: Duration) -> Result<()> {
        let fs = self.fs.as_ref();
        let first = self.dirs.first().map(|d| d.1.clone()).unwrap_or_default();
        let alive = self.dirs.iter().any(|(_, d)| fs.is_dir(d));
        if alive {
            wait_empty(&first, timeout, || self.pids())?;
        }
        let mut first_err = None;
        for d in self.dirs.iter().map(|(_, d)| d).chain(self.unified.as_ref()) {
            if fs.is_dir(d) {
                if let Err(e) = rmdir_retry(fs, d) {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn devices_enforced(&self) -> bool {
        self.dir("devices").is_some()
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).chain(self.unified.clone()).collect()
    }
}

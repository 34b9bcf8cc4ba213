//! Control groups of containers on cgroup v1, hybrid and v2 (unified) hosts:
//! creating a container's cgroup with the limits of its OCI
//! `LinuxResources` (`--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`,
//! `--pids-limit`, `--cpuset-cpus`, Docker's device rules), putting
//! processes in it, OOM and freezer state, statistics for ctr-stats, and
//! removing it.
//!
//! # Interface
//!
//! ```text
//! let layout = cgroup::detect(Path::new("/sys/fs/cgroup"))?;   // V1 | Hybrid | V2
//! let cg = cgroup::create(&layout, "kist/<id>", &resources)?;  // mkdir + limits
//! cg.add_pid(child_pid)?;            // before the child execs the command
//! cg.oom_killed()?; cg.pids()?; cg.freeze()?; cg.thaw()?; cg.stats()?;
//! cg.destroy(Duration::from_secs(5))?;   // waits for it to be empty, rmdir
//! let cg = cgroup::open(&layout, "kist/<id>")?;  // later, from another tool
//! ```
//!
//! `name` is a path relative to the root of every hierarchy (the cgroupfs
//! driver's `/docker/<id>` becomes `kist/<id>`): on v1 one directory per
//! mounted hierarchy (every controller plus `name=systemd`), on hybrid hosts
//! also in the unified hierarchy (as runc does, so `/proc/<pid>/cgroup`
//! shows the container on line `0::`), on v2 one directory, with the needed
//! controllers enabled in `cgroup.subtree_control` of every ancestor.
//! `destroy` never kills: the caller has reaped the container's processes;
//! it waits for the kernel to see the cgroup empty, then removes the
//! container's directories (only those; the shared `kist` parent stays).
//!
//! Device rules: on v1 the `devices` controller gets every rule in order
//! (Docker's list starts with `deny a`). On v2 the kernel has no devices
//! file: the rules are compiled into an eBPF BPF_PROG_TYPE_CGROUP_DEVICE
//! program attached to the cgroup ([`devices`]), as runc and crun do.
//! Applying rules again attaches a further program (BPF_F_ALLOW_MULTI): all
//! attached programs must allow, so an update can only restrict.
//!
//! # Why not cgroups-rs
//!
//! The workspace lists cgroups-rs, but kist uses this thin file-based layer:
//! cgroups-rs finds v1 hierarchies through the process's own mountinfo and
//! hard-codes `/sys/fs/cgroup` for v2, so it cannot be pointed at a fake tree
//! for unit tests; it has no notion of the hybrid layout's unified mount;
//! and it unwraps in library code. What kist needs is a few dozen control
//! files. Every file access goes through the [`CgroupFs`] trait, so the
//! logic is tested on fake trees in a tempdir ([`FakeFs`]: mkdir copies
//! the control files of the parent, as the kernel shows them).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

pub mod devices;
pub mod v1;
pub mod v2;

pub use v2::{shares_to_weight, swap_max};

/// Errors of cgroup handling.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no cgroup hierarchy found (neither cgroup v2 nor v1 controllers)")]
    NoCgroups(PathBuf),
    #[error("invalid cgroup name {0:?} (must be a relative path without '..')")]
    BadName(String),
    #[error("cgroup {path} still has processes {pids:?} after {waited:?}")]
    Busy { path: PathBuf, pids: Vec<u32>, waited: Duration },
    #[error("cgroup {0}: the {1} controller is not available")]
    MissingController(PathBuf, &'static str),
    #[error("invalid resource value: {0}")]
    BadValue(String),
    #[error("cgroup {0} did not reach the {1} state")]
    FreezeTimeout(PathBuf, &'static str),
}

pub type Result<T> = std::result::Result<T, CgroupError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io { op, path: path.to_path_buf(), source }
}

// ---------------------------------------------------------------------------
// File access

/// The few file operations cgroup handling needs; [`RealFs`] on the host,
/// [`FakeFs`] in unit tests.
pub trait CgroupFs: Send + Sync + std::fmt::Debug {
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// Writes to an existing control file (never creates one).
    fn write(&self, path: &Path, data: &str) -> std::io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// Creates one directory (the parent exists).
    fn mkdir(&self, path: &Path) -> std::io::Result<()>;
    /// Removes one cgroup directory.
    fn rmdir(&self, path: &Path) -> std::io::Result<()>;
    /// Names of the entries of a directory.
    fn list(&self, path: &Path) -> std::io::Result<Vec<String>>;
    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Attaches a cgroup v2 device program to the cgroup `dir`.
    fn attach_devices(&self, dir: &Path, prog: &[devices::BpfInsn]) -> std::io::Result<()>;
}

/// The kernel's cgroup file systems.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl CgroupFs for RealFs {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn write(&self, path: &Path, data: &str) -> std::io::Result<()> {
        use std::io::Write;
        // One write(2) per value: the kernel parses each write on its own.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(data.as_bytes())
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn mkdir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }
    fn rmdir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn list(&self, path: &Path) -> std::io::Result<Vec<String>> {
        std::fs::read_dir(path)?.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect()
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn attach_devices(&self, dir: &Path, prog: &[devices::BpfInsn]) -> std::io::Result<()> {
        devices::attach(dir, prog)
    }
}

/// A cgroup tree made of plain files, for tests. `mkdir` creates what the
/// kernel would show: on v1 the parent's control files, empty (as a new
/// cgroup shows e.g. `cpuset.cpus`); on v2 the core files plus those of the
/// controllers enabled in the parent's `cgroup.subtree_control`, with the
/// kernel's initial values. `rmdir` removes the directory and its files;
/// `write` refuses files that do not exist, appends to `cgroup.procs`, and
/// applies `+c`/`-c` to `cgroup.subtree_control` (only controllers listed in
/// `cgroup.controllers`).
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeFs;

fn fake_v2_files(controller: &str) -> &'static [(&'static str, &'static str)] {
    match controller {
        "memory" => &[
            ("memory.max", "max\n"),
            ("memory.swap.max", "max\n"),
            ("memory.low", "0\n"),
            ("memory.current", "0\n"),
            ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
            ("memory.stat", "anon 0\nfile 0\ninactive_file 0\n"),
        ],
        "cpu" => &[("cpu.max", "max 100000\n"), ("cpu.weight", "100\n")],
        "cpuset" => &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")],
        "pids" => &[("pids.max", "max\n"), ("pids.current", "0\n")],
        "io" => &[("io.weight", "default 100\n"), ("io.stat", "")],
        _ => &[],
    }
}

impl CgroupFs for FakeFs {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn write(&self, path: &Path, data: &str) -> std::io::Result<()> {
        if !path.is_file() {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
        if path.file_name().is_some_and(|n| n == "cgroup.subtree_control") {
            let dir = path.parent().unwrap_or(Path::new("/"));
            let offered = std::fs::read_to_string(dir.join("cgroup.controllers"))?;
            let mut on: Vec<String> =
                std::fs::read_to_string(path)?.split_whitespace().map(String::from).collect();
            for w in data.split_whitespace() {
                let (add, c) = w.split_at(1.min(w.len()));
                if !offered.split_whitespace().any(|x| x == c) {
                    return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
                }
                on.retain(|x| x != c);
                if add == "+" {
                    on.push(c.to_string());
                }
            }
            return std::fs::write(path, on.join(" ") + "\n");
        }
        // cgroup.procs accumulates like the kernel's (one pid per write).
        if path.file_name().is_some_and(|n| n == "cgroup.procs" || n == "tasks") {
            let mut old = std::fs::read_to_string(path)?;
            old.push_str(data.trim());
            old.push('\n');
            return std::fs::write(path, old);
        }
        std::fs::write(path, data)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn mkdir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)?;
        let parent = path.parent().unwrap_or(Path::new("/"));
        if parent.join("cgroup.controllers").exists() {
            let on = std::fs::read_to_string(parent.join("cgroup.subtree_control"))?;
            std::fs::write(path.join("cgroup.controllers"), on.trim().to_string() + "\n")?;
            std::fs::write(path.join("cgroup.subtree_control"), "")?;
            std::fs::write(path.join("cgroup.procs"), "")?;
            std::fs::write(path.join("cgroup.freeze"), "0\n")?;
            std::fs::write(path.join("cgroup.events"), "populated 0\nfrozen 0\n")?;
            std::fs::write(path.join("cpu.stat"), "usage_usec 0\n")?;
            for c in on.split_whitespace() {
                for (f, v) in fake_v2_files(c) {
                    std::fs::write(path.join(f), v)?;
                }
            }
            return Ok(());
        }
        {
            for e in std::fs::read_dir(parent)? {
                let e = e?;
                if e.file_type()?.is_file() {
                    std::fs::write(path.join(e.file_name()), "")?;
                }
            }
        }
        Ok(())
    }
    fn rmdir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn list(&self, path: &Path) -> std::io::Result<Vec<String>> {
        RealFs.list(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    /// Records the program's length in `kist.devices.bpf` (not a kernel
    /// file) so tests can see that a program was attached.
    fn attach_devices(&self, dir: &Path, prog: &[devices::BpfInsn]) -> std::io::Result<()> {
        std::fs::write(dir.join("kist.devices.bpf"), format!("{} instructions\n", prog.len()))
    }
}

// ---------------------------------------------------------------------------
// Layout

/// Which cgroup version the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// v1 controllers only.
    V1,
    /// v1 controllers plus a cgroup2 mount (normally `unified/`) without
    /// controllers.
    Hybrid,
    /// cgroup2 at the root.
    V2,
}

/// One mounted v1 hierarchy: its directory and the controllers it carries
/// (`name=systemd` for the named systemd hierarchy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub dir: PathBuf,
    pub controllers: Vec<String>,
}

/// Where the host's cgroups are.
#[derive(Debug, Clone)]
pub struct CgroupLayout {
    pub version: CgroupVersion,
    pub root: PathBuf,
    /// v1 and hybrid: the hierarchies, one per mount (co-mounted
    /// controllers share one).
    pub hierarchies: Vec<Hierarchy>,
    /// Hybrid: the cgroup2 mount; v2: the root.
    pub unified: Option<PathBuf>,
    fs: Arc<dyn CgroupFs>,
}

impl CgroupLayout {
    /// The hierarchy directory carrying a v1 controller.
    pub fn controller_dir(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.dir.as_path())
    }

    pub fn fs(&self) -> &dyn CgroupFs {
        self.fs.as_ref()
    }
}

/// Finds the cgroup layout under `root` (normally `/sys/fs/cgroup`) on the
/// host's file systems.
pub fn detect(root: &Path) -> Result<CgroupLayout> {
    detect_with(Arc::new(RealFs), root)
}

/// The host's layout under `/sys/fs/cgroup`, detected once per process:
/// mounts do not change while a tool runs, and a container's start asks
/// several times (the stale cgroup's teardown, the new one's creation, the
/// OOM check at its exit), each a hundred or so system calls on a v1 host.
pub fn host() -> Result<CgroupLayout> {
    static HOST: std::sync::OnceLock<CgroupLayout> = std::sync::OnceLock::new();
    if let Some(l) = HOST.get() {
        return Ok(l.clone());
    }
    let layout = detect(Path::new("/sys/fs/cgroup"))?;
    Ok(HOST.get_or_init(|| layout).clone())
}

/// [`detect`] through a given [`CgroupFs`] (fake trees in tests).
///
/// A directory with `cgroup.controllers` is a cgroup2 mount; one with
/// `cgroup.procs` but no `cgroup.controllers` is a v1 hierarchy whose
/// directory name lists its controllers (`cpu,cpuacct`; symlinked aliases
/// such as `cpu -> cpu,cpuacct` are followed and counted once).
pub fn detect_with(fs: Arc<dyn CgroupFs>, root: &Path) -> Result<CgroupLayout> {
    if fs.exists(&root.join("cgroup.controllers")) {
        return Ok(CgroupLayout {
            version: CgroupVersion::V2,
            root: root.to_path_buf(),
            hierarchies: Vec::new(),
            unified: Some(root.to_path_buf()),
            fs,
        });
    }
    let mut names = fs.list(root).map_err(io_err("list", root))?;
    names.sort();
    let mut hierarchies: Vec<Hierarchy> = Vec::new();
    let mut unified = None;
    let mut seen: Vec<PathBuf> = Vec::new();
    for name in names {
        let dir = root.join(&name);
        if !fs.is_dir(&dir) {
            continue;
        }
        let real = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        if seen.contains(&real) {
            continue;
        }
        if fs.exists(&dir.join("cgroup.controllers")) {
            unified = Some(dir);
            seen.push(real);
            continue;
        }
        if !fs.exists(&dir.join("cgroup.procs")) {
            continue;
        }
        seen.push(real.clone());
        let base = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(name);
        // An alias (cpu -> cpu,cpuacct) is reported under its real name.
        let dir = if fs.is_dir(&root.join(&base)) { root.join(&base) } else { dir };
        let controllers = if base == "systemd" {
            vec!["name=systemd".to_string()]
        } else {
            base.split(',').map(str::to_string).collect()
        };
        hierarchies.push(Hierarchy { dir, controllers });
    }
    if hierarchies.is_empty() {
        return match unified {
            Some(u) => Ok(CgroupLayout {
                version: CgroupVersion::V2,
                root: u.clone(),
                hierarchies,
                unified: Some(u),
                fs,
            }),
            None => Err(CgroupError::NoCgroups(root.to_path_buf())),
        };
    }
    Ok(CgroupLayout {
        version: if unified.is_some() { CgroupVersion::Hybrid } else { CgroupVersion::V1 },
        root: root.to_path_buf(),
        hierarchies,
        unified,
        fs,
    })
}

fn check_name(name: &str) -> Result<PathBuf> {
    let p = Path::new(name);
    let ok = !name.is_empty() && p.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(CgroupError::BadName(name.to_string()))
    }
}

// ---------------------------------------------------------------------------
// The container's cgroup

/// Resource usage of a cgroup, as ctr-stats reports it. `None`: the host
/// does not account it (controller missing).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub cpu_usage_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    /// `None` also when unlimited.
    pub memory_limit: Option<u64>,
    pub memory_inactive_file: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_limit: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

/// A container's cgroup on whatever layout the host has.
#[derive(Debug, Clone)]
pub enum Cgroup {
    V1(v1::V1Cgroup),
    V2(v2::V2Cgroup),
}

/// What a container runtime does with a cgroup; implemented for v1/hybrid
/// and v2 alike.
pub trait CgroupManager {
    /// Applies (or updates) the limits.
    fn apply(&self, resources: &LinuxResources) -> Result<()>;
    /// Moves a process (all its threads) into the cgroup.
    fn add_pid(&self, pid: u32) -> Result<()>;
    /// The processes in the cgroup.
    fn pids(&self) -> Result<Vec<u32>>;
    /// Whether the OOM killer killed a process of this cgroup.
    fn oom_killed(&self) -> Result<bool>;
    fn freeze(&self) -> Result<()>;
    fn thaw(&self) -> Result<()>;
    fn stats(&self) -> Result<Stats>;
    /// Waits up to `timeout` for the cgroup to be empty, then removes its
    /// directories. Never signals processes.
    fn destroy(&self, timeout: Duration) -> Result<()>;
    /// Whether device rules are enforced by the kernel (v1 devices
    /// controller present); `false` on v2 (see the module header).
    fn devices_enforced(&self) -> bool;
    /// The cgroup's directories (one per hierarchy on v1).
    fn paths(&self) -> Vec<PathBuf>;
}

/// How a process about to be created can enter a cgroup without the
/// RCU grace period a write to `cgroup.procs` waits for (several
/// milliseconds, tens under load: the global cgroup_threadgroup_rwsem's
/// writer side, taken for every process move): the cgroup2 directory
/// (the cgroup on v2, its unified directory on a hybrid host) goes to
/// clone3's CLONE_INTO_CGROUP, which places the child at birth under the
/// reader side; and in each v1 hierarchy the single-threaded child writes
/// "0" to `tasks`, which moves the writing thread alone, for which the
/// kernel skips the global lock. A process with one thread moves whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// For CLONE_INTO_CGROUP.
    pub cgroup2: Option<PathBuf>,
    /// The v1 hierarchies' `tasks` files the child writes "0" to.
    pub v1_tasks: Vec<PathBuf>,
}

impl Cgroup {
    /// See [`Placement`].
    pub fn placement(&self) -> Placement {
        match self {
            Cgroup::V1(c) => c.placement(),
            Cgroup::V2(c) => c.placement(),
        }
    }

    fn inner(&self) -> &dyn CgroupManager {
        match self {
            Cgroup::V1(c) => c,
            Cgroup::V2(c) => c,
        }
    }
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        self.inner().apply(r)
    }
    pub fn add_pid(&self, pid: u32) -> Result<()> {
        self.inner().add_pid(pid)
    }
    pub fn pids(&self) -> Result<Vec<u32>> {
        self.inner().pids()
    }
    pub fn oom_killed(&self) -> Result<bool> {
        self.inner().oom_killed()
    }
    pub fn freeze(&self) -> Result<()> {
        self.inner().freeze()
    }
    pub fn thaw(&self) -> Result<()> {
        self.inner().thaw()
    }
    pub fn stats(&self) -> Result<Stats> {
        self.inner().stats()
    }
    pub fn destroy(&self, timeout: Duration) -> Result<()> {
        self.inner().destroy(timeout)
    }
    pub fn devices_enforced(&self) -> bool {
        self.inner().devices_enforced()
    }
    pub fn paths(&self) -> Vec<PathBuf> {
        self.inner().paths()
    }
}

/// Creates the cgroup `name` (e.g. `kist/<id>`) and applies `resources`.
/// If it exists already (a stale one of the same container), it is reused.
/// On failure, what was created is removed again.
pub fn create(layout: &CgroupLayout, name: &str, resources: &LinuxResources) -> Result<Cgroup> {
    let rel = check_name(name)?;
    let cg = match layout.version {
        CgroupVersion::V2 => Cgroup::V2(v2::V2Cgroup::create(layout, &rel)?),
        CgroupVersion::V1 | CgroupVersion::Hybrid => Cgroup::V1(v1::V1Cgroup::create(layout, &rel)?),
    };
    if let Err(e) = cg.apply(resources) {
        let _ = cg.destroy(Duration::ZERO);
        return Err(e);
    }
    Ok(cg)
}

/// The existing cgroup `name` (for ctr-stats, ctr-kill, ctr-exec).
pub fn open(layout: &CgroupLayout, name: &str) -> Result<Cgroup> {
    let rel = check_name(name)?;
    Ok(match layout.version {
        CgroupVersion::V2 => Cgroup::V2(v2::V2Cgroup::open(layout, &rel)),
        CgroupVersion::V1 | CgroupVersion::Hybrid => Cgroup::V1(v1::V1Cgroup::open(layout, &rel)),
    })
}

/// Creates `rel` below `base`, one level at a time; existing levels are
/// fine. Returns the directories it created (deepest last). `before(parent)`
/// runs before each level is made (v2 delegates controllers through the
/// parent's subtree_control), `prepare(parent, dir)` after (v1 cpuset needs
/// the parent's cpus and mems copied in).
pub(crate) fn mkdir_levels(
    fs: &dyn CgroupFs,
    base: &Path,
    rel: &Path,
    mut before: impl FnMut(&Path) -> Result<()>,
    mut prepare: impl FnMut(&Path, &Path) -> Result<()>,
) -> Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    let mut cur = base.to_path_buf();
    for comp in rel.components() {
        let parent = cur.clone();
        before(&parent)?;
        cur.push(comp);
        if !fs.is_dir(&cur) {
            match fs.mkdir(&cur) {
                Ok(()) => {
                    created.push(cur.clone());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("mkdir", &cur)(e)),
            }
        }
        prepare(&parent, &cur)?;
    }
    Ok(created)
}

pub(crate) fn read_file(fs: &dyn CgroupFs, path: &Path) -> Result<String> {
    fs.read(path).map_err(io_err("read", path))
}

pub(crate) fn write_file(fs: &dyn CgroupFs, path: &Path, data: &str) -> Result<()> {
    fs.write(path, data).map_err(io_err("write", path))
}

/// Reads a file of pids (cgroup.procs). A cgroup removed meanwhile (the
/// monitor and ctr-kill --rm -f may both tear one down) holds none.
pub(crate) fn read_pids(fs: &dyn CgroupFs, path: &Path) -> Result<Vec<u32>> {
    match fs.read(path) {
        Ok(text) => Ok(text.split_whitespace().filter_map(|s| s.parse().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// A single number, or `None` for "max" / empty.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The value of `key` in a flat-keyed file (memory.stat, cpu.stat, …).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok()).flatten()
    })
}

/// Waits until `pids()` is empty or `timeout` passes.
pub(crate) fn wait_empty(path: &Path, timeout: Duration, pids: impl Fn() -> Result<Vec<u32>>) -> Result<()> {
    let start = std::time::Instant::now();
    let mut delay = Duration::from_micros(200);
    loop {
        let left = pids()?;
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(CgroupError::Busy { path: path.to_path_buf(), pids: left, waited: start.elapsed() });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

/// Removes a cgroup directory, retrying briefly on EBUSY (the kernel frees a
/// cgroup a moment after its last process is reaped).
pub(crate) fn rmdir_retry(fs: &dyn CgroupFs, path: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        match fs.rmdir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(io_err("rmdir", path)(e)),
        }
    }
}

// ---------------------------------------------------------------------------
// Docker's values

fn dev(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(allow);
    d.set_typ(Some(typ));
    d.set_major(major);
    d.set_minor(minor);
    d.set_access(Some(access.to_string()));
    d
}

/// The device cgroup rules a default `docker run` container gets: moby's
/// spec (deny all; allow /dev/zero, null, urandom, random, tty, console;
/// deny /dev/fuse), followed by the rules runc appends (mknod of any node;
/// console, /dev/pts/*, ptmx, tun; null, zero, full, tty, urandom, random).
pub fn docker_default_devices() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{A, B, C};
    let c = |ma, mi| dev(true, C, Some(ma), Some(mi), "rwm");
    let mut all = dev(false, A, None, None, "rwm");
    all.set_typ(None);
    vec![
        all,
        c(1, 5),
        c(1, 3),
        c(1, 9),
        c(1, 8),
        c(5, 0),
        c(5, 1),
        dev(false, C, Some(10), Some(229), "rwm"),
        dev(true, C, None, None, "m"),
        dev(true, B, None, None, "m"),
        c(5, 1),
        dev(true, C, Some(136), None, "rwm"),
        c(5, 2),
        c(10, 200),
        c(1, 3),
        c(1, 5),
        c(1, 7),
        c(5, 0),
        c(1, 9),
        c(1, 8),
    ]
}

/// The rules without those repeated later in the list: a later identical
/// rule re-establishes the same state for its devices, so the earlier copy
/// changes nothing (Docker's list plus runc's repeats six rules; each is a
/// write on v1 and a block of the eBPF program on v2).
pub fn dedup_device_rules(rules: &[LinuxDeviceCgroup]) -> Vec<&LinuxDeviceCgroup> {
    rules.iter().enumerate().filter(|(i, r)| !rules[i + 1..].contains(r)).map(|(_, r)| r).collect()
}

/// A device rule in the v1 `devices.allow` syntax: `c 1:3 rwm`, `a *:* rwm`.
pub fn device_rule_text(d: &LinuxDeviceCgroup) -> String {
    let typ = d.typ().map(|t| t.as_str().to_string()).unwrap_or_else(|| "a".into());
    let num = |n: Option<i64>| match n {
        Some(v) if v >= 0 => v.to_string(),
        _ => "*".into(),
    };
    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
    format!("{typ} {}:{} {access}", num(d.major()), num(d.minor()))
}

/// Docker's `--memory` / `--memory-swap` rule: without `--memory-swap`, the
/// swap limit (memory+swap) is twice the memory limit; `-1` is unlimited.
/// Returns the OCI (limit, swap) pair, swap meaning memory+swap as in v1.
pub fn docker_memory(memory: Option<i64>, memory_swap: Option<i64>) -> (Option<i64>, Option<i64>) {
    match (memory, memory_swap) {
        (Some(m), None | Some(0)) if m > 0 => (Some(m), Some(m * 2)),
        (m, s) => (m, s),
    }
}

/// Docker's `--cpus` as a CFS (quota, period) pair: period 100 ms.
pub fn docker_cpus(cpus: f64) -> Option<(i64, u64)> {
    if !(cpus.is_finite() && cpus > 0.0) {
        return None;
    }
    const PERIOD: u64 = 100_000;
    Some(((cpus * PERIOD as f64).round() as i64, PERIOD))
}

#[cfg(test)]
mod tests;

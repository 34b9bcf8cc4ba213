//! Unit tests of the cgroup layer on fake v1, hybrid and v2 trees (the files
//! a kernel would show, written into a tempdir), and one test on the real
//! host's cgroups when run as root.

use super::*;
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
};
use std::fs;

fn put(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (f, v) in files {
        fs::write(dir.join(f), v).unwrap();
    }
}

fn fake_v1(root: &Path) {
    let procs = ("cgroup.procs", "");
    let tasks = ("tasks", "");
    put(
        &root.join("cpu,cpuacct"),
        &[
            procs,
            tasks,
            ("cpu.shares", "1024\n"),
            ("cpu.cfs_period_us", "100000\n"),
            ("cpu.cfs_quota_us", "-1\n"),
            ("cpuacct.usage", "123456789\n"),
        ],
    );
    std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).unwrap();
    std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpuacct")).unwrap();
    put(&root.join("cpuset"), &[procs, tasks, ("cpuset.cpus", "0-1\n"), ("cpuset.mems", "0\n")]);
    put(
        &root.join("memory"),
        &[
            procs,
            tasks,
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
            ("memory.soft_limit_in_bytes", "9223372036854771712\n"),
            ("memory.swappiness", "60\n"),
            ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"),
            ("memory.usage_in_bytes", "4096\n"),
            ("memory.stat", "cache 0\ntotal_inactive_file 8192\n"),
        ],
    );
    put(
        &root.join("devices"),
        &[procs, tasks, ("devices.allow", ""), ("devices.deny", ""), ("devices.list", "a *:* rwm\n")],
    );
    put(&root.join("freezer"), &[procs, tasks, ("freezer.state", "THAWED\n")]);
    put(
        &root.join("blkio"),
        &[procs, tasks, ("blkio.weight", "500\n"), ("blkio.throttle.io_service_bytes", "")],
    );
    put(&root.join("pids"), &[procs, tasks, ("pids.max", "max\n"), ("pids.current", "0\n")]);
    put(&root.join("systemd"), &[procs, tasks]);
}

fn fake_hybrid(root: &Path) {
    fake_v1(root);
    put(
        &root.join("unified"),
        &[("cgroup.controllers", ""), ("cgroup.subtree_control", ""), ("cgroup.procs", "")],
    );
}

fn fake_v2(root: &Path) {
    put(
        root,
        &[
            ("cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n"),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", "1\n"),
        ],
    );
}

fn layout(root: &Path) -> CgroupLayout {
    detect_with(Arc::new(FakeFs), root).unwrap()
}

fn read(p: PathBuf) -> String {
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}

fn docker_like_resources() -> LinuxResources {
    let (mem, swap) = docker_memory(Some(32 << 20), None);
    let (quota, period) = docker_cpus(1.5).unwrap();
    LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(mem.unwrap()).swap(swap.unwrap()).build().unwrap())
        .cpu(LinuxCpuBuilder::default().shares(512u64).quota(quota).period(period).cpus("0").build().unwrap())
        .pids(LinuxPidsBuilder::default().limit(10i64).build().unwrap())
        .devices(docker_default_devices())
        .block_io(LinuxBlockIoBuilder::default().weight(300u16).build().unwrap())
        .build()
        .unwrap()
}

#[test]
fn detect_three_layouts() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, c) = (t.path().join("v1"), t.path().join("hy"), t.path().join("v2"));
    fake_v1(&a);
    fake_hybrid(&b);
    fake_v2(&c);
    let l = layout(&a);
    assert_eq!(l.version, CgroupVersion::V1);
    assert!(l.unified.is_none());
    // cpu and cpuacct are aliases of one co-mounted hierarchy.
    let names: Vec<_> = l.hierarchies.iter().map(|h| h.controllers.join(",")).collect();
    assert_eq!(
        names,
        ["blkio", "cpu,cpuacct", "cpuset", "devices", "freezer", "memory", "pids", "name=systemd"]
    );
    assert_eq!(l.controller_dir("cpuacct").unwrap(), a.join("cpu,cpuacct"));
    let l = layout(&b);
    assert_eq!(l.version, CgroupVersion::Hybrid);
    assert_eq!(l.unified.as_deref(), Some(b.join("unified").as_path()));
    let l = layout(&c);
    assert_eq!(l.version, CgroupVersion::V2);
    assert!(l.hierarchies.is_empty());
    let empty = t.path().join("none");
    fs::create_dir(&empty).unwrap();
    assert!(matches!(detect_with(Arc::new(FakeFs), &empty), Err(CgroupError::NoCgroups(_))));
}

#[test]
fn v1_create_applies_limits() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fake_v1(root);
    let l = layout(root);
    let cg = create(&l, "kist/abc", &docker_like_resources()).unwrap();
    let placed = cg.placement();
    assert_eq!(placed.cgroup2, None, "no unified mount on a v1 host");
    assert!(placed.v1_tasks.contains(&root.join("cpu,cpuacct/kist/abc/tasks")), "{placed:?}");
    let m = root.join("memory/kist/abc");
    assert_eq!(read(m.join("memory.limit_in_bytes")), (32u64 << 20).to_string());
    assert_eq!(read(m.join("memory.memsw.limit_in_bytes")), (64u64 << 20).to_string());
    let c = root.join("cpu,cpuacct/kist/abc");
    assert_eq!(read(c.join("cpu.shares")), "512");
    assert_eq!(read(c.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(c.join("cpu.cfs_quota_us")), "150000");
    // cpuset: the intermediate level inherited the parent's sets, the
    // container got its own cpus and the inherited mems.
    assert_eq!(read(root.join("cpuset/kist/cpuset.cpus")), "0-1");
    assert_eq!(read(root.join("cpuset/kist/abc/cpuset.cpus")), "0");
    assert_eq!(read(root.join("cpuset/kist/abc/cpuset.mems")), "0");
    assert_eq!(read(root.join("pids/kist/abc/pids.max")), "10");
    assert_eq!(read(root.join("blkio/kist/abc/blkio.weight")), "300");
    // Devices: FakeFs keeps the last write; the first deny must be "a".
    assert_eq!(read(root.join("devices/kist/abc/devices.allow")), "c 1:8 rwm");
    assert_eq!(read(root.join("devices/kist/abc/devices.deny")), "c 10:229 rwm");
    assert!(cg.devices_enforced());
    // The named systemd hierarchy gets a directory too.
    assert!(root.join("systemd/kist/abc").is_dir());
    assert_eq!(cg.paths().len(), 8);

    cg.add_pid(4242).unwrap();
    for p in cg.paths() {
        assert_eq!(read(p.join("cgroup.procs")), "4242");
    }
    assert_eq!(cg.pids().unwrap(), vec![4242]);
    // Not empty: destroy waits, then gives up without removing anything.
    let e = cg.destroy(Duration::from_millis(20)).unwrap_err();
    assert!(matches!(e, CgroupError::Busy { ref pids, .. } if pids == &[4242]), "{e}");
    assert!(m.is_dir());
    for p in cg.paths() {
        fs::write(p.join("cgroup.procs"), "").unwrap();
    }
    cg.destroy(Duration::from_millis(20)).unwrap();
    for p in cg.paths() {
        assert!(!p.exists(), "{}", p.display());
    }
    // The shared parent stays.
    assert!(root.join("memory/kist").is_dir());
}

#[test]
fn dedup_keeps_the_last_copy_and_the_meaning() {
    let all = docker_default_devices();
    let d: Vec<_> = dedup_device_rules(&all).into_iter().cloned().collect();
    assert_eq!(all.len(), 20);
    assert_eq!(d.len(), 14);
    assert_eq!(device_rule_text(&d[0]), "a *:* rwm");
    let (full, short) = (devices::compile(&all), devices::compile(&d));
    for (t, ma, mi) in
        [('c', 1, 3), ('c', 1, 7), ('c', 10, 229), ('c', 136, 9), ('b', 8, 0), ('c', 1, 11), ('c', 5, 1)]
    {
        for acc in ["r", "w", "m", "rw", "rwm"] {
            assert_eq!(devices::evaluate(&full, t, ma, mi, acc), devices::evaluate(&short, t, ma, mi, acc));
        }
    }
}

#[test]
fn v1_device_rule_order() {
    let rules: Vec<String> = docker_default_devices().iter().map(device_rule_text).collect();
    assert_eq!(rules[0], "a *:* rwm");
    assert!(!docker_default_devices()[0].allow());
    assert!(rules.contains(&"c 136:* rwm".to_string()));
    assert!(rules.contains(&"b *:* m".to_string()));
    assert!(rules.contains(&"c 1:7 rwm".to_string()), "/dev/full comes from runc's list");
    let fuse = docker_default_devices()
        .into_iter()
        .find(|d| d.major() == Some(10) && d.minor() == Some(229))
        .unwrap();
    assert!(!fuse.allow());
}

#[test]
fn v1_oom_freeze_stats() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fake_v1(root);
    let l = layout(root);
    let cg = create(&l, "kist/x", &LinuxResources::default()).unwrap();
    let m = root.join("memory/kist/x");
    fs::write(m.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n").unwrap();
    assert!(!cg.oom_killed().unwrap());
    fs::write(m.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").unwrap();
    assert!(cg.oom_killed().unwrap());
    cg.freeze().unwrap();
    assert_eq!(read(root.join("freezer/kist/x/freezer.state")), "FROZEN");
    cg.thaw().unwrap();
    assert_eq!(read(root.join("freezer/kist/x/freezer.state")), "THAWED");
    fs::write(root.join("cpu,cpuacct/kist/x/cpuacct.usage"), "5000\n").unwrap();
    fs::write(m.join("memory.usage_in_bytes"), "1048576\n").unwrap();
    fs::write(m.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
    fs::write(m.join("memory.stat"), "cache 1\ntotal_inactive_file 4096\n").unwrap();
    fs::write(root.join("pids/kist/x/pids.current"), "3\n").unwrap();
    fs::write(root.join("pids/kist/x/pids.max"), "max\n").unwrap();
    fs::write(
        root.join("blkio/kist/x/blkio.throttle.io_service_bytes"),
        "8:0 Read 100\n8:0 Write 50\n8:16 Read 1\n8:0 Total 150\nTotal 151\n",
    )
    .unwrap();
    let s = cg.stats().unwrap();
    assert_eq!(
        s,
        Stats {
            cpu_usage_ns: Some(5000),
            memory_usage: Some(1 << 20),
            memory_limit: None,
            memory_inactive_file: Some(4096),
            pids_current: Some(3),
            pids_limit: None,
            io_read_bytes: Some(101),
            io_write_bytes: Some(50),
        }
    );
    cg.destroy(Duration::ZERO).unwrap();
}

#[test]
fn hybrid_joins_unified_too() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fake_hybrid(root);
    let l = layout(root);
    let cg = create(&l, "kist/h", &docker_like_resources()).unwrap();
    assert!(root.join("unified/kist/h").is_dir());
    let placed = cg.placement();
    assert_eq!(placed.cgroup2, Some(root.join("unified/kist/h")));
    assert!(placed.v1_tasks.contains(&root.join("memory/kist/h/tasks")), "{placed:?}");
    assert!(placed
        .v1_tasks
        .iter()
        .all(|t| t.ends_with("kist/h/tasks") && !t.starts_with(root.join("unified"))));
    cg.add_pid(77).unwrap();
    assert_eq!(read(root.join("unified/kist/h/cgroup.procs")), "77");
    assert_eq!(read(root.join("memory/kist/h/memory.limit_in_bytes")), (32u64 << 20).to_string());
    fs::write(root.join("unified/kist/h/cgroup.procs"), "").unwrap();
    for p in cg.paths() {
        fs::write(p.join("cgroup.procs"), "").unwrap();
    }
    cg.destroy(Duration::ZERO).unwrap();
    assert!(!root.join("unified/kist/h").exists());
}

#[test]
fn v2_create_enables_controllers_and_converts() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fake_v2(root);
    let l = layout(root);
    let cg = create(&l, "kist/v", &docker_like_resources()).unwrap();
    assert_eq!(cg.placement(), Placement { cgroup2: Some(root.join("kist/v")), v1_tasks: Vec::new() });
    // Every ancestor delegates the controllers kist needs (not rdma/misc).
    assert_eq!(read(root.join("cgroup.subtree_control")), "cpuset cpu io memory pids");
    assert_eq!(read(root.join("kist/cgroup.subtree_control")), "cpuset cpu io memory pids");
    assert_eq!(read(root.join("kist/v/cgroup.subtree_control")), "");
    let d = root.join("kist/v");
    assert_eq!(read(d.join("memory.max")), (32u64 << 20).to_string());
    // memory+swap 64m with memory 32m -> 32m of swap.
    assert_eq!(read(d.join("memory.swap.max")), (32u64 << 20).to_string());
    assert_eq!(read(d.join("cpu.max")), "150000 100000");
    assert_eq!(read(d.join("cpu.weight")), shares_to_weight(512).to_string());
    assert_eq!(read(d.join("cpuset.cpus")), "0");
    assert_eq!(read(d.join("pids.max")), "10");
    assert_eq!(read(d.join("io.weight")), format!("default {}", 1 + (300 - 10) * 9999 / 990));
    assert!(cg.devices_enforced());
    let rules: Vec<_> = dedup_device_rules(&docker_default_devices()).into_iter().cloned().collect();
    assert_eq!(read(d.join("kist.devices.bpf")), format!("{} instructions", devices::compile(&rules).len()));
    cg.add_pid(9).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![9]);
    assert!(!cg.oom_killed().unwrap());
    fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
    assert!(cg.oom_killed().unwrap());
    fs::write(d.join("cgroup.procs"), "").unwrap();
    cg.destroy(Duration::ZERO).unwrap();
    assert!(!d.exists());
    assert!(root.join("kist").is_dir());
}

#[test]
fn v2_freeze_and_stats() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fake_v2(root);
    let l = layout(root);
    let cg = create(&l, "kist/f", &LinuxResources::default()).unwrap();
    let d = root.join("kist/f");
    // The fake kernel does not freeze by itself: report it done.
    fs::write(d.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
    cg.freeze().unwrap();
    assert_eq!(read(d.join("cgroup.freeze")), "1");
    fs::write(d.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    cg.thaw().unwrap();
    assert_eq!(read(d.join("cgroup.freeze")), "0");
    fs::write(d.join("cpu.stat"), "usage_usec 42\nuser_usec 40\n").unwrap();
    fs::write(d.join("memory.current"), "2048\n").unwrap();
    fs::write(d.join("memory.max"), "max\n").unwrap();
    fs::write(d.join("memory.stat"), "anon 1\ninactive_file 512\n").unwrap();
    fs::write(d.join("pids.current"), "2\n").unwrap();
    fs::write(d.join("pids.max"), "100\n").unwrap();
    fs::write(d.join("io.stat"), "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n").unwrap();
    let s = cg.stats().unwrap();
    assert_eq!(s.cpu_usage_ns, Some(42_000));
    assert_eq!(s.memory_usage, Some(2048));
    assert_eq!(s.memory_limit, None);
    assert_eq!(s.memory_inactive_file, Some(512));
    assert_eq!(s.pids_current, Some(2));
    assert_eq!(s.pids_limit, Some(100));
    assert_eq!((s.io_read_bytes, s.io_write_bytes), (Some(11), Some(22)));
}

#[test]
fn v2_missing_controller_is_an_error_and_cleans_up() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    put(root, &[("cgroup.controllers", "cpu\n"), ("cgroup.subtree_control", ""), ("cgroup.procs", "")]);
    let l = layout(root);
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(5i64).build().unwrap())
        .build()
        .unwrap();
    let e = create(&l, "kist/m", &r).unwrap_err();
    assert!(matches!(e, CgroupError::MissingController(_, "pids")), "{e}");
    assert!(!root.join("kist/m").exists());
}

#[test]
fn conversions() {
    assert_eq!(shares_to_weight(0), 0);
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
    assert_eq!(swap_max(Some(100), Some(300)).unwrap().as_deref(), Some("200"));
    assert_eq!(swap_max(Some(100), Some(-1)).unwrap().as_deref(), Some("max"));
    assert_eq!(swap_max(Some(100), None).unwrap(), None);
    assert!(swap_max(Some(100), Some(50)).is_err());
    assert!(swap_max(None, Some(50)).is_err());
    assert_eq!(docker_memory(Some(10), None), (Some(10), Some(20)));
    assert_eq!(docker_memory(Some(10), Some(-1)), (Some(10), Some(-1)));
    assert_eq!(docker_memory(None, None), (None, None));
    assert_eq!(docker_cpus(0.5), Some((50_000, 100_000)));
    assert_eq!(docker_cpus(0.0), None);
    assert!(matches!(
        create(&layout_v2_tmp().1, "../x", &LinuxResources::default()),
        Err(CgroupError::BadName(_))
    ));
    assert!(matches!(open(&layout_v2_tmp().1, "/abs"), Err(CgroupError::BadName(_))));
}

fn layout_v2_tmp() -> (tempfile::TempDir, CgroupLayout) {
    let t = tempfile::tempdir().unwrap();
    fake_v2(t.path());
    let l = layout(t.path());
    (t, l)
}

/// On the real host (root only): a kist cgroup with a memory limit holds a
/// sleeping child, reads back, and is removed again.
#[test]
fn real_host_cgroup_roundtrip() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let Ok(l) = detect(Path::new("/sys/fs/cgroup")) else {
        eprintln!("skipped: no cgroups");
        return;
    };
    let name = format!("kist/unit-{}", std::process::id());
    let r = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(64i64 << 20).build().unwrap())
        .pids(LinuxPidsBuilder::default().limit(16i64).build().unwrap())
        .devices(docker_default_devices())
        .build()
        .unwrap();
    let t = std::time::Instant::now();
    let cg = create(&l, &name, &r).unwrap();
    eprintln!("create with Docker's device rules on {:?}: {:?}", l.version, t.elapsed());
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    let added = cg.add_pid(pid);
    let check = (|| -> std::result::Result<(), String> {
        added.map_err(|e| e.to_string())?;
        let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| e.to_string())?;
        if !own.lines().any(|l| l.ends_with(&format!("/{name}"))) {
            return Err(format!("child not in {name}: {own}"));
        }
        if cg.pids().map_err(|e| e.to_string())? != vec![pid] {
            return Err("pids() does not list the child".into());
        }
        let s = cg.stats().map_err(|e| e.to_string())?;
        if s.memory_limit != Some(64 << 20) {
            return Err(format!("memory limit read back as {:?}", s.memory_limit));
        }
        if s.pids_limit != Some(16) || s.pids_current != Some(1) {
            return Err(format!("pids {:?}/{:?}", s.pids_current, s.pids_limit));
        }
        if l.version != CgroupVersion::V2 {
            let list =
                fs::read_to_string(l.controller_dir("devices").unwrap().join(&name).join("devices.list"))
                    .map_err(|e| e.to_string())?;
            if !list.contains("c 1:3 rwm") || list.contains("a *:* rwm") {
                return Err(format!("devices.list: {list}"));
            }
        }
        if cg.oom_killed().map_err(|e| e.to_string())? {
            return Err("oom_killed without an OOM".into());
        }
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    let t = std::time::Instant::now();
    cg.destroy(Duration::from_secs(5)).unwrap();
    eprintln!("destroy: {:?}", t.elapsed());
    for p in cg.paths() {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    check.unwrap();
}

/// Forks a child that blocks until released, then runs `f` and exits with
/// its result. Returns (pid, release) where release() lets it go.
fn held_child(f: fn() -> i32) -> (i32, impl FnOnce()) {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints for pipe(2).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only reads the pipe, runs `f` and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte from our pipe into a valid buffer.
        unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) };
        let code = f();
        // SAFETY: leave the child without running the harness.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: closing our copy of the read end.
    unsafe { libc::close(fds[0]) };
    let w = fds[1];
    (pid, move || {
        // SAFETY: writing one byte to the pipe we own, then closing it.
        unsafe {
            libc::write(w, b"x".as_ptr().cast(), 1);
            libc::close(w);
        }
    })
}

fn wait_status(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

/// Real host, root only: a memory limit OOM-kills a process that allocates
/// past it and `oom_killed` says so; a pids limit stops forks.
#[test]
fn real_host_oom_and_pids_limit() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let Ok(l) = detect(Path::new("/sys/fs/cgroup")) else {
        eprintln!("skipped: no cgroups");
        return;
    };
    let name = format!("kist/unit-oom-{}", std::process::id());
    let (mem, swap) = (16i64 << 20, 16i64 << 20);
    let r = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(mem).swap(swap).build().unwrap())
        .pids(LinuxPidsBuilder::default().limit(4i64).build().unwrap())
        .build()
        .unwrap();
    let cg = create(&l, &name, &r).unwrap();
    let (pid, go) = held_child(|| {
        let mut v: Vec<u8> = Vec::with_capacity(100 << 20);
        for i in 0..(100 << 20) / 4096 {
            v.push(0);
            v.resize((i + 1) * 4096, 1);
        }
        0
    });
    cg.add_pid(pid as u32).unwrap();
    go();
    let status = wait_status(pid);
    let oom = cg.oom_killed();
    // Forks beyond the pids limit fail with EAGAIN.
    let (pid2, go2) = held_child(|| {
        let mut made = 0;
        let mut kids = Vec::new();
        for _ in 0..10 {
            // SAFETY: the grandchildren sleep briefly and _exit.
            let p = unsafe { libc::fork() };
            if p == 0 {
                std::thread::sleep(Duration::from_millis(300));
                // SAFETY: leave the grandchild.
                unsafe { libc::_exit(0) };
            }
            if p > 0 {
                made += 1;
                kids.push(p);
            }
        }
        for k in kids {
            wait_status(k);
        }
        made
    });
    cg.add_pid(pid2 as u32).unwrap();
    go2();
    let status2 = wait_status(pid2);
    cg.destroy(Duration::from_secs(5)).unwrap();
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "status {status:#x}");
    assert!(oom.unwrap(), "oom_killed() after an OOM kill");
    // 4 pids: the child itself and 3 of its 10 forks.
    assert!(libc::WIFEXITED(status2));
    assert_eq!(libc::WEXITSTATUS(status2), 3);
}

#[test]
fn a_cgroup_removed_by_someone_else_has_no_pids_and_destroys_cleanly() {
    // The monitor and `ctr-kill --rm -f` may tear the same cgroup down at
    // once: whoever comes second finds directories gone mid-way.
    for fake in [fake_v1 as fn(&Path), fake_v2] {
        let t = tempfile::tempdir().unwrap();
        fake(t.path());
        let l = layout(t.path());
        let cg = create(&l, "kist/gone", &LinuxResources::default()).unwrap();
        let other = open(&l, "kist/gone").unwrap();
        other.destroy(Duration::ZERO).unwrap();
        assert_eq!(cg.pids().unwrap(), Vec::<u32>::new());
        cg.destroy(Duration::from_millis(100)).unwrap();
        assert!(cg.paths().iter().all(|p| !p.exists()), "{:?}", cg.paths());
    }
}

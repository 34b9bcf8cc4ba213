//! The container's init: the child of ctr-spawn, cloned into the new
//! namespaces, that builds the root file system, confines itself and
//! execs the container's command. Nothing from the host is ever exec'd
//! inside the container (the CVE-2019-5736 class): the init is a fork of
//! ctr-spawn that is non-dumpable while it runs in the container's
//! namespaces, and its last act is execve of the container's own binary.
//!
//! Order: enter the v1 cgroups (born in the cgroup2 one) → mounts →
//! pivot_root →
//! masked and read-only paths → hostname, loopback → stdio → cwd →
//! rlimits → the parent's go (the network) → (seccomp without
//! no-new-privileges) → bounding set →
//! setgroups/setgid/setuid → capabilities → (no_new_privs + seccomp) →
//! close every other descriptor → execve. Failures travel back to the
//! parent over the CLOEXEC socket, which closes on a successful exec.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use kist_common::security::{caps, rlimits, seccomp};
use nix::errno::Errno;
use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use super::fs::{self, Kind};
use super::msg;
use crate::bundle::Plan;

/// A failure in the init: the status ctr-spawn exits with and Docker's words.
pub struct Failure {
    pub status: u8,
    pub message: String,
}

fn setup(what: impl std::fmt::Display) -> impl FnOnce(Errno) -> Failure {
    let what = what.to_string();
    move |e| Failure { status: 125, message: format!("{what}: {}", e.desc()) }
}

/// Fills a volume from the image's tree at its mount point, with the
/// volume's fill lock held, unless another container filled it since this
/// one saw it empty. What was written into it before (`ctr-cp` into the
/// created container) is kept: Docker copies at create, so such writes
/// land on top of its copy.
fn fill_volume(v: &crate::bundle::VolumeUse, from: &Path) -> Result<(), Failure> {
    let fail = |e: &dyn std::fmt::Display| other(format!("fill volume {} from the image: {e}", v.name));
    let _lock = kist_common::fsutil::Lock::exclusive(&crate::bundle::VolumeUse::fill_lock(&v.data))
        .map_err(|e| fail(&e))?;
    let marker = crate::bundle::VolumeUse::filled_marker(&v.data);
    if marker.exists() {
        return Ok(());
    }
    fs::copy_tree(from, &v.data).map_err(|e| fail(&e))?;
    std::fs::write(&marker, b"").map_err(|e| fail(&e))?;
    Ok(())
}

fn other(what: impl std::fmt::Display) -> Failure {
    Failure { status: 125, message: what.to_string() }
}

/// Runs in the cloned child; never returns. `v1_tasks`: the cgroup v1
/// `tasks` files to move into first (see super's header on the cgroup).
pub fn main(plan: &Plan, sock: RawFd, tty: bool, v1_tasks: &[CString]) -> ! {
    let err = match enter_v1_cgroups(v1_tasks).and_then(|()| run(plan, sock, tty)) {
        Ok(never) => match never {},
        Err(f) => f,
    };
    msg::send_error(sock, err.status, &err.message);
    // SAFETY: leaving the child at once, without running the parent's
    // destructors or atexit handlers a second time.
    unsafe { libc::_exit(i32::from(err.status)) }
}

/// Moves the init, a process of one thread, into its v1 cgroups by writing
/// "0" (the writing thread) to each hierarchy's `tasks`: the kernel takes
/// no global lock for a thread that moves itself, so there is no grace
/// period to wait for. Done before anything else, so that what the init
/// allocates, forks and execs is the container's from the start.
fn enter_v1_cgroups(tasks: &[CString]) -> Result<(), Failure> {
    for t in tasks {
        let what = || t.to_string_lossy().into_owned();
        // SAFETY: open of a C string path.
        let fd = unsafe { libc::open(t.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(setup(format!("enter cgroup {}", what()))(Errno::last()));
        }
        // SAFETY: a descriptor we just opened and own alone.
        let fd: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        // SAFETY: writing one byte from a static buffer.
        if unsafe { libc::write(fd.as_raw_fd(), c"0".as_ptr().cast(), 1) } != 1 {
            return Err(setup(format!("enter cgroup {}", what()))(Errno::last()));
        }
    }
    Ok(())
}

fn has_ns(spec: &Spec, t: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|x| x.typ() == t))
}

fn run(plan: &Plan, sock: RawFd, tty: bool) -> Result<std::convert::Infallible, Failure> {
    // Never outlive the ctr-spawn that owns us: if it is killed, the
    // container goes too instead of running unowned.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    let spec = &plan.spec;
    let gate = Gate {
        sock,
        passed: std::cell::Cell::new(false),
        cgroup_ns: has_ns(spec, LinuxNamespaceType::Cgroup),
    };
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };

    // Mount propagation: nothing we do reaches the host.
    fs::mount_raw(None, c"/", None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)
        .map_err(setup("make / rslave"))?;
    if !fs::is_procfs(Path::new("/proc/self/fd")) {
        return Err(other("/proc is not procfs"));
    }
    mount_overlay(plan)?;
    let rootfs = plan.paths.rootfs();
    let root = nix::fcntl::open(
        &rootfs,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(setup(format!("open {}", rootfs.display())))?;
    // SAFETY: a descriptor we just opened and own alone.
    let root: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(root) };
    let r = root.as_raw_fd();

    for m in spec.mounts().as_deref().unwrap_or_default() {
        mount_one(plan, r, m, &gate)?;
    }
    create_devices(r)?;
    let console = if tty {
        // The parent reads the terminal only after the gate.
        gate.pass()?;
        Some(open_pty(r, sock)?)
    } else {
        None
    };

    // pivot_root(".", ".") then detach the old root: no path to the host remains.
    nix::unistd::fchdir(r).map_err(setup("chdir rootfs"))?;
    // SAFETY: two valid C strings.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    Errno::result(rc).map_err(setup("pivot_root"))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH).map_err(setup("detach the old root"))?;
    nix::unistd::chdir("/").map_err(setup("chdir /"))?;
    drop(root);
    let newroot = fs::open_in_root(libc::AT_FDCWD, Path::new("/"), libc::O_PATH | libc::O_DIRECTORY)
        .map_err(setup("open /"))?;
    let nr = newroot.as_raw_fd();

    if let Some(linux) = spec.linux() {
        if !fs::is_procfs(Path::new("/proc")) {
            return Err(other("the container's /proc is not procfs: refusing to mask paths on it"));
        }
        for p in linux.masked_paths().as_deref().unwrap_or_default() {
            mask_path(nr, Path::new(p))?;
        }
        for p in linux.readonly_paths().as_deref().unwrap_or_default() {
            readonly_path(nr, Path::new(p))?;
        }
    }
    if spec.root().as_ref().is_some_and(|r| r.readonly() == Some(true)) {
        fs::remount_in_root(nr, Path::new("/"), MsFlags::MS_RDONLY).map_err(setup("remount / read-only"))?;
    }
    drop(newroot);

    if has_ns(spec, LinuxNamespaceType::Uts) {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).map_err(setup("sethostname"))?;
        }
    }
    if has_ns(spec, LinuxNamespaceType::Network) {
        loopback_up().map_err(setup("bring up lo"))?;
    }

    // Standard streams.
    if let Some(name) = console {
        nix::unistd::setsid().map_err(setup("setsid"))?;
        let slave = nix::fcntl::open(
            name.as_path(),
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(setup("open the terminal"))?;
        // SAFETY: TIOCSCTTY on our own terminal descriptor.
        if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } != 0 {
            return Err(setup("TIOCSCTTY")(Errno::last()));
        }
        for fd in 0..3 {
            nix::unistd::dup2(slave, fd).map_err(setup("dup2"))?;
        }
        if slave > 2 {
            let _ = nix::unistd::close(slave);
        }
    } else if !plan.interactive {
        let null = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty())
            .map_err(setup("open /dev/null"))?;
        nix::unistd::dup2(null, 0).map_err(setup("dup2"))?;
        let _ = nix::unistd::close(null);
    }

    let process = spec.process().as_ref().ok_or_else(|| other("config.json has no process"))?;
    // The working directory, created as Docker does when the image lacks it.
    let cwd = process.cwd();
    let cwd_fd = fs::ensure_in_root(libc::AT_FDCWD, cwd, Kind::Dir)
        .map_err(setup(format!("create working directory {}", cwd.display())))?;
    drop(cwd_fd);
    nix::unistd::chdir(cwd).map_err(|e| Failure {
        status: 125,
        message: format!("chdir to cwd ({:?}) set in config.json failed: {}", cwd, e.desc()),
    })?;
    // CVE-2024-21626: the cwd must be inside the container, not a leaked host directory.
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() && !p.to_string_lossy().starts_with("(unreachable)") => {}
        _ => return Err(other("current working directory is outside of container mount namespace root")),
    }
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o022) };

    // Confinement, in the order kist_common::security documents.
    if let Some(limits) = process.rlimits() {
        rlimits::apply(limits).map_err(|e| other(format!("setrlimit: {e}")))?;
    }
    let filter = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some(seccomp::compile(s).map_err(|e| other(format!("seccomp: {e}")))?),
        None => None,
    };
    // In the cgroup, with the network configured, before any privilege is
    // dropped (unsharing the cgroup namespace needs CAP_SYS_ADMIN).
    gate.pass()?;
    let nnp = process.no_new_privileges() == Some(true);
    if let (Some(f), false) = (&filter, nnp) {
        seccomp::load(f).map_err(|e| other(format!("seccomp: {e}")))?;
    }
    // No `capabilities` in config.json means none at all (as runc does),
    // not oci-spec's Default, which grants AUDIT_WRITE, KILL and
    // NET_BIND_SERVICE in every set.
    let capabilities = process.capabilities().clone().unwrap_or_else(|| caps::uniform(Default::default()));
    caps::prepare_for_setuid(&capabilities).map_err(|e| other(format!("capabilities: {e}")))?;
    let user = process.user();
    let gids: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids).map_err(setup("setgroups"))?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(user.gid())).map_err(setup("setgid"))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(user.uid())).map_err(setup("setuid"))?;
    caps::apply(&capabilities).map_err(|e| other(format!("capabilities: {e}")))?;
    if nnp {
        seccomp::no_new_privs().map_err(|e| other(format!("no_new_privs: {e}")))?;
        if let Some(f) = &filter {
            seccomp::load(f).map_err(|e| other(format!("seccomp: {e}")))?;
        }
    }
    close_other_fds(sock);
    reset_signals();

    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    if plan.init {
        super::reaper::run(sock, &args, &env)
    } else {
        Err(exec(&args, &env))
    }
}

/// The overlay of the snapshots at `rootfs/`. Lower directories are named
/// relative to their common parent (the chdir keeps the option string
/// short: the kernel takes at most a page of mount options).
fn mount_overlay(plan: &Plan) -> Result<(), Failure> {
    let lowers = &plan.lowerdirs;
    let common = lowers.first().and_then(|p| p.parent()).map(Path::to_path_buf);
    let relative = common.as_ref().is_some_and(|c| lowers.iter().all(|l| l.parent() == Some(c.as_path())));
    let lowerdir: Vec<String> = if relative {
        lowers
            .iter()
            .map(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
            .collect()
    } else {
        lowers.iter().map(|l| l.display().to_string()).collect()
    };
    if let (true, Some(c)) = (relative, &common) {
        nix::unistd::chdir(c.as_path()).map_err(setup(format!("chdir {}", c.display())))?;
    }
    let lowerdir = lowerdir.join(":");
    let mut data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        plan.paths.upper().display(),
        plan.paths.work().display()
    );
    if plan.ephemeral {
        data.push_str(",volatile");
    }
    // The kernel reads at most one page of mount(2) options; beyond that
    // (about 60 layers even with short names), the new mount API takes
    // every lower directory in its own fsconfig call.
    if data.len() >= 4000 {
        return mount_overlay_fsconfig(plan);
    }
    let target =
        CString::new(plan.paths.rootfs().display().to_string()).map_err(|_| other("bad rootfs path"))?;
    let d = CString::new(data).map_err(|_| other("bad overlay options"))?;
    fs::mount_raw(Some(c"overlay"), &target, Some(c"overlay"), MsFlags::empty(), Some(&d))
        .map_err(setup("mount the overlay root"))?;
    nix::unistd::chdir("/").map_err(setup("chdir /"))?;
    Ok(())
}

/// The overlay through fsopen/fsconfig("lowerdir+")/fsmount/move_mount.
fn mount_overlay_fsconfig(plan: &Plan) -> Result<(), Failure> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    // SAFETY: fsopen with a valid C string.
    let fsfd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    let fsfd = Errno::result(fsfd).map_err(setup("fsopen overlay"))? as RawFd;
    // SAFETY: the descriptor fsopen just returned.
    let _fs: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fsfd) };
    let set = |key: &str, value: &Path| -> Result<(), Failure> {
        let k = CString::new(key).map_err(|_| other("key"))?;
        let v = CString::new(value.display().to_string()).map_err(|_| other("overlay path"))?;
        // SAFETY: valid descriptor and C strings.
        let rc = unsafe {
            libc::syscall(libc::SYS_fsconfig, fsfd, FSCONFIG_SET_STRING, k.as_ptr(), v.as_ptr(), 0)
        };
        Errno::result(rc).map(drop).map_err(setup(format!("fsconfig {key}")))
    };
    for l in &plan.lowerdirs {
        set("lowerdir+", l)?;
    }
    set("upperdir", &plan.paths.upper())?;
    set("workdir", &plan.paths.work())?;
    if plan.ephemeral {
        const FSCONFIG_SET_FLAG: libc::c_uint = 0;
        // SAFETY: valid descriptor and C string, null value for a flag.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd,
                FSCONFIG_SET_FLAG,
                c"volatile".as_ptr(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        Errno::result(rc).map_err(setup("fsconfig volatile"))?;
    }
    // SAFETY: valid descriptor, null key and value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd,
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    Errno::result(rc).map_err(setup("create the overlay"))?;
    // SAFETY: valid descriptor.
    let mfd = unsafe { libc::syscall(libc::SYS_fsmount, fsfd, FSMOUNT_CLOEXEC, 0) };
    let mfd = Errno::result(mfd).map_err(setup("fsmount overlay"))? as RawFd;
    // SAFETY: the descriptor fsmount just returned.
    let _m: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(mfd) };
    let target =
        CString::new(plan.paths.rootfs().display().to_string()).map_err(|_| other("bad rootfs path"))?;
    // SAFETY: valid descriptors and C strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mfd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    Errno::result(rc).map_err(setup("move the overlay into place"))?;
    Ok(())
}

/// The point past which the init must be in its cgroup and have its
/// network: the parent's `G`. The parent attaches the network (and, where
/// the kernel refuses CLONE_INTO_CGROUP, moves the init into its cgroup
/// through `cgroup.procs`, which waits for an RCU grace period) while the
/// init builds its whole root before the gate: mounts, devices,
/// pivot_root, masked paths, host name, working directory, the compiled
/// seccomp filter. Nothing before the gate forks or execs, and no
/// privilege is dropped before it. With a cgroup namespace (cgroup v2) the
/// gate comes before the /sys/fs/cgroup mount, which must show the
/// container's cgroup as its root; without one, /sys/fs/cgroup binds the
/// cgroup directories the parent created, known by path, and needs no gate.
struct Gate {
    sock: RawFd,
    passed: std::cell::Cell<bool>,
    cgroup_ns: bool,
}

impl Gate {
    fn pass(&self) -> Result<(), Failure> {
        if self.passed.get() {
            return Ok(());
        }
        msg::wait_go(self.sock).map_err(setup("waiting for the parent"))?;
        if self.cgroup_ns {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
                .map_err(setup("unshare cgroup namespace"))?;
        }
        self.passed.set(true);
        Ok(())
    }
}

fn mount_one(plan: &Plan, root: RawFd, m: &Mount, gate: &Gate) -> Result<(), Failure> {
    let dst = m.destination();
    let typ = m.typ().as_deref().unwrap_or("bind");
    let options: Vec<String> = m.options().clone().unwrap_or_default();
    let (flags, data, readonly) = fs::parse_options(&options);
    let what = |op: &str| format!("{op} {} on {}", typ, dst.display());
    let is_bind = typ == "bind" || flags.contains(MsFlags::MS_BIND);
    if is_bind {
        let src =
            m.source().as_ref().ok_or_else(|| other(format!("mount {} has no source", dst.display())))?;
        let src_fd = nix::fcntl::open(
            src.as_path(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(setup(format!("open bind source {}", src.display())))?;
        // SAFETY: a descriptor we just opened.
        let src_fd: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(src_fd) };
        let kind = if nix::sys::stat::fstat(src_fd.as_raw_fd())
            .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .unwrap_or(true)
        {
            Kind::Dir
        } else {
            Kind::File
        };
        let target = fs::ensure_in_root(root, dst, kind).map_err(setup(what("create target for")))?;
        if let Some(v) = plan.volumes.iter().find(|v| v.fill && Path::new(&v.target) == dst) {
            let from = PathBuf::from(fs::fd_path(target.as_raw_fd()).to_string_lossy().into_owned());
            if from.is_dir() {
                fill_volume(v, &from)?;
            }
        }
        fs::bind_fd(src_fd.as_raw_fd(), &target, flags.contains(MsFlags::MS_REC))
            .map_err(setup(what("bind")))?;
        drop(target);
        let extra = flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
        if readonly || !extra.is_empty() {
            let f = if readonly { MsFlags::MS_RDONLY | extra } else { extra };
            fs::remount_in_root(root, dst, f).map_err(setup(what("remount")))?;
        }
        return Ok(());
    }
    if typ == "cgroup" {
        if gate.cgroup_ns {
            gate.pass()?;
        }
        return mount_cgroup(root, dst, flags, &plan.cgroup_path);
    }
    let target = fs::ensure_in_root(root, dst, Kind::Dir).map_err(setup(what("create target for")))?;
    let source = m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_else(|| typ.to_string());
    fs::mount_fs_on(&target, &source, typ, flags, &data.join(",")).map_err(setup(what("mount")))?;
    Ok(())
}

/// /sys/fs/cgroup: on cgroup v2 a cgroup2 mount (inside the container's
/// cgroup namespace); on v1 and hybrid hosts, as runc does, a tmpfs with
/// each v1 hierarchy's container directory (`cgroup_path` beneath the
/// hierarchy's mount point, created by the parent before the clone)
/// bind-mounted read-only; a hierarchy without one shows the cgroup the
/// init is in (inherited from ctr-spawn, the parent does not move it there).
fn mount_cgroup(root: RawFd, dst: &Path, flags: MsFlags, cgroup_path: &str) -> Result<(), Failure> {
    let target = fs::ensure_in_root(root, dst, Kind::Dir).map_err(setup("create /sys/fs/cgroup"))?;
    if crate::bundle::cgroup2_only() {
        return fs::mount_fs_on(&target, "cgroup", "cgroup2", flags, "").map_err(setup("mount cgroup2"));
    }
    fs::mount_fs_on(
        &target,
        "tmpfs",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME,
        "mode=755",
    )
    .map_err(setup("mount tmpfs on /sys/fs/cgroup"))?;
    drop(target);
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if r.first() != Some(&"cgroup") || l.len() < 5 || !l[4].starts_with("/sys/fs/cgroup/") {
            continue;
        }
        let mountpoint = l[4];
        let hroot = l[3];
        let name = &mountpoint["/sys/fs/cgroup/".len()..];
        let super_opts = r.get(2).copied().unwrap_or_default();
        // Which line of /proc/self/cgroup is this hierarchy: its controllers
        // (or name=) are among the super options.
        let path = mine.lines().find_map(|c| {
            let mut f = c.splitn(3, ':');
            let _id = f.next()?;
            let ctrls = f.next()?;
            let p = f.next()?;
            if !ctrls.is_empty() && ctrls.split(',').all(|x| super_opts.split(',').any(|o| o == x)) {
                Some(p.to_string())
            } else {
                None
            }
        });
        let own = Path::new(mountpoint).join(cgroup_path.trim_start_matches('/'));
        let src = if own.is_dir() {
            own
        } else {
            let Some(path) = path else { continue };
            let rel = path.strip_prefix(hroot).unwrap_or(&path).trim_start_matches('/');
            Path::new(mountpoint).join(rel)
        };
        let Ok(src_fd) = nix::fcntl::open(
            &src,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) else {
            continue;
        };
        // SAFETY: a descriptor we just opened.
        let src_fd: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(src_fd) };
        let sub = dst.join(name);
        let t =
            fs::ensure_in_root(root, &sub, Kind::Dir).map_err(setup(format!("create {}", sub.display())))?;
        fs::bind_fd(src_fd.as_raw_fd(), &t, false).map_err(setup(format!("bind {}", sub.display())))?;
        drop(t);
        let mut f = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if flags.contains(MsFlags::MS_RDONLY) {
            f |= MsFlags::MS_RDONLY;
        }
        fs::remount_in_root(root, &sub, f).map_err(setup(format!("remount {}", sub.display())))?;
    }
    Ok(())
}

/// runc's default devices and /dev symlinks.
fn create_devices(root: RawFd) -> Result<(), Failure> {
    let dev = fs::open_in_root(root, Path::new("/dev"), libc::O_DIRECTORY | libc::O_RDONLY)
        .map_err(setup("open /dev"))?;
    let d = dev.as_raw_fd();
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        let c = CString::new(name).map_err(|_| other("device name"))?;
        // SAFETY: valid fd and C string.
        let rc = unsafe { libc::mknodat(d, c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(major, minor)) };
        if rc != 0 && Errno::last() != Errno::EEXIST {
            return Err(setup(format!("mknod /dev/{name}"))(Errno::last()));
        }
        // SAFETY: valid fd and C string; the node was just made by us.
        unsafe { libc::fchownat(d, c.as_ptr(), 0, 0, libc::AT_SYMLINK_NOFOLLOW) };
    }
    let mut links = vec![
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("core", "/proc/kcore"));
    }
    for (name, target) in links {
        let c = CString::new(name).map_err(|_| other("link name"))?;
        let t = CString::new(target).map_err(|_| other("link target"))?;
        // SAFETY: valid fd and C strings.
        let rc = unsafe { libc::symlinkat(t.as_ptr(), d, c.as_ptr()) };
        if rc != 0 && Errno::last() != Errno::EEXIST {
            return Err(setup(format!("symlink /dev/{name}"))(Errno::last()));
        }
    }
    Ok(())
}

/// Opens a terminal pair on the container's own devpts, sends the master
/// to ctr-spawn and binds the slave on /dev/console; returns the slave's
/// path as the container will see it.
fn open_pty(root: RawFd, sock: RawFd) -> Result<PathBuf, Failure> {
    let master = fs::open_in_root(root, Path::new("/dev/pts/ptmx"), libc::O_RDWR | libc::O_NOCTTY)
        .map_err(setup("open /dev/pts/ptmx"))?;
    let m = master.as_raw_fd();
    let mut unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK and TIOCGPTN on our master, with pointers to locals.
    unsafe {
        if libc::ioctl(m, libc::TIOCSPTLCK, &mut unlock) != 0 {
            return Err(setup("unlockpt")(Errno::last()));
        }
        if libc::ioctl(m, libc::TIOCGPTN, &mut n) != 0 {
            return Err(setup("ptsname")(Errno::last()));
        }
    }
    let slave = PathBuf::from(format!("/dev/pts/{n}"));
    let slave_fd = fs::open_in_root(root, &slave, libc::O_PATH).map_err(setup("open the terminal"))?;
    let console = fs::ensure_in_root(root, Path::new("/dev/console"), Kind::File)
        .map_err(setup("create /dev/console"))?;
    fs::bind_fd(slave_fd.as_raw_fd(), &console, false).map_err(setup("bind /dev/console"))?;
    msg::send_fd(sock, m).map_err(setup("send the terminal"))?;
    Ok(slave)
}

/// A masked path: /dev/null over a file, an empty read-only tmpfs over a
/// directory; missing paths are skipped.
fn mask_path(root: RawFd, p: &Path) -> Result<(), Failure> {
    let fd = match fs::open_in_root(root, p, libc::O_PATH) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(setup(format!("mask {}", p.display()))(e)),
    };
    let is_dir = nix::sys::stat::fstat(fd.as_raw_fd())
        .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .unwrap_or(false);
    if is_dir {
        fs::mount_fs_on(&fd, "tmpfs", "tmpfs", MsFlags::MS_RDONLY, "")
            .map_err(setup(format!("mask {}", p.display())))
    } else {
        let null =
            fs::open_in_root(root, Path::new("/dev/null"), libc::O_PATH).map_err(setup("open /dev/null"))?;
        fs::bind_fd(null.as_raw_fd(), &fd, false).map_err(setup(format!("mask {}", p.display())))
    }
}

/// A read-only path: bound onto itself and remounted read-only.
fn readonly_path(root: RawFd, p: &Path) -> Result<(), Failure> {
    let fd = match fs::open_in_root(root, p, libc::O_PATH) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(setup(format!("read-only {}", p.display()))(e)),
    };
    fs::bind_fd(fd.as_raw_fd(), &fd, true).map_err(setup(format!("bind {}", p.display())))?;
    drop(fd);
    fs::remount_in_root(root, p, MsFlags::MS_RDONLY | MsFlags::MS_REC)
        .map_err(setup(format!("read-only {}", p.display())))
}

/// Brings the loopback interface of the new network namespace up.
fn loopback_up() -> Result<(), Errno> {
    // SAFETY: a plain socket call.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(Errno::last());
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS with a valid ifreq on our socket.
    let result = unsafe {
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) != 0 {
            Err(Errno::last())
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(s, libc::SIOCSIFFLAGS, &req) != 0 {
                Err(Errno::last())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: our socket.
    unsafe { libc::close(s) };
    result
}

/// Closes every descriptor except the standard streams and the CLOEXEC
/// status socket (CVE-2024-21626 class: no host descriptor survives).
pub fn close_other_fds(keep: RawFd) {
    let ranges = [(3u32, (keep as u32).saturating_sub(1)), ((keep as u32) + 1, u32::MAX)];
    for (lo, hi) in ranges {
        if lo > hi {
            continue;
        }
        // SAFETY: close_range only closes descriptors.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
        if rc != 0 {
            // Filtered or unsupported: close them one by one.
            let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
                .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
                .unwrap_or_default();
            for fd in open {
                if fd >= lo as RawFd && (fd as i64) <= hi as i64 {
                    let _ = nix::unistd::close(fd);
                }
            }
        }
    }
}

/// Default dispositions and an empty mask: Rust ignores SIGPIPE and the
/// parent blocked the signals it forwards; the container must see neither.
pub fn reset_signals() {
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: resetting a disposition to the default.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// Finds the command in the container's PATH and execs it; returns only on
/// failure, with Docker's message and status.
pub fn exec(args: &[String], env: &[String]) -> Failure {
    let Some(arg0) = args.first() else {
        return other("no command specified");
    };
    let path = if arg0.contains('/') {
        PathBuf::from(arg0)
    } else {
        let search = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(crate::bundle::DEFAULT_PATH);
        let found =
            search.split(':').map(|d| Path::new(if d.is_empty() { "." } else { d }).join(arg0)).find(|p| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(p)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            });
        match found {
            Some(p) => p,
            None => {
                return Failure {
                    status: 127,
                    message: format!("exec: \"{arg0}\": executable file not found in $PATH"),
                };
            }
        }
    };
    let to_c = |s: &str| CString::new(s).unwrap_or_default();
    let c_path = to_c(&path.to_string_lossy());
    let c_args: Vec<CString> = args.iter().map(|a| to_c(a)).collect();
    let c_env: Vec<CString> = env.iter().map(|e| to_c(e)).collect();
    let e = match nix::unistd::execve(&c_path, &c_args, &c_env) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let (status, words) = match e {
        Errno::ENOENT => (127, format!("stat {}: no such file or directory", path.display())),
        Errno::EACCES | Errno::EISDIR | Errno::EPERM => (126, "permission denied".to_string()),
        Errno::ENOEXEC => (126, "exec format error".to_string()),
        other => (126, other.desc().to_lowercase()),
    };
    Failure { status, message: format!("exec: \"{arg0}\": {words}") }
}

//! The monitor of a detached container (`ctr-spawn -d`, `--start`,
//! `--restore`). ctr-spawn forks the monitor (in a session of its own, it
//! outlives ctr-spawn; it stays a host process and never enters the
//! container). In the monitor process ctr-spawn creates the cgroup,
//! starts the container (its init a child of the monitor, which is a
//! subreaper; the init has PDEATHSIG KILL, so a killed monitor takes its
//! container along and ctr-list reports the exit truthfully), records it
//! as running (made durable right after), tells the waiting ctr-spawn
//! over a pipe whether the start succeeded (and if not, why, with the 125/126/127 status), and then
//! execs ctr-monitor, handing over the init, its output pipes (or the
//! pty's master) and its port sockets: the resident monitor is that small
//! binary (kist_common::monitor does the watching: logs, exit, restart
//! policy, --rm). For a restart ctr-monitor execs `ctr-spawn
//! --monitor-resume ID` back in the same process, which starts the
//! container again and hands over again ([`resume`]).
//!
//! Without a ctr-monitor next to ctr-spawn, the monitor process stays
//! ctr-spawn and calls kist_common::monitor itself: the same behaviour,
//! more resident memory.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use kist_common::container::{self, Status};
use kist_common::lifecycle;
use kist_common::logfile::Stream;
use kist_common::monitor::{self as watcher, Handover, Next, Run};
use kist_common::teardown;
use kist_common::StateRoot;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigmaskHow, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

use super::cgroups;
use crate::bundle::Plan;
use crate::restart::Backoff;
use crate::Error;

/// Starts the monitor for an existing (created or exited) container and
/// waits until the container runs; returns once it does, or with the
/// reason it could not start.
pub fn spawn(root: &StateRoot, plan: Plan) -> Result<(), Error> {
    let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe"))?;
    // SAFETY: ctr-spawn is single-threaded here; the child becomes the
    // monitor. One fork is enough: the monitor leads a session of its own
    // (setsid) and never opens a terminal (a pty's master comes over a
    // socket), so it cannot gain a controlling terminal; when ctr-spawn
    // exits it is reparented like any orphan.
    match unsafe { fork() }.map_err(Error::sys("fork"))? {
        ForkResult::Child => {
            drop(report_r);
            let _ = nix::unistd::setsid();
            let code = monitor(root, &plan, report_w);
            // SAFETY: ending the monitor without running the parent's
            // destructors (its guards belong to ctr-spawn).
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            let mut answer = String::new();
            let _ = std::fs::File::from(report_r).read_to_string(&mut answer);
            let answer = answer.trim_end();
            if answer == "ok" {
                return Ok(());
            }
            // A monitor that could not start its container ends at once.
            let _ = waitpid(child, None);
            let (status, message) = answer
                .split_once(' ')
                .and_then(|(s, m)| Some((s.parse::<u8>().ok()?, m.to_string())))
                .unwrap_or((125, format!("the monitor failed before starting the container: {answer:?}")));
            if status == 126 || status == 127 {
                Err(Error::Exec { message, status })
            } else {
                Err(Error::Sys(message))
            }
        }
    }
}

fn report(fd: &mut Option<OwnedFd>, line: &str) {
    if let Some(fd) = fd.take() {
        let _ = std::fs::File::from(fd).write_all(format!("{line}\n").as_bytes());
    }
}

/// Closes every descriptor above 2 but `keep`: the monitor lives long and
/// must not hold its caller's pipes open (`id=$(ctr-spawn -d …)` would
/// never finish).
fn close_inherited(keep: RawFd) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect(),
        Err(_) => return,
    };
    for fd in fds.into_iter().filter(|fd| *fd > 2 && *fd != keep) {
        // SAFETY: closing descriptors nothing in the monitor uses any more
        // (the directory's own descriptor is already closed).
        unsafe { libc::close(fd) };
    }
}

/// Points fds 0, 1 and 2 at /dev/null.
fn null_stdio() {
    if let Ok(null) = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty()) {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null, fd);
        }
        if null > 2 {
            let _ = nix::unistd::close(null);
        }
    }
}

/// The monitor process's set-up: what it keeps for the container's whole
/// life (survives the exec into ctr-monitor and back).
fn become_monitor(keep: RawFd, plan: &Plan) {
    close_inherited(keep);
    null_stdio();
    // Not to pin the caller's working directory (and its mount) for the
    // container's whole life, when no path of the plan depends on it.
    if plan.lowerdirs.iter().chain(plan.volumes.iter().map(|v| &v.data)).all(|p| p.is_absolute()) {
        let _ = nix::unistd::chdir("/");
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // The relayed signals stay blocked (they are the container's business,
    // and SIGCHLD is read from a signalfd); exec keeps the mask.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&super::relayed_signals()), None);
}

/// The monitor's life, from its first start; returns its exit status.
fn monitor(root: &StateRoot, plan: &Plan, report_w: OwnedFd) -> i32 {
    become_monitor(report_w.as_raw_fd(), plan);
    let mut report_fd = Some(report_w);
    let resources = plan.spec.linux().as_ref().and_then(|l| l.resources().clone()).unwrap_or_default();
    // What an earlier, killed monitor left of the cgroup goes first.
    let _ = teardown::destroy_cgroup(&plan.cgroup_path);
    let cgroup = match cgroups::create(&plan.cgroup_path, &resources) {
        Ok(c) => c,
        Err(e) => {
            report(&mut report_fd, &format!("125 {e}"));
            let _ =
                watcher::after_exit(root, &plan.id, 125, false, false, Duration::ZERO, Backoff::default());
            return 1;
        }
    };
    supervise(root, plan, &cgroup, report_fd, Backoff::default())
}

/// `ctr-spawn --monitor-resume ID --backoff-ms MS`: ctr-monitor execs this
/// in the monitor process to start the container again after an exit the
/// policy restarts; returns the monitor's exit status.
pub fn resume(root: &StateRoot, id: &str, backoff_ms: u64) -> u8 {
    let backoff = Backoff::with_next(Duration::from_millis(backoff_ms));
    let prepared = lifecycle::load(root, id).map_err(Error::from).and_then(|state| {
        let (plan, _) = super::create::load_plan(root, &state)?;
        let resources = plan.spec.linux().as_ref().and_then(|l| l.resources().clone()).unwrap_or_default();
        // The cgroup lives from the first start to the monitor's end; this
        // finds it (and sets its limits again).
        let cgroup = cgroups::create(&plan.cgroup_path, &resources)?;
        Ok((plan, cgroup))
    });
    let code = match prepared {
        Ok((plan, cgroup)) => supervise(root, &plan, &cgroup, None, backoff),
        Err(e) => {
            // Recorded as a start that failed (the policy may try again),
            // but without what starting needs there is nothing to restart.
            kist_common::warn!("container {}: cannot start it again: {e}", id.get(..12).unwrap_or(id));
            let next =
                watcher::after_exit(root, id, i32::from(e.status()), false, false, Duration::ZERO, backoff);
            let cgroup = lifecycle::load(root, id)
                .map(|s| watcher::cgroup_of(&s))
                .unwrap_or_else(|_| format!("kist/{id}"));
            i32::from(watcher::finish(root, id, &cgroup, matches!(next, Next::Removed)).is_err())
        }
    };
    u8::try_from(code).unwrap_or(1)
}

/// Starts the container and watches it until the policy lets it rest;
/// hands the watching over to ctr-monitor when it is installed (then this
/// returns only if the exec failed). `report_fd` is the first start's
/// pipe to the waiting ctr-spawn.
fn supervise(
    root: &StateRoot,
    plan: &Plan,
    cgroup: &cgroups::Cgroup,
    mut report_fd: Option<OwnedFd>,
    mut backoff: Backoff,
) -> i32 {
    let id = plan.id.clone();
    let mut failure = None;
    let removed = loop {
        let next = match start_once(root, plan, cgroup, &mut report_fd) {
            Ok(run) => {
                let run = hand_over(root, &id, run, backoff);
                watcher::watch(root, &id, run, backoff)
            }
            Err(e) => {
                // The first start's failure is told once the exit is
                // recorded (and with --rm, removed), so that what ctr-spawn's
                // caller sees next is final. A container that could not
                // start at all is not restarted (Docker leaves it as it is);
                // a failed restart counts as a run.
                let first = report_fd.is_some();
                if let Some(fd) = report_fd.take() {
                    failure = Some((fd, format!("{} {e}", e.status())));
                }
                let oom = cgroup.oom_killed();
                watcher::after_exit(root, &id, i32::from(e.status()), oom, !first, Duration::ZERO, backoff)
            }
        };
        match next {
            Next::Restart(b) => backoff = b,
            Next::Stop => break false,
            Next::Removed => break true,
        }
    };
    let finished = watcher::finish(root, &id, &plan.cgroup_path, removed);
    if let Some((fd, message)) = failure {
        report(&mut Some(fd), &message);
    }
    i32::from(finished.is_err())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe"))
}

/// Starts the container once with its output on pipes and records it as
/// running; tells the waiting ctr-spawn (first start only).
fn start_once(
    root: &StateRoot,
    plan: &Plan,
    cgroup: &cgroups::Cgroup,
    report_fd: &mut Option<OwnedFd>,
) -> Result<Run, Error> {
    let tty = plan.spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // With -i the container's stdin stays open (nothing is ever written).
    let mut stdin = None;
    if !tty {
        let _ = nix::unistd::dup2(out_w.as_raw_fd(), 1);
        let _ = nix::unistd::dup2(err_w.as_raw_fd(), 2);
        if plan.interactive {
            let (in_r, in_w) = pipe()?;
            let _ = nix::unistd::dup2(in_r.as_raw_fd(), 0);
            stdin = Some(in_w);
        }
    }
    let started = super::start(root, plan, Some(cgroup));
    null_stdio();
    drop(out_w);
    drop(err_w);
    let mut running = started?;
    let pid = running.pid;
    let owner = std::process::id() as i32;
    let (ports, networks) = super::attached::net_view(&running);
    // Told before it is durable: the fsync follows the report.
    let saved = lifecycle::update_deferred(root, &plan.id, |s| {
        s.ports = ports;
        s.networks = networks;
        s.status = Status::Running;
        s.pid = Some(pid.as_raw());
        s.owner_pid = Some(owner);
        s.started_at = Some(container::now_rfc3339());
        s.finished_at = None;
        s.exit_code = None;
        s.oom_killed = false;
        s.boot_id = container::boot_id();
    });
    let saved = match saved {
        Ok((state, ())) => state,
        Err(e) => {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(e.into());
        }
    };
    report(report_fd, "ok");
    if !saved.auto_remove {
        let _ = lifecycle::sync_state(root, &plan.id);
    }
    let outputs = match running.terminal.take() {
        Some(master) => vec![(master, Stream::Stdout)],
        None => vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)],
    };
    let (network, ports) = match running.net.take() {
        Some(a) => {
            let (n, p) = a.hand_over();
            (Some(n), p)
        }
        None => (None, Vec::new()),
    };
    Ok(Run { pid, outputs, stdin, network, ports })
}

/// This executable's path, as a restart must find it again (a binary
/// replaced by an upgrade shows as "PATH (deleted)": the new one is meant).
fn own_exe() -> Option<PathBuf> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let text = exe.as_os_str().as_bytes();
    Some(match text.strip_suffix(b" (deleted)") {
        Some(t) => PathBuf::from(std::ffi::OsStr::from_bytes(t)),
        None => exe,
    })
}

/// Execs ctr-monitor (next to this executable) with the running container
/// handed over; returns the run untouched when there is none or the exec
/// failed, for this process to watch it itself.
fn hand_over(root: &StateRoot, id: &str, run: Run, backoff: Backoff) -> Run {
    let Some(spawn) = own_exe() else { return run };
    let Some(monitor) = spawn.parent().map(|d| d.join("ctr-monitor")).filter(|p| p.is_file()) else {
        return run;
    };
    let fd_of = |s: Stream| run.outputs.iter().find(|(_, x)| *x == s).map(|(fd, _)| fd.as_raw_fd());
    let h = Handover {
        root: root.path().to_path_buf(),
        id: id.to_string(),
        pid: run.pid.as_raw(),
        stdout_fd: fd_of(Stream::Stdout),
        stderr_fd: fd_of(Stream::Stderr),
        stdin_fd: run.stdin.as_ref().map(|fd| fd.as_raw_fd()),
        network: run.network.clone(),
        port_fds: run.ports.iter().map(|fd| fd.as_raw_fd()).collect(),
        backoff,
        respawn: spawn,
    };
    let inherited: Vec<RawFd> = [h.stdout_fd, h.stderr_fd, h.stdin_fd]
        .into_iter()
        .flatten()
        .chain(h.port_fds.iter().copied())
        .collect();
    for fd in &inherited {
        let _ = nix::fcntl::fcntl(*fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()));
    }
    let argv: Result<Vec<CString>, _> = std::iter::once(monitor.as_os_str().to_os_string())
        .chain(h.args())
        .map(|a| CString::new(a.as_bytes()))
        .collect();
    if let Ok(argv) = argv {
        // execv keeps the blocked signals and the subreaper flag; on success
        // this process is ctr-monitor from here on.
        let _ = nix::unistd::execv(&argv[0], &argv);
    }
    for fd in &inherited {
        let _ = nix::fcntl::fcntl(*fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    }
    run
}

//! The monitor of a detached container (`ctr-spawn -d`, `--start`,
//! `--restore`). ctr-spawn forks twice (the monitor gets its own session
//! and outlives ctr-spawn; nothing is re-executed, the monitor stays a
//! host process and never enters the container), and the monitor:
//! - is the subreaper parent of the container's init (the init has
//!   PDEATHSIG KILL, so a killed monitor takes its container along and
//!   ctr-list reports the exit truthfully);
//! - captures stdout/stderr through pipes (or the pty's output with -t)
//!   into `log.jsonl` (see [`super::logfile`]);
//! - records the start and the exit (status, time, OOM kill) through
//!   kist_common::lifecycle::update, keeping ctr-kill's stoppedByUser;
//! - applies the restart policy with Docker's backoff, and removes the
//!   container at the end with --rm (kist_common::teardown).
//!
//! It is one thread sleeping in poll(2) on the output pipes and a
//! signalfd for SIGCHLD. ctr-spawn learns over a pipe whether the first
//! start succeeded (and if not, why, with the 125/126/127 status).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use kist_common::container::{self, ContainerError, Status};
use kist_common::lifecycle;
use kist_common::teardown::{self, Removal};
use kist_common::StateRoot;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::cgroups;
use super::create::Launch;
use super::logfile::{LogFile, Stream};
use crate::bundle::Plan;
use crate::restart::Backoff;
use crate::Error;

/// Starts the monitor for an existing (created or exited) container and
/// waits until the container runs; returns once it does, or with the
/// reason it could not start.
pub fn spawn(root: &StateRoot, plan: Plan, launch: Launch) -> Result<(), Error> {
    let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe"))?;
    // SAFETY: ctr-spawn is single-threaded here; the child only forks
    // again and exits, or becomes the monitor.
    match unsafe { fork() }.map_err(Error::sys("fork"))? {
        ForkResult::Child => {
            drop(report_r);
            let _ = nix::unistd::setsid();
            // SAFETY: still single-threaded.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    let code = monitor(root, &plan, &launch, report_w);
                    // SAFETY: ending the monitor without running the
                    // parent's destructors (its guards belong to ctr-spawn).
                    unsafe { libc::_exit(code) }
                }
                // SAFETY: as above: the intermediate child leaves at once.
                _ => unsafe { libc::_exit(0) },
            }
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            let _ = waitpid(child, None);
            let mut answer = String::new();
            let _ = std::fs::File::from(report_r).read_to_string(&mut answer);
            let answer = answer.trim_end();
            if answer == "ok" {
                return Ok(());
            }
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

/// The monitor's life; returns its exit status.
fn monitor(root: &StateRoot, plan: &Plan, launch: &Launch, report_w: OwnedFd) -> i32 {
    close_inherited(report_w.as_raw_fd());
    let mut report_fd = Some(report_w);
    null_stdio();
    // Not to pin the caller's working directory (and its mount) for the
    // container's whole life, when no path of the plan depends on it.
    if plan.lowerdirs.iter().chain(plan.volumes.iter().map(|v| &v.data)).all(|p| p.is_absolute()) {
        let _ = nix::unistd::chdir("/");
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&super::relayed_signals()), None);
    let sfd = match nix::sys::signalfd::SignalFd::with_flags(
        &chld,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    ) {
        Ok(s) => s,
        Err(e) => {
            report(&mut report_fd, &format!("125 signalfd: {}", e.desc()));
            return 1;
        }
    };
    let id = plan.id.clone();
    let resources = plan.spec.linux().as_ref().and_then(|l| l.resources().clone()).unwrap_or_default();
    // What an earlier, killed monitor left of the cgroup goes first.
    let _ = teardown::destroy_cgroup(&plan.cgroup_path);
    let cgroup = match cgroups::create(&plan.cgroup_path, &resources) {
        Ok(c) => c,
        Err(e) => {
            report(&mut report_fd, &format!("125 {e}"));
            let _ = record_exit(root, &id, 125, false, false);
            return 1;
        }
    };
    let mut log = LogFile::new(plan.paths.log(), launch.log);
    let mut backoff = Backoff::default();
    let mut first = true;
    let mut failure = None;
    let removed = loop {
        let began = Instant::now();
        let outcome = run_once(root, plan, &cgroup, &mut log, sfd.as_raw_fd(), &mut report_fd);
        let started = outcome.is_ok() || !first;
        first = false;
        let code = match outcome {
            Ok(code) => code,
            Err(e) => {
                // Told once the exit is recorded (and with --rm, removed), so
                // that what ctr-spawn's caller sees next is final.
                if report_fd.is_some() {
                    failure = Some(format!("{} {e}", e.status()));
                }
                i32::from(e.status())
            }
        };
        let oom = cgroup.oom_killed();
        // A container that could not start at all is not restarted
        // (Docker leaves it as it is).
        match record_exit(root, &id, code, oom, started && launch.restart != crate::restart::Policy::No) {
            Ok(Some(true)) => {}
            Ok(Some(false)) => break false,
            Ok(None) => break true,
            Err(_) => break false,
        }
        let delay = backoff.delay(began.elapsed());
        match wait_restart(root, &id, delay) {
            Ok(true) => {}
            Ok(false) => break false,
            Err(()) => break true,
        }
    };
    let destroyed = cgroup.destroy();
    if !removed {
        if let Ok(state) = lifecycle::load(root, &id) {
            if state.auto_remove {
                let _ = teardown::remove(root, &id, &Removal::of(&state, true));
            }
        }
    }
    if let Some(f) = failure {
        report(&mut report_fd, &f);
    }
    if destroyed.is_err() {
        1
    } else {
        0
    }
}

/// Records an exit and decides (under the state lock, so a concurrent
/// ctr-kill --stop is seen) whether the policy restarts the container:
/// Some(true) restart, Some(false) stay down, None removed meanwhile.
fn record_exit(
    root: &StateRoot,
    id: &str,
    code: i32,
    oom: bool,
    may_restart: bool,
) -> Result<Option<bool>, Error> {
    let policy = |s: &kist_common::container::ContainerState| -> bool {
        may_restart && policy_of(root, id).restarts(code, s.restart_count, s.stopped_by_user)
    };
    let pid = std::process::id() as i32;
    match lifecycle::update(root, id, |s| {
        s.pid = None;
        s.exit_code = Some(code);
        s.oom_killed = oom;
        s.finished_at = Some(container::now_rfc3339());
        s.ports.clear();
        s.networks.clear();
        let again = policy(s);
        if again {
            s.status = Status::Restarting;
            s.restart_count += 1;
            s.owner_pid = Some(pid);
        } else {
            s.status = Status::Exited;
            s.owner_pid = None;
        }
        again
    }) {
        Ok((_, again)) => Ok(Some(again)),
        Err(ContainerError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn policy_of(root: &StateRoot, id: &str) -> crate::restart::Policy {
    let paths = container::ContainerPaths::new(root, id);
    std::fs::read(super::create::launch_path(&paths))
        .ok()
        .and_then(|b| serde_json::from_slice::<Launch>(&b).ok())
        .map(|l| l.restart)
        .unwrap_or_default()
}

/// Sleeps out the backoff, watching for a stop by the user or a removal:
/// Ok(true) start again, Ok(false) stopped (recorded as exited), Err removed.
fn wait_restart(root: &StateRoot, id: &str, delay: Duration) -> Result<bool, ()> {
    let end = Instant::now() + delay;
    loop {
        let now = Instant::now();
        let stopped = match lifecycle::load(root, id) {
            Ok(s) => s.stopped_by_user,
            Err(_) => return Err(()),
        };
        if stopped {
            let _ = lifecycle::update(root, id, |s| {
                s.status = Status::Exited;
                s.owner_pid = None;
            });
            return Ok(false);
        }
        if now >= end {
            return Ok(true);
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe"))
}

/// One run of the container: start it with its output on pipes, record
/// it as running, log its output until the init exits; returns the
/// Docker-style status.
fn run_once(
    root: &StateRoot,
    plan: &Plan,
    cgroup: &cgroups::Cgroup,
    log: &mut LogFile,
    sfd: RawFd,
    report_fd: &mut Option<OwnedFd>,
) -> Result<i32, Error> {
    let tty = plan.spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // With -i the container's stdin stays open (nothing is ever written).
    let mut _stdin_keep = None;
    if !tty {
        let _ = nix::unistd::dup2(out_w.as_raw_fd(), 1);
        let _ = nix::unistd::dup2(err_w.as_raw_fd(), 2);
        if plan.interactive {
            let (in_r, in_w) = pipe()?;
            let _ = nix::unistd::dup2(in_r.as_raw_fd(), 0);
            _stdin_keep = Some(in_w);
        }
    }
    let started = super::start(root, plan, Some(cgroup));
    null_stdio();
    drop(out_w);
    drop(err_w);
    let running = started?;
    let pid = running.pid;
    let owner = std::process::id() as i32;
    let (ports, networks) = super::attached::net_view(&running);
    let saved = lifecycle::update(root, &plan.id, |s| {
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
    if let Err(e) = saved {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(e.into());
    }
    report(report_fd, "ok");
    let mut sources: Vec<(OwnedFd, Stream)> = match running.terminal {
        Some(master) => vec![(master, Stream::Stdout)],
        None => vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)],
    };
    for (fd, _) in &sources {
        let _ = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    }
    let mut buf = vec![0u8; 32 * 1024];
    let mut status = None;
    loop {
        let mut pfds: Vec<libc::pollfd> = sources
            .iter()
            .map(|(fd, _)| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        pfds.push(libc::pollfd { fd: sfd, events: libc::POLLIN, revents: 0 });
        // SAFETY: a valid array of pollfds of the length passed.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue;
        }
        let mut closed = Vec::new();
        for (i, (fd, stream)) in sources.iter().enumerate() {
            if pfds[i].revents == 0 {
                continue;
            }
            if !drain(fd.as_raw_fd(), *stream, log, &mut buf) {
                log.flush(*stream);
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            sources.remove(i);
        }
        if pfds[pfds.len() - 1].revents != 0 {
            let mut info = std::mem::MaybeUninit::<libc::signalfd_siginfo>::uninit();
            // SAFETY: reading one siginfo into a buffer of its size.
            while unsafe {
                libc::read(sfd, info.as_mut_ptr().cast(), std::mem::size_of::<libc::signalfd_siginfo>())
            } > 0
            {}
            // Reap the init and every orphan handed to us as subreaper.
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(p, code)) if p == pid => status = Some(code),
                    Ok(WaitStatus::Signaled(p, s, _)) if p == pid => status = Some(128 + s as i32),
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        if let Some(code) = status {
            // What the init wrote before it exited is in the pipes: take it,
            // but do not wait for descendants that keep them open.
            for (fd, stream) in &sources {
                drain(fd.as_raw_fd(), *stream, log, &mut buf);
                log.flush(*stream);
            }
            return Ok(code);
        }
    }
}

/// Reads what is available; false at the end of the stream.
fn drain(fd: RawFd, stream: Stream, log: &mut LogFile, buf: &mut [u8]) -> bool {
    loop {
        // SAFETY: reading into a valid buffer of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            log.feed(stream, &buf[..n as usize]);
            continue;
        }
        if n == 0 {
            return false;
        }
        let e = nix::errno::Errno::last();
        return match e {
            nix::errno::Errno::EAGAIN => true,
            nix::errno::Errno::EINTR => continue,
            // EIO: the pty's slave side is closed.
            _ => false,
        };
    }
}

//! What the monitor of a detached container does while the container
//! runs, and after it exits: log its output, reap it (the monitor is its
//! init's parent and a subreaper), release its network lease, record the
//! exit, apply the restart policy with Docker's backoff, and at the very
//! end remove the cgroup (and the container with --rm).
//!
//! ctr-spawn starts the container and then hands the running init over to
//! ctr-monitor, a small binary that calls [`watch`], so that what stays
//! resident per container is a few hundred kilobytes and not the whole
//! runtime (ctr-spawn calls [`watch`] itself when ctr-monitor is not
//! installed). Starting the container again is ctr-spawn's job: the
//! monitor execs it for a restart, in the same process, so the container's
//! owner pid never changes.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::container::{self, ContainerError, ContainerPaths, ContainerState, Status};
use crate::lifecycle;
use crate::logfile::{LogFile, Stream};
use crate::restart::{Backoff, LogOpts, Policy};
use crate::teardown::{self, Removal, TeardownError};
use crate::StateRoot;

/// The file in a container's directory that holds what starting it needs
/// beyond config.json (ctr-spawn writes it); the monitor reads the restart
/// policy and the log options from it.
pub const LAUNCH_FILE: &str = "spawn.json";

/// The part of the launch file the monitor reads.
#[derive(Debug, Default, serde::Deserialize)]
struct LaunchView {
    #[serde(default)]
    restart: Policy,
    #[serde(default)]
    log: LogOpts,
}

fn launch_view(root: &StateRoot, id: &str) -> LaunchView {
    let paths = ContainerPaths::new(root, id);
    std::fs::read(paths.dir.join(LAUNCH_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The container's cgroup, relative to the hierarchy (as in state.json).
pub fn cgroup_of(state: &ContainerState) -> String {
    state.cgroup.clone().unwrap_or_else(|| format!("kist/{}", state.id))
}

/// One run of the container, as the monitor holds it.
#[derive(Debug)]
pub struct Run {
    /// The container's init, a child of this process.
    pub pid: Pid,
    /// Its output: the stdout and stderr pipes, or the pty's master as stdout.
    pub outputs: Vec<(OwnedFd, Stream)>,
    /// With -i: the write end of the stdin pipe, held so stdin stays open.
    pub stdin: Option<OwnedFd>,
    /// The network whose lease goes when the init has exited.
    pub network: Option<String>,
    /// The sockets that hold its published host ports.
    pub ports: Vec<OwnedFd>,
}

/// What ctr-spawn tells ctr-monitor on its command line when it hands a
/// running container over: descriptors by number (inherited across exec),
/// the rest by value. [`Handover::args`] writes it; ctr-monitor's parser
/// reads it back (a test there holds the two together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub root: PathBuf,
    pub id: String,
    pub pid: i32,
    pub stdout_fd: Option<RawFd>,
    pub stderr_fd: Option<RawFd>,
    pub stdin_fd: Option<RawFd>,
    pub network: Option<String>,
    pub port_fds: Vec<RawFd>,
    pub backoff: Backoff,
    /// The ctr-spawn to exec for a restart.
    pub respawn: PathBuf,
}

impl Handover {
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> =
            vec!["--root".into(), self.root.clone().into(), "--id".into(), self.id.clone().into()];
        let mut put = |flag: &str, value: String| {
            a.push(flag.into());
            a.push(value.into());
        };
        put("--pid", self.pid.to_string());
        for (flag, fd) in
            [("--stdout-fd", self.stdout_fd), ("--stderr-fd", self.stderr_fd), ("--stdin-fd", self.stdin_fd)]
        {
            if let Some(fd) = fd {
                put(flag, fd.to_string());
            }
        }
        if let Some(n) = &self.network {
            put("--network", n.clone());
        }
        for fd in &self.port_fds {
            put("--port-fd", fd.to_string());
        }
        put("--backoff-ms", self.backoff.next().as_millis().to_string());
        a.push("--respawn".into());
        a.push(self.respawn.clone().into());
        a
    }
}

/// What comes after a run.
#[derive(Debug)]
pub enum Next {
    /// The policy starts the container again; the backoff is the one to
    /// go on with.
    Restart(Backoff),
    /// It stays down, recorded as exited.
    Stop,
    /// It was removed meanwhile (ctr-kill --rm -f): nothing to record.
    Removed,
}

/// Watches one run of container `id` until its init exits, then records
/// the exit and sleeps out the backoff if the policy restarts it.
pub fn watch(root: &StateRoot, id: &str, run: Run, backoff: Backoff) -> Next {
    let began = Instant::now();
    let Run { pid, outputs, stdin, network, ports } = run;
    let launch = launch_view(root, id);
    let mut log = LogFile::new(ContainerPaths::new(root, id).log(), launch.log);
    let code = log_until_exit(pid, outputs, &mut log);
    drop(stdin);
    // The host ports are free again before the next start takes them.
    drop(ports);
    if let Some(net) = network {
        let _ = crate::net::detach(root, &net, id);
    }
    let oom = lifecycle::load(root, id).map(|s| oom_killed(&cgroup_of(&s))).unwrap_or(false);
    after_exit(root, id, code, oom, launch.restart != Policy::No, began.elapsed(), backoff)
}

/// Records an exit (also one of a start that failed) and decides what
/// comes next: `may_restart` false keeps it down whatever the policy.
pub fn after_exit(
    root: &StateRoot,
    id: &str,
    code: i32,
    oom: bool,
    may_restart: bool,
    ran: Duration,
    mut backoff: Backoff,
) -> Next {
    match record_exit(root, id, code, oom, may_restart) {
        Ok(true) => {}
        Ok(false) => return Next::Stop,
        Err(ContainerError::NotFound(_)) => return Next::Removed,
        Err(_) => return Next::Stop,
    }
    match wait_restart(root, id, backoff.delay(ran)) {
        Some(true) => Next::Restart(backoff),
        Some(false) => Next::Stop,
        None => Next::Removed,
    }
}

/// The end of the monitor: the cgroup goes (with whatever --pid host left
/// in it), and with --rm the container too, unless it was removed already.
pub fn finish(root: &StateRoot, id: &str, cgroup: &str, removed: bool) -> Result<(), TeardownError> {
    let destroyed = teardown::destroy_cgroup(cgroup);
    if !removed {
        if let Ok(state) = lifecycle::load(root, id) {
            if state.auto_remove {
                teardown::remove(root, id, &Removal::of(&state, true))?;
            }
        }
    }
    destroyed
}

/// Whether the kernel's OOM killer struck in the cgroup.
pub fn oom_killed(cgroup: &str) -> bool {
    crate::cgroup::host()
        .and_then(|layout| crate::cgroup::open(&layout, cgroup))
        .and_then(|cg| cg.oom_killed())
        .unwrap_or(false)
}

/// Records the exit and, under the state lock (so that a concurrent
/// ctr-kill --stop is seen), whether the policy restarts the container.
fn record_exit(
    root: &StateRoot,
    id: &str,
    code: i32,
    oom: bool,
    may_restart: bool,
) -> Result<bool, ContainerError> {
    let policy = launch_view(root, id).restart;
    let me = std::process::id() as i32;
    let (_, again) = lifecycle::update(root, id, |s| {
        s.pid = None;
        s.exit_code = Some(code);
        s.oom_killed = oom;
        s.finished_at = Some(container::now_rfc3339());
        s.ports.clear();
        s.networks.clear();
        let again = may_restart && policy.restarts(code, s.restart_count, s.stopped_by_user);
        if again {
            s.status = Status::Restarting;
            s.restart_count += 1;
            s.owner_pid = Some(me);
        } else {
            s.status = Status::Exited;
            s.owner_pid = None;
        }
        again
    })?;
    Ok(again)
}

/// Sleeps out the backoff, watching for a stop by the user or a removal:
/// Some(true) start again, Some(false) stopped (recorded as exited), None
/// removed.
fn wait_restart(root: &StateRoot, id: &str, delay: Duration) -> Option<bool> {
    let end = Instant::now() + delay;
    loop {
        let now = Instant::now();
        let stopped = lifecycle::load(root, id).ok()?.stopped_by_user;
        if stopped {
            let _ = lifecycle::update(root, id, |s| {
                s.status = Status::Exited;
                s.owner_pid = None;
            });
            return Some(false);
        }
        if now >= end {
            return Some(true);
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// A signalfd for SIGCHLD (blocked first, as a signalfd needs). Without
/// one the loop polls with a timeout instead.
fn sigchld_fd() -> Option<nix::sys::signalfd::SignalFd> {
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), None).ok()?;
    nix::sys::signalfd::SignalFd::with_flags(
        &chld,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    )
    .ok()
}

/// Logs the outputs until the init exits; returns its status Docker-style
/// (128+N when killed by signal N). Orphans handed to the subreaper are
/// reaped on the way.
fn log_until_exit(pid: Pid, mut sources: Vec<(OwnedFd, Stream)>, log: &mut LogFile) -> i32 {
    let sfd = sigchld_fd();
    // The init's exit wakes the poll through its pidfd whatever happens to
    // SIGCHLD (a signal mask lost, another thread taking it); the signalfd
    // is for the orphans that come to the subreaper.
    let init_fd = pidfd(pid);
    for (fd, _) in &sources {
        let _ =
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
    }
    let mut buf = vec![0u8; 32 * 1024];
    let mut init_exited = false;
    loop {
        // Checked before sleeping too: a SIGCHLD that came before the
        // signalfd existed (across ctr-spawn's exec) is not queued on it.
        // Once the pidfd said the init has exited, its status is waited
        // for: a tracer may hold the zombie a moment, and polling a
        // readable pidfd again would spin.
        let status = match reap(pid) {
            None if init_exited => Some(wait_for(pid)),
            other => other,
        };
        if let Some(code) = status {
            // What the init wrote before it exited is in the pipes: take it,
            // but do not wait for descendants that keep them open.
            for (fd, stream) in &sources {
                drain(fd.as_raw_fd(), *stream, log, &mut buf);
                log.flush(*stream);
            }
            return code;
        }
        let mut pfds: Vec<libc::pollfd> = sources
            .iter()
            .map(|(fd, _)| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        for fd in [sfd.as_ref().map(|s| s.as_raw_fd()), init_fd.as_ref().map(|f| f.as_raw_fd())]
            .into_iter()
            .flatten()
        {
            pfds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        }
        let timeout = if sfd.is_some() || init_fd.is_some() { -1 } else { 100 };
        // SAFETY: a valid array of pollfds of the length passed.
        if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) } < 0 {
            continue;
        }
        let mut closed = Vec::new();
        for (i, (fd, stream)) in sources.iter().enumerate() {
            if pfds[i].revents != 0 && !drain(fd.as_raw_fd(), *stream, log, &mut buf) {
                log.flush(*stream);
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            sources.remove(i);
        }
        if let Some(s) = &sfd {
            while let Ok(Some(_)) = s.read_signal() {}
        }
        init_exited = init_fd.is_some() && pfds.last().is_some_and(|p| p.revents != 0);
    }
}

/// The init's status, waiting for it (it is known to have exited).
fn wait_for(init: Pid) -> i32 {
    loop {
        match waitpid(init, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, s, _)) => return 128 + s as i32,
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(_) => return 255,
        }
    }
}

/// A pidfd of the init (Linux 5.3 and later), readable once it has exited.
fn pidfd(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor the kernel just returned, owned by nothing else.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}

/// Reaps every child that has exited; the init's status if it was one.
fn reap(init: Pid) -> Option<i32> {
    let mut status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == init => status = Some(code),
            Ok(WaitStatus::Signaled(p, s, _)) if p == init => status = Some(128 + s as i32),
            Ok(WaitStatus::StillAlive) => return status,
            // No child at all: the init is gone and was reaped (or never ours).
            Err(nix::errno::Errno::ECHILD) => return status.or(Some(255)),
            Err(_) => return status,
            Ok(_) => {}
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
        return match nix::errno::Errno::last() {
            nix::errno::Errno::EAGAIN => true,
            nix::errno::Errno::EINTR => continue,
            // EIO: the pty's slave side is closed.
            _ => false,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` in a test process of its own: `reap` waits for any
    /// child, which must not steal the children of tests running in
    /// parallel threads.
    fn alone(name: &str, body: impl FnOnce()) {
        if std::env::var_os("KIST_MONITOR_TEST_ALONE").is_some() {
            return body();
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &format!("monitor::tests::{name}"), "--test-threads=1", "--nocapture"])
            .env("KIST_MONITOR_TEST_ALONE", "1")
            .status()
            .unwrap();
        assert!(status.success(), "{name} failed in its own process");
    }

    fn sh(script: &str) -> std::process::Command {
        let mut c = std::process::Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn reaps_the_init_and_orphans() {
        alone("reaps_the_init_and_orphans", || {
            let other = sh("exit 0").spawn().unwrap().id();
            let init = Pid::from_raw(sh("sleep 0.1; exit 3").spawn().unwrap().id() as i32);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut got = None;
            while got.is_none() && Instant::now() < deadline {
                got = reap(init);
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(got, Some(3));
            assert!(std::fs::metadata(format!("/proc/{other}")).is_err(), "the other child was reaped too");
        });
    }

    #[test]
    // The child is reaped by log_until_exit's waitpid, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn logs_pipe_output_until_exit() {
        alone("logs_pipe_output_until_exit", || {
            let dir = tempfile::tempdir().unwrap();
            let mut log = LogFile::new(dir.path().join("log.jsonl"), LogOpts::default());
            let child = sh("echo out; echo err >&2; exit 4")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let pid = Pid::from_raw(child.id() as i32);
            let out: OwnedFd = child.stdout.unwrap().into();
            let err: OwnedFd = child.stderr.unwrap().into();
            let code = log_until_exit(pid, vec![(out, Stream::Stdout), (err, Stream::Stderr)], &mut log);
            assert_eq!(code, 4);
            let text = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
            let mut seen: Vec<(String, String)> = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .map(|l| (l["stream"].as_str().unwrap().to_string(), l["log"].as_str().unwrap().to_string()))
                .collect();
            seen.sort();
            assert_eq!(seen, vec![("stderr".into(), "err\n".into()), ("stdout".into(), "out\n".into())]);
        });
    }
}

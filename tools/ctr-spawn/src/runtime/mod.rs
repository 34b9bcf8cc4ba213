//! The runtime: turns a [`Plan`] (an OCI bundle plus the overlay layers)
//! into a running container and waits for it. ctr-spawn stays
//! single-threaded until it clones the init, so the clone is safe; the
//! init (see [`init`]) enters its cgroup and does the confinement, the
//! parent attaches its network, relays the terminal and signals, and
//! collects the status.
//!
//! The cgroup: the init is cloned by clone3 with CLONE_INTO_CGROUP into the
//! cgroup2 directory (v2, or the unified one of a hybrid host) and, first
//! thing, moves itself into each v1 hierarchy by writing "0" to `tasks`;
//! neither waits for the RCU grace period of a `cgroup.procs` write (see
//! kist_common::cgroup::Placement), which was the longest wait of a start.
//! Where clone3 or CLONE_INTO_CGROUP is refused (kernels before 5.7), the
//! parent moves the init through `cgroup.procs` as before, on a thread
//! while it attaches the network.
//! A monitor for detached containers can call [`start`] and [`Running::wait`] too.

pub mod attached;
pub mod cgroups;
pub mod create;
pub mod detached;
pub mod fs;
pub mod init;
pub mod monitor;
pub mod msg;
pub mod reaper;
pub mod tee;
pub mod tty;

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;

use crate::bundle::Plan;
use crate::Error;

/// Signals ctr-spawn relays to the container (Docker's sig-proxy) or acts on.
pub fn relayed_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGCONT,
        Signal::SIGALRM,
        Signal::SIGCHLD,
        Signal::SIGWINCH,
    ] {
        s.add(sig);
    }
    s
}

/// A started container: its init's pid (as the host sees it), with -t the
/// terminal's master, and its network attachment (released when dropped:
/// keep it until the init has exited).
pub struct Running {
    pub pid: Pid,
    pub terminal: Option<OwnedFd>,
    pub net: Option<kist_common::net::Attachment>,
}

/// The owner's network namespace switched to another container's for the
/// clone (`--network container:`), switched back when dropped.
struct JoinedNetns {
    home: std::fs::File,
}

impl JoinedNetns {
    fn enter(root: &kist_common::StateRoot, id: &str) -> Result<JoinedNetns, Error> {
        let state = kist_common::lifecycle::load(root, id)?;
        let seen = kist_common::lifecycle::observe(&state, &kist_common::lifecycle::Host::probe());
        let pid = match (seen.status, state.pid) {
            (kist_common::container::Status::Running, Some(p)) => p,
            _ => {
                return Err(Error::Usage(format!(
                    "cannot join network of a non running container: {}",
                    state.name
                )))
            }
        };
        let target = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .map_err(Error::io("cannot open the network namespace of", format!("/proc/{pid}")))?;
        let home = std::fs::File::open("/proc/self/ns/net")
            .map_err(Error::io("cannot open", "/proc/self/ns/net"))?;
        // SAFETY: setns with a namespace descriptor we hold; the process is
        // single-threaded here, and Drop switches back.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(Error::Sys(format!("setns: {}", std::io::Error::last_os_error())));
        }
        Ok(JoinedNetns { home })
    }
}

impl Drop for JoinedNetns {
    fn drop(&mut self) {
        // SAFETY: back to the namespace we came from, by a descriptor we hold.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// Clones the init into the plan's namespaces, places it in `cgroup`, lets
/// it build and confine the container and waits until the command is
/// exec'd (or reports why it could not be).
pub fn start(
    root: &kist_common::StateRoot,
    plan: &Plan,
    cgroup: Option<&cgroups::Cgroup>,
) -> Result<Running, Error> {
    let tty = plan.spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    let mut flags: libc::c_long = libc::SIGCHLD as libc::c_long;
    if let Some(ns) = plan.spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()) {
        for n in ns {
            flags |= match n.typ() {
                LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
                LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
                LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
                LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
                // A path: the owner joins it for the clone (JoinedNetns).
                LinuxNamespaceType::Network if plan.join_network.is_none() => libc::CLONE_NEWNET,
                // Unshared by the init once it is inside its cgroup.
                _ => 0,
            } as libc::c_long;
        }
    }
    let joined = match &plan.join_network {
        Some(id) => Some(JoinedNetns::enter(root, id)?),
        None => None,
    };
    let entry = match cgroup {
        Some(cg) => Some(cg.entry()?),
        None => None,
    };
    let (parent_sock, child_sock) = msg::pair().map_err(Error::sys("socketpair"))?;
    // Non-dumpable from here on (and inherited by the init until it execs):
    // nothing in the container may open /proc/<pid>/exe or /proc/<pid>/mem
    // of ctr-spawn or of the init (CVE-2019-5736).
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&relayed_signals()), None);
    let cgroup2 = entry.as_ref().and_then(|e| e.cgroup2.as_ref()).map(|fd| fd.as_raw_fd());
    let (rc, self_placed) = match cgroup2.map(|fd| clone3_into(flags, fd)) {
        Some(rc) if rc >= 0 => (rc, true),
        _ => {
            // SAFETY: the raw clone syscall with a null stack behaves like
            // fork; the process is single-threaded, so the child may run
            // ordinary code.
            let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
            // Without a cgroup2 directory (a v1 host) the init enters v1 by itself.
            (rc, cgroup2.is_none())
        }
    };
    if rc < 0 {
        return Err(Error::Sys(format!("clone: {}", nix::errno::Errno::last().desc())));
    }
    if rc == 0 {
        drop(parent_sock);
        let v1_tasks = match (&entry, self_placed) {
            (Some(e), true) => e.v1_tasks.as_slice(),
            _ => &[],
        };
        init::main(plan, child_sock.as_raw_fd(), tty, v1_tasks);
    }
    drop(entry);
    let pid = Pid::from_raw(rc as i32);
    drop(joined);
    drop(child_sock);
    // On a failure here the init may already have reported why it stopped
    // (it sets up mounts before the parent's go): prefer its words.
    let fail = |e: Error| -> Error {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let reported = match msg::recv(parent_sock.as_raw_fd()) {
            Ok(msg::Message::Error { status, message }) => Some(init_error(status, message)),
            _ => None,
        };
        let _ = waitpid(pid, None);
        reported.unwrap_or(e)
    };
    // The network, while the init waits for its go: it execs the command
    // with eth0 configured.
    let attach = || -> Result<Option<kist_common::net::Attachment>, Error> {
        let Some(req) = &plan.network else { return Ok(None) };
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", pid.as_raw()))
            .map_err(|e| Error::Sys(format!("the container's network namespace: {e}")))?;
        let hosts = plan.paths.hosts();
        let who = kist_common::net::Endpoint {
            container_id: &plan.id,
            name: &plan.name,
            hostname: &plan.hostname,
            hosts_file: &hosts,
        };
        Ok(Some(kist_common::net::attach(root, req, &who, ns.as_raw_fd())?))
    };
    // Without CLONE_INTO_CGROUP the parent places it, meanwhile (see
    // cgroups::Cgroup::add_pid_while).
    let (placed, net) = match cgroup {
        Some(cg) if !self_placed && plan.network.is_some() => cg.add_pid_while(pid.as_raw(), attach),
        Some(cg) if !self_placed => (cg.add_pid(pid.as_raw()), Ok(None)),
        _ => (Ok(()), attach()),
    };
    let net = placed.and(net).map_err(fail)?;
    msg::send_go(parent_sock.as_raw_fd())
        .map_err(|e| fail(Error::Sys(format!("starting the init: {}", e.desc()))))?;
    let mut terminal = None;
    loop {
        match msg::recv(parent_sock.as_raw_fd()) {
            Ok(msg::Message::Terminal(fd)) => {
                tty::copy_window_size(fd.as_raw_fd());
                terminal = Some(fd);
            }
            Ok(msg::Message::Execd) => break,
            Ok(msg::Message::Error { status, message }) => {
                let _ = waitpid(pid, None);
                return Err(init_error(status, message));
            }
            Err(e) => return Err(fail(Error::Sys(format!("talking to the init: {}", e.desc())))),
        }
    }
    Ok(Running { pid, terminal, net })
}

/// clone3 with CLONE_INTO_CGROUP: like the raw clone of [`start`] (fork
/// semantics, SIGCHLD at exit), the child born in the cgroup2 directory
/// `cgroup`. Returns the syscall's result (errno set when negative).
fn clone3_into(flags: libc::c_long, cgroup: std::os::fd::RawFd) -> libc::c_long {
    /// struct clone_args (linux/sched.h), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let exit_signal = (flags as u64) & 0xff;
    let args = CloneArgs {
        flags: ((flags as u64) & !0xff) | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup as u64,
    };
    // SAFETY: clone3 with no stack (fork semantics) and a clone_args the
    // kernel reads during the call; the caller is single-threaded, as for
    // the raw clone.
    unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) }
}

/// The error for a failure the init reported.
fn init_error(status: u8, message: String) -> Error {
    if status == 126 || status == 127 {
        Error::Exec { message, status }
    } else {
        Error::Sys(format!("unable to start container process: {message}"))
    }
}

impl Running {
    /// Relays signals and the terminal until the init exits; returns its
    /// status Docker-style (128+N when killed by signal N). `log`: where
    /// the terminal's output is also logged.
    pub fn wait(self, interactive: bool, log: Option<kist_common::logfile::LogFile>) -> Result<i32, Error> {
        let sfd = nix::sys::signalfd::SignalFd::with_flags(
            &relayed_signals(),
            nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
        )
        .map_err(Error::sys("signalfd"))?;
        let mut relay = self.terminal.as_ref().map(|m| tty::Relay::new(m.as_raw_fd(), interactive, log));
        loop {
            let status = match &mut relay {
                Some(r) => r.poll(sfd.as_raw_fd())?,
                None => {
                    let mut p = [libc::pollfd { fd: sfd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(p.as_mut_ptr(), 1, -1) };
                    true
                }
            };
            if !status {
                continue;
            }
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGWINCH {
                    if let Some(m) = &self.terminal {
                        tty::copy_window_size(m.as_raw_fd());
                    }
                } else if sig != libc::SIGCHLD {
                    if let Ok(s) = Signal::try_from(sig) {
                        let _ = nix::sys::signal::kill(self.pid, s);
                    }
                }
            }
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => {
                    if let Some(r) = &mut relay {
                        r.drain();
                    }
                    return Ok(code);
                }
                Ok(WaitStatus::Signaled(_, s, _)) => {
                    if let Some(r) = &mut relay {
                        r.drain();
                    }
                    return Ok(128 + s as i32);
                }
                Ok(_) => continue,
                Err(nix::errno::Errno::ECHILD) => {
                    return Err(Error::Sys("the container's init vanished".into()))
                }
                Err(_) => continue,
            }
        }
    }
}

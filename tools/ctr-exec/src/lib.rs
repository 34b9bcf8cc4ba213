//! ctr-exec runs another process in a running container, as `docker exec`
//! does. The container's config.json (the OCI spec ctr-spawn wrote) says
//! what the process gets: environment, user, working directory,
//! capabilities, seccomp profile, no_new_privileges, rlimits; -e, -u, -w and
//! --privileged adjust it.
//!
//! Processes. ctr-exec (non-dumpable from the start, so nothing in the
//! container can open its /proc/<pid>/exe or mem) forks a joiner that puts
//! itself into the container's cgroup, then joins the container's
//! namespaces (setns on a pidfd, else /proc/<pid>/ns/*; mount last, which
//! makes the container's root its root). A pid namespace applies to
//! children only, so the joiner forks the process itself, which confines
//! itself in kist_common::security's order, closes every descriptor but
//! 0-2 and its error pipe (close-on-exec), and execs a binary found in the
//! container's file system: nothing from the host is executed inside. The
//! joiner waits for it and exits with its status, which ctr-exec passes on
//! (126 not executable, 127 not found, 125 ctr-exec's own failure; 1 when
//! the container cannot take an exec, as docker exec's daemon refusal).

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};
use kist_common::container::Status;
use kist_common::lifecycle::{self, Host};
use kist_common::security::{caps, rlimits, seccomp};
use kist_common::{ExitCode, HasExitCode, StateRoot};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} is paused, unpause the container before exec")]
    Paused(String),
    #[error("cannot read the container's config.json")]
    Config(#[source] oci_spec::OciSpecError),
    #[error("{0}")]
    Sys(String),
    #[error("{message}")]
    Exec { message: String, status: u8 },
    #[error(transparent)]
    Root(#[from] kist_common::root::RootError),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
    #[error(transparent)]
    Container(#[from] kist_common::container::ContainerError),
}

impl Error {
    /// The process status ctr-exec exits with, as docker exec's: 1 when
    /// the container cannot take an exec (none of that name, not running,
    /// paused: the daemon's refusal, which docker exec reports with 1),
    /// 126/127 when the process cannot be started or found, 125 for
    /// ctr-exec's own failures.
    pub fn status(&self) -> u8 {
        match self {
            Error::Exec { status, .. } => *status,
            Error::NotRunning(_) | Error::Paused(_) => 1,
            Error::Lifecycle(
                lifecycle::LifecycleError::NotFound(_) | lifecycle::LifecycleError::Ambiguous { .. },
            ) => 1,
            Error::Container(kist_common::container::ContainerError::NotFound(_)) => 1,
            _ => 125,
        }
    }
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Lifecycle(e) => e.exit_code(),
            Error::NotRunning(_) | Error::Paused(_) => ExitCode::Conflict,
            _ => ExitCode::Failure,
        }
    }
}

pub fn command() -> Command {
    let flag =
        |name: &'static str, short: char| Arg::new(name).long(name).short(short).action(ArgAction::SetTrue);
    Command::new("ctr-exec")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Run another process inside a running container (docker exec)")
        .long_about(
            "Run a command inside a running container, as `docker exec` does: in all of the \
             container's namespaces and its cgroup, under its root, with its capabilities, \
             seccomp profile, no-new-privileges and environment (from the container's \
             config.json), plus -e. Exits with the command's status: 126 when it cannot be \
             executed (or its user or working directory cannot be set up), 127 when it is not \
             found, 1 when there is no such container or it is stopped or paused (docker exec's \
             status for the daemon's refusal), 125 when ctr-exec itself fails or the command line \
             is wrong.",
        )
        .arg(
            Arg::new("root")
                .long("root")
                .global(true)
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("State root (default $KIST_ROOT, else /var/lib/kist)"),
        )
        .arg(flag("interactive", 'i').help("Keep stdin open and connect it to the process"))
        .arg(flag("tty", 't').help("Allocate a pseudo-terminal (follows the window size)"))
        .arg(flag("detach", 'd').help("Run the command in the background"))
        .arg(Arg::new("user").short('u').long("user").value_name("USER[:GROUP]").help("User name or uid, optionally with group"))
        .arg(Arg::new("workdir").short('w').long("workdir").value_name("DIR").help("Working directory inside the container"))
        .arg(Arg::new("env").short('e').long("env").action(ArgAction::Append).value_name("K=V").help("Set an environment variable"))
        .arg(Arg::new("env-file").long("env-file").action(ArgAction::Append).value_name("FILE").help("Read environment variables from a file"))
        .arg(Arg::new("privileged").long("privileged").action(ArgAction::SetTrue).help("All capabilities and no seccomp filter"))
        .arg(Arg::new("container").value_name("CONTAINER").required(true).help("Id, id prefix or name"))
        .arg(
            Arg::new("command")
                .value_name("CMD")
                .required(true)
                .num_args(1..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .help("The command and its arguments"),
        )
        .after_help(
            "Examples:\n  ctr-exec web ls /\n  ctr-exec -it web sh\n  ctr-exec -i web sh -c 'cat > /f' < hostfile\n  \
             ctr-exec -u www -w /var/www -e DEBUG=1 web env",
        )
}

pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "Reads containers/<id>/state.json (init pid, cgroup) and config.json (the OCI runtime \
           spec: process environment, user, cwd, capabilities, rlimits, no_new_privileges, \
           linux.seccomp, namespaces). Writes no JSON: the process's own output goes to \
           stdout and stderr.",
    exit_status: "The command's exit status (128+N when killed by signal N).\n\
                  1    no such container (or an ambiguous id prefix), or it is not running or paused: \
                  docker exec's status when the daemon refuses the exec.\n\
                  125  ctr-exec failed (a usage error, a setup failure such as joining the namespaces).\n\
                  126  the command cannot be executed, or its user (-u) or working directory (-w) cannot \
                  be set up, as docker exec reports it.\n\
                  127  the command was not found (docker 20.10's exec reports 126 here; ctr-exec keeps \
                  the shell's and docker run's 127, which tells the two apart).",
    files: "containers/<id>/config.json\n    The container's OCI runtime spec.\n\
            /proc/<pid>/ns/*\n    The namespaces joined (through a pidfd where the kernel has one).",
    examples: "ctr-exec web cat /etc/hostname\nctr-exec -it web sh\n\
               ctr-exec -i web sh -c 'cat > /f' < hostfile",
    see_also: "ctr-spawn(1), ctr-cp(1), docker-exec(1)",
};

fn sys(what: &str) -> impl FnOnce(nix::errno::Errno) -> Error + '_ {
    move |e| Error::Sys(format!("{what}: {}", e.desc()))
}

/// What the exec'd process is, decided on the host side before forking.
struct ProcessPlan {
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: Option<String>,
    uid: u32,
    gid: u32,
    gids: Vec<u32>,
    capabilities: oci_spec::runtime::LinuxCapabilities,
    seccomp: Option<seccomp::BpfProgram>,
    nnp: bool,
    rlimits: Option<Vec<oci_spec::runtime::PosixRlimit>>,
    tty: bool,
    stdin: bool,
    /// `-d`: the process's 0-2 are /dev/null, as docker exec -d leaves them.
    detach: bool,
}

fn merge_env(base: &[String], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for e in extra {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            // `-e NAME` takes the value from ctr-exec's environment, as Docker does.
            None => match std::env::var(e) {
                Ok(v) => (e.clone(), v),
                Err(_) => continue,
            },
        };
        out.retain(|x| x.split_once('=').map(|(a, _)| a) != Some(k.as_str()));
        out.push(format!("{k}={v}"));
    }
    out
}

fn read_env_file(path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

pub fn run(m: &clap::ArgMatches) -> Result<u8, Error> {
    // Non-dumpable before anything touches the container (CVE-2019-5736 class).
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let root = StateRoot::resolve(m.get_one::<PathBuf>("root").map(|p| p.as_path()))?;
    let query = m.get_one::<String>("container").cloned().unwrap_or_default();
    let args: Vec<String> = m.get_many::<String>("command").map(|v| v.cloned().collect()).unwrap_or_default();
    let id = lifecycle::resolve(&root, &query)?;
    let state = lifecycle::load(&root, &id)?;
    let host = Host::probe();
    let seen = lifecycle::observe(&state, &host);
    match seen.status {
        Status::Paused => return Err(Error::Paused(query)),
        Status::Running if seen.process_alive => {}
        _ => return Err(Error::NotRunning(query)),
    }
    let pid = state.pid.ok_or_else(|| Error::NotRunning(query.clone()))?;
    let spec = Spec::load(kist_common::container::ContainerPaths::new(&root, &id).config())
        .map_err(Error::Config)?;
    let process = spec.process().clone().unwrap_or_default();

    let mut extra = Vec::new();
    for f in m.get_many::<String>("env-file").into_iter().flatten() {
        extra.extend(read_env_file(Path::new(f))?);
    }
    extra.extend(m.get_many::<String>("env").into_iter().flatten().cloned());
    let tty = m.get_flag("tty");
    let mut env = merge_env(process.env().as_deref().unwrap_or_default(), &extra);
    if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let privileged = m.get_flag("privileged");
    let capabilities = if privileged {
        caps::all_supported().map_err(|e| Error::Sys(format!("capabilities: {e}")))?
    } else {
        // No capabilities in config.json means none, as for the init.
        process.capabilities().clone().unwrap_or_else(|| caps::uniform(Default::default()))
    };
    let seccomp_prog = match (privileged, spec.linux().as_ref().and_then(|l| l.seccomp().as_ref())) {
        (false, Some(s)) => Some(seccomp::compile(s).map_err(|e| Error::Sys(format!("seccomp: {e}")))?),
        _ => None,
    };
    let user = process.user();
    let plan = ProcessPlan {
        args,
        env,
        cwd: m.get_one::<String>("workdir").cloned().unwrap_or_else(|| process.cwd().display().to_string()),
        user: m.get_one::<String>("user").cloned(),
        uid: user.uid(),
        gid: user.gid(),
        gids: user.additional_gids().clone().unwrap_or_default(),
        capabilities,
        seccomp: seccomp_prog,
        nnp: process.no_new_privileges() == Some(true),
        rlimits: process.rlimits().clone(),
        tty,
        stdin: m.get_flag("interactive"),
        detach: m.get_flag("detach"),
    };
    let namespaces: Vec<LinuxNamespaceType> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .map(|n| n.typ())
        .collect();
    let cgroup = match (&state.cgroup, kist_common::cgroup::host()) {
        (Some(name), Ok(layout)) => kist_common::cgroup::open(&layout, name).ok(),
        _ => None,
    };
    // The pidfd pins the init: a recycled pid cannot be joined by mistake
    // once it is held and the process is judged alive again.
    // SAFETY: pidfd_open with integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = (pidfd >= 0).then(|| {
        // SAFETY: the kernel just returned this descriptor.
        unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) }
    });
    if !host.is_alive(Some(pid), lifecycle::started_limit(&state)) {
        return Err(Error::NotRunning(query));
    }
    let ns_fds = open_namespaces(pid, &namespaces)?;
    execute(&plan, pidfd.as_ref(), &namespaces, ns_fds, cgroup.as_ref(), m.get_flag("detach"))
}

fn ns_name(t: LinuxNamespaceType) -> Option<(&'static str, libc::c_int)> {
    Some(match t {
        LinuxNamespaceType::Ipc => ("ipc", libc::CLONE_NEWIPC),
        LinuxNamespaceType::Uts => ("uts", libc::CLONE_NEWUTS),
        LinuxNamespaceType::Network => ("net", libc::CLONE_NEWNET),
        LinuxNamespaceType::Pid => ("pid", libc::CLONE_NEWPID),
        LinuxNamespaceType::Cgroup => ("cgroup", libc::CLONE_NEWCGROUP),
        LinuxNamespaceType::Mount => ("mnt", libc::CLONE_NEWNS),
        _ => return None,
    })
}

/// The container's namespaces as files, mount last, for kernels without
/// setns on a pidfd. The cgroup namespace is unshared by the init after it
/// starts, so it is joined even when config.json does not list it.
fn open_namespaces(pid: i32, types: &[LinuxNamespaceType]) -> Result<Vec<(OwnedFd, libc::c_int)>, Error> {
    let mut order: Vec<LinuxNamespaceType> =
        types.iter().copied().filter(|t| *t != LinuxNamespaceType::Mount).collect();
    if !order.contains(&LinuxNamespaceType::Cgroup) {
        order.push(LinuxNamespaceType::Cgroup);
    }
    if types.contains(&LinuxNamespaceType::Mount) {
        order.push(LinuxNamespaceType::Mount);
    }
    let mut out = Vec::new();
    for t in order {
        let Some((name, flag)) = ns_name(t) else { continue };
        let theirs = format!("/proc/{pid}/ns/{name}");
        let same = match (std::fs::metadata(&theirs), std::fs::metadata(format!("/proc/self/ns/{name}"))) {
            (Ok(a), Ok(b)) => {
                std::os::unix::fs::MetadataExt::ino(&a) == std::os::unix::fs::MetadataExt::ino(&b)
            }
            _ => false,
        };
        if same {
            continue;
        }
        let f = std::fs::File::open(&theirs).map_err(|e| Error::Sys(format!("open {theirs}: {e}")))?;
        out.push((OwnedFd::from(f), flag));
    }
    Ok(out)
}

/// A failure inside the forked processes, sent to ctr-exec: status byte, message.
fn report_and_exit(pipe: RawFd, status: u8, message: &str) -> ! {
    let mut buf = vec![status];
    buf.extend_from_slice(message.as_bytes());
    // SAFETY: write of our own buffer to our pipe; _exit never returns.
    unsafe {
        libc::write(pipe, buf.as_ptr().cast(), buf.len());
        libc::_exit(status as i32)
    }
}

fn execute(
    plan: &ProcessPlan,
    pidfd: Option<&OwnedFd>,
    types: &[LinuxNamespaceType],
    ns_fds: Vec<(OwnedFd, libc::c_int)>,
    cgroup: Option<&kist_common::cgroup::Cgroup>,
    detach: bool,
) -> Result<u8, Error> {
    // With -t the pty is made inside the container's devpts by the joiner
    // (so `tty` names it there) and its master comes back over this pair.
    let pty_sock = if plan.tty {
        Some(
            nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(sys("socketpair"))?,
        )
    } else {
        None
    };
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let (pid_r, pid_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // SAFETY: ctr-exec is single-threaded, so the child may run ordinary code.
    let joiner = unsafe { libc::fork() };
    if joiner < 0 {
        return Err(Error::Sys(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if joiner == 0 {
        drop(err_r);
        drop(pid_r);
        joiner_main(
            plan,
            pidfd,
            types,
            &ns_fds,
            cgroup,
            pty_sock.as_ref().map(|p| p.1.as_raw_fd()),
            err_w.as_raw_fd(),
            pid_w.as_raw_fd(),
            detach,
        );
    }
    drop(err_w);
    drop(pid_w);
    drop(ns_fds);
    let master = match pty_sock {
        Some((ours, theirs)) => {
            drop(theirs);
            recv_fd(ours.as_raw_fd())
        }
        None => None,
    };
    // The exec'd process's host pid, for signals.
    let mut pbuf = [0u8; 4];
    let mut pf = std::fs::File::from(pid_r);
    let target = pf.read_exact(&mut pbuf).ok().map(|_| i32::from_ne_bytes(pbuf));
    // Exec failures and setup errors arrive on the error pipe; EOF means exec'd.
    let mut msg = Vec::new();
    let _ = std::fs::File::from(err_r).read_to_end(&mut msg);
    if let Some((&status, text)) = msg.split_first() {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(joiner), None);
        let message = String::from_utf8_lossy(text).into_owned();
        return Err(if status == 126 || status == 127 {
            Error::Exec { message, status }
        } else {
            Error::Sys(message)
        });
    }
    if detach {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(joiner), None);
        return Ok(0);
    }
    if let Some(m) = &master {
        relay(m.as_raw_fd(), plan.stdin);
    }
    // Signals to ctr-exec go to the process, as docker exec's sig-proxy
    // does (blocked here only: the children were forked already).
    let mut relayed = nix::sys::signal::SigSet::empty();
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGQUIT,
        nix::sys::signal::Signal::SIGUSR1,
        nix::sys::signal::Signal::SIGUSR2,
        // Not relayed: wakes the wait below when the joiner exits.
        nix::sys::signal::Signal::SIGCHLD,
    ] {
        relayed.add(sig);
    }
    let _ = nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&relayed), None);
    let sfd = nix::sys::signalfd::SignalFd::with_flags(
        &relayed,
        nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
    )
    .ok();
    loop {
        if let (Some(sfd), Some(t)) = (&sfd, target) {
            while let Ok(Some(info)) = sfd.read_signal() {
                if info.ssi_signo as i32 != libc::SIGCHLD {
                    // SAFETY: kill of the exec'd process's host pid.
                    unsafe { libc::kill(t, info.ssi_signo as i32) };
                }
            }
        }
        match nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(joiner),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        ) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                if let Some(sfd) = &sfd {
                    let mut p = [libc::pollfd { fd: sfd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
                    // SAFETY: one valid pollfd; the timeout bounds the wait for the joiner.
                    unsafe { libc::poll(p.as_mut_ptr(), 1, 1000) };
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                continue;
            }
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => return Ok(c as u8),
            Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as u8),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Sys(format!("wait: {}", e.desc()))),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn joiner_main(
    plan: &ProcessPlan,
    pidfd: Option<&OwnedFd>,
    types: &[LinuxNamespaceType],
    ns_fds: &[(OwnedFd, libc::c_int)],
    cgroup: Option<&kist_common::cgroup::Cgroup>,
    pty_sock: Option<RawFd>,
    err: RawFd,
    pidpipe: RawFd,
    detach: bool,
) -> ! {
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    if let Some(cg) = cgroup {
        if let Err(e) = cg.add_pid(me as u32) {
            report_and_exit(err, 125, &format!("joining the container's cgroup: {e}"));
        }
    }
    let mut joined = false;
    if let Some(pfd) = pidfd {
        let mut flags = libc::CLONE_NEWCGROUP;
        for t in types {
            if let Some((_, f)) = ns_name(*t) {
                flags |= f;
            }
        }
        // SAFETY: setns on a pidfd with namespace flags.
        joined = unsafe { libc::setns(pfd.as_raw_fd(), flags) } == 0;
    }
    if !joined {
        for (fd, flag) in ns_fds {
            // SAFETY: setns on a namespace file descriptor.
            if unsafe { libc::setns(fd.as_raw_fd(), *flag) } != 0 {
                report_and_exit(err, 125, &format!("setns: {}", std::io::Error::last_os_error()));
            }
        }
    }
    let slave = match pty_sock {
        Some(sock) => match container_pty() {
            Ok((master, slave)) => {
                if let Err(e) = send_fd(sock, master.as_raw_fd()) {
                    report_and_exit(err, 125, &format!("passing the terminal: {e}"));
                }
                drop(master);
                Some(slave)
            }
            Err(e) => report_and_exit(err, 125, &format!("allocating a terminal in the container: {e}")),
        },
        None => None,
    };
    let slave_fd = slave.as_ref().map(|s| s.as_raw_fd());
    // SAFETY: single-threaded; the child runs ordinary code.
    let child = unsafe { libc::fork() };
    if child < 0 {
        report_and_exit(err, 125, "fork inside the container");
    }
    if child == 0 {
        let f = process_main(plan, slave_fd, err);
        report_and_exit(err, f.0, &f.1);
    }
    drop(slave);
    let b = child.to_ne_bytes();
    // SAFETY: write of a local buffer to our pipe.
    unsafe { libc::write(pidpipe, b.as_ptr().cast(), b.len()) };
    // SAFETY: closing our copies so ctr-exec sees EOF when the process execs.
    unsafe {
        libc::close(err);
        libc::close(pidpipe);
    }
    if detach {
        // SAFETY: _exit never returns; the process is reparented.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        if r == child {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // SAFETY: _exit never returns.
            unsafe { libc::_exit(125) };
        }
    }
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(code) }
}

/// A pty pair from the container's own devpts (the joiner's root is the
/// container's now): /dev/ptmx opened without magic links and checked to be
/// the ptmx device, the slave taken from it by TIOCGPTPEER (no path).
fn container_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let root = std::fs::File::open("/")?;
    let master = kist_common::croot::open_in_root(
        root.as_raw_fd(),
        Path::new("/dev/ptmx"),
        libc::O_RDWR | libc::O_NOCTTY,
        0,
    )?;
    // SAFETY: an all-zero stat is valid to be overwritten; fstat of our descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(master.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || libc::major(st.st_rdev) != 5
        || libc::minor(st.st_rdev) != 2
    {
        return Err(std::io::Error::other("/dev/ptmx in the container is not the ptmx device"));
    }
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK with a pointer to an int; TIOCGPTPEER returns a new descriptor.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((master, OwnedFd::from_raw_fd(s)))
    }
}

fn send_fd(sock: RawFd, fd: RawFd) -> nix::Result<()> {
    let fds = [fd];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(b"t")];
    nix::sys::socket::sendmsg::<()>(sock, &iov, &cmsg, nix::sys::socket::MsgFlags::empty(), None).map(|_| ())
}

fn recv_fd(sock: RawFd) -> Option<OwnedFd> {
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel installed this descriptor for us.
            return fds.first().map(|f| unsafe { OwnedFd::from_raw_fd(*f) });
        }
    }
    None
}

/// Looks a user up in the running container's own /etc/passwd and
/// /etc/group (the root is the container's by now), with the rules
/// ctr-spawn applies to the image's files.
fn resolve_user(spec: &str) -> Result<(u32, u32, Vec<u32>), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let r = kist_common::user::resolve(spec, &passwd, &group).map_err(|e| e.to_string())?;
    Ok((r.uid, r.gid, r.additional_gids))
}

/// The exec'd process: inside the container's namespaces, its root is the
/// container's. Returns only on failure.
fn process_main(plan: &ProcessPlan, slave: Option<RawFd>, err: RawFd) -> (u8, String) {
    let fail = |what: &str, e: std::io::Error| (125u8, format!("{what}: {e}"));
    let last = std::io::Error::last_os_error;
    // SAFETY: plain libc calls on descriptors we own.
    unsafe {
        if let Some(s) = slave {
            libc::setsid();
            if libc::ioctl(s, libc::TIOCSCTTY, 0) != 0 {
                return fail("TIOCSCTTY", last());
            }
            for fd in 0..3 {
                libc::dup2(s, fd);
            }
            if s > 2 {
                libc::close(s);
            }
        } else if plan.detach || !plan.stdin {
            // The container's /dev/null (the root is the container's now).
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if fd >= 0 {
                let upto = if plan.detach { 3 } else { 1 };
                for target in 0..upto {
                    libc::dup2(fd, target);
                }
                libc::close(fd);
            }
        }
    }
    let (mut uid, mut gid, mut gids) = (plan.uid, plan.gid, plan.gids.clone());
    if let Some(u) = &plan.user {
        match resolve_user(u) {
            Ok(r) => (uid, gid, gids) = r,
            // docker exec: 126, the process could not be started.
            Err(m) => return (126, m),
        }
    }
    if let Err(e) = std::env::set_current_dir(&plan.cwd) {
        return (126, format!("chdir to {}: {e}", plan.cwd));
    }
    if let Some(l) = &plan.rlimits {
        if let Err(e) = rlimits::apply(l) {
            return (125, format!("setrlimit: {e}"));
        }
    }
    if let (Some(f), false) = (&plan.seccomp, plan.nnp) {
        if let Err(e) = seccomp::load(f) {
            return (125, format!("seccomp: {e}"));
        }
    }
    if let Err(e) = caps::prepare_for_setuid(&plan.capabilities) {
        return (125, format!("capabilities: {e}"));
    }
    let g: Vec<nix::unistd::Gid> = gids.iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
    if let Err(e) = nix::unistd::setgroups(&g)
        .and_then(|_| nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)))
        .and_then(|_| nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)))
    {
        return (125, format!("setting the user: {}", e.desc()));
    }
    if let Err(e) = caps::apply(&plan.capabilities) {
        return (125, format!("capabilities: {e}"));
    }
    if plan.nnp {
        if let Err(e) = seccomp::no_new_privs() {
            return (125, format!("no_new_privs: {e}"));
        }
        if let Some(f) = &plan.seccomp {
            if let Err(e) = seccomp::load(f) {
                return (125, format!("seccomp: {e}"));
            }
        }
    }
    // No host descriptor reaches the process: everything above 2 but the
    // close-on-exec error pipe is closed.
    // SAFETY: close_range only closes descriptors.
    unsafe {
        if err > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (err - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (err + 1) as u32, u32::MAX, 0u32);
    }
    exec(&plan.args, &plan.env)
}

fn exec(args: &[String], env: &[String]) -> (u8, String) {
    let Some(arg0) = args.first() else { return (125, "no command specified".into()) };
    let path = if arg0.contains('/') {
        PathBuf::from(arg0)
    } else {
        let search = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let found =
            search.split(':').map(|d| Path::new(if d.is_empty() { "." } else { d }).join(arg0)).find(|p| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(p)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            });
        match found {
            Some(p) => p,
            None => return (127, format!("exec: \"{arg0}\": executable file not found in $PATH")),
        }
    };
    let to_c = |s: &str| CString::new(s).unwrap_or_default();
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
    let cargs: Vec<CString> = args.iter().map(|a| to_c(a)).collect();
    let cenv: Vec<CString> = env.iter().map(|e| to_c(e)).collect();
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = cenv.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(cpath.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = std::io::Error::last_os_error();
    let status = match e.raw_os_error() {
        Some(libc::ENOENT) => 127,
        _ => 126,
    };
    (status, format!("exec {}: {e}", path.display()))
}

/// Copies between the terminal and the pty master until the process
/// closes it, following the window size.
fn relay(master: RawFd, interactive: bool) {
    use nix::sys::termios;
    let stdin = std::io::stdin();
    let saved = if std::io::IsTerminal::is_terminal(&stdin) { termios::tcgetattr(&stdin).ok() } else { None };
    if let Some(t) = &saved {
        let mut raw = t.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
    }
    let mut last_ws: Option<(u16, u16)> = None;
    let mut stdin_open = interactive;
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: winsize is plain data filled by the ioctl.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ into a winsize; TIOCSWINSZ from it.
        if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0
            && last_ws != Some((ws.ws_row, ws.ws_col))
        {
            last_ws = Some((ws.ws_row, ws.ws_col));
            // SAFETY: as above.
            unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
        }
        let mut fds = [
            libc::pollfd { fd: master, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if stdin_open { 0 } else { -1 }, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 250) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            // SAFETY: read into our buffer.
            let r = unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                break;
            }
            write_all(1, &buf[..r as usize]);
        }
        if stdin_open && fds[1].revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            // SAFETY: read into our buffer.
            let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                // End of input: an EOF character for the terminal's line discipline.
                write_all(master, &[4]);
                stdin_open = false;
            } else {
                write_all(master, &buf[..r as usize]);
            }
        }
    }
    if let Some(t) = &saved {
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, t);
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: write from our buffer.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        data = &data[n as usize..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_adds() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let out = merge_env(&base, &["A=2".into(), "B=3".into()]);
        assert_eq!(out, ["PATH=/bin", "A=2", "B=3"]);
    }
}

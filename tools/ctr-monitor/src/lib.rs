//! ctr-monitor is what stays resident for a detached container. ctr-spawn
//! creates and starts the container in the monitor's own process (a host
//! process in a session of its own, the subreaper parent of the init) and
//! then execs ctr-monitor, handing over the init, its output pipes (or the
//! pty's master) and the sockets that hold its published ports as
//! inherited descriptors. ctr-monitor logs the output, records the exit,
//! applies the restart policy (kist_common::monitor) and, to start the
//! container again, execs ctr-spawn back in the same process — so the
//! container's owner pid never changes, and all that is resident between
//! starts is this small binary, not the runtime.
//!
//! Users do not run it; its command line is ctr-spawn's, written by
//! kist_common::monitor::Handover::args.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};
use kist_common::logfile::Stream;
use kist_common::monitor::{self, Handover, Next, Run};
use kist_common::restart::Backoff;
use kist_common::{ExitCode, HasExitCode, StateRoot};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("descriptor {fd} (--{what}) is not open: ctr-monitor is started by ctr-spawn -d, not by hand")]
    NotOpen { what: &'static str, fd: RawFd },
    #[error(transparent)]
    Root(#[from] kist_common::root::RootError),
    #[error(transparent)]
    Teardown(#[from] kist_common::teardown::TeardownError),
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::NotOpen { .. } => ExitCode::Usage,
            _ => ExitCode::Failure,
        }
    }
}

/// The whole command line.
pub fn command() -> Command {
    let fd = |name: &'static str, help: &'static str| {
        Arg::new(name).long(name).value_name("FD").value_parser(value_parser!(i32)).help(help)
    };
    Command::new("ctr-monitor")
        .version(env!("CARGO_PKG_VERSION"))
        .about("The resident monitor of a detached container (started by ctr-spawn -d)")
        .long_about(
            "The resident monitor of a detached container. ctr-spawn -d (and --start, --restore) \
             starts the container and then execs ctr-monitor in the same process, which is the \
             container init's parent and subreaper. ctr-monitor logs the container's stdout and \
             stderr (or its terminal) to containers/<id>/log.jsonl in Docker's json-file format \
             with the --log-opt rotation, records the exit in state.json, releases the network \
             lease and the published ports, applies the restart policy with Docker's backoff \
             (100 ms doubling to 1 min, reset after 10 s of running) by execing ctr-spawn \
             --monitor-resume in the same process, and at the end removes the container's cgroup, \
             and the container itself if it was started with --rm.\n\n\
             It is not meant to be run by hand: its arguments are descriptors that ctr-spawn \
             hands over. ctr-spawn looks for it next to its own executable and, if it is missing, \
             stays the monitor itself (the same behaviour, more memory per container).",
        )
        .arg(
            Arg::new("root")
                .long("root")
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .help("State root (default $KIST_ROOT, else /var/lib/kist)"),
        )
        .arg(Arg::new("id").long("id").value_name("ID").required(true).help("The container's full id"))
        .arg(
            Arg::new("pid")
                .long("pid")
                .value_name("PID")
                .required(true)
                .value_parser(value_parser!(i32).range(1..))
                .help("The container's init, a child of this process"),
        )
        .arg(fd("stdout-fd", "Read end of the container's stdout pipe, or its terminal's master"))
        .arg(fd("stderr-fd", "Read end of the container's stderr pipe"))
        .arg(fd("stdin-fd", "Write end of the container's stdin pipe, held open (-i)"))
        .arg(
            Arg::new("network")
                .long("network")
                .value_name("NAME")
                .help("The network whose lease is released at the exit"),
        )
        .arg(fd("port-fd", "A socket holding a published host port (repeated)").action(ArgAction::Append))
        .arg(
            Arg::new("backoff-ms")
                .long("backoff-ms")
                .value_name("MS")
                .value_parser(value_parser!(u64))
                .default_value("100")
                .help("The next restart delay"),
        )
        .arg(
            Arg::new("respawn")
                .long("respawn")
                .value_name("PATH")
                .required(true)
                .value_parser(value_parser!(PathBuf))
                .help("The ctr-spawn executed to start the container again"),
        )
        .after_help(
            "Examples (what ctr-spawn runs; see `ps -o pid,args -C ctr-monitor`):\n  \
             ctr-monitor --root /var/lib/kist --id 3f2a…e1 --pid 4242 --stdout-fd 5 --stderr-fd 6 \
             --network bridge --port-fd 7 --backoff-ms 100 --respawn /usr/bin/ctr-spawn",
        )
}

/// The hand-written man page sections.
pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "Reads nothing on stdin and writes nothing on stdout (its standard streams are /dev/null). \
           Writes containers/<id>/log.jsonl, one {\"log\",\"stream\",\"time\"} object per line (Docker's \
           json-file format), and updates containers/<id>/state.json under its lock: status (restarting, \
           exited), pid, exitCode, oomKilled, finishedAt, restartCount, ownerPid.",
    exit_status: "0 when the container has ended for good (not restarted) and its cgroup is gone; \
                  1 when the cgroup or the --rm removal could not be completed; \
                  2 for a bad command line or a descriptor that is not open. A restart replaces the \
                  process with ctr-spawn (exec), so no status is seen then.",
    files: "containers/<id>/state.json\n    The container's state; ownerPid is this process.\n\
            containers/<id>/spawn.json\n    The restart policy and log options read at each exit.\n\
            containers/<id>/log.jsonl, log.jsonl.1 ... log.jsonl.N\n    The container's output, live file and \
            rotated ones (.1 newest).\n\
            networks/<name>.json\n    The network whose lease is released when the container exits.\n\
            /sys/fs/cgroup/.../kist/<id>\n    The container's cgroup: checked for an OOM kill, removed at the end.",
    examples: "ps -o pid,rss,args -C ctr-monitor\n\
               ctr-spawn --image busybox -d --restart always --name web -- httpd -f   # starts one",
    see_also: "ctr-spawn(1), ctr-kill(1), ctr-logs(1), ctr-list(1), kist-state(5)",
};

/// Parses the command line back into the handover.
pub fn handover(m: &ArgMatches) -> Result<Handover, Error> {
    let root = StateRoot::resolve(m.get_one::<PathBuf>("root").map(|p| p.as_path()))?;
    let fd = |name: &str| m.get_one::<i32>(name).copied();
    Ok(Handover {
        root: root.path().to_path_buf(),
        id: m.get_one::<String>("id").cloned().unwrap_or_default(),
        pid: m.get_one::<i32>("pid").copied().unwrap_or(0),
        stdout_fd: fd("stdout-fd"),
        stderr_fd: fd("stderr-fd"),
        stdin_fd: fd("stdin-fd"),
        network: m.get_one::<String>("network").cloned(),
        port_fds: m.get_many::<i32>("port-fd").map(|v| v.copied().collect()).unwrap_or_default(),
        backoff: Backoff::with_next(Duration::from_millis(
            m.get_one::<u64>("backoff-ms").copied().unwrap_or(100),
        )),
        respawn: m.get_one::<PathBuf>("respawn").cloned().unwrap_or_default(),
    })
}

/// Takes ownership of an inherited descriptor, once it is known to be open.
fn owned(fd: RawFd, what: &'static str) -> Result<OwnedFd, Error> {
    // SAFETY: F_GETFD only queries the descriptor.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::NotOpen { what, fd });
    }
    // SAFETY: the descriptor is open and was handed to this process to own;
    // nothing else in it refers to the number.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Closes every descriptor above 2 that was not handed over, so that the
/// long-lived monitor pins nothing of its starter's.
fn close_others(keep: &[RawFd]) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect(),
        Err(_) => return,
    };
    for fd in fds.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // SAFETY: closing a descriptor nothing in this process uses (the
        // directory's own was closed when read_dir finished).
        unsafe { libc::close(fd) };
    }
}

/// Watches the container until it ends, or execs ctr-spawn to start it again.
pub fn run(m: &ArgMatches) -> Result<(), Error> {
    let h = handover(m)?;
    let keep: Vec<RawFd> = [h.stdout_fd, h.stderr_fd, h.stdin_fd]
        .into_iter()
        .flatten()
        .chain(h.port_fds.iter().copied())
        .collect();
    close_others(&keep);
    let mut outputs = Vec::new();
    if let Some(fd) = h.stdout_fd {
        outputs.push((owned(fd, "stdout-fd")?, Stream::Stdout));
    }
    if let Some(fd) = h.stderr_fd {
        outputs.push((owned(fd, "stderr-fd")?, Stream::Stderr));
    }
    let stdin = h.stdin_fd.map(|fd| owned(fd, "stdin-fd")).transpose()?;
    let ports = h.port_fds.iter().map(|fd| owned(*fd, "port-fd")).collect::<Result<Vec<_>, _>>()?;
    let root = StateRoot::at(&h.root);
    let run = Run { pid: Pid::from_raw(h.pid), outputs, stdin, network: h.network.clone(), ports };
    let removed = match monitor::watch(&root, &h.id, run, h.backoff) {
        Next::Restart(backoff) => {
            let err = respawn(&h, backoff);
            // ctr-spawn could not be executed: the restart fails as a start
            // does (125), and the policy is not applied to that again.
            let why = format!("cannot execute {} to restart the container: {err}", h.respawn.display());
            kist_common::warn!("{why}");
            matches!(
                monitor::after_exit(&root, &h.id, 125, false, false, Duration::ZERO, backoff),
                Next::Removed
            )
        }
        Next::Stop => false,
        Next::Removed => true,
    };
    let cgroup = kist_common::lifecycle::load(&root, &h.id)
        .map(|s| monitor::cgroup_of(&s))
        .unwrap_or_else(|_| format!("kist/{}", h.id));
    monitor::finish(&root, &h.id, &cgroup, removed)?;
    Ok(())
}

/// Execs `ctr-spawn --monitor-resume ID` in this process; returns only
/// with the reason it could not.
fn respawn(h: &Handover, backoff: Backoff) -> nix::Error {
    let args = [
        h.respawn.as_os_str().as_bytes().to_vec(),
        b"--root".to_vec(),
        h.root.as_os_str().as_bytes().to_vec(),
        b"--monitor-resume".to_vec(),
        h.id.as_bytes().to_vec(),
        b"--backoff-ms".to_vec(),
        backoff.next().as_millis().to_string().into_bytes(),
    ];
    let Ok(args) = args.into_iter().map(CString::new).collect::<Result<Vec<_>, _>>() else {
        return nix::Error::EINVAL;
    };
    // execv keeps the signal mask (SIGCHLD and the relayed signals stay
    // blocked) and the subreaper flag, which ctr-spawn relies on.
    match nix::unistd::execv(&args[0], &args) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_ctr_spawn_writes() {
        let h = Handover {
            root: PathBuf::from("/tmp/kist-root"),
            id: "a".repeat(64),
            pid: 4242,
            stdout_fd: Some(5),
            stderr_fd: Some(6),
            stdin_fd: None,
            network: Some("bridge".into()),
            port_fds: vec![7, 8],
            backoff: Backoff::with_next(Duration::from_millis(800)),
            respawn: PathBuf::from("/usr/bin/ctr-spawn"),
        };
        let mut argv = vec![std::ffi::OsString::from("ctr-monitor")];
        argv.extend(h.args());
        let m = command().try_get_matches_from(argv).unwrap();
        assert_eq!(handover(&m).unwrap(), h);
    }

    #[test]
    fn refuses_a_closed_descriptor() {
        assert!(matches!(owned(987_654, "stdout-fd"), Err(Error::NotOpen { fd: 987_654, .. })));
    }
}

//! ctr-kill ends containers: `--signal` (docker kill), `--stop` (the stop
//! signal, a grace period, then KILL: docker stop), `--pause`/`--resume`
//! (the cgroup freezer), and `--rm` (remove: docker rm, with `-f` a running
//! one too, with `-v` its anonymous volumes). Containers come as arguments
//! or as records on stdin; each is handled on its own thread, so stopping
//! a hundred containers takes one grace period, not a hundred. Processes
//! are signalled through a pidfd opened after checking that the pid is
//! still the container's (so a recycled pid is never hit), and waited for
//! with poll(2) on it.

pub mod signal;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches, Command};
use kist_common::container::{ContainerError, ContainerPaths, ContainerState, Status};
use kist_common::lifecycle::{self, Host, Observed};
use kist_common::record::{ContainerRecord, Record};
use kist_common::teardown::{self, Removal};
use kist_common::{ExitCode, HasExitCode, StateRoot};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} is already paused")]
    AlreadyPaused(String),
    #[error("container {0} is not paused")]
    NotPaused(String),
    #[error("cannot remove container {0}: container is running: stop the container before removing or force remove (-f)")]
    Running(String),
    #[error("container {name}: its process (pid {pid}) did not exit within {secs} s of SIGKILL")]
    Timeout { name: String, pid: i32, secs: u64 },
    #[error("cannot signal container {name} (pid {pid})")]
    Signal {
        name: String,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("{failed} of {total} containers failed")]
    Partial { failed: usize, total: usize, code: ExitCode },
    #[error(transparent)]
    Root(#[from] kist_common::root::RootError),
    #[error(transparent)]
    Input(#[from] kist_common::input::InputError),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Teardown(#[from] teardown::TeardownError),
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::NotRunning(_) | Error::AlreadyPaused(_) | Error::NotPaused(_) | Error::Running(_) => {
                ExitCode::Conflict
            }
            Error::Timeout { .. } | Error::Signal { .. } => ExitCode::Failure,
            Error::Partial { code, .. } => *code,
            Error::Root(e) => e.exit_code(),
            Error::Input(e) => e.exit_code(),
            Error::Lifecycle(e) => e.exit_code(),
            Error::Container(ContainerError::NotFound(_)) => ExitCode::NotFound,
            Error::Container(e) => e.exit_code(),
            Error::Teardown(e) => e.exit_code(),
        }
    }
}

pub fn command() -> Command {
    Command::new("ctr-kill")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Signal, stop, pause, resume or remove containers (docker kill, stop, pause, unpause, rm)")
        .long_about(
            "Signal, stop, pause, resume or remove containers.\n\n\
             Without an action flag ctr-kill sends SIGKILL, as `docker kill` does. Containers are \
             named as arguments (id, unique id prefix or name) or, when none are given and stdin is \
             not a terminal, as JSON Lines on stdin (any object with an `id`, e.g. ctr-list's \
             records, or bare ids); an empty stdin does nothing. Each container is handled in \
             parallel; one that fails is reported on stderr and the others go on. The container \
             record of each container acted on is printed after the action.",
        )
        .arg(
            Arg::new("root")
                .long("root")
                .global(true)
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("State root (default $KIST_ROOT, else /var/lib/kist)"),
        )
        .arg(
            Arg::new("signal")
                .short('s')
                .long("signal")
                .value_name("SIG")
                .help("Signal to send: a name (KILL, SIGTERM, RTMIN+1) or number (default KILL)"),
        )
        .arg(Arg::new("stop").long("stop").action(ArgAction::SetTrue).help(
            "Stop: the stop signal (the image's StopSignal, else TERM), then KILL after the grace period",
        ))
        .arg(
            Arg::new("time")
                .short('t')
                .long("time")
                .value_name("SECS")
                .allow_negative_numbers(true)
                .value_parser(clap::value_parser!(i64))
                .help("Grace period of --stop in seconds before KILL (default 10; -1 waits forever)"),
        )
        .arg(
            Arg::new("pause")
                .long("pause")
                .action(ArgAction::SetTrue)
                .help("Freeze every process of the container"),
        )
        .arg(Arg::new("resume").long("resume").action(ArgAction::SetTrue).help("Thaw a paused container"))
        .arg(
            Arg::new("rm")
                .long("rm")
                .action(ArgAction::SetTrue)
                .help("Remove the container (after --stop or --signal KILL if given)"),
        )
        .arg(
            Arg::new("force")
                .short('f')
                .long("force")
                .action(ArgAction::SetTrue)
                .help("With --rm: kill a running container first"),
        )
        .arg(
            Arg::new("volumes")
                .short('v')
                .long("volumes")
                .action(ArgAction::SetTrue)
                .help("With --rm: remove its anonymous volumes too"),
        )
        .arg(Arg::new("echo").long("echo").action(ArgAction::SetTrue).help(
            "Print each container as it was named, one per line, instead of its record (docker stop's output)",
        ))
        .arg(
            Arg::new("container")
                .value_name("CONTAINER")
                .num_args(0..)
                .help("Container ids, id prefixes or names"),
        )
        .after_help(
            "Examples:\n  \
             ctr-kill web                          # SIGKILL, like docker kill\n  \
             ctr-kill --signal HUP web\n  \
             ctr-kill --stop -t 5 web db           # both in parallel\n  \
             ctr-list -a | ctr-kill --stop --rm    # docker stop + docker rm of everything\n  \
             ctr-kill --rm -f -v web",
        )
}

pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "Reads JSON Lines on stdin when no CONTAINER is given: any object with an `id` field (ctr-list's \
           and ctr-spawn's `container` records) or a bare id, name or prefix per line. Prints the \
           `container` record of each container acted on, after the action (for --rm the last record, \
           with `removed: true`).",
    exit_status: "0  every container was acted on.\n\
                  Otherwise the code of the first container that failed (in input order), after all were \
                  tried: 2 usage, 3 no such container, 6 conflict (not running, running without -f for --rm, \
                  already paused), 1 a signal could not be sent or the process did not die, 7 I/O.",
    files: "containers/<id>/state.json\n    Read, and changed under locks/container-<id>.lock (status, \
            stoppedByUser, exit code when the owner is gone).\n\
            containers/<id>/config.json\n    Its annotations may name the stop signal.\n\
            /sys/fs/cgroup/.../kist/<id>\n    The freezer for --pause/--resume; removed by --rm.\n\
            names/<name>\n    Released by --rm if it still names the container.",
    examples:
        "ctr-kill --signal TERM web\nctr-kill --stop -t 30 web\nctr-kill --pause web; ctr-kill --resume web\n\
               ctr-list -a --filter status=exited | ctr-kill --rm\nctr-list -aq | ctr-kill --rm -f",
    see_also: "ctr-list(1), ctr-spawn(1), ctr-logs(1), kill(1), docker-stop(1), kist-state(5)",
};

/// What to do with each container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Signal(i32),
    Stop {
        grace: Option<Duration>,
    },
    Pause,
    Resume,
    /// Only --rm.
    Nothing,
}

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub action: Action,
    pub rm: bool,
    pub force: bool,
    pub volumes: bool,
}

impl Plan {
    pub fn from_matches(m: &ArgMatches) -> Result<Plan, Error> {
        let sig = m.get_one::<String>("signal");
        let (stop, pause, resume, rm) =
            (m.get_flag("stop"), m.get_flag("pause"), m.get_flag("resume"), m.get_flag("rm"));
        let chosen = [sig.is_some(), stop, pause, resume].iter().filter(|b| **b).count();
        if chosen > 1 {
            return Err(Error::Usage("choose one of --signal, --stop, --pause and --resume".into()));
        }
        if (pause || resume) && rm {
            return Err(Error::Usage("--rm cannot be combined with --pause or --resume".into()));
        }
        if m.get_one::<i64>("time").is_some() && !stop {
            return Err(Error::Usage("-t/--time only applies to --stop".into()));
        }
        if (m.get_flag("force") || m.get_flag("volumes")) && !rm {
            return Err(Error::Usage("-f and -v only apply to --rm".into()));
        }
        let action = if let Some(s) = sig {
            Action::Signal(signal::parse(s).map_err(Error::Usage)?)
        } else if stop {
            let t = m.get_one::<i64>("time").copied().unwrap_or(10);
            Action::Stop { grace: (t >= 0).then(|| Duration::from_secs(t as u64)) }
        } else if pause {
            Action::Pause
        } else if resume {
            Action::Resume
        } else if rm {
            Action::Nothing
        } else {
            Action::Signal(libc::SIGKILL)
        };
        Ok(Plan { action, rm, force: m.get_flag("force"), volumes: m.get_flag("volumes") })
    }
}

/// A process handle that cannot be confused with a later process of the same pid.
struct Pidfd {
    fd: OwnedFd,
    pid: i32,
}

impl Pidfd {
    /// Opens `pid` if it is the container's recorded process.
    fn open(pid: i32, state: &ContainerState, host: &Host) -> Option<Pidfd> {
        let limit = lifecycle::started_limit(state);
        if !host.is_alive(Some(pid), limit) {
            return None;
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the descriptor was just returned to us and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // Checked again now that the descriptor pins the process: the pid
        // may have been recycled between the first check and the open.
        host.is_alive(Some(pid), limit).then_some(Pidfd { fd, pid })
    }

    fn signal(&self, sig: i32) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal on a descriptor we own, no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        // Already gone: the signal had nothing left to do.
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        Err(e)
    }

    /// Waits until the process exits; false on timeout (None: forever).
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    left.as_millis().min(i32::MAX as u128) as i32
                }
            };
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one pollfd on the stack, valid for the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc > 0 {
                return true;
            }
            if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if rc == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            if rc < 0 {
                // poll on a pidfd does not fail otherwise; fall back to /proc.
                return !Path::new(&format!("/proc/{}", self.pid)).exists();
            }
        }
    }
}

fn display_name(state: &ContainerState) -> String {
    if state.name.is_empty() {
        state.id[..12.min(state.id.len())].to_string()
    } else {
        state.name.clone()
    }
}

/// The stop signal: state.json's, else config.json's annotations, else TERM.
fn stop_signal(root: &StateRoot, state: &ContainerState) -> i32 {
    if let Some(s) = state.stop_signal.as_deref().and_then(|s| signal::parse(s).ok()) {
        return s;
    }
    let config = ContainerPaths::new(root, &state.id).config();
    let from_config = std::fs::read(config)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            let a = v.get("annotations")?;
            ["org.opencontainers.image.stopSignal", "io.containerd.image.config.stop-signal"]
                .iter()
                .find_map(|k| a.get(*k).and_then(|s| s.as_str()).and_then(|s| signal::parse(s).ok()))
        });
    from_config.unwrap_or(libc::SIGTERM)
}

/// After the process died: lets the owner record the exit (it is the
/// parent and sees the status); if there is no live owner, records it here.
fn settle(root: &StateRoot, id: &str, pid: i32, last_signal: i32) -> Result<(), Error> {
    let host = Host::probe();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = lifecycle::load(root, id)?;
        if !matches!(state.status, Status::Running | Status::Paused) || state.pid != Some(pid) {
            return Ok(());
        }
        let owner_alive = host.is_alive(state.owner_pid, lifecycle::started_limit(&state));
        if !owner_alive || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    lifecycle::update(root, id, |s| {
        if matches!(s.status, Status::Running | Status::Paused) && s.pid == Some(pid) {
            s.status = Status::Exited;
            s.pid = None;
            s.owner_pid = None;
            s.exit_code = Some(128 + last_signal);
            s.finished_at = Some(kist_common::container::now_rfc3339());
        }
    })?;
    Ok(())
}

/// Sends `sig` to the container's process, thawing a paused one when the
/// signal is meant to end it; returns the handle to wait on.
fn send(
    state: &ContainerState,
    seen: &Observed,
    host: &Host,
    sig: i32,
    thaw: bool,
) -> Result<Option<Pidfd>, Error> {
    let Some(pid) = state.pid.filter(|_| seen.process_alive) else { return Ok(None) };
    let Some(h) = Pidfd::open(pid, state, host) else { return Ok(None) };
    h.signal(sig).map_err(|source| Error::Signal { name: display_name(state), pid, source })?;
    if thaw && state.status == Status::Paused {
        // A frozen task only acts on its signals once thawed (cgroup v1).
        if let Some(cg) = &state.cgroup {
            let _ = teardown::thaw(cg);
        }
    }
    Ok(Some(h))
}

/// Kills with SIGKILL and waits for the exit to be recorded.
fn kill_and_wait(
    root: &StateRoot,
    state: &ContainerState,
    seen: &Observed,
    host: &Host,
) -> Result<(), Error> {
    if let Some(h) = send(state, seen, host, libc::SIGKILL, true)? {
        if !h.wait(Some(Duration::from_secs(10))) {
            return Err(Error::Timeout { name: display_name(state), pid: h.pid, secs: 10 });
        }
        settle(root, &state.id, h.pid, libc::SIGKILL)?;
    }
    Ok(())
}

/// Waits (bounded) for a live owner to finish after its container exited,
/// so that removing the directory does not pull it from under the owner.
fn wait_owner(state: &ContainerState, host: &Host) {
    if let Some(o) = state.owner_pid {
        if let Some(h) = Pidfd::open(o, state, host) {
            h.wait(Some(Duration::from_secs(5)));
        }
    }
}

fn stop(root: &StateRoot, id: &str, grace: Option<Duration>, host: &Host) -> Result<(), Error> {
    let state = lifecycle::load(root, id)?;
    let seen = lifecycle::observe(&state, host);
    if !matches!(seen.status, Status::Running | Status::Paused | Status::Restarting | Status::Dead) {
        return Ok(());
    }
    // Recorded before any signal, so that a restart policy seeing the exit
    // already knows the user wanted it.
    let (state, ()) = lifecycle::update(root, id, |s| s.stopped_by_user = true)?;
    let sig = stop_signal(root, &state);
    let Some(h) = send(&state, &seen, host, sig, true)? else { return Ok(()) };
    let mut last = sig;
    if !h.wait(grace) {
        h.signal(libc::SIGKILL).map_err(|source| Error::Signal {
            name: display_name(&state),
            pid: h.pid,
            source,
        })?;
        last = libc::SIGKILL;
        if !h.wait(Some(Duration::from_secs(10))) {
            return Err(Error::Timeout { name: display_name(&state), pid: h.pid, secs: 10 });
        }
    }
    settle(root, id, h.pid, last)?;
    // An owner that wrote its own copy of the state at exit may have
    // dropped the mark: put it back.
    match lifecycle::update(root, id, |s| s.stopped_by_user = true) {
        Ok(_) | Err(ContainerError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn remove(root: &StateRoot, id: &str, plan: &Plan, host: &Host) -> Result<ContainerRecord, Error> {
    let state = lifecycle::load(root, id)?;
    let seen = lifecycle::observe(&state, host);
    let leftovers = state.cgroup.as_deref().map(teardown::cgroup_pids).unwrap_or_default();
    let alive = seen.process_alive || !leftovers.is_empty();
    if alive && !plan.force {
        return Err(Error::Running(display_name(&state)));
    }
    if alive {
        let (state, ()) = lifecycle::update(root, id, |s| s.stopped_by_user = true)?;
        kill_and_wait(root, &state, &seen, host)?;
    }
    let state = match lifecycle::load(root, id) {
        Ok(s) => s,
        // The owner removed it itself (ctr-spawn --rm): nothing is left to do.
        Err(ContainerError::NotFound(_)) => {
            let mut rec = lifecycle::record(&state, host);
            rec.removed = true;
            return Ok(rec);
        }
        Err(e) => return Err(e.into()),
    };
    wait_owner(&state, host);
    let host = Host::probe();
    let mut rec = lifecycle::record(&state, &host);
    let lock = kist_common::container::lock(root, id)?;
    let state = match ContainerState::load(&ContainerPaths::new(root, id).state()) {
        Ok(mut s) => {
            s.status = Status::Removing;
            let _ = s.save(&ContainerPaths::new(root, id).state());
            s
        }
        Err(ContainerError::NotFound(_)) => state,
        Err(e) => return Err(e.into()),
    };
    teardown::remove(root, id, &Removal::of(&state, plan.volumes))?;
    drop(lock);
    rec.removed = true;
    Ok(rec)
}

/// Acts on one container; returns its record after the action.
pub fn act(root: &StateRoot, query: &str, plan: &Plan) -> Result<ContainerRecord, Error> {
    let id = lifecycle::resolve(root, query)?;
    let host = Host::probe();
    match plan.action {
        Action::Nothing => {}
        Action::Signal(sig) => {
            let state = lifecycle::load(root, &id)?;
            let seen = lifecycle::observe(&state, &host);
            let running =
                matches!(seen.status, Status::Running | Status::Paused | Status::Dead) && seen.process_alive;
            if !running {
                if !plan.rm {
                    return Err(Error::NotRunning(display_name(&state)));
                }
            } else if sig == libc::SIGKILL {
                kill_and_wait(root, &state, &seen, &host)?;
            } else if send(&state, &seen, &host, sig, false)?.is_none() {
                return Err(Error::NotRunning(display_name(&state)));
            }
        }
        Action::Stop { grace } => stop(root, &id, grace, &host)?,
        Action::Pause => {
            let state = lifecycle::load(root, &id)?;
            let seen = lifecycle::observe(&state, &host);
            match seen.status {
                Status::Paused => return Err(Error::AlreadyPaused(display_name(&state))),
                Status::Running if seen.process_alive => {}
                _ => return Err(Error::NotRunning(display_name(&state))),
            }
            let cg = state.cgroup.clone().ok_or_else(|| Error::NotRunning(display_name(&state)))?;
            teardown::freeze(&cg)?;
            lifecycle::update(root, &id, |s| {
                if s.status == Status::Running {
                    s.status = Status::Paused;
                }
            })?;
        }
        Action::Resume => {
            let state = lifecycle::load(root, &id)?;
            let seen = lifecycle::observe(&state, &host);
            if seen.status != Status::Paused {
                return Err(Error::NotPaused(display_name(&state)));
            }
            if let Some(cg) = &state.cgroup {
                teardown::thaw(cg)?;
            }
            lifecycle::update(root, &id, |s| {
                if s.status == Status::Paused {
                    s.status = Status::Running;
                }
            })?;
        }
    }
    if plan.rm {
        return remove(root, &id, plan, &host);
    }
    let state = lifecycle::load(root, &id)?;
    Ok(lifecycle::record(&state, &Host::probe()))
}

pub fn run(matches: &ArgMatches) -> Result<(), Error> {
    let root = StateRoot::resolve(matches.get_one::<PathBuf>("root").map(PathBuf::as_path))?;
    let plan = Plan::from_matches(matches)?;
    let echo = matches.get_flag("echo");
    let args: Vec<String> =
        matches.get_many::<String>("container").map(|v| v.cloned().collect()).unwrap_or_default();
    if args.is_empty() && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Error::Usage(
            "no containers given: name them as arguments or pipe records on stdin".into(),
        ));
    }
    let mut queries: Vec<String> = kist_common::input::targets(&args)?.into_iter().map(|t| t.id).collect();
    // One container named twice (by id and by name) is acted on once.
    let mut seen_ids = std::collections::HashSet::new();
    queries.retain(|q| match lifecycle::resolve(&root, q) {
        Ok(id) => seen_ids.insert(id),
        Err(_) => true,
    });
    let total = queries.len();
    if total == 0 {
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(usize, ExitCode)>> = Mutex::new(Vec::new());
    let workers = total.min(64);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(q) = queries.get(i) else { break };
                match act(&root, q, &plan) {
                    Ok(rec) => {
                        let written = if echo {
                            use std::io::Write;
                            writeln!(std::io::stdout().lock(), "{q}")
                        } else {
                            kist_common::record::emit(&Record::Container(rec))
                        };
                        if let Err(e) = written {
                            kist_common::diag::error_fmt(format_args!(
                                "cannot write to standard output: {e}"
                            ));
                            if let Ok(mut f) = failures.lock() {
                                f.push((i, ExitCode::Io));
                            }
                        }
                    }
                    Err(e) => {
                        let code = e.exit_code();
                        report_for(q, &e);
                        if let Ok(mut f) = failures.lock() {
                            f.push((i, code));
                        }
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_default();
    failures.sort_by_key(|(i, _)| *i);
    match failures.first() {
        None => Ok(()),
        Some((_, code)) => Err(Error::Partial { failed: failures.len(), total, code: *code }),
    }
}

/// One container's failure on stderr: the name it was given, the error and
/// its sources, on one line.
fn report_for(query: &str, err: &Error) {
    let mut line = format!("{query}: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    kist_common::diag::error_fmt(format_args!("{line}"));
}

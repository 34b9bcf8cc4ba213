//! The verbs around the monitor: `-d` (create, start under a monitor,
//! print the record), `--create` (create only), `--start` (start a created
//! or exited container again, detached or attached) and `--restore`
//! (after a reboot, start what the restart policies say).

use kist_common::container::{self, ContainerState, Status};
use kist_common::lifecycle;
use kist_common::record::{emit, Record};
use kist_common::teardown::{self, Removal};
use kist_common::StateRoot;

use super::create::{self, Prepared};
use super::monitor;
use crate::options::Options;
use crate::Error;

fn print(root: &StateRoot, id: &str) -> Result<(), Error> {
    print_started(root, id, None)
}

/// Prints the container's record. `created`: the state it was created
/// with, for a `--rm` container that its monitor, once told it started,
/// has seen end and removed before the record is read (`-- true`): it is
/// reported as started, which is what is known of it. (One whose monitor
/// has yet to record its exit is reported running by `lifecycle::record`.)
fn print_started(root: &StateRoot, id: &str, created: Option<&ContainerState>) -> Result<(), Error> {
    let rec = match (lifecycle::load(root, id), created) {
        (Ok(state), _) => lifecycle::record(&state, &lifecycle::Host::probe()),
        (Err(container::ContainerError::NotFound(_)), Some(created)) => {
            let mut state = created.clone();
            state.status = Status::Running;
            state.record()
        }
        (Err(e), _) => return Err(e.into()),
    };
    emit(&Record::Container(rec)).map_err(|e| Error::Sys(format!("stdout: {e}")))
}

/// A container whose process has just ended still reads as running until
/// its owner records the exit; a start in that moment waits for the record
/// (bounded) rather than take the container for a running one.
fn wait_for_pending_exit(root: &StateRoot, id: &str) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let state = lifecycle::load(root, id)?;
        let seen = lifecycle::observe(&state, &lifecycle::Host::probe());
        let pending = matches!(seen.status, Status::Running | Status::Paused)
            && !seen.process_alive
            && seen.owner_alive;
        if !pending || std::time::Instant::now() >= deadline {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `ctr-spawn -d`: returns once the container runs, with its record printed.
pub fn run(opts: Options) -> Result<u8, Error> {
    let Prepared { mut guard, plan, state, .. } = create::prepare(&opts)?;
    // From here on the container exists; a failed start leaves it behind
    // as Docker does (exited with 125/126/127), unless --rm.
    guard.armed = false;
    monitor::spawn(&opts.root, plan)?;
    print_started(&opts.root, &state.id, Some(&state))?;
    Ok(0)
}

/// `ctr-spawn --create`: the container, created and not started.
pub fn create_only(opts: Options) -> Result<u8, Error> {
    let Prepared { mut guard, state, .. } = create::prepare(&opts)?;
    guard.armed = false;
    print(&opts.root, &state.id)?;
    Ok(0)
}

/// `ctr-spawn --start NAME|ID [-a] [-i]`.
pub fn start(root: &StateRoot, query: &str, attach: bool, interactive: bool) -> Result<u8, Error> {
    let id = lifecycle::resolve(root, query)?;
    wait_for_pending_exit(root, &id)?;
    let host = lifecycle::Host::probe();
    let (state, ok) = lifecycle::update(root, &id, |s| {
        let seen = lifecycle::observe(s, &host);
        let ok = matches!(seen.status, Status::Created | Status::Exited);
        if ok {
            // A start undoes the user's stop, and (as Docker's does) begins
            // the restart count anew: `on-failure:N` counts from here.
            s.stopped_by_user = false;
            s.restart_count = 0;
        }
        (ok, seen.status)
    })?;
    match ok {
        (true, _) => {}
        (false, Status::Running | Status::Paused | Status::Restarting) => {
            // Docker: starting a running container is a no-op.
            print(root, &id)?;
            return Ok(0);
        }
        (false, other) => {
            return Err(Error::Usage(format!(
                "container {} is {}: it cannot be started",
                &id[..12],
                other.as_str()
            )))
        }
    }
    let (mut plan, _) = create::load_plan(root, &state)?;
    if attach {
        plan.interactive = interactive;
        let tty = state.tty;
        let _ = teardown::destroy_cgroup(&plan.cgroup_path);
        let code = super::attached::run_plan(root, &plan, tty, interactive, &None)?;
        if state.auto_remove {
            let now = lifecycle::load(root, &id)?;
            teardown::remove(root, &id, &Removal::of(&now, true))?;
        }
        return Ok(code);
    }
    monitor::spawn(root, plan)?;
    print(root, &id)?;
    Ok(0)
}

/// `ctr-spawn --restore`: after a reboot, records the containers left from
/// the previous boot as exited, removes the --rm ones, and starts the
/// `always` ones and the `unless-stopped` ones the user had not stopped.
pub fn restore(root: &StateRoot) -> Result<u8, Error> {
    let boot = container::boot_id();
    let mut failed = false;
    for id in lifecycle::container_ids(root)? {
        let Ok(state) = lifecycle::load(root, &id) else { continue };
        if state.boot_id.is_empty() || state.boot_id == boot {
            continue;
        }
        if let Err(e) = restore_one(root, &id, &state, &boot) {
            kist_common::warn!("container {}: {e}", &id[..12]);
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

fn restore_one(root: &StateRoot, id: &str, state: &ContainerState, boot: &str) -> Result<(), Error> {
    let live =
        matches!(state.status, Status::Running | Status::Paused | Status::Restarting | Status::Removing);
    if state.auto_remove {
        teardown::remove(root, id, &Removal::of(state, true))?;
        return Ok(());
    }
    let (state, ()) = lifecycle::update(root, id, |s| {
        if live {
            s.status = Status::Exited;
            s.exit_code = Some(s.exit_code.unwrap_or(255));
            s.pid = None;
            s.owner_pid = None;
        }
        // Judged once: a second --restore on this boot leaves it alone.
        s.boot_id = boot.to_string();
    })?;
    let (plan, launch) = create::load_plan(root, &state)?;
    if !launch.restart.restores(state.stopped_by_user) || state.status == Status::Created {
        return Ok(());
    }
    monitor::spawn(root, plan)?;
    kist_common::info!("restored {} ({})", state.name, &id[..12]);
    Ok(())
}

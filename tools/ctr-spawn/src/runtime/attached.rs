//! An attached run, start to finish: create the container (see
//! [`super::create`]), make the cgroup, start the init, relay until it
//! exits, record the exit, and clean up (everything with --rm; the cgroup
//! always). State changes after creation go through
//! kist_common::lifecycle::update, so that what other tools wrote meanwhile
//! (ctr-kill's stoppedByUser) is kept.

use std::path::PathBuf;

use kist_common::container::{self, ContainerState, Status};
use kist_common::fsutil::atomic_write;
use kist_common::lifecycle;
use kist_common::record::Record;
use kist_common::StateRoot;

use super::cgroups;
use super::create::{self, Prepared};
use crate::bundle::Plan;
use crate::options::Options;
use crate::Error;

pub fn write_record(path: &Option<PathBuf>, state: &ContainerState) -> Result<(), Error> {
    if let Some(p) = path {
        let mut line = Record::Container(state.record()).to_line();
        line.push('\n');
        atomic_write(p, line.as_bytes())?;
    }
    Ok(())
}

/// The state's view of a started container's network: its published ports
/// as `docker ps` shows them, and its network and address.
pub fn net_view(running: &super::Running) -> (Vec<String>, std::collections::BTreeMap<String, String>) {
    match &running.net {
        Some(a) => (
            a.bindings().iter().map(|b| b.to_string()).collect(),
            std::iter::once((a.network.clone(), a.address.to_string())).collect(),
        ),
        None => (Vec::new(), Default::default()),
    }
}

/// Runs the container attached; returns the status to exit with.
pub fn run(opts: Options) -> Result<u8, Error> {
    // The cgroup is made while the container's files are written.
    let resources = crate::bundle::linux_resources(&opts)?;
    let (prepared, cgroup) =
        create::prepare_alongside(&opts, |id| cgroups::create(&crate::bundle::cgroup_path(id), &resources));
    let cgroup = cgroup.unwrap_or_else(|| Err(Error::Cgroup("the cgroup thread panicked".into())));
    let (Prepared { mut guard, plan, .. }, cgroup) = match (prepared, cgroup) {
        (Ok(p), Ok(cg)) => (p, cg),
        (Ok(_), Err(e)) => return Err(e),
        (Err(e), cgroup) => {
            if let Ok(cg) = cgroup {
                let _ = cg.destroy();
            }
            return Err(e);
        }
    };
    let root = opts.root.clone();
    let mut releasing = Releasing(None);
    let result = run_plan_releasing(
        &root,
        &plan,
        Some(cgroup),
        opts.tty,
        opts.interactive,
        &opts.record,
        &mut releasing,
    );
    if opts.rm {
        // The network is released meanwhile, by the thread `releasing`
        // joins (before ctr-spawn exits, so nothing outlives the run).
        guard.remove_with(releasing.active())?;
    } else {
        guard.armed = false;
    }
    drop(releasing);
    result
}

/// The release of an exited container's network attachment, running on a
/// thread of its own while the owner removes the cgroup, records the exit
/// and (with --rm) removes the container: the release (the lease file, the
/// scan of /proc for the namespace's last users, the veth) takes as long
/// as all of that. The thread is made while the container runs and holds
/// the attachment until [`Releasing::go`]: started at the exit instead, it
/// waited a millisecond and more for a CPU that the kernel's teardown of
/// the container's namespaces keeps busy. Dropping it lets it go and waits
/// for the release.
pub struct Releasing(Option<(std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>)>);

impl Releasing {
    /// Holds `net` on a thread until [`Releasing::go`] (or the drop).
    fn hold(net: Option<kist_common::net::Attachment>) -> Releasing {
        Releasing(net.map(|a| {
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let h = std::thread::spawn(move || {
                // A message or the sender's drop: the init has exited.
                let _ = wait.recv();
                drop(a)
            });
            (h, go)
        }))
    }

    /// The init has exited: release now.
    fn go(&self) {
        if let Some((_, go)) = &self.0 {
            let _ = go.send(());
        }
    }

    /// True if a release runs (the container had a network attachment).
    pub fn active(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Releasing {
    fn drop(&mut self) {
        if let Some((h, go)) = self.0.take() {
            drop(go);
            let _ = h.join();
        }
    }
}

/// Starts an existing container's plan attached and waits for it.
pub fn run_plan(
    root: &StateRoot,
    plan: &Plan,
    tty: bool,
    interactive: bool,
    record: &Option<PathBuf>,
) -> Result<u8, Error> {
    run_plan_releasing(root, plan, None, tty, interactive, record, &mut Releasing(None))
}

/// [`run_plan`] with the container's cgroup made already (else it is made
/// here from the plan); `releasing` receives the network release, still
/// under way when this returns (it ends when `releasing` is dropped).
fn run_plan_releasing(
    root: &StateRoot,
    plan: &Plan,
    cgroup: Option<cgroups::Cgroup>,
    tty: bool,
    interactive: bool,
    record: &Option<PathBuf>,
    releasing: &mut Releasing,
) -> Result<u8, Error> {
    let id = plan.id.clone();
    let cgroup = match cgroup {
        Some(cg) => cg,
        None => {
            let resources =
                plan.spec.linux().as_ref().and_then(|l| l.resources().clone()).unwrap_or_default();
            cgroups::create(&plan.cgroup_path, &resources)?
        }
    };
    let raw = if tty { Some(super::tty::RawMode::enter()) } else { None };
    // The output is also logged: a terminal's by the relay (super::tty),
    // pipes' by super::tee; not for --rm, whose log would go with the
    // container.
    let diverted = match tty || plan.ephemeral {
        true => None,
        false => super::tee::Diverted::divert()
            .map_err(|e| kist_common::warn!("the container's output is not logged: {e}"))
            .ok(),
    };
    let started = super::start(root, plan, Some(&cgroup));
    let tee = diverted.and_then(|d| d.restore(started.is_ok(), &plan.paths.log(), plan.log));
    let outcome = started.and_then(|mut running| {
        let pid = running.pid.as_raw();
        let (ports, networks) = net_view(&running);
        let (state, ()) = lifecycle::update(root, &id, |s| {
            s.ports = ports;
            s.networks = networks;
            s.status = Status::Running;
            s.pid = Some(pid);
            s.owner_pid = Some(std::process::id() as i32);
            s.started_at = Some(container::now_rfc3339());
            s.finished_at = None;
            s.exit_code = None;
            s.oom_killed = false;
            s.boot_id = container::boot_id();
        })?;
        write_record(record, &state)?;
        // Held until the init has exited, then released on a thread.
        *releasing = Releasing::hold(running.net.take());
        let tty_log =
            (tty && !plan.ephemeral).then(|| kist_common::logfile::LogFile::new(plan.paths.log(), plan.log));
        let status = running.wait(interactive, tty_log);
        releasing.go();
        status
    });
    if let Some(t) = tee {
        t.finish();
    }
    drop(raw);
    let oom = cgroup.oom_killed();
    let destroyed = cgroup.destroy();

    let (code, result) = match outcome {
        Ok(code) => (code, Ok(code.clamp(0, 255) as u8)),
        Err(e) => (i32::from(e.status()), Err(e)),
    };
    if oom {
        kist_common::warn!(
            "container {} was killed by the kernel's OOM killer (memory limit reached)",
            &id[..12]
        );
    }
    let saved = lifecycle::update(root, &id, |s| {
        s.status = Status::Exited;
        s.pid = None;
        s.owner_pid = None;
        s.exit_code = Some(code);
        s.oom_killed = oom;
        s.finished_at = Some(container::now_rfc3339());
        s.ports.clear();
        s.networks.clear();
    });
    match saved {
        Ok((state, ())) => {
            let _ = write_record(record, &state);
        }
        // Removed meanwhile (ctr-kill --rm -f): nothing left to record.
        Err(container::ContainerError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    destroyed?;
    result
}

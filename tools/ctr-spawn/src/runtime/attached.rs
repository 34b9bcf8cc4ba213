//! An attached run, start to finish: claim an id and a name, write the
//! bundle and state, make the cgroup, start the init, relay until it exits,
//! record the exit, and clean up (everything with --rm; the cgroup always).
//! Whatever fails half-way, nothing half-created is left behind.

use std::path::PathBuf;

use kist_common::container::{self, ContainerPaths, ContainerState, Status};
use kist_common::fsutil::{atomic_write, atomic_write_nosync, Lock};
use kist_common::record::{Record, SnapshotRecord};
use kist_common::StateRoot;

use super::cgroups;
use crate::bundle::{self, Inputs};
use crate::options::Options;
use crate::{image, names, Error};

/// Undoes a container's creation unless disarmed.
struct Created {
    root: StateRoot,
    id: String,
    name: Option<String>,
    paths: ContainerPaths,
    anonymous_volumes: Vec<PathBuf>,
    armed: bool,
}

impl Created {
    fn remove(&mut self) {
        let _ = std::fs::remove_dir_all(&self.paths.dir);
        if let Some(n) = &self.name {
            container::release_name(&self.root, n, &self.id);
        }
        for v in &self.anonymous_volumes {
            let _ = std::fs::remove_dir_all(v);
        }
        let _ = std::fs::remove_file(container::lock_path(&self.root, &self.id));
        self.armed = false;
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if self.armed {
            self.remove();
        }
    }
}

/// Writes a container file atomically; fsync'd unless the container is
/// ephemeral (`--rm`: nothing of it may outlive the run, so a power loss
/// has nothing to preserve, and the fsyncs would dominate its start time).
fn put(durable: bool, path: &std::path::Path, bytes: &[u8]) -> Result<(), Error> {
    if durable {
        atomic_write(path, bytes)?;
    } else {
        atomic_write_nosync(path, bytes)?;
    }
    Ok(())
}

fn save(root: &StateRoot, state: &ContainerState, paths: &ContainerPaths) -> Result<(), Error> {
    let _lock = container::lock(root, &state.id)?;
    let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::Sys(format!("state.json: {e}")))?;
    bytes.push(b'\n');
    put(!state.auto_remove, &paths.state(), &bytes)
}

fn write_record(path: &Option<PathBuf>, state: &ContainerState) -> Result<(), Error> {
    if let Some(p) = path {
        let mut line = Record::Container(state.record()).to_line();
        line.push('\n');
        atomic_write(p, line.as_bytes())?;
    }
    Ok(())
}

/// Runs the container attached; returns the status to exit with.
pub fn run(opts: Options) -> Result<u8, Error> {
    let root = opts.root.clone();
    root.ensure()?;
    // Held while the container is created, so that img-rm's collection
    // sees either no container or one whose state names its snapshots.
    let snapshots_lock = Lock::shared(&root.locks_dir().join("snapshots.lock"))?;
    let snap: SnapshotRecord = match &opts.image_ref {
        Some(r) => image::from_store(&root, r)?,
        None => image::from_stdin(opts.interactive)?,
    };
    if snap.snapshots.is_empty() {
        return Err(Error::Image("the snapshot record names no snapshots".into()));
    }
    if let Some(missing) = snap.snapshots.iter().find(|p| !p.is_dir()) {
        return Err(Error::Image(format!(
            "snapshot {} is missing: run img-unpack for image {} first",
            missing.display(),
            snap.id
        )));
    }

    let id = names::new_id().map_err(|e| Error::Sys(format!("random: {e}")))?;
    let paths = ContainerPaths::new(&root, &id);
    let mut created = Created {
        root: root.clone(),
        id: id.clone(),
        name: None,
        paths: paths.clone(),
        anonymous_volumes: Vec::new(),
        armed: true,
    };
    let name = match &opts.name {
        Some(n) => {
            container::claim_name(&root, n, &id)?;
            n.clone()
        }
        None => {
            let mut retry = 0;
            loop {
                let n = names::generated_name(retry);
                match container::claim_name(&root, &n, &id) {
                    Ok(()) => break n,
                    Err(container::ContainerError::NameInUse { .. }) if retry < 20 => retry += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    };
    created.name = Some(name.clone());

    std::fs::create_dir(&paths.dir).map_err(Error::io("cannot create", &paths.dir))?;
    for d in [paths.upper(), paths.work(), paths.rootfs()] {
        std::fs::create_dir(&d).map_err(Error::io("cannot create", &d))?;
    }
    let plan = bundle::plan(
        &opts,
        &Inputs {
            id: &id,
            name: &name,
            paths: &paths,
            image: &snap.config,
            snapshots: &snap.snapshots,
            volumes_dir: &root.volumes_dir(),
        },
    )?;
    created.anonymous_volumes = plan
        .volumes
        .iter()
        .filter(|v| v.anonymous)
        .filter_map(|v| v.data.parent().map(PathBuf::from))
        .collect();
    let durable = !opts.rm;
    put(durable, &paths.hostname(), format!("{}\n", plan.hostname).as_bytes())?;
    put(durable, &paths.hosts(), &bundle::hosts_file(opts.network))?;
    put(durable, &paths.resolv_conf(), &bundle::resolv_conf(opts.network))?;
    let mut config =
        serde_json::to_vec_pretty(&plan.spec).map_err(|e| Error::Sys(format!("config.json: {e}")))?;
    config.push(b'\n');
    put(durable, &paths.config(), &config)?;

    let command = plan.spec.process().as_ref().and_then(|p| p.args().clone()).unwrap_or_default();
    let mut state = ContainerState {
        schema_version: container::STATE_VERSION,
        id: id.clone(),
        name: name.clone(),
        image: snap.id.clone(),
        image_ref: opts.image_ref.clone().or_else(|| snap.reference.clone()),
        snapshots: snap.snapshots.clone(),
        command,
        created: container::now_rfc3339(),
        status: Status::Created,
        pid: None,
        owner_pid: Some(std::process::id() as i32),
        started_at: None,
        finished_at: None,
        exit_code: None,
        oom_killed: false,
        restart_count: 0,
        auto_remove: opts.rm,
        tty: opts.tty,
        hostname: plan.hostname.clone(),
        cgroup: Some(plan.cgroup_path.clone()),
        boot_id: container::boot_id(),
        labels: opts.labels.clone(),
        volumes: plan.volumes.iter().map(|v| v.name.clone()).collect(),
        anonymous_volumes: plan.volumes.iter().filter(|v| v.anonymous).map(|v| v.name.clone()).collect(),
        stop_signal: Some(snap.config.stop_signal.clone()).filter(|s| !s.is_empty()),
        stopped_by_user: false,
    };
    save(&root, &state, &paths)?;
    drop(snapshots_lock);
    if let Some(f) = &opts.cidfile {
        write_cidfile(f, &id)?;
    }

    let resources = plan.spec.linux().as_ref().and_then(|l| l.resources().clone()).unwrap_or_default();
    let cgroup = cgroups::create(&plan.cgroup_path, &resources)?;
    let raw = if opts.tty { Some(super::tty::RawMode::enter()) } else { None };
    let outcome = super::start(&plan, Some(&cgroup)).and_then(|running| {
        state.status = Status::Running;
        state.pid = Some(running.pid.as_raw());
        state.started_at = Some(container::now_rfc3339());
        save(&root, &state, &paths)?;
        write_record(&opts.record, &state)?;
        running.wait(opts.interactive)
    });
    drop(raw);
    let oom = cgroup.oom_killed();
    let destroyed = cgroup.destroy();

    let (code, result) = match outcome {
        Ok(code) => (code, Ok(code.clamp(0, 255) as u8)),
        Err(e) => (i32::from(e.status()), Err(e)),
    };
    state.status = Status::Exited;
    state.pid = None;
    state.owner_pid = None;
    state.exit_code = Some(code);
    state.oom_killed = oom;
    state.finished_at = Some(container::now_rfc3339());
    if oom {
        kist_common::warn!(
            "container {} was killed by the kernel's OOM killer (memory limit reached)",
            &id[..12]
        );
    }
    let _ = write_record(&opts.record, &state);
    if opts.rm {
        created.remove();
    } else {
        created.armed = false;
        save(&root, &state, &paths)?;
    }
    destroyed?;
    result
}

/// Docker's --cidfile: created exclusively, holding the id.
fn write_cidfile(path: &std::path::Path, id: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Usage(format!(
                "container ID file found, make sure the other container isn't running or delete {}",
                path.display()
            ))
        } else {
            Error::io("cannot write cidfile", path)(e)
        }
    })?;
    f.write_all(id.as_bytes()).map_err(Error::io("cannot write cidfile", path))?;
    Ok(())
}

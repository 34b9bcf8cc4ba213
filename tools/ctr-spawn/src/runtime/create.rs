//! Creating a container, shared by attached and detached runs and
//! `--create`: claim an id and a name, write the bundle, `state.json`
//! (status created) and `spawn.json` (what the runtime needs beyond
//! config.json, so that `--start` and the monitor can start it again).
//! Whatever fails half-way, nothing half-created is left behind: the
//! [`Created`] guard removes it through kist_common::teardown.

use std::path::{Path, PathBuf};

use kist_common::container::{self, ContainerPaths, ContainerState, Status};
use kist_common::fsutil::{atomic_write_all_syncing, atomic_write_nosync, Lock};
use kist_common::record::SnapshotRecord;
use kist_common::teardown::{self, Removal};
use kist_common::StateRoot;
use serde::{Deserialize, Serialize};

use crate::bundle::{self, Inputs, Plan, VolumeUse};
use crate::options::Options;
use crate::restart::{LogOpts, Policy};
use crate::{image, names, Error};

/// `containers/<id>/spawn.json`: the runtime's inputs that config.json does
/// not hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Launch {
    /// Overlay lower directories, highest layer first.
    pub lowerdirs: Vec<PathBuf>,
    pub volumes: Vec<VolumeUse>,
    pub init: bool,
    pub interactive: bool,
    pub ephemeral: bool,
    #[serde(default)]
    pub restart: Policy,
    #[serde(default)]
    pub log: LogOpts,
    /// The bridge or user network attached at every start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<kist_common::net::Request>,
    /// `--network container:`: the id of the container whose network is joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_network: Option<String>,
}

pub fn launch_path(paths: &ContainerPaths) -> PathBuf {
    paths.dir.join("spawn.json")
}

/// Undoes a container's creation unless disarmed.
pub struct Created {
    pub root: StateRoot,
    pub id: String,
    pub name: Option<String>,
    pub anonymous_volumes: Vec<String>,
    pub armed: bool,
}

impl Created {
    /// Removes what was created (the caller removes its cgroup).
    pub fn remove(&mut self) -> Result<(), Error> {
        self.remove_with(false)
    }

    /// [`Created::remove`]; with `leases_released_by_owner` the caller
    /// releases the network attachment itself (see teardown::Removal).
    pub fn remove_with(&mut self, leases_released_by_owner: bool) -> Result<(), Error> {
        self.armed = false;
        let what = Removal {
            name: self.name.clone(),
            cgroup: None,
            volumes: self.anonymous_volumes.clone(),
            leases_released_by_owner,
        };
        teardown::remove(&self.root, &self.id, &what)?;
        Ok(())
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.remove();
        }
    }
}

fn json<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, Error> {
    let mut bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::Sys(format!("{what}: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// A created container, ready to start.
pub struct Prepared {
    pub guard: Created,
    pub plan: Plan,
    pub state: ContainerState,
    pub launch: Launch,
}

/// Creates the container (status created).
pub fn prepare(opts: &Options) -> Result<Prepared, Error> {
    let id = names::new_id().map_err(|e| Error::Sys(format!("random: {e}")))?;
    prepare_as(opts, id)
}

/// [`prepare`], running `alongside(id)` on a thread of its own meanwhile
/// (an attached run creates the container's cgroup there: a dozen mkdirs
/// and writes in /sys/fs/cgroup that need only the id, in the time the
/// container's files take). The thread is joined before this returns, so
/// the process is single-threaded again for the init's clone. Its result
/// comes back whatever prepare's is: on a failure the caller undoes it.
pub fn prepare_alongside<T: Send>(
    opts: &Options,
    alongside: impl FnOnce(&str) -> T + Send,
) -> (Result<Prepared, Error>, Option<T>) {
    let id = match names::new_id() {
        Ok(id) => id,
        Err(e) => return (Err(Error::Sys(format!("random: {e}"))), None),
    };
    std::thread::scope(|s| {
        let beside = s.spawn(|| alongside(&id));
        let prepared = prepare_as(opts, id.clone());
        (prepared, beside.join().ok())
    })
}

fn prepare_as(opts: &Options, id: String) -> Result<Prepared, Error> {
    let root = opts.root.clone();
    root.ensure()?;
    // Held while the container is created, so that img-rm's collection
    // sees either no container or one whose state names its snapshots.
    let snapshots_lock = Lock::shared(&root.locks_dir().join("snapshots.lock"))?;
    let snap: SnapshotRecord = match &opts.image_ref {
        // Opening the store discards what an earlier boot left unflushed.
        Some(r) => image::from_store(&root, r)?,
        None => {
            // A record read from stdin may be older than the last boot:
            // snapshots the machine went down before flushing go first.
            kist_common::settle::recover(&root, kist_common::settle::Orphans::Leave)
                .map_err(kist_common::store::StoreError::from)?;
            image::from_stdin(opts.interactive)?
        }
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

    let paths = ContainerPaths::new(&root, &id);
    let mut guard = Created {
        root: root.clone(),
        id: id.clone(),
        name: None,
        anonymous_volumes: Vec::new(),
        armed: true,
    };
    let name = match &opts.name {
        Some(n) => {
            container::claim_name_durable(&root, n, &id, false)?;
            n.clone()
        }
        None => {
            let mut retry = 0;
            loop {
                let n = names::generated_name(retry);
                match container::claim_name_durable(&root, &n, &id, false) {
                    Ok(()) => break n,
                    Err(container::ContainerError::NameInUse { .. }) if retry < 20 => retry += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    };
    guard.name = Some(name.clone());

    let joined = match &opts.network {
        crate::options::Network::Container(q) => {
            let jid = kist_common::lifecycle::resolve(&root, q)?;
            let j = kist_common::lifecycle::load(&root, &jid)?;
            let seen = kist_common::lifecycle::observe(&j, &kist_common::lifecycle::Host::probe());
            if seen.status != Status::Running {
                return Err(Error::Usage(format!("cannot join network of a non running container: {q}")));
            }
            Some(j)
        }
        _ => None,
    };
    std::fs::create_dir(&paths.dir).map_err(Error::io("cannot create", &paths.dir))?;
    for d in [paths.upper(), paths.work(), paths.rootfs()] {
        std::fs::create_dir(&d).map_err(Error::io("cannot create", &d))?;
    }
    let plan = bundle::plan(
        opts,
        &Inputs {
            id: &id,
            name: &name,
            paths: &paths,
            image: &snap.config,
            snapshots: &snap.snapshots,
            volumes_dir: &root.volumes_dir(),
            joined: joined.as_ref(),
        },
    )?;
    let mut plan = plan;
    plan.network = network_request(opts, &snap.config)?;
    guard.anonymous_volumes = plan.volumes.iter().filter(|v| v.anonymous).map(|v| v.name.clone()).collect();
    let launch = Launch {
        lowerdirs: plan.lowerdirs.clone(),
        volumes: plan.volumes.clone(),
        init: plan.init,
        interactive: plan.interactive,
        ephemeral: plan.ephemeral,
        restart: opts.restart,
        log: opts.log,
        network: plan.network.clone(),
        join_network: plan.join_network.clone(),
    };

    let command = plan.spec.process().as_ref().and_then(|p| p.args().clone()).unwrap_or_default();
    let state = ContainerState {
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
        owner_pid: None,
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
        anonymous_volumes: guard.anonymous_volumes.clone(),
        stop_signal: Some(snap.config.stop_signal.clone()).filter(|s| !s.is_empty()),
        stopped_by_user: false,
        ports: Vec::new(),
        networks: Default::default(),
    };
    // The bundle and state.json in one batch, state.json renamed last: a
    // state.json on disk means the bundle beside it is complete.
    let files: [(PathBuf, Vec<u8>); 6] = [
        (paths.hostname(), format!("{}\n", plan.hostname).into_bytes()),
        (paths.hosts(), bundle::hosts_file(&opts.network, &opts.net.add_hosts)),
        (paths.resolv_conf(), bundle::resolv_conf(&opts.network, &opts.net)),
        (paths.config(), json("config.json", &plan.spec)?),
        (launch_path(&paths), json("spawn.json", &launch)?),
        (paths.state(), json("state.json", &state)?),
    ];
    {
        // Nobody else knows the id yet; the lock is for form's sake.
        let _lock = container::lock(&root, &state.id)?;
        if opts.rm {
            // Nothing of a --rm container may outlive the run: no power
            // loss to survive, only a killed writer.
            for (path, bytes) in &files {
                atomic_write_nosync(path, bytes)?;
            }
        } else {
            // The name claim (linked without an fsync above) and the
            // directory entries leading to the container are made durable
            // in the same parallel batch, before state.json is renamed in.
            let refs: Vec<(&Path, &[u8])> = files.iter().map(|(p, b)| (p.as_path(), b.as_slice())).collect();
            let claim = root.names_dir().join(&name);
            let containers = root.containers_dir();
            let names = root.names_dir();
            atomic_write_all_syncing(&refs, &[&claim, &names, &containers])?;
        }
    }
    drop(snapshots_lock);
    if let Some(f) = &opts.cidfile {
        write_cidfile(f, &id)?;
    }
    Ok(Prepared { guard, plan, state, launch })
}

/// Rebuilds the plan of an existing container from its config.json,
/// spawn.json and state (for `--start`, `--restore`).
pub fn load_plan(root: &StateRoot, state: &ContainerState) -> Result<(Plan, Launch), Error> {
    kist_common::settle::recover(root, kist_common::settle::Orphans::Leave)
        .map_err(kist_common::store::StoreError::from)?;
    let paths = ContainerPaths::new(root, &state.id);
    let spec = oci_spec::runtime::Spec::load(paths.config())
        .map_err(|e| Error::Sys(format!("{}: {e}", paths.config().display())))?;
    let text = std::fs::read(launch_path(&paths)).map_err(Error::io("cannot read", launch_path(&paths)))?;
    let mut launch: Launch = serde_json::from_slice(&text)
        .map_err(|e| Error::Sys(format!("{}: {e}", launch_path(&paths).display())))?;
    if let Some(missing) = launch.lowerdirs.iter().find(|p| !p.is_dir()) {
        return Err(Error::Image(format!(
            "snapshot {} of container {} is missing (one that the machine went down before \
             flushing is discarded at the next boot): unpack the image again with img-unpack",
            missing.display(),
            state.id
        )));
    }
    if state.started_at.is_some() {
        // Volumes are filled from the image on their first use only.
        for v in &mut launch.volumes {
            v.fill = false;
        }
    }
    let plan = Plan {
        id: state.id.clone(),
        name: state.name.clone(),
        paths,
        spec,
        lowerdirs: launch.lowerdirs.clone(),
        volumes: launch.volumes.clone(),
        init: launch.init,
        interactive: launch.interactive,
        ephemeral: launch.ephemeral,
        log: launch.log,
        cgroup_path: state.cgroup.clone().unwrap_or_else(|| bundle::cgroup_path(&state.id)),
        hostname: state.hostname.clone(),
        network: launch.network.clone(),
        join_network: launch.join_network.clone(),
    };
    Ok((plan, launch))
}

/// What a bridge-networked container asks of its network: `-p`, and with
/// `-P` the image's exposed ports on free host ports.
fn network_request(
    opts: &Options,
    image: &kist_common::record::RunConfig,
) -> Result<Option<kist_common::net::Request>, Error> {
    use kist_common::net::ports::PortSpec;
    let crate::options::Network::Bridge(name) = &opts.network else { return Ok(None) };
    let mut ports = opts.net.publish.clone();
    if opts.net.publish_all {
        for e in &image.exposed_ports {
            let spec = PortSpec::exposed(e).map_err(|e| Error::Image(e.to_string()))?;
            if !ports.iter().any(|p| p.container == spec.container && p.proto == spec.proto) {
                ports.push(spec);
            }
        }
    }
    Ok(Some(kist_common::net::Request {
        network: name.clone(),
        ip: opts.net.ip,
        aliases: opts.net.aliases.clone(),
        ports,
        extra_hosts: opts.net.add_hosts.clone(),
    }))
}

/// Docker's --cidfile: created exclusively, holding the id.
fn write_cidfile(path: &Path, id: &str) -> Result<(), Error> {
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

//! A container's on-disk state: the paths inside `containers/<id>/` and the
//! `state.json` document every container tool reads (ctr-spawn writes it,
//! the monitor, ctr-list, ctr-kill and img-rm read it). Writes are atomic
//! and taken under the container's lock so a reader never sees half a state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil::{FsError, Lock};
use crate::root::StateRoot;

/// Bumped only when a field changes meaning or disappears.
pub const STATE_VERSION: u32 = 1;

fn state_version() -> u32 {
    STATE_VERSION
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("container name {name:?} is already in use by container {id}")]
    NameInUse { name: String, id: String },
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid container state")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl crate::HasExitCode for ContainerError {
    fn exit_code(&self) -> crate::ExitCode {
        match self {
            ContainerError::NotFound(_) => crate::ExitCode::NotFound,
            ContainerError::NameInUse { .. } => crate::ExitCode::Conflict,
            ContainerError::BadName(_) => crate::ExitCode::Usage,
            ContainerError::Read { source, .. } => crate::exit::io_exit_code(source),
            ContainerError::Parse { .. } => crate::ExitCode::Integrity,
            ContainerError::Fs(e) => e.exit_code(),
        }
    }
}

/// Docker's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// `containers/<id>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    #[serde(default = "state_version")]
    pub schema_version: u32,
    /// 64 hex digits.
    pub id: String,
    /// The name without Docker's leading slash.
    pub name: String,
    /// The image ID (config digest).
    pub image: Digest,
    /// The reference the container was created from, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    /// The snapshot directories the root file system stacks, lowest first:
    /// img-rm keeps these while the container exists.
    pub snapshots: Vec<PathBuf>,
    /// The command as run: entrypoint and arguments.
    pub command: Vec<String>,
    /// RFC 3339 creation time.
    pub created: String,
    pub status: Status,
    /// The container's init process as seen from the host, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The process that owns the init (ctr-spawn attached, or the monitor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default)]
    pub restart_count: u32,
    /// `--rm`: remove everything when the container exits.
    #[serde(default)]
    pub auto_remove: bool,
    #[serde(default)]
    pub tty: bool,
    pub hostname: String,
    /// The cgroup path relative to each hierarchy's root (`kist/<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The kernel boot id when the container was started, so that state
    /// from before a reboot is recognised.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Named volumes mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Those of `volumes` that are anonymous (the image's VOLUME entries,
    /// `-v /dst`): `ctr-kill --rm -v` deletes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anonymous_volumes: Vec<String>,
    /// The signal `ctr-kill --stop` sends first (the image's StopSignal or
    /// `--stop-signal`), a name or number; TERM when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Set by `ctr-kill --stop`/`--rm` before it signals: the user stopped
    /// the container, so no restart policy may bring it back (and
    /// `unless-stopped` stays down across `--restore`). Cleared by a start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped_by_user: bool,
    /// Published ports while the container runs, as `docker ps` shows
    /// them (`0.0.0.0:8081->80/tcp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// The networks the running container is attached to: name -> address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, String>,
}

/// The files and directories of one container.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    pub dir: PathBuf,
}

impl ContainerPaths {
    pub fn new(root: &StateRoot, id: &str) -> ContainerPaths {
        ContainerPaths { dir: root.container_dir(id) }
    }
    /// The OCI runtime configuration: the directory is a bundle.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn hostname(&self) -> PathBuf {
        self.dir.join("hostname")
    }
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log.jsonl")
    }
}

/// A user's mount of a container (`-v`, `--mount type=bind|volume`), as
/// its config.json holds it: what `docker ps`' Mounts shows, and what a
/// copy into a stopped container must see (ctr-cp mounts these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMount {
    /// The path inside the container.
    pub destination: PathBuf,
    /// The host directory or file mounted (a volume's `_data`).
    pub source: PathBuf,
    /// The volume's name when the source is one of `volumes/<name>/_data`.
    pub volume: Option<String>,
    pub readonly: bool,
}

#[derive(Deserialize)]
struct ConfigMounts {
    #[serde(default)]
    mounts: Vec<ConfigMount>,
}

#[derive(Deserialize)]
struct ConfigMount {
    destination: PathBuf,
    #[serde(default, rename = "type")]
    typ: String,
    #[serde(default)]
    source: PathBuf,
    #[serde(default)]
    options: Vec<String>,
}

/// The user's bind mounts and volumes of a container, in config.json's
/// order, read from its config.json. Bind mounts of kist's own files
/// (`/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`, which live in the
/// container's directory) and the default and tmpfs mounts are not the
/// user's and are left out, as Docker leaves them out of Mounts.
pub fn user_mounts(root: &StateRoot, id: &str) -> Result<Vec<UserMount>, ContainerError> {
    let dir = root.container_dir(id);
    Ok(bind_mounts(root, id)?.into_iter().filter(|m| !m.source.starts_with(&dir)).collect())
}

/// Every bind mount of a container's config.json in its order: the
/// user's bind mounts and volumes and kist's own `/etc` files.
pub fn bind_mounts(root: &StateRoot, id: &str) -> Result<Vec<UserMount>, ContainerError> {
    let paths = ContainerPaths::new(root, id);
    let path = paths.config();
    let bytes = std::fs::read(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ContainerError::NotFound(id.to_string())
        } else {
            ContainerError::Read { path: path.clone(), source }
        }
    })?;
    let cfg: ConfigMounts = serde_json::from_slice(&bytes)
        .map_err(|source| ContainerError::Parse { path: path.clone(), source })?;
    let volumes = root.volumes_dir();
    Ok(cfg
        .mounts
        .into_iter()
        .filter(|m| m.typ == "bind" && m.source.is_absolute())
        .map(|m| {
            let volume = m.source.strip_prefix(&volumes).ok().and_then(|rest| {
                let mut c = rest.components();
                match (c.next(), c.next(), c.next()) {
                    (Some(name), Some(data), None) if data.as_os_str() == "_data" => {
                        name.as_os_str().to_str().map(String::from)
                    }
                    _ => None,
                }
            });
            UserMount {
                readonly: m.options.iter().any(|o| o == "ro"),
                destination: m.destination,
                source: m.source,
                volume,
            }
        })
        .collect())
}

/// The lock guarding one container's state.json.
pub fn lock_path(root: &StateRoot, id: &str) -> PathBuf {
    root.locks_dir().join(format!("container-{id}.lock"))
}

/// Takes the container's exclusive lock.
pub fn lock(root: &StateRoot, id: &str) -> Result<Lock, ContainerError> {
    Ok(Lock::exclusive(&lock_path(root, id))?)
}

impl ContainerState {
    /// Reads `state.json`.
    pub fn load(path: &Path) -> Result<ContainerState, ContainerError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ContainerError::NotFound(path.display().to_string())
            } else {
                ContainerError::Read { path: path.to_path_buf(), source }
            }
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|source| ContainerError::Parse { path: path.to_path_buf(), source })
    }

    /// Replaces `state.json` atomically (the caller holds the lock). A
    /// `--rm` container's state is not fsynced: nothing of such a container
    /// may outlive a reboot, and the fsyncs were most of an attached
    /// `--rm` run's wall time on a busy disk.
    pub fn save(&self, path: &Path) -> Result<(), ContainerError> {
        Ok(crate::fsutil::atomic_write_json_durable(path, self, !self.auto_remove)?)
    }

    /// The `container` record that tools print for this state.
    pub fn record(&self) -> crate::record::ContainerRecord {
        crate::record::ContainerRecord {
            schema_version: crate::record::SCHEMA_VERSION,
            id: self.id.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
            image_ref: self.image_ref.clone(),
            command: self.command.clone(),
            created: self.created.clone(),
            state: self.status,
            pid: self.pid,
            exit_code: self.exit_code,
            oom_killed: self.oom_killed,
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            labels: self.labels.clone(),
            names: vec![self.name.clone()],
            status: String::new(),
            ports: self.ports.clone(),
            networks: self.networks.keys().cloned().collect(),
            mounts: self.volumes.clone(),
            restart_count: self.restart_count,
            note: None,
            removed: false,
        }
    }
}

/// Docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`
/// (a single character is accepted too).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Claims `names/<name>` for `id` with O_EXCL: of many concurrent claims of
/// one name exactly one wins. The file holds the id.
pub fn claim_name(root: &StateRoot, name: &str, id: &str) -> Result<(), ContainerError> {
    claim_name_durable(root, name, id, true)
}

/// [`claim_name`], fsync'd before it is linked in only if `durable`.
/// ctr-spawn claims without, then fsyncs the claim (and `names/`) in the
/// parallel batch that makes the new container's files durable, or not at
/// all for a `--rm` container, which nothing may outlive: one fsync of its
/// own was 1 to 5 ms of a start.
pub fn claim_name_durable(
    root: &StateRoot,
    name: &str,
    id: &str,
    durable: bool,
) -> Result<(), ContainerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !valid_name(name) {
        return Err(ContainerError::BadName(name.to_string()));
    }
    let path = root.names_dir().join(name);
    let write_err = |source| ContainerError::Fs(FsError::Write { path: path.clone(), source });
    std::fs::create_dir_all(root.names_dir()).map_err(write_err)?;
    // A claim is written in full under a temporary name and then linked in:
    // link(2) fails if the name exists, so readers never see an empty claim.
    let tmp = crate::fsutil::temp_sibling(&path);
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp).map_err(write_err)?;
    let wrote = f.write_all(id.as_bytes()).and_then(|_| if durable { f.sync_all() } else { Ok(()) });
    drop(f);
    let result = wrote.and_then(|_| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(ContainerError::NameInUse { name: name.to_string(), id: holder.trim().to_string() })
        }
        Err(e) => Err(write_err(e)),
    }
}

/// Releases `names/<name>` if it still points at `id`.
pub fn release_name(root: &StateRoot, name: &str, id: &str) {
    let path = root.names_dir().join(name);
    if std::fs::read_to_string(&path).map(|s| s.trim() == id).unwrap_or(false) {
        let _ = std::fs::remove_file(&path);
    }
}

/// The environment variable naming a file to read the boot id from instead
/// of /proc/sys/kernel/random/boot_id (tests simulate a reboot with it).
pub const BOOT_ID_FILE_ENV: &str = "KIST_BOOT_ID_FILE";

/// The kernel's boot id (or the one in `$KIST_BOOT_ID_FILE`), empty if unreadable.
pub fn boot_id() -> String {
    let path = std::env::var_os(BOOT_ID_FILE_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/sys/kernel/random/boot_id"));
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The current time in RFC 3339 with nanoseconds, UTC, as Docker prints it.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

/// Formats seconds since the epoch (UTC) as RFC 3339.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn names_follow_docker() {
        assert!(valid_name("web"));
        assert!(valid_name("a.b-c_d"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }

    #[test]
    fn user_mounts_are_binds_and_volumes_from_config_json() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::at(dir.path());
        let id = "a".repeat(64);
        let paths = ContainerPaths::new(&root, &id);
        std::fs::create_dir_all(&paths.dir).unwrap();
        let vol = root.volumes_dir().join("data").join("_data");
        let cfg = serde_json::json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/hosts", "type": "bind", "source": paths.hosts(), "options": ["rbind"]},
            {"destination": "/v", "type": "bind", "source": vol, "options": ["rbind", "rprivate"]},
            {"destination": "/b", "type": "bind", "source": "/srv/b", "options": ["rbind", "ro"]},
            {"destination": "/t", "type": "tmpfs", "source": "tmpfs"},
        ]});
        std::fs::write(paths.config(), cfg.to_string()).unwrap();
        let m = user_mounts(&root, &id).unwrap();
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(
            (m[0].volume.as_deref(), m[0].destination.as_path(), m[0].readonly),
            (Some("data"), Path::new("/v"), false)
        );
        assert_eq!(
            (m[1].volume.as_deref(), m[1].source.as_path(), m[1].readonly),
            (None, Path::new("/srv/b"), true)
        );
        assert!(matches!(user_mounts(&root, &"b".repeat(64)), Err(ContainerError::NotFound(_))));
        assert_eq!(bind_mounts(&root, &id).unwrap().len(), 3);
    }

    #[test]
    fn one_claim_wins() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::at(dir.path());
        claim_name(&root, "web", "aaa").unwrap();
        match claim_name(&root, "web", "bbb") {
            Err(ContainerError::NameInUse { id, .. }) => assert_eq!(id, "aaa"),
            other => panic!("{other:?}"),
        }
        release_name(&root, "web", "bbb");
        assert!(root.names_dir().join("web").exists());
        release_name(&root, "web", "aaa");
        assert!(!root.names_dir().join("web").exists());
    }
}

//! What the tools that inspect and end containers share (ctr-list, ctr-kill,
//! ctr-logs, and later the monitor): finding a container by id, id prefix
//! or name; reading every state with one readdir and one small read each;
//! a locked read-modify-write of state.json; and the truthful view of a
//! state whose writer may have died.
//!
//! Truthfulness. state.json says what its last writer believed. A reader
//! reports what really is:
//! - `running`/`paused`/`restarting` recorded on another boot (boot id
//!   differs from /proc/sys/kernel/random/boot_id): `exited`, exit code 255
//!   unless one was recorded (what Docker shows after a reboot), note
//!   "stale: ...".
//! - `running`/`paused` whose init pid is gone, or whose pid now belongs to
//!   a process started after the container (pid reuse), and whose owner is
//!   gone too: `exited`, exit code 255 unless recorded, note "exit not
//!   recorded: ...". While the owner lives, the exit is one it has yet to
//!   record (it is the init's parent and records every exit it reaps, a
//!   moment later): the recorded state stands, as `docker ps` shows a
//!   container "Up" until containerd reports its exit.
//! - `running`/`paused`/`restarting` whose init is alive but whose owner
//!   (attached ctr-spawn or monitor) is gone: `dead` (Docker's word for a
//!   container that can only be removed), note "unsupervised: ...";
//!   `ctr-kill --rm -f` kills and removes it. A `restarting` container
//!   without a live owner will never be restarted: `exited`.
//!
//! A process counts as the recorded one only if it started no later than
//! the container did (its start time from /proc/<pid>/stat is compared with
//! `startedAt`/`created`), so a recycled pid is never mistaken for it.

use std::path::{Path, PathBuf};

use crate::container::{self, ContainerError, ContainerPaths, ContainerState, Status};
use crate::record::ContainerRecord;
use crate::root::StateRoot;
use crate::timefmt;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("multiple containers match {query:?}: {ids}")]
    Ambiguous { query: String, ids: String },
    #[error("cannot read {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Container(#[from] ContainerError),
}

impl crate::HasExitCode for LifecycleError {
    fn exit_code(&self) -> crate::ExitCode {
        match self {
            LifecycleError::NotFound(_) => crate::ExitCode::NotFound,
            LifecycleError::Ambiguous { .. } => crate::ExitCode::Usage,
            LifecycleError::ReadDir { source, .. } => crate::exit::io_exit_code(source),
            LifecycleError::Container(e) => e.exit_code(),
        }
    }
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The ids of every container directory (one readdir). A missing
/// `containers/` is an empty list.
pub fn container_ids(root: &StateRoot) -> Result<Vec<String>, LifecycleError> {
    let dir = root.containers_dir();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(LifecycleError::ReadDir { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| LifecycleError::ReadDir { path: dir.clone(), source })?;
        if let Some(name) = entry.file_name().to_str() {
            if is_id(name) {
                out.push(name.to_string());
            }
        }
    }
    Ok(out)
}

/// Finds a container as Docker does: a full id, else a name, else a unique
/// id prefix.
pub fn resolve(root: &StateRoot, query: &str) -> Result<String, LifecycleError> {
    let q = query.strip_prefix('/').unwrap_or(query);
    if is_id(q) && root.container_dir(q).is_dir() {
        return Ok(q.to_string());
    }
    if container::valid_name(q) {
        if let Ok(id) = std::fs::read_to_string(root.names_dir().join(q)) {
            let id = id.trim();
            if is_id(id) && root.container_dir(id).is_dir() {
                return Ok(id.to_string());
            }
        }
    }
    if !q.is_empty() && q.len() < 64 && q.bytes().all(|b| b.is_ascii_hexdigit()) {
        let q = q.to_ascii_lowercase();
        let matches: Vec<String> = container_ids(root)?.into_iter().filter(|id| id.starts_with(&q)).collect();
        match matches.len() {
            1 => return Ok(matches.into_iter().next().unwrap_or_default()),
            0 => {}
            _ => {
                let ids = matches.iter().map(|i| &i[..12]).collect::<Vec<_>>().join(", ");
                return Err(LifecycleError::Ambiguous { query: query.to_string(), ids });
            }
        }
    }
    Err(LifecycleError::NotFound(query.to_string()))
}

/// Loads one container's state without locking: writers replace the file
/// atomically, so a reader sees the old or the new state, never half.
pub fn load(root: &StateRoot, id: &str) -> Result<ContainerState, ContainerError> {
    ContainerState::load(&ContainerPaths::new(root, id).state())
}

/// Changes a container's state under its lock: reads the current file
/// (never a stale copy), applies `f`, and replaces the file atomically.
/// Returns the state as written. Fails with NotFound if the container was
/// removed meanwhile.
pub fn update<T>(
    root: &StateRoot,
    id: &str,
    f: impl FnOnce(&mut ContainerState) -> T,
) -> Result<(ContainerState, T), ContainerError> {
    update_with(root, id, f, |state, path| state.save(path))
}

/// As [`update`], but the new state is visible at once and made durable
/// only by [`sync_state`] later: for a writer that has someone waiting on
/// the change (ctr-spawn -d for "running") and can fsync after telling them.
pub fn update_deferred<T>(
    root: &StateRoot,
    id: &str,
    f: impl FnOnce(&mut ContainerState) -> T,
) -> Result<(ContainerState, T), ContainerError> {
    update_with(root, id, f, |state, path| Ok(crate::fsutil::atomic_write_json_durable(path, state, false)?))
}

fn update_with<T>(
    root: &StateRoot,
    id: &str,
    f: impl FnOnce(&mut ContainerState) -> T,
    save: impl FnOnce(&ContainerState, &Path) -> Result<(), ContainerError>,
) -> Result<(ContainerState, T), ContainerError> {
    let path = ContainerPaths::new(root, id).state();
    if !path.exists() {
        // Removed: do not leave a lock file behind for it.
        return Err(ContainerError::NotFound(path.display().to_string()));
    }
    let _lock = container::lock(root, id)?;
    let mut state = ContainerState::load(&path)?;
    let out = f(&mut state);
    save(&state, &path)?;
    Ok((state, out))
}

/// Makes what [`update_deferred`] wrote durable: the file, then its
/// directory (the rename). A state of a --rm container is never synced.
pub fn sync_state(root: &StateRoot, id: &str) -> std::io::Result<()> {
    let path = ContainerPaths::new(root, id).state();
    std::fs::File::open(&path)?.sync_all()?;
    crate::fsutil::fsync_parent(&path)
}

/// Facts about this host read once per process, so that judging thousands
/// of states costs no extra system calls for the ones that are not running.
#[derive(Debug, Clone)]
pub struct Host {
    pub boot_id: String,
    /// Boot time, seconds since the epoch (`btime` in /proc/stat).
    pub boot_time: i64,
    pub clock_ticks: i64,
    /// Now, seconds since the epoch.
    pub now: f64,
}

impl Host {
    pub fn probe() -> Host {
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
            })
            .unwrap_or(0);
        // SAFETY: sysconf has no memory effects.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Host {
            boot_id: container::boot_id(),
            boot_time,
            clock_ticks: if ticks > 0 { ticks as i64 } else { 100 },
            now: timefmt::now_secs(),
        }
    }

    /// The start time (seconds since the epoch) of process `pid`, if it exists.
    pub fn process_start(&self, pid: i32) -> Option<f64> {
        if pid <= 0 {
            return None;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may contain spaces and parentheses: fields
        // resume after the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?;
        if state == "Z" || state == "X" {
            return None;
        }
        // After the state come fields 4..; starttime is field 22.
        let start: i64 = fields.nth(22 - 4)?.parse().ok()?;
        Some(self.boot_time as f64 + start as f64 / self.clock_ticks as f64)
    }

    /// True if `pid` is alive and started no later than `not_after` (plus
    /// slack for clock granularity): the recorded process, not a recycled pid.
    pub fn is_alive(&self, pid: Option<i32>, not_after: Option<f64>) -> bool {
        let Some(pid) = pid else { return false };
        match (self.process_start(pid), not_after) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(start), Some(limit)) => start <= limit + 2.0,
        }
    }
}

/// A state as it really is.
#[derive(Debug, Clone)]
pub struct Observed {
    pub status: Status,
    pub exit_code: Option<i32>,
    /// Why the status differs from what state.json says.
    pub note: Option<String>,
    /// The init is alive (the recorded process).
    pub process_alive: bool,
    /// The owner (attached ctr-spawn or monitor) is alive.
    pub owner_alive: bool,
}

/// The latest moment the recorded processes may have started.
pub fn started_limit(state: &ContainerState) -> Option<f64> {
    let created = timefmt::parse_rfc3339(&state.created);
    let started = state.started_at.as_deref().and_then(timefmt::parse_rfc3339);
    match (created, started) {
        (Some(c), Some(s)) => Some(c.max(s)),
        (c, s) => s.or(c),
    }
}

/// Judges a state against the living processes (see the module header).
pub fn observe(state: &ContainerState, host: &Host) -> Observed {
    let recorded = Observed {
        status: state.status,
        exit_code: state.exit_code,
        note: None,
        process_alive: false,
        owner_alive: false,
    };
    let live =
        matches!(state.status, Status::Running | Status::Paused | Status::Restarting | Status::Removing);
    if !live {
        return recorded;
    }
    if !state.boot_id.is_empty() && !host.boot_id.is_empty() && state.boot_id != host.boot_id {
        return Observed {
            status: Status::Exited,
            exit_code: Some(state.exit_code.unwrap_or(255)),
            note: Some(format!("stale: was {} before the host rebooted", state.status.as_str())),
            ..recorded
        };
    }
    let limit = started_limit(state);
    let process_alive = host.is_alive(state.pid, limit);
    let owner_alive = host.is_alive(state.owner_pid, limit);
    let recorded = Observed { process_alive, owner_alive, ..recorded };
    match state.status {
        Status::Running | Status::Paused if !process_alive && !owner_alive => Observed {
            status: Status::Exited,
            exit_code: Some(state.exit_code.unwrap_or(255)),
            note: Some(match state.pid {
                Some(p) => format!("exit not recorded: the container's process (pid {p}) is gone"),
                None => "exit not recorded: no process was recorded".to_string(),
            }),
            ..recorded
        },
        Status::Running | Status::Paused | Status::Restarting | Status::Removing if process_alive && !owner_alive => {
            Observed {
                status: Status::Dead,
                note: Some(match state.owner_pid {
                    Some(o) => format!(
                        "unsupervised: its owner (pid {o}) is gone while its process still runs; remove it with ctr-kill --rm -f"
                    ),
                    None => "unsupervised: no owner was recorded; remove it with ctr-kill --rm -f".to_string(),
                }),
                ..recorded
            }
        }
        Status::Restarting if !owner_alive => Observed {
            status: Status::Exited,
            exit_code: Some(state.exit_code.unwrap_or(255)),
            note: Some("stale: restarting, but its monitor is gone".to_string()),
            ..recorded
        },
        _ => recorded,
    }
}

/// Docker's status words for `docker ps`' STATUS column.
pub fn status_words(state: &ContainerState, seen: &Observed, now: f64) -> String {
    let ago = |t: Option<&str>| {
        let secs = t.and_then(timefmt::parse_rfc3339).map(|t| (now - t).max(0.0) as u64).unwrap_or(0);
        crate::output::human_duration(secs)
    };
    match seen.status {
        Status::Created => "Created".to_string(),
        Status::Running => format!("Up {}", ago(state.started_at.as_deref())),
        Status::Paused => format!("Up {} (Paused)", ago(state.started_at.as_deref())),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            seen.exit_code.unwrap_or(0),
            ago(state.finished_at.as_deref().or(state.started_at.as_deref()))
        ),
        Status::Removing => "Removal In Progress".to_string(),
        Status::Dead => "Dead".to_string(),
        Status::Exited => {
            if state.started_at.is_none() && state.finished_at.is_none() {
                // Never ran: Docker shows "Created" only for created state;
                // an exit recorded without a start still says Exited.
                return format!("Exited ({}) {} ago", seen.exit_code.unwrap_or(0), ago(Some(&state.created)));
            }
            format!(
                "Exited ({}) {} ago",
                seen.exit_code.unwrap_or(0),
                ago(state.finished_at.as_deref().or(state.started_at.as_deref()))
            )
        }
    }
}

/// The `container` record of a state as it really is: the observed state,
/// Docker's status words and the note.
pub fn record(state: &ContainerState, host: &Host) -> ContainerRecord {
    record_seen(state, &observe(state, host), host)
}

fn record_seen(state: &ContainerState, seen: &Observed, host: &Host) -> ContainerRecord {
    let mut rec = state.record();
    rec.status = status_words(state, seen, host.now);
    rec.state = seen.status;
    rec.exit_code = seen.exit_code;
    if seen.status != state.status && !seen.process_alive {
        rec.pid = None;
    }
    rec.note = seen.note.clone();
    rec
}

/// The log file and its rotated generations, oldest first:
/// `log.jsonl.N`, ..., `log.jsonl.1`, `log.jsonl` (Docker's json-file
/// naming: `.1` is the most recently rotated).
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let base = dir.join("log.jsonl");
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(n) = name.strip_prefix("log.jsonl.").and_then(|n| n.parse::<u32>().ok()) {
                rotated.push((n, e.path()));
            }
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    out.push(base);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running state whose init has already exited and been reaped,
    /// owned by this (living) test process.
    fn exited_under_living_owner() -> ContainerState {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id() as i32;
        child.wait().unwrap();
        let json = serde_json::json!({
            "id": "a".repeat(64),
            "name": "quick",
            "hostname": "quick",
            "image": format!("sha256:{}", "b".repeat(64)),
            "snapshots": [],
            "command": ["true"],
            "created": container::now_rfc3339(),
            "startedAt": container::now_rfc3339(),
            "status": "running",
            "pid": gone,
            "ownerPid": std::process::id() as i32,
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn an_exit_the_living_owner_has_yet_to_record_is_not_reported_lost() {
        let state = exited_under_living_owner();
        let host = Host::probe();
        let seen = observe(&state, &host);
        assert_eq!((seen.status, seen.process_alive, seen.owner_alive), (Status::Running, false, true));
        let rec = record(&state, &host);
        assert_eq!(rec.state, Status::Running);
        assert_eq!(rec.exit_code, None);
        assert_eq!(rec.note, None);
        assert!(rec.status.starts_with("Up"), "{}", rec.status);
    }

    #[test]
    fn without_a_living_owner_the_exit_is_reported_lost() {
        let mut state = exited_under_living_owner();
        state.owner_pid = state.pid;
        let rec = record(&state, &Host::probe());
        assert_eq!(rec.state, Status::Exited);
        assert_eq!(rec.exit_code, Some(255));
        assert!(rec.note.unwrap().contains("exit not recorded"));
    }
}

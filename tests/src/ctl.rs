//! Fixtures for ctr-list, ctr-kill and ctr-logs tests: real containers run
//! by an attached `ctr-spawn` in the background (killed by pid and their
//! leftovers removed on drop), container states written directly as
//! state.json (created, exited, dead-pid, another boot, thousands), and
//! json-file log lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use kist_common::container::{self, ContainerPaths, ContainerState, Status};
use kist_common::{Digest, StateRoot};

use crate::spawn::Unpacked;
use crate::TestRoot;

/// A container run by an attached ctr-spawn that is a child of the test.
pub struct Attached {
    pub child: Child,
    pub id: String,
    pub name: String,
    pub pid: i32,
    root: PathBuf,
}

impl Attached {
    /// Starts `ctr-spawn --name NAME [flags] -- cmd...` and waits until
    /// the container's process runs.
    pub fn start(root: &TestRoot, img: &Unpacked, name: &str, flags: &[&str], cmd: &[&str]) -> Attached {
        use std::io::Write;
        let mut c = root.cmd("ctr-spawn");
        c.args(["--name", name]).args(flags).arg("--").args(cmd);
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ctr-spawn: {e}"));
        {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(img.record.as_bytes()).expect("write record");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(id) = std::fs::read_to_string(root.path().join("names").join(name)) {
                let id = id.trim().to_string();
                if let Ok(s) =
                    ContainerState::load(&root.path().join("containers").join(&id).join("state.json"))
                {
                    if let (Status::Running, Some(pid)) = (s.status, s.pid) {
                        return Attached {
                            child,
                            id,
                            name: name.to_string(),
                            pid,
                            root: root.path().to_path_buf(),
                        };
                    }
                }
            }
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("ctr-spawn exited with {st:?} before the container ran: {err}");
            }
            assert!(Instant::now() < deadline, "container {name} never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for ctr-spawn to exit (bounded) and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn state(&self) -> ContainerState {
        ContainerState::load(&self.root.join("containers").join(&self.id).join("state.json"))
            .expect("state.json")
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            thaw(&self.id);
            // SAFETY: the container's init that this fixture started.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        remove_cgroups(&self.id);
    }
}

/// Thaws the container's v1 freezer cgroup if a test left it frozen.
pub fn thaw(id: &str) {
    let f = Path::new("/sys/fs/cgroup/freezer/kist").join(id).join("freezer.state");
    if f.exists() {
        let _ = std::fs::write(f, "THAWED");
    }
}

/// The container's cgroup directories that exist (`kist/<id>` under every hierarchy).
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mi.lines() {
        let Some((left, right)) = l.split_once(" - ") else { continue };
        if !(right.starts_with("cgroup ") || right.starts_with("cgroup2 ")) {
            continue;
        }
        if let Some(point) = left.split(' ').nth(4) {
            let d = Path::new(point).join("kist").join(id);
            if d.is_dir() {
                out.push(d);
            }
        }
    }
    out
}

/// Removes the cgroups kist made for container `id`, if any are left.
pub fn remove_cgroups(id: &str) {
    for d in cgroup_dirs(id) {
        let _ = std::fs::remove_dir(&d);
    }
}

/// Mount points under `dir` in this mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let m = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.display().to_string();
    m.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&d)).map(String::from).collect()
}

/// What a fixture state looks like.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub status: Status,
    pub created_secs_ago: i64,
    pub started_secs_ago: Option<i64>,
    pub finished_secs_ago: Option<i64>,
    pub exit_code: Option<i32>,
    pub pid: Option<i32>,
    pub owner_pid: Option<i32>,
    pub boot_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub image_ref: Option<String>,
    pub command: Vec<String>,
    pub anonymous_volumes: Vec<String>,
    pub volumes: Vec<String>,
}

impl Fixture {
    pub fn new(name: &str, status: Status) -> Fixture {
        Fixture {
            name: name.to_string(),
            status,
            created_secs_ago: 600,
            started_secs_ago: None,
            finished_secs_ago: None,
            exit_code: None,
            pid: None,
            owner_pid: None,
            boot_id: None,
            labels: BTreeMap::new(),
            image_ref: Some("docker.io/library/busybox:latest".into()),
            command: vec!["sleep".into(), "1000".into()],
            anonymous_volumes: Vec::new(),
            volumes: Vec::new(),
        }
    }
}

fn ago(secs: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    container::rfc3339(now.as_secs() as i64 - secs, now.subsec_nanos())
}

/// A fresh random-looking id (64 hex digits) from a counter and the pid.
pub fn fixture_id(n: u64) -> String {
    let d = Digest::of(format!("{}-{n}-{:?}", std::process::id(), Instant::now()).as_bytes());
    d.hex().to_string()
}

/// Writes a container state (and its name claim) directly; returns its id.
pub fn write_state(root: &Path, f: &Fixture) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let id = fixture_id(N.fetch_add(1, Ordering::Relaxed));
    let sr = StateRoot::at(root);
    let paths = ContainerPaths::new(&sr, &id);
    std::fs::create_dir_all(&paths.dir).unwrap();
    container::claim_name(&sr, &f.name, &id).unwrap();
    let state = ContainerState {
        schema_version: container::STATE_VERSION,
        id: id.clone(),
        name: f.name.clone(),
        image: Digest::of(b"fixture image"),
        image_ref: f.image_ref.clone(),
        snapshots: Vec::new(),
        command: f.command.clone(),
        created: ago(f.created_secs_ago),
        status: f.status,
        pid: f.pid,
        owner_pid: f.owner_pid,
        started_at: f.started_secs_ago.map(ago),
        finished_at: f.finished_secs_ago.map(ago),
        exit_code: f.exit_code,
        oom_killed: false,
        restart_count: 0,
        auto_remove: false,
        tty: false,
        hostname: id[..12].to_string(),
        cgroup: None,
        boot_id: f.boot_id.clone().unwrap_or_else(container::boot_id),
        labels: f.labels.clone(),
        volumes: f.volumes.clone(),
        anonymous_volumes: f.anonymous_volumes.clone(),
        stop_signal: None,
        stopped_by_user: false,
        ports: Vec::new(),
        networks: Default::default(),
    };
    state.save(&paths.state()).unwrap();
    id
}

/// A pid that certainly belongs to no process now (a reaped child's).
pub fn dead_pid() -> i32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    c.wait().unwrap();
    pid
}

/// One json-file log line.
pub fn log_line(stream: &str, text: &str, time: &str) -> String {
    format!("{}\n", serde_json::json!({"log": text, "stream": stream, "time": time}))
}

/// An RFC 3339 time `secs` seconds ago (negative: in the future).
pub fn time_ago(secs: i64) -> String {
    ago(secs)
}

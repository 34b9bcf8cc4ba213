//! Detached containers against the real binaries: `ctr-spawn -d` and its
//! monitor (record, ctr-list's view, logs and rotation), restart policies
//! with Docker's backoff, `ctr-kill --stop` ending them for good,
//! `--restore` after a simulated reboot (KIST_BOOT_ID_FILE), a killed
//! monitor, concurrency of many spawns and of one name, and
//! `--create`/`--start`. Every test removes its containers (ctr-kill --rm
//! -f) and kills the monitors it started, by pid.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kist_common::container::{ContainerState, Status};
use kist_common::timefmt::parse_rfc3339;
use kist_tests::ctl::cgroup_dirs;
use kist_tests::spawn::{busybox, Unpacked};
use kist_tests::{run, run_with_stdin, OutputExt, TestRoot};

/// A test's state root, image, and the containers to remove at the end.
struct Env {
    root: TestRoot,
    img: Unpacked,
    boot_id_file: Option<PathBuf>,
    ids: std::sync::Mutex<Vec<String>>,
}

impl Env {
    fn new() -> Env {
        let root = TestRoot::new();
        let img = busybox(root.path());
        Env { root, img, boot_id_file: None, ids: std::sync::Mutex::new(Vec::new()) }
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut c = self.root.cmd(tool);
        if let Some(f) = &self.boot_id_file {
            c.env("KIST_BOOT_ID_FILE", f);
        }
        c
    }

    fn spawn_output(&self, args: &[&str]) -> Output {
        let out = run_with_stdin(self.cmd("ctr-spawn").args(args), self.img.record.as_bytes());
        if let Some(r) = out.records().first() {
            if let Some(id) = r["id"].as_str() {
                self.ids.lock().unwrap().push(id.to_string());
            }
        }
        out
    }

    /// `ctr-spawn -d FLAGS -- CMD`; returns the record.
    fn detach(&self, flags: &[&str], cmd: &[&str]) -> serde_json::Value {
        let mut args = vec!["-d"];
        args.extend_from_slice(flags);
        args.push("--");
        args.extend_from_slice(cmd);
        let out = self.spawn_output(&args);
        out.assert_ok();
        let recs = out.records();
        assert_eq!(recs.len(), 1, "{}", out.stdout_str());
        recs[0].clone()
    }

    fn state(&self, id: &str) -> Option<ContainerState> {
        ContainerState::load(&self.root.path().join("containers").join(id).join("state.json")).ok()
    }

    fn list(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let out = run(self.cmd("ctr-list").args(args));
        out.assert_ok();
        out.records()
    }

    fn kill(&self, args: &[&str]) -> Output {
        run_with_stdin(self.cmd("ctr-kill").args(args), b"")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let ids = self.ids.lock().unwrap().clone();
        let monitors: Vec<i32> =
            ids.iter().filter_map(|id| self.state(id).and_then(|s| s.owner_pid)).collect();
        for chunk in ids.chunks(50) {
            let mut args = vec!["--rm", "-f"];
            args.extend(chunk.iter().map(|s| s.as_str()));
            let _ = self.kill(&args);
        }
        for pid in monitors {
            // Monitors this test started; by now they have exited.
            wait_until(Duration::from_secs(5), || !alive(pid));
            if alive(pid) {
                // SAFETY: signalling a monitor this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match stat.rfind(')') {
        Some(i) => !matches!(stat[i + 1..].split_whitespace().next(), Some("Z") | Some("X") | None),
        None => false,
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

fn id_of(rec: &serde_json::Value) -> String {
    rec["id"].as_str().expect("id").to_string()
}

fn log_texts(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for f in kist_common::lifecycle::log_files(dir) {
        for l in std::fs::read_to_string(f).unwrap_or_default().lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("json-file line");
            assert!(v["time"].as_str().and_then(parse_rfc3339).is_some(), "{l}");
            assert!(matches!(v["stream"].as_str(), Some("stdout") | Some("stderr")), "{l}");
            out.push(v["log"].as_str().expect("log").to_string());
        }
    }
    out
}

#[test]
fn detach_returns_the_record_and_the_container_runs() {
    let env = Env::new();
    let t0 = Instant::now();
    let rec = env.detach(&["--name", "web"], &["sh", "-c", "echo hello; echo oops >&2; exec sleep 1000"]);
    assert!(t0.elapsed() < Duration::from_secs(5), "-d took {:?}", t0.elapsed());
    assert_eq!(rec["type"], "container");
    assert_eq!(rec["name"], "web");
    assert_eq!(rec["state"], "running", "{rec}");
    let id = id_of(&rec);
    let st = env.state(&id).unwrap();
    let pid = st.pid.expect("pid");
    let monitor = st.owner_pid.expect("monitor pid");
    assert!(alive(pid) && alive(monitor));
    assert_ne!(monitor as u32, std::process::id());
    // The monitor is in its own session and is the init's parent.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(ppid, monitor);
    // SAFETY: getsid on pids.
    assert_ne!(unsafe { libc::getsid(monitor) }, unsafe { libc::getsid(0) });
    let listed = env.list(&[]);
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["status"].as_str().unwrap().starts_with("Up"), "{}", listed[0]);
    let dir = env.root.path().join("containers").join(&id);
    assert!(wait_until(Duration::from_secs(5), || log_texts(&dir).len() == 2));
    let out = run(env.cmd("ctr-logs").arg("web"));
    out.assert_ok();
    assert_eq!(out.stdout_str(), "hello\n");
    assert_eq!(out.stderr_str(), "oops\n");
}

#[test]
fn a_container_that_ends_at_once_is_never_reported_with_a_lost_exit() {
    // `true` often exits before ctr-spawn reads the state its monitor
    // wrote; the monitor, alive, has then yet to record the exit, which is
    // not the "exit not recorded" of a dead owner.
    let env = Env::new();
    for _ in 0..20 {
        let rec = env.detach(&["--rm"], &["true"]);
        assert!(rec["note"].is_null(), "{rec}");
        match rec["state"].as_str() {
            Some("running") => assert!(rec["exitCode"].is_null(), "{rec}"),
            Some("exited") => assert_eq!(rec["exitCode"], 0, "{rec}"),
            _ => panic!("{rec}"),
        }
    }
    let containers = env.root.path().join("containers");
    assert!(wait_until(Duration::from_secs(10), || std::fs::read_dir(&containers)
        .map(|d| d.count() == 0)
        .unwrap_or(true)));
}

#[test]
fn restart_with_rm_is_an_error() {
    let env = Env::new();
    let out = env.spawn_output(&["-d", "--rm", "--restart", "always", "--", "true"]);
    assert_eq!(out.code(), 125, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("--restart and --rm"), "{}", out.stderr_str());
    assert!(env.list(&["-a", "-q"]).is_empty());
}

#[test]
fn on_failure_restarts_exactly_n_times_with_growing_delays() {
    let env = Env::new();
    let rec = env.detach(&["--restart", "on-failure:3"], &["sh", "-c", "echo run; sleep 0.3; exit 1"]);
    let id = id_of(&rec);
    let mut starts: Vec<String> = Vec::new();
    let mut finishes: Vec<String> = Vec::new();
    let mut counts = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let s = env.state(&id).expect("state");
        if let Some(t) = &s.started_at {
            if starts.last() != Some(t) {
                starts.push(t.clone());
            }
        }
        if let Some(t) = &s.finished_at {
            if finishes.last() != Some(t) {
                finishes.push(t.clone());
            }
        }
        if counts.last() != Some(&s.restart_count) {
            counts.push(s.restart_count);
        }
        if s.status == Status::Exited && s.owner_pid.is_none() {
            break;
        }
        assert!(Instant::now() < end, "never settled: {s:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Nothing more happens afterwards.
    std::thread::sleep(Duration::from_millis(1500));
    let s = env.state(&id).unwrap();
    assert_eq!(s.restart_count, 3, "{s:?}");
    assert_eq!(s.status, Status::Exited);
    assert_eq!(s.exit_code, Some(1));
    assert_eq!(counts, vec![0, 1, 2, 3]);
    assert_eq!(starts.len(), 4, "{starts:?}");
    assert_eq!(finishes.len(), 4, "{finishes:?}");
    let t = |v: &str| parse_rfc3339(v).unwrap();
    let gaps: Vec<f64> = (0..3).map(|i| t(&starts[i + 1]) - t(&finishes[i])).collect();
    assert!(gaps[0] >= 0.09, "first delay {gaps:?}");
    assert!(gaps[1] > gaps[0] && gaps[2] > gaps[1], "delays do not grow: {gaps:?}");
    assert!(gaps[2] >= 0.39, "third delay {gaps:?}");
    let dir = env.root.path().join("containers").join(&id);
    assert_eq!(log_texts(&dir), vec!["run\n"; 4]);
    // ctr-list agrees.
    let l = env.list(&["-a"]);
    assert_eq!(l[0]["restartCount"], 3);
    assert!(l[0]["status"].as_str().unwrap().starts_with("Exited (1)"), "{}", l[0]);
}

#[test]
fn always_comes_back_after_a_kill_and_stop_ends_it() {
    let env = Env::new();
    let rec = env.detach(&["--name", "phoenix", "--restart", "always"], &["sleep", "1000"]);
    let id = id_of(&rec);
    let first = env.state(&id).unwrap().pid.unwrap();
    // Killed from outside (not through kist).
    // SAFETY: the container's init, started by this test.
    unsafe { libc::kill(first, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(10), || {
        env.state(&id).is_some_and(|s| s.status == Status::Running && s.pid.is_some_and(|p| p != first))
    }));
    let s = env.state(&id).unwrap();
    assert_eq!(s.restart_count, 1);
    assert!(alive(s.pid.unwrap()));
    let monitor = s.owner_pid.unwrap();

    env.kill(&["--stop", "-t", "1", "phoenix"]).assert_ok();
    assert!(wait_until(Duration::from_secs(10), || !alive(monitor)), "the monitor stays");
    std::thread::sleep(Duration::from_millis(800));
    let s = env.state(&id).unwrap();
    assert_eq!(s.status, Status::Exited, "{s:?}");
    assert!(s.stopped_by_user);
    assert_eq!(s.restart_count, 1, "restarted after a stop");
    assert!(s.pid.is_none());
    assert!(cgroup_dirs(&id).is_empty(), "cgroup left: {:?}", cgroup_dirs(&id));

    // A start by the user counts restarts anew, as docker start does.
    run(env.cmd("ctr-spawn").args(["--start", "phoenix"])).assert_ok();
    let s = env.state(&id).unwrap();
    assert_eq!((s.status, s.restart_count), (Status::Running, 0), "{s:?}");
    env.kill(&["--stop", "-t", "1", "phoenix"]).assert_ok();
}

#[test]
fn unless_stopped_remembers_the_stop_across_restore() {
    let mut env = Env::new();
    let boot = env.root.path().join("boot_id");
    std::fs::write(&boot, "11111111-1111-1111-1111-111111111111\n").unwrap();
    env.boot_id_file = Some(boot.clone());
    let cmd = ["sleep", "1000"];
    let stopped_us = id_of(&env.detach(&["--name", "us-stopped", "--restart", "unless-stopped"], &cmd));
    let stopped_always = id_of(&env.detach(&["--name", "al-stopped", "--restart", "always"], &cmd));
    let running_us = id_of(&env.detach(&["--name", "us-running", "--restart", "unless-stopped"], &cmd));
    let plain = id_of(&env.detach(&["--name", "plain"], &cmd));
    let failing = id_of(&env.detach(&["--name", "of-running", "--restart", "on-failure"], &cmd));
    env.kill(&["--stop", "-t", "1", "us-stopped", "al-stopped"]).assert_ok();
    // The "reboot": every monitor dies (their containers die with them).
    let all = [&stopped_us, &stopped_always, &running_us, &plain, &failing];
    for id in all {
        let s = env.state(id).unwrap();
        if let Some(m) = s.owner_pid {
            // SAFETY: a monitor this test started.
            unsafe { libc::kill(m, libc::SIGKILL) };
            wait_until(Duration::from_secs(5), || !alive(m));
        }
        if let Some(p) = s.pid {
            assert!(wait_until(Duration::from_secs(5), || !alive(p)), "the init outlived its monitor");
        }
    }
    std::fs::write(&boot, "22222222-2222-2222-2222-222222222222\n").unwrap();
    // Before the restore, ctr-list already knows none of them runs.
    for r in env.list(&["-a"]) {
        assert_ne!(r["state"], "running", "{r}");
    }
    let out = run(env.cmd("ctr-spawn").arg("--restore"));
    out.assert_ok();
    let running: Vec<String> =
        env.list(&[]).iter().map(|r| r["name"].as_str().unwrap().to_string()).collect();
    let mut running = running;
    running.sort();
    assert_eq!(running, vec!["al-stopped", "us-running"]);
    let s = env.state(&stopped_us).unwrap();
    assert_eq!(s.status, Status::Exited);
    assert!(s.stopped_by_user);
    assert_eq!(env.state(&plain).unwrap().status, Status::Exited);
    assert_eq!(env.state(&running_us).unwrap().boot_id, "22222222-2222-2222-2222-222222222222");
    // A second restore on the same boot changes nothing.
    run(env.cmd("ctr-spawn").arg("--restore")).assert_ok();
    assert_eq!(env.list(&[]).len(), 2);
}

#[test]
fn killed_monitor_is_reported_truthfully_and_rm_f_cleans_up() {
    let env = Env::new();
    let rec = env.detach(&["--name", "orphan", "-v", "/anon"], &["sleep", "1000"]);
    let id = id_of(&rec);
    let s = env.state(&id).unwrap();
    let (pid, monitor) = (s.pid.unwrap(), s.owner_pid.unwrap());
    // SAFETY: the monitor this test started.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(5), || !alive(monitor)));
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    let l = env.list(&["-a"]);
    assert_eq!(l.len(), 1);
    assert_ne!(l[0]["state"], "running", "{}", l[0]);
    assert!(!l[0]["status"].as_str().unwrap().starts_with("Up"), "{}", l[0]);
    assert!(env.list(&[]).is_empty(), "ctr-list shows it running");
    env.kill(&["--rm", "-f", "-v", "orphan"]).assert_ok();
    assert!(!env.root.path().join("containers").join(&id).exists());
    assert!(!env.root.path().join("names/orphan").exists());
    assert!(cgroup_dirs(&id).is_empty());
    let vols = std::fs::read_dir(env.root.path().join("volumes")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(vols, 0, "anonymous volume left");
}

#[test]
fn a_hundred_concurrent_detached_containers() {
    let env = Env::new();
    let names: Vec<String> = (0..100).map(|i| format!("c{i:03}")).collect();
    let outs: Vec<Output> = std::thread::scope(|sc| {
        let hs: Vec<_> = names
            .iter()
            .map(|n| {
                let env = &env;
                sc.spawn(move || env.spawn_output(&["-d", "--name", n, "--", "sleep", "1000"]))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        o.assert_ok();
    }
    let q = run(env.cmd("ctr-list").args(["-a", "-q"]));
    q.assert_ok();
    let ids: std::collections::BTreeSet<String> = q.stdout_str().lines().map(String::from).collect();
    assert_eq!(ids.len(), 100, "{}", q.stdout_str());
    let up = env.list(&[]);
    assert_eq!(up.len(), 100);
}

#[test]
fn twenty_concurrent_spawns_of_one_name_one_wins() {
    let env = Env::new();
    let outs: Vec<Output> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..20)
            .map(|_| {
                let env = &env;
                sc.spawn(move || env.spawn_output(&["-d", "--name", "only", "--", "sleep", "1000"]))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(ok.len(), 1);
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(o.code(), 125);
        assert!(o.stderr_str().contains("\"only\" is already in use"), "{}", o.stderr_str());
        assert!(o.stdout_str().is_empty());
    }
    let dirs: Vec<_> = std::fs::read_dir(env.root.path().join("containers")).unwrap().collect();
    assert_eq!(dirs.len(), 1, "half-created containers left");
    let names: Vec<_> = std::fs::read_dir(env.root.path().join("names")).unwrap().collect();
    assert_eq!(names.len(), 1);
    let locks = std::fs::read_dir(env.root.path().join("locks"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("container-"))
        .count();
    assert!(locks <= 1, "{locks} container locks");
}

#[test]
fn logs_follow_shows_both_runs_in_order() {
    let env = Env::new();
    let script = "n=$(cat /n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /n; echo \"run $n\"; \
                  sleep 0.3; [ $n -ge 2 ] && exec sleep 1000; exit 1";
    let rec = env.detach(&["--name", "twice", "--restart", "on-failure"], &["sh", "-c", script]);
    let id = id_of(&rec);
    let follower = env
        .cmd("ctr-logs")
        .args(["-f", "twice"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        env.state(&id).is_some_and(|s| s.restart_count == 1 && s.status == Status::Running)
    }));
    let dir = env.root.path().join("containers").join(&id);
    assert!(wait_until(Duration::from_secs(5), || log_texts(&dir).len() == 2));
    std::thread::sleep(Duration::from_millis(300));
    // Following ends when the container is removed.
    env.kill(&["--rm", "-f", "twice"]).assert_ok();
    let out = follower.wait_with_output().unwrap();
    assert_eq!(out.stdout_str(), "run 1\nrun 2\n", "{}", out.stderr_str());
}

#[test]
fn a_start_waits_for_the_exit_the_owner_is_recording() {
    // The moment between a container's end and its owner's record of it:
    // the process is gone, its owner alive. The container reads as running
    // (as `docker ps` shows it "Up" until the exit is reported), and a start
    // then waits for the record instead of taking it for a running one.
    let env = Env::new();
    let out =
        env.spawn_output(&["--create", "--name", "again", "--", "sh", "-c", "echo ran; exec sleep 1000"]);
    out.assert_ok();
    let id = id_of(&out.records()[0]);
    struct Owner(std::process::Child);
    impl Drop for Owner {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let owner = Owner(Command::new("sleep").arg("30").spawn().unwrap());
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id() as i32;
    gone.wait().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let path = env.root.path().join("containers").join(&id).join("state.json");
    let write = |s: &ContainerState| {
        let tmp = path.with_extension("test-tmp");
        std::fs::write(&tmp, serde_json::to_vec(s).unwrap()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let mut s = env.state(&id).unwrap();
    s.status = Status::Running;
    s.started_at = Some(kist_common::container::now_rfc3339());
    s.pid = Some(gone_pid);
    s.owner_pid = Some(owner.0.id() as i32);
    write(&s);
    let listed = env.list(&["-a"]);
    assert_eq!(listed[0]["state"], "running", "{}", listed[0]);
    assert!(listed[0]["note"].is_null(), "{}", listed[0]);

    let recorder = std::thread::scope(|scope| {
        let h = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            let mut s = env.state(&id).unwrap();
            s.status = Status::Exited;
            s.exit_code = Some(0);
            s.pid = None;
            s.owner_pid = None;
            s.finished_at = Some(kist_common::container::now_rfc3339());
            write(&s);
            drop(owner);
        });
        let out = run(env.cmd("ctr-spawn").args(["--start", "again"]));
        h.join().unwrap();
        out
    });
    recorder.assert_ok();
    assert_eq!(recorder.records()[0]["state"], "running");
    let dir = env.root.path().join("containers").join(&id);
    assert!(wait_until(Duration::from_secs(5), || log_texts(&dir) == vec!["ran\n"]), "{:?}", log_texts(&dir));
    let s = env.state(&id).unwrap();
    assert!(s.pid.is_some_and(|p| p != gone_pid));
}

#[test]
fn create_then_start() {
    let env = Env::new();
    let out =
        env.spawn_output(&["--create", "--name", "later", "--", "sh", "-c", "echo started; exec sleep 1000"]);
    out.assert_ok();
    let rec = &out.records()[0];
    assert_eq!(rec["state"], "created");
    let id = id_of(rec);
    let s = env.state(&id).unwrap();
    assert_eq!(s.status, Status::Created);
    assert!(s.pid.is_none() && s.owner_pid.is_none());
    assert_eq!(env.list(&["-a"])[0]["status"], "Created");
    assert!(env.list(&[]).is_empty());

    let out = run(env.cmd("ctr-spawn").args(["--start", "later"]));
    out.assert_ok();
    assert_eq!(out.records()[0]["state"], "running");
    let dir = env.root.path().join("containers").join(&id);
    assert!(wait_until(Duration::from_secs(5), || log_texts(&dir) == vec!["started\n"]));
    // Stop, then start again: the mark is cleared, the upper dir kept.
    env.kill(&["--stop", "-t", "1", "later"]).assert_ok();
    assert!(env.state(&id).unwrap().stopped_by_user);
    std::fs::write(dir.join("upper/kept"), "x").unwrap();
    run(env.cmd("ctr-spawn").args(["--start", "later"])).assert_ok();
    let s = env.state(&id).unwrap();
    assert_eq!(s.status, Status::Running);
    assert!(!s.stopped_by_user);
    assert!(dir.join("upper/kept").exists());

    // Attached start passes the status through.
    let out = env.spawn_output(&["--create", "--name", "job", "--", "sh", "-c", "echo hi; exit 3"]);
    out.assert_ok();
    let out = run(env.cmd("ctr-spawn").args(["--start", "job", "-a"]));
    assert_eq!(out.code(), 3, "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "hi\n");
    let job = id_of(&out_records_first(&env, "job"));
    assert_eq!(env.state(&job).unwrap().exit_code, Some(3));
}

fn out_records_first(env: &Env, name: &str) -> serde_json::Value {
    env.list(&["-a"]).into_iter().find(|r| r["name"] == name).expect("listed")
}

#[test]
fn log_rotation_with_max_size() {
    let env = Env::new();
    let script =
        "i=0; while [ $i -lt 300 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done";
    let rec = env.detach(&["--log-opt", "max-size=2k", "--log-opt", "max-file=3"], &["sh", "-c", script]);
    let id = id_of(&rec);
    assert!(wait_until(Duration::from_secs(10), || env
        .state(&id)
        .is_some_and(|s| s.status == Status::Exited && s.owner_pid.is_none())));
    let dir = env.root.path().join("containers").join(&id);
    for f in ["log.jsonl", "log.jsonl.1", "log.jsonl.2"] {
        let len = std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(len > 0 && len <= 2048, "{f}: {len} bytes");
    }
    assert!(!dir.join("log.jsonl.3").exists());
    let texts = log_texts(&dir);
    assert!(texts.len() < 300 && texts.len() > 20, "{}", texts.len());
    // Consecutive lines, ending with the last one.
    let nums: Vec<u32> = texts.iter().map(|t| t.split('-').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(*nums.last().unwrap(), 299);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    let out = run(env.cmd("ctr-logs").args(["--tail", "1", &id]));
    assert_eq!(out.stdout_str(), "line-299-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n");
}

#[test]
fn the_idle_monitor_is_one_small_thread() {
    let env = Env::new();
    let rec = env.detach(&["-t"], &["sh", "-c", "echo tty-out; exec sleep 1000"]);
    let id = id_of(&rec);
    let monitor = env.state(&id).unwrap().owner_pid.unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{monitor}/status")).unwrap();
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("Threads:"), 1);
    eprintln!("monitor VmRSS {} kB", field("VmRSS:"));
    // -t: the pty's output is the log, on stdout.
    let dir = env.root.path().join("containers").join(&id);
    assert!(
        wait_until(Duration::from_secs(5), || log_texts(&dir) == vec!["tty-out\r\n"]),
        "{:?}",
        log_texts(&dir)
    );
}

#[test]
fn a_command_that_cannot_start_fails_with_dockers_status() {
    let env = Env::new();
    let out = env.spawn_output(&["-d", "--name", "nope", "--", "/no/such/command"]);
    assert_eq!(out.code(), 127, "{}", out.stderr_str());
    assert!(out.stdout_str().is_empty());
    // Left behind as Docker does, with its exit recorded and no monitor.
    let id = kist_common::lifecycle::resolve(&kist_common::StateRoot::at(env.root.path()), "nope").unwrap();
    env.ids.lock().unwrap().push(id.clone());
    let s = env.state(&id).unwrap();
    assert_eq!(s.exit_code, Some(127));
    assert_eq!(s.status, Status::Exited);
    // With --rm nothing is left.
    let out = env.spawn_output(&["-d", "--rm", "--", "/no/such/command"]);
    assert_eq!(out.code(), 127);
    assert_eq!(env.list(&["-a"]).len(), 1);
}

#[test]
fn the_monitor_does_not_hold_the_callers_pipes() {
    let env = Env::new();
    // As in `id=$(ctr-spawn -d …)`: the shell waits for EOF on its pipe.
    let script = format!(
        "exec 3>&1; {} -d --name held -- sleep 1000 < {}",
        kist_tests::bin("ctr-spawn").display(),
        env.root.path().join("rec.json").display()
    );
    std::fs::write(env.root.path().join("rec.json"), &env.img.record).unwrap();
    let mut child = Command::new("sh")
        .env("KIST_ROOT", env.root.path())
        // As TestRoot::cmd does: no bridge in the host's namespace.
        .env("KIST_DEFAULT_NETWORK", "none")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut text = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut text).unwrap();
    child.wait().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    let rec: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    env.ids.lock().unwrap().push(id_of(&rec));
}

#[test]
fn a_stop_during_the_backoff_ends_the_restarts() {
    let env = Env::new();
    let rec = env.detach(&["--name", "flappy", "--restart", "always"], &["sh", "-c", "exit 2"]);
    let id = id_of(&rec);
    assert!(wait_until(Duration::from_secs(20), || env.state(&id).is_some_and(|s| s.restart_count >= 3)));
    let monitor = env.state(&id).unwrap().owner_pid.expect("monitor");
    env.kill(&["--stop", "-t", "1", "flappy"]).assert_ok();
    assert!(wait_until(Duration::from_secs(10), || !alive(monitor)), "the monitor keeps restarting");
    let s = env.state(&id).unwrap();
    assert_eq!(s.status, Status::Exited, "{s:?}");
    assert!(s.stopped_by_user);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.state(&id).unwrap().restart_count, s.restart_count);
    let l = env.list(&["-a"]);
    assert!(l[0]["status"].as_str().unwrap().starts_with("Exited (2)"), "{}", l[0]);
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

/// Waits for `restarts` restarts and returns the pids of the monitor and
/// of the container's inits seen on the way.
fn watch_restarts(env: &Env, id: &str, restarts: u32) -> (Vec<i32>, Vec<i32>) {
    let (mut monitors, mut inits) = (Vec::new(), Vec::new());
    let done = wait_until(Duration::from_secs(20), || {
        let Some(s) = env.state(id) else { return false };
        if let Some(p) = s.owner_pid.filter(|p| !monitors.contains(p)) {
            monitors.push(p);
        }
        if let Some(p) = s.pid.filter(|p| !inits.contains(p)) {
            inits.push(p);
        }
        s.restart_count >= restarts && s.status == Status::Running
    });
    assert!(done, "{:?}", env.state(id));
    (monitors, inits)
}

#[test]
fn the_resident_monitor_is_ctr_monitor_with_one_pid_across_restarts() {
    let env = Env::new();
    let rec = env.detach(
        &["--name", "flappy", "--restart", "always"],
        &["sh", "-c", "echo run $$; sleep 0.2; exit 3"],
    );
    let id = id_of(&rec);
    let monitor = env.state(&id).unwrap().owner_pid.unwrap();
    // ctr-spawn handed the running container over: the resident process is
    // the small binary, holding the init's pipes and told which container.
    assert!(wait_until(Duration::from_secs(5), || comm(monitor) == "ctr-monitor"), "{}", comm(monitor));
    let args = std::fs::read(format!("/proc/{monitor}/cmdline")).unwrap();
    let args: Vec<String> =
        args.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    assert!(args.windows(2).any(|w| w[0] == "--id" && w[1] == id), "{args:?}");
    // Every restart goes through ctr-spawn and back, in the same process.
    let (monitors, inits) = watch_restarts(&env, &id, 2);
    assert_eq!(monitors, vec![monitor], "the owner pid changed across restarts");
    assert!(inits.len() >= 2, "{inits:?}");
    assert!(wait_until(Duration::from_secs(5), || comm(monitor) == "ctr-monitor"));
    let dir = env.root.path().join("containers").join(&id);
    assert!(wait_until(Duration::from_secs(5), || log_texts(&dir).len() >= 2), "{:?}", log_texts(&dir));
    env.kill(&["--stop", "-t", "1", "flappy"]).assert_ok();
    assert!(wait_until(Duration::from_secs(10), || !alive(monitor)), "the monitor stays after the stop");
    assert_eq!(env.state(&id).unwrap().status, Status::Exited);
    assert!(cgroup_dirs(&id).is_empty(), "cgroup left: {:?}", cgroup_dirs(&id));
}

#[test]
fn without_ctr_monitor_ctr_spawn_stays_the_monitor() {
    let env = Env::new();
    // ctr-spawn installed alone: no ctr-monitor next to it.
    let alone = tempfile::tempdir().unwrap();
    let spawn = alone.path().join("ctr-spawn");
    std::fs::copy(kist_tests::bin("ctr-spawn"), &spawn).unwrap();
    let mut c = Command::new(&spawn);
    c.env("KIST_ROOT", env.root.path()).env("KIST_DEFAULT_NETWORK", "none");
    c.args([
        "-d",
        "--name",
        "solo",
        "--restart",
        "on-failure:2",
        "--",
        "sh",
        "-c",
        "echo solo; sleep 0.2; exit 1",
    ]);
    let out = run_with_stdin(&mut c, env.img.record.as_bytes());
    out.assert_ok();
    let id = id_of(&out.records()[0]);
    env.ids.lock().unwrap().push(id.clone());
    let monitor = env.state(&id).unwrap().owner_pid.unwrap();
    assert_eq!(comm(monitor), "ctr-spawn");
    // The same behaviour: restarted exactly twice by the one monitor, logged.
    let (monitors, _) = watch_restarts(&env, &id, 2);
    assert_eq!(monitors, vec![monitor]);
    assert!(wait_until(Duration::from_secs(10), || !alive(monitor)), "the monitor stays");
    let s = env.state(&id).unwrap();
    assert_eq!((s.status, s.restart_count, s.exit_code), (Status::Exited, 2, Some(1)), "{s:?}");
    let dir = env.root.path().join("containers").join(&id);
    assert_eq!(log_texts(&dir), vec!["solo\n"; 3]);
}

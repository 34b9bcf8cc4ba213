//! ctr-kill against real containers (attached ctr-spawn in the background)
//! and state fixtures: signals and the exit codes ctr-spawn passes on,
//! --stop's grace period and escalation, parallel stops, the freezer,
//! removal of everything (directory, name, mounts, cgroup, anonymous
//! volumes), records on stdin, and per-container errors.

use std::time::{Duration, Instant};

use kist_common::container::Status;
use kist_tests::ctl::{cgroup_dirs, dead_pid, mounts_under, write_state, Attached, Fixture};
use kist_tests::spawn::busybox;
use kist_tests::{run, run_with_stdin, OutputExt, TestRoot};

fn kill(root: &TestRoot, args: &[&str]) -> std::process::Output {
    run(root.cmd("ctr-kill").args(args))
}

#[test]
fn default_signal_is_kill_and_ctr_spawn_exits_137() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let mut c = Attached::start(&root, &img, "victim", &[], &["sleep", "1000"]);
    let out = kill(&root, &["victim"]);
    out.assert_ok();
    let recs = out.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["id"], c.id.as_str());
    assert_eq!(recs[0]["state"], "exited", "{}", recs[0]);
    assert_eq!(recs[0]["exitCode"], 137);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(137));
    // Not running any more: a second kill is a conflict.
    let out = kill(&root, &["victim"]);
    assert_eq!(out.code(), 6, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("is not running"), "{}", out.stderr_str());
}

#[test]
fn signals_by_name_and_number() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    // Under --init the command is not pid 1, so TERM's default action applies.
    for (i, sig) in ["TERM", "SIGTERM", "15"].iter().enumerate() {
        let name = format!("t{i}");
        let mut c = Attached::start(&root, &img, &name, &["--init"], &["sleep", "1000"]);
        // By unique id prefix.
        let out = kill(&root, &["--signal", sig, &c.id[..10]]);
        out.assert_ok();
        assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(143), "signal {sig}");
        let s = c.state();
        assert_eq!(s.status, Status::Exited);
        assert_eq!(s.exit_code, Some(143));
    }
    let out = kill(&root, &["--signal", "NOPE", "t0"]);
    assert_eq!(out.code(), 2, "{}", out.stderr_str());
}

#[test]
fn stop_waits_the_grace_period_then_kills() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let mut c =
        Attached::start(&root, &img, "stubborn", &["--init"], &["sh", "-c", "trap '' TERM; sleep 1000"]);
    let t0 = Instant::now();
    let out = kill(&root, &["--stop", "-t", "2", "stubborn"]);
    let took = t0.elapsed();
    out.assert_ok();
    assert!(took >= Duration::from_secs(2), "stopped after {took:?}, before the grace period");
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(137));
    let s = c.state();
    assert!(s.stopped_by_user, "stop must mark the state for restart policies");
    assert_eq!(s.exit_code, Some(137));
    assert_eq!(out.records()[0]["state"], "exited");

    // One that obeys TERM stops at once, with 143.
    let mut c = Attached::start(&root, &img, "polite", &["--init"], &["sleep", "1000"]);
    let t0 = Instant::now();
    kill(&root, &["--stop", "polite"]).assert_ok();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(143));

    // Stopping a stopped container is fine (Docker prints it again).
    kill(&root, &["--stop", "polite"]).assert_ok();
}

#[test]
fn many_containers_stop_in_parallel() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let mut cs: Vec<Attached> = (0..5)
        .map(|i| {
            Attached::start(&root, &img, &format!("p{i}"), &[], &["sh", "-c", "trap '' TERM; sleep 1000"])
        })
        .collect();
    let t0 = Instant::now();
    let out = kill(&root, &["--stop", "-t", "2", "p0", "p1", "p2", "p3", "p4"]);
    let took = t0.elapsed();
    out.assert_ok();
    assert_eq!(out.records().len(), 5);
    assert!(took < Duration::from_secs(6), "5 stops with a 2 s grace took {took:?}: not parallel");
    for c in &mut cs {
        assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(137));
    }
}

fn counter(root: &TestRoot, id: &str) -> u64 {
    let p = root.path().join("containers").join(id).join("upper/count");
    // The loop truncates the file before each write: retry an empty read.
    for _ in 0..1000 {
        if let Some(n) = std::fs::read_to_string(&p).ok().and_then(|s| s.trim().parse().ok()) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    0
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let c = Attached::start(
        &root,
        &img,
        "counter",
        &[],
        &["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /count; done"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&root, &c.id) < 10 {
        assert!(Instant::now() < deadline, "counter never advanced");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = kill(&root, &["--pause", "counter"]);
    out.assert_ok();
    assert_eq!(out.records()[0]["state"], "paused");
    assert!(out.records()[0]["status"].as_str().unwrap().ends_with("(Paused)"));
    std::thread::sleep(Duration::from_millis(100));
    let a = counter(&root, &c.id);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(counter(&root, &c.id), a, "counter advanced while paused");
    let listed = run(&mut root.cmd("ctr-list"));
    assert!(listed.records()[0]["status"].as_str().unwrap().ends_with("(Paused)"));
    assert_eq!(kill(&root, &["--pause", "counter"]).code(), 6);

    kill(&root, &["--resume", "counter"]).assert_ok();
    std::thread::sleep(Duration::from_millis(500));
    assert!(counter(&root, &c.id) > a, "counter did not advance after resume");
    assert_eq!(c.state().status, Status::Running);
    assert_eq!(kill(&root, &["--resume", "counter"]).code(), 6);

    // A paused container is still killed at once (thawed for the signal).
    kill(&root, &["--pause", "counter"]).assert_ok();
    let out = kill(&root, &["counter"]);
    out.assert_ok();
    assert_eq!(out.records()[0]["state"], "exited");
}

#[test]
fn rm_needs_force_for_a_running_container_and_leaves_nothing() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let mut c = Attached::start(&root, &img, "doomed", &[], &["sleep", "1000"]);
    let dir = root.path().join("containers").join(&c.id);
    assert!(!cgroup_dirs(&c.id).is_empty(), "ctr-spawn made no cgroup; the check below would prove nothing");

    let out = kill(&root, &["--rm", "doomed"]);
    assert_eq!(out.code(), 6, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("container is running"), "{}", out.stderr_str());
    assert!(dir.is_dir());

    let out = kill(&root, &["--rm", "-f", "doomed"]);
    out.assert_ok();
    assert_eq!(out.records()[0]["removed"], true);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(137));
    assert!(!dir.exists(), "container directory left");
    assert!(!root.path().join("names/doomed").exists(), "name left");
    assert!(cgroup_dirs(&c.id).is_empty(), "cgroup left: {:?}", cgroup_dirs(&c.id));
    assert!(mounts_under(root.path()).is_empty(), "mounts left: {:?}", mounts_under(root.path()));
    assert!(!root.path().join("locks").join(format!("container-{}.lock", c.id)).exists());
    // The name is free again.
    let c2 = Attached::start(&root, &img, "doomed", &[], &["sleep", "1000"]);
    assert_ne!(c2.id, c.id);
}

#[test]
fn rm_unmounts_what_is_mounted_beneath_the_container() {
    let root = TestRoot::new();
    let mut f = Fixture::new("mounted", Status::Exited);
    f.exit_code = Some(0);
    let id = write_state(root.path(), &f);
    let rootfs = root.path().join("containers").join(&id).join("rootfs");
    std::fs::create_dir_all(rootfs.join("sub")).unwrap();
    let mnt =
        |args: &[&str]| assert!(std::process::Command::new("mount").args(args).status().unwrap().success());
    mnt(&["-t", "tmpfs", "kist-test", rootfs.to_str().unwrap()]);
    std::fs::create_dir_all(rootfs.join("sub")).unwrap();
    mnt(&["-t", "tmpfs", "kist-test", rootfs.join("sub").to_str().unwrap()]);
    assert_eq!(mounts_under(&rootfs).len(), 2);
    let out = kill(&root, &["--rm", "mounted"]);
    out.assert_ok();
    assert!(mounts_under(root.path()).is_empty(), "{:?}", mounts_under(root.path()));
    assert!(!root.path().join("containers").join(&id).exists());
}

#[test]
fn rm_v_removes_only_anonymous_volumes() {
    let root = TestRoot::new();
    let vols = root.path().join("volumes");
    for v in ["named", "0a1b2c", "3d4e5f"] {
        std::fs::create_dir_all(vols.join(v).join("_data")).unwrap();
    }
    let mut f = Fixture::new("keepvols", Status::Exited);
    f.volumes = vec!["named".into(), "0a1b2c".into()];
    f.anonymous_volumes = vec!["0a1b2c".into()];
    write_state(root.path(), &f);
    let mut f = Fixture::new("dropvols", Status::Exited);
    f.volumes = vec!["named".into(), "3d4e5f".into()];
    f.anonymous_volumes = vec!["3d4e5f".into()];
    write_state(root.path(), &f);
    kill(&root, &["--rm", "keepvols"]).assert_ok();
    assert!(vols.join("0a1b2c").is_dir(), "without -v anonymous volumes stay");
    kill(&root, &["--rm", "-v", "dropvols"]).assert_ok();
    assert!(!vols.join("3d4e5f").exists(), "-v keeps the anonymous volume");
    assert!(vols.join("named").is_dir(), "-v removed a named volume");
}

#[test]
fn records_on_stdin_stop_and_remove_everything() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let mut live = Attached::start(&root, &img, "live", &[], &["sleep", "1000"]);
    write_state(root.path(), &Fixture::new("fresh", Status::Created));
    let mut f = Fixture::new("done", Status::Exited);
    f.exit_code = Some(0);
    write_state(root.path(), &f);

    let listed = run(root.cmd("ctr-list").arg("-a"));
    listed.assert_ok();
    assert_eq!(listed.records().len(), 3);
    let out = run_with_stdin(root.cmd("ctr-kill").args(["--stop", "-t", "1", "--rm"]), &listed.stdout);
    out.assert_ok();
    assert_eq!(out.records().len(), 3);
    assert!(out.records().iter().all(|r| r["removed"] == true));
    assert_eq!(live.wait_exit(Duration::from_secs(10)), Some(137));
    let left = run(root.cmd("ctr-list").arg("-a"));
    assert!(left.records().is_empty(), "{}", left.stdout_str());
    assert_eq!(std::fs::read_dir(root.path().join("names")).unwrap().count(), 0);

    // An empty stdin is not an error, and bare ids work too (ctr-list -q).
    let out = run_with_stdin(&mut root.cmd("ctr-kill"), b"");
    out.assert_ok();
    assert!(out.stdout.is_empty());
    let id = write_state(root.path(), &Fixture::new("bare", Status::Created));
    let out = run_with_stdin(root.cmd("ctr-kill").arg("--rm"), format!("{}\n", &id[..12]).as_bytes());
    out.assert_ok();
    assert!(!root.path().join("containers").join(&id).exists());
}

#[test]
fn one_failure_does_not_stop_the_others() {
    let root = TestRoot::new();
    let a = write_state(root.path(), &Fixture::new("a", Status::Created));
    let b = write_state(root.path(), &Fixture::new("b", Status::Created));
    let out = kill(&root, &["--rm", "a", "nosuch", "b"]);
    assert_eq!(out.code(), 3, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("nosuch: no such container"), "{}", out.stderr_str());
    assert_eq!(out.records().len(), 2);
    assert!(!root.path().join("containers").join(&a).exists());
    assert!(!root.path().join("containers").join(&b).exists());
    let usage = kill(&root, &["--pause", "--rm", "a"]);
    assert_eq!(usage.code(), 2);
}

#[test]
fn dead_owner_is_reported_and_force_removal_cleans_up() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let mut c = Attached::start(&root, &img, "orphaned", &[], &["sleep", "1000"]);
    // Kill the owner (ctr-spawn) itself: the container's init dies with it
    // (parent-death signal), and nobody records the exit.
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{}", c.pid)).exists() {
        assert!(Instant::now() < deadline, "init outlived its owner");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(c.state().status, Status::Running, "the fixture expects a stale state");
    let recs = run(root.cmd("ctr-list").arg("-a")).records();
    assert_eq!(recs[0]["state"], "exited");
    assert!(recs[0]["note"].as_str().unwrap().contains("exit not recorded"), "{}", recs[0]);
    assert!(run(&mut root.cmd("ctr-list")).records().is_empty(), "shown as running");

    let out = kill(&root, &["--rm", "-f", "orphaned"]);
    out.assert_ok();
    assert!(!root.path().join("containers").join(&c.id).exists());
    assert!(cgroup_dirs(&c.id).is_empty(), "cgroup left: {:?}", cgroup_dirs(&c.id));

    // A running state whose process is alive but whose owner is dead is
    // `dead` and needs -f to be removed; -f does not kill unrelated pids.
    let mut f = Fixture::new("unsupervised", Status::Running);
    let mut sleeper = std::process::Command::new("sleep").arg("1000").spawn().unwrap();
    f.created_secs_ago = -5;
    f.started_secs_ago = Some(-5);
    f.pid = Some(sleeper.id() as i32);
    f.owner_pid = Some(dead_pid());
    write_state(root.path(), &f);
    assert_eq!(run(root.cmd("ctr-list").arg("-a")).records()[0]["state"], "dead");
    assert_eq!(kill(&root, &["--rm", "unsupervised"]).code(), 6);
    kill(&root, &["--rm", "-f", "unsupervised"]).assert_ok();
    let st = sleeper.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
}

//! ctr-logs over json-file logs written by the test (the monitor that will
//! write them does not exist yet): stream split, --tail, --since/--until in
//! every form, -t, rotated generations, and -f across appends, rotation
//! and a restart, ending when the container is removed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kist_common::container::Status;
use kist_tests::ctl::{log_line, time_ago, write_state, Fixture};
use kist_tests::{run, OutputExt, TestRoot};

fn container(root: &TestRoot, name: &str) -> PathBuf {
    let mut f = Fixture::new(name, Status::Exited);
    f.exit_code = Some(0);
    let id = write_state(root.path(), &f);
    root.path().join("containers").join(id)
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn logs(root: &TestRoot, args: &[&str]) -> (String, String) {
    let out = run(root.cmd("ctr-logs").args(args));
    out.assert_ok();
    (out.stdout_str(), out.stderr_str())
}

#[test]
fn streams_tail_timestamps_and_rotated_files() {
    let root = TestRoot::new();
    let dir = container(&root, "talker");
    // Oldest generation first: .2, .1, then the live file.
    append(&dir.join("log.jsonl.2"), &log_line("stdout", "one\n", "2026-01-01T00:00:01.000000001Z"));
    append(&dir.join("log.jsonl.1"), &log_line("stderr", "two\n", "2026-01-01T00:00:02Z"));
    let mut live = String::new();
    live += &log_line("stdout", "three\n", "2026-01-01T00:00:03Z");
    live += &log_line("stdout", "par", "2026-01-01T00:00:04Z");
    live += &log_line("stdout", "tial\n", "2026-01-01T00:00:04.5Z");
    live += &log_line("stderr", "five\n", "2026-01-01T00:00:05Z");
    append(&dir.join("log.jsonl"), &live);

    let (out, err) = logs(&root, &["talker"]);
    assert_eq!(out, "one\nthree\npartial\n");
    assert_eq!(err, "two\nfive\n");
    let (out, err) = logs(&root, &["--tail", "2", "talker"]);
    assert_eq!(out, "tial\n");
    assert_eq!(err, "five\n");
    let (out, err) = logs(&root, &["--tail", "0", "talker"]);
    assert_eq!((out.as_str(), err.as_str()), ("", ""));
    let (out, _) = logs(&root, &["-n", "all", "-t", "talker"]);
    assert_eq!(
        out,
        "2026-01-01T00:00:01.000000001Z one\n2026-01-01T00:00:03Z three\n2026-01-01T00:00:04Z par2026-01-01T00:00:04.5Z tial\n"
    );
    // A broken line is skipped with a warning, not fatal.
    append(&dir.join("log.jsonl"), "not json\n");
    let out = run(root.cmd("ctr-logs").arg("talker"));
    out.assert_ok();
    assert!(out.stderr_str().contains("skipped 1 lines"), "{}", out.stderr_str());
    let out = run(root.cmd("ctr-logs").args(["--tail", "x", "talker"]));
    assert_eq!(out.code(), 2);
    let out = run(root.cmd("ctr-logs").arg("nosuch"));
    assert_eq!(out.code(), 3);
}

#[test]
fn since_and_until_take_docker_forms() {
    let root = TestRoot::new();
    let dir = container(&root, "timed");
    let mut text = String::new();
    for (i, secs) in [7200i64, 3600, 1200, 300, 10].iter().enumerate() {
        text += &log_line("stdout", &format!("line{i}\n"), &time_ago(*secs));
    }
    append(&dir.join("log.jsonl"), &text);
    assert_eq!(logs(&root, &["--since", "30m", "timed"]).0, "line2\nline3\nline4\n");
    assert_eq!(logs(&root, &["--since", "1h30m", "--until", "10m", "timed"]).0, "line1\nline2\n");
    assert_eq!(logs(&root, &["--until", "1m", "timed"]).0, "line0\nline1\nline2\nline3\n");
    let unix = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 600)
        .to_string();
    assert_eq!(logs(&root, &["--since", &unix, "timed"]).0, "line3\nline4\n");
    let rfc = time_ago(2000);
    assert_eq!(logs(&root, &["--since", &rfc, "--until", &time_ago(100), "timed"]).0, "line2\nline3\n");
    // --tail picks the last lines first, then the window applies (Docker's order).
    assert_eq!(logs(&root, &["--tail", "2", "--since", "30m", "timed"]).0, "line3\nline4\n");
    let out = run(root.cmd("ctr-logs").args(["--since", "yesterday", "timed"]));
    assert_eq!(out.code(), 2);
}

#[test]
fn follow_sees_appends_rotation_restarts_and_ends_on_removal() {
    let root = TestRoot::new();
    let dir = container(&root, "follow");
    let live = dir.join("log.jsonl");
    append(&live, &log_line("stdout", "before\n", &time_ago(5)));

    let mut child = root
        .cmd("ctr-logs")
        .args(["-f", "follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> String {
        rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("ctr-logs -f did not show {what}"))
    };
    assert_eq!(next("the existing line"), "before");
    append(&live, &log_line("stdout", "appended\n", &time_ago(0)));
    assert_eq!(next("an appended line"), "appended");
    // Rotation as json-file does it: rename to .1, then a new live file.
    append(&live, &log_line("stdout", "last of generation 1\n", &time_ago(0)));
    std::fs::rename(&live, dir.join("log.jsonl.1")).unwrap();
    std::thread::sleep(Duration::from_millis(120));
    append(&live, &log_line("stdout", "first of generation 2\n", &time_ago(0)));
    assert_eq!(next("the rotated file's tail"), "last of generation 1");
    assert_eq!(next("the new file"), "first of generation 2");
    // A restart appends to the same log: the second run's output follows.
    append(&live, &log_line("stdout", "second run\n", &time_ago(0)));
    assert_eq!(next("the second run"), "second run");
    assert!(child.try_wait().unwrap().is_none(), "ctr-logs -f exited early");

    // Removing the container ends the follow with status 0.
    std::fs::remove_dir_all(&dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ctr-logs -f kept running after the container was removed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

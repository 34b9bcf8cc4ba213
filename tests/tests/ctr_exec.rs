//! ctr-exec against real containers (attached ctr-spawn in the background):
//! -it under a real pty (driven through script(1)): a prompt, a command, an
//! exit status; -i copies a redirected file byte for byte; the process
//! shows the container's capability sets, seccomp mode and no_new_privs;
//! env, user, workdir; 126/127; stopped and paused containers refused; no
//! host descriptor reaches the process.

use std::time::Duration;

use kist_common::Digest;
use kist_tests::ctl::Attached;
use kist_tests::spawn::busybox;
use kist_tests::{run, run_with_stdin, OutputExt, TestRoot};

fn status_fields(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Seccomp:", "NoNewPrivs"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(String::from)
        .collect()
}

#[test]
fn exec_has_the_containers_caps_seccomp_env_and_status() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let c = Attached::start(&root, &img, "box", &["-e", "FROM_RUN=yes"], &["sleep", "1000"]);
    let out = run(root.cmd("ctr-exec").args(["box", "cat", "/proc/self/status"]));
    out.assert_ok();
    let init = std::fs::read_to_string(format!("/proc/{}/status", c.pid)).unwrap();
    let want = status_fields(&init);
    assert_eq!(want.len(), 7, "{init}");
    assert!(
        want.iter().any(|l| l.starts_with("Seccomp:") && l.ends_with('2')),
        "the init is filtered: {want:?}"
    );
    assert_eq!(status_fields(&out.stdout_str()), want);
    // Same namespaces as the init.
    for ns in ["mnt", "pid", "net", "uts", "ipc", "cgroup"] {
        let out = run(root.cmd("ctr-exec").args(["box", "readlink", &format!("/proc/self/ns/{ns}")]));
        out.assert_ok();
        let theirs = std::fs::read_link(format!("/proc/{}/ns/{ns}", c.pid)).unwrap();
        assert_eq!(out.stdout_str().trim(), theirs.to_string_lossy(), "{ns}");
    }
    // The container's cgroup.
    let out = run(root.cmd("ctr-exec").args(["box", "cat", "/proc/self/cgroup"]));
    let init_cg = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid)).unwrap();
    assert_eq!(out.stdout_str(), init_cg);
    // Environment, -e, -w, -u.
    let out = run(root.cmd("ctr-exec").args([
        "-e",
        "EXTRA=1",
        "-w",
        "/tmp",
        "-u",
        "www",
        "box",
        "sh",
        "-c",
        "echo $FROM_RUN $EXTRA $(pwd) $(id -u):$(id -g)",
    ]));
    out.assert_ok();
    assert_eq!(out.stdout_str().trim(), "yes 1 /tmp 33:33");
    // Exit status passes through; 127 and 126 as Docker.
    assert_eq!(run(root.cmd("ctr-exec").args(["box", "sh", "-c", "exit 7"])).code(), 7);
    let out = run(root.cmd("ctr-exec").args(["box", "no-such-cmd"]));
    assert_eq!(out.code(), 127, "{}", out.stderr_str());
    assert_eq!(run(root.cmd("ctr-exec").args(["box", "/etc/passwd"])).code(), 126);
    // A user or working directory that cannot be set up: 126, as docker exec's.
    let out = run(root.cmd("ctr-exec").args(["-u", "nosuchuser", "box", "true"]));
    assert_eq!(out.code(), 126, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("unable to find user nosuchuser"), "{}", out.stderr_str());
    let out = run(root.cmd("ctr-exec").args(["-w", "/no/such/dir", "box", "true"]));
    assert_eq!(out.code(), 126, "{}", out.stderr_str());
    // Only 0, 1 and 2 are open in the process.
    let out = run(root.cmd("ctr-exec").args(["box", "ls", "/proc/self/fd"]));
    let fds: Vec<String> = out.stdout_str().split_whitespace().map(String::from).collect();
    // ls itself opens one descriptor for the directory it lists.
    assert!(fds.len() <= 4 && fds.iter().take(3).eq(["0", "1", "2"].iter()), "{fds:?}");
}

#[test]
fn stdin_copies_a_file_byte_for_byte() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let c = Attached::start(&root, &img, "sink", &[], &["sleep", "1000"]);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let out = run_with_stdin(root.cmd("ctr-exec").args(["-i", "sink", "sh", "-c", "cat > /f"]), &data);
    out.assert_ok();
    let got = std::fs::read(format!("/proc/{}/root/f", c.pid)).unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(Digest::of(&got), Digest::of(&data));
}

#[test]
fn tty_gives_a_prompt_runs_a_command_and_exits() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let _c = Attached::start(&root, &img, "term", &[], &["sleep", "1000"]);
    let exec = kist_tests::bin("ctr-exec");
    let cmd =
        format!("stty rows 33 cols 111; KIST_ROOT={} {} -it term sh", root.path().display(), exec.display());
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    stdin.write_all(b"echo tty=$(tty) sum=$((40+2)); stty size\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"exit 5\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/ # "), "no prompt: {text:?}");
    assert!(text.contains("sum=42"), "{text:?}");
    assert!(text.contains("tty=/dev/pts/"), "{text:?}");
    // The window size of ctr-exec's terminal is the process's.
    assert!(text.contains("33 111"), "{text:?}");
    assert_eq!(out.status.code(), Some(5), "{text:?} {}", String::from_utf8_lossy(&out.stderr));
}

/// docker exec's statuses for a container that cannot take an exec: 1
/// (no such container, an ambiguous prefix, stopped, paused), with the
/// reason on stderr; a wrong command line is 125, as docker's flag errors.
#[test]
fn stopped_paused_and_missing_containers_exit_1_like_docker_exec() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let c = Attached::start(&root, &img, "p", &[], &["sleep", "1000"]);
    run(root.cmd("ctr-kill").args(["--pause", "p"])).assert_ok();
    let out = run(root.cmd("ctr-exec").args(["p", "true"]));
    assert_eq!(out.code(), 1, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("paused"), "{}", out.stderr_str());
    run(root.cmd("ctr-kill").args(["--resume", "p"])).assert_ok();
    run(root.cmd("ctr-exec").args(["p", "true"])).assert_ok();
    let mut c = c;
    // SAFETY: the container's init that the fixture started.
    unsafe { libc::kill(c.pid, libc::SIGKILL) };
    c.wait_exit(Duration::from_secs(10));
    let out = run(root.cmd("ctr-exec").args(["p", "true"]));
    assert_eq!(out.code(), 1);
    assert!(out.stderr_str().contains("is not running"), "{}", out.stderr_str());
    let out = run(root.cmd("ctr-exec").args(["ghost", "true"]));
    assert_eq!(out.code(), 1);
    assert!(out.stderr_str().contains("no such container: ghost"), "{}", out.stderr_str());
    for bad in [&["--no-such-flag", "p", "true"][..], &["p"][..]] {
        let out = run(root.cmd("ctr-exec").args(bad));
        assert_eq!(out.code(), 125, "ctr-exec {bad:?}: {}", out.stderr_str());
    }
    assert_eq!(run(root.cmd("ctr-exec").arg("--help")).code(), 0);
}

#[test]
fn signals_to_ctr_exec_reach_the_process() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let _c = Attached::start(&root, &img, "sig", &[], &["sleep", "1000"]);
    let mut child = root
        .cmd("ctr-exec")
        .args(["sig", "sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: the ctr-exec this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(42));
}

#[test]
fn detach_returns_at_once_and_env_files_are_read() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let c = Attached::start(&root, &img, "bg", &[], &["sleep", "1000"]);
    let h = tempfile::tempdir().unwrap();
    let envf = h.path().join("env");
    std::fs::write(&envf, "# comment\nFROM_FILE=file value\n\n").unwrap();
    let t0 = std::time::Instant::now();
    let out = run(root.cmd("ctr-exec").args([
        "-d",
        "--env-file",
        envf.to_str().unwrap(),
        "bg",
        "sh",
        "-c",
        "sleep 1; echo \"$FROM_FILE\" > /dflag",
    ]));
    out.assert_ok();
    assert!(t0.elapsed() < Duration::from_millis(900), "-d waited for the process: {:?}", t0.elapsed());
    let flag = format!("/proc/{}/root/dflag", c.pid);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&flag).map(|s| s.is_empty()).unwrap_or(true) {
        assert!(std::time::Instant::now() < deadline, "the detached process never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(&flag).unwrap(), "file value\n");
}

#[test]
fn privileged_gets_every_capability_and_no_filter() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let c = Attached::start(&root, &img, "priv", &[], &["sleep", "1000"]);
    let out = run(root.cmd("ctr-exec").args(["--privileged", "priv", "cat", "/proc/self/status"]));
    out.assert_ok();
    let text = out.stdout_str();
    let field =
        |t: &str, k: &str| t.lines().find(|l| l.starts_with(k)).map(|l| l[k.len()..].trim().to_string());
    let mine = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(field(&text, "CapEff:"), field(&mine, "CapEff:"), "privileged: the host's full set");
    assert_eq!(field(&text, "Seccomp:").as_deref(), Some("0"));
    let init = std::fs::read_to_string(format!("/proc/{}/status", c.pid)).unwrap();
    assert_ne!(field(&init, "CapEff:"), field(&text, "CapEff:"), "the init itself is not privileged");
}

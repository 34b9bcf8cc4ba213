//! ctr-spawn, attached runs: exit codes, Docker conformance of what the
//! container sees (against docker's own output saved in
//! tests/data/docker-probe/), cgroup limits, the runtime CVE classes, and
//! that --rm runs leave nothing behind. Real binaries, as root.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kist_tests::image::{busybox_entries, Entry};
use kist_tests::spawn::{self, busybox, busybox_config, unpack};
use kist_tests::{OutputExt, TestRoot};

fn sh(root: &TestRoot, img: &spawn::Unpacked, flags: &[&str], script: &str) -> std::process::Output {
    let mut args: Vec<&str> = vec!["--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    spawn::spawn(root, img, &args)
}

fn reference(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/docker-probe").join(name);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run tests/data/docker-probe/capture.sh)", p.display()))
}

fn containers(root: &TestRoot) -> Vec<String> {
    std::fs::read_dir(root.path().join("containers"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn exit_codes_follow_docker() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    assert_eq!(sh(&root, &img, &[], "exit 0").code(), 0);
    assert_eq!(sh(&root, &img, &[], "exit 7").code(), 7);

    let out = spawn::spawn(&root, &img, &["--rm", "--", "nosuchcommand"]);
    assert_eq!(out.code(), 127, "{}", out.stderr_str());
    assert!(
        out.stderr_str().contains("exec: \"nosuchcommand\": executable file not found in $PATH"),
        "{}",
        out.stderr_str()
    );

    let out = spawn::spawn(&root, &img, &["--rm", "--", "/etc"]);
    assert_eq!(out.code(), 126, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("exec: \"/etc\": permission denied"), "{}", out.stderr_str());

    let out = spawn::spawn(&root, &img, &["--rm", "--bogus-flag", "--", "true"]);
    assert_eq!(out.code(), 125, "{}", out.stderr_str());
    let out = spawn::spawn(&root, &img, &["--rm", "--memory", "lots", "--", "true"]);
    assert_eq!(out.code(), 125, "{}", out.stderr_str());
    assert_eq!(spawn::spawn(&root, &img, &["--help"]).code(), 0);

    // Killed from outside by SIGKILL: 128 + 9.
    let mut c = spawn::command(&root, &["--name", "victim", "--", "sleep", "30"]);
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(img.record.as_bytes()).unwrap();
    }
    let id = std::fs::read_to_string(root.path().join("names/victim")).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let id = id.clone().or_else(|| std::fs::read_to_string(root.path().join("names/victim")).ok());
        if let Some(id) = id {
            if let Ok(s) = std::fs::read(root.path().join("containers").join(id.trim()).join("state.json")) {
                let v: serde_json::Value = serde_json::from_slice(&s).unwrap();
                if let Some(pid) = v["pid"].as_i64() {
                    break pid;
                }
            }
        }
        assert!(Instant::now() < deadline, "container never ran");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: signalling the container's init we started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    // Without --rm the state stays, exited with 137.
    let id = std::fs::read_to_string(root.path().join("names/victim")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.path().join("containers").join(id.trim()).join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(v["status"], "exited");
    assert_eq!(v["exitCode"], 137);
    // The process killed inside (not pid 1 under --init) also gives 137.
    assert_eq!(sh(&root, &img, &["--init"], "kill -9 $$").code(), 137);
}

/// Normalises `ls -l` output: the date columns go.
fn ls_without_dates(text: &str) -> Vec<String> {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.iter().position(|x| MONTHS.contains(x)) {
                Some(i) if f.len() > i + 3 => {
                    f[..i].iter().chain(&f[i + 3..]).copied().collect::<Vec<_>>().join(" ")
                }
                _ => f.join(" "),
            }
        })
        .collect()
}

/// Mount table as a set of (mount point, fs type, source, mount options,
/// super options), with paths that name a runtime's own directories reduced.
fn mount_table(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let lf: Vec<&str> = left.split(' ').collect();
            let rf: Vec<&str> = right.split(' ').collect();
            let point = lf[4];
            let (fstype, source, sopts) = (rf[0], rf[1], rf.get(2).copied().unwrap_or(""));
            let sopts = if point == "/" { "(layers)".to_string() } else { sopts.to_string() };
            let root = match fstype {
                "cgroup" => "(container cgroup)".to_string(),
                "ext4" | "xfs" | "btrfs" => {
                    Path::new(lf[3]).file_name().unwrap().to_string_lossy().into_owned()
                }
                _ => lf[3].to_string(),
            };
            let source = if fstype == "ext4" { "(host disk)" } else { source };
            Some(format!("{point} {root} {} {fstype} {source} {sopts}", lf[5]))
        })
        .collect()
}

#[test]
fn probe_matches_docker_run() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let probe = |script: &str| {
        let out = sh(&root, &img, &[], script);
        out.assert_ok();
        out.stdout_str()
    };
    assert_eq!(probe("grep -E 'Cap|NoNewPrivs|Seccomp' /proc/self/status"), reference("status.txt"));
    assert_eq!(ls_without_dates(&probe("ls -l /dev")), ls_without_dates(&reference("dev.txt")));
    assert_eq!(
        ls_without_dates(&probe(
            "ls -l /dev/pts /dev/shm /dev/mqueue; stat -c '%n %a' /dev/shm /dev/mqueue /tmp"
        )),
        ls_without_dates(&reference("dev-extra.txt"))
    );
    assert_eq!(probe("id"), reference("id.txt"));
    assert_eq!(probe("pwd"), reference("pwd.txt"));
    // Docker sets no rlimits of its own: a container inherits the daemon's,
    // which the reference shows were the host's. The host's limits are this
    // test process's, so the comparison holds on any machine.
    let host_limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    assert_eq!(probe("cat /proc/self/limits"), host_limits);
    assert_eq!(reference("limits.txt").lines().count(), host_limits.lines().count());
    // Docker copies the host's resolv.conf without loopback nameservers.
    let host_resolv: String = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter(|l| !(l.starts_with("nameserver 127.") || l.starts_with("nameserver ::1")))
        .map(|l| format!("{l}\n"))
        .collect();
    if !host_resolv.contains("nameserver") {
        // Docker falls back to upstream or public servers when only loopback ones remain.
        let n: usize = probe("grep -c nameserver /etc/resolv.conf").trim().parse().unwrap();
        assert!(n >= 1);
    } else {
        assert_eq!(probe("cat /etc/resolv.conf"), host_resolv);
    }
    // Docker adds the bridge address line; kist has no bridge (--network none).
    let hosts: String = reference("hosts.txt")
        .lines()
        .filter(|l| !l.starts_with("172.17."))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(probe("cat /etc/hosts"), hosts);

    // Hostname: the first 12 hex digits of the id, like Docker's.
    let out = sh(
        &root,
        &img,
        &["--cidfile", &root.path().join("cid").display().to_string()],
        "hostname; cat /etc/hostname",
    );
    let id = std::fs::read_to_string(root.path().join("cid")).unwrap();
    assert_eq!(out.stdout_str(), format!("{}\n{}\n", &id[..12], &id[..12]));
    assert_eq!(reference("hostname.txt").trim().len(), 12);

    // The environment, with the hostname in place.
    let env = spawn::spawn(&root, &img, &["--rm", "--hostname", "probe", "--", "env"]).stdout_str();
    let docker_env: String = reference("env.txt")
        .lines()
        .map(|l| if l.starts_with("HOSTNAME=") { "HOSTNAME=probe\n".to_string() } else { format!("{l}\n") })
        .collect();
    assert_eq!(env, docker_env);

    // The mount table: same mounts, types, options, masked and read-only
    // paths. kist also masks /proc/interrupts as current moby does (Docker
    // 20.10, the reference, predates that).
    let ours = mount_table(&probe("cat /proc/self/mountinfo"));
    let mut docker = mount_table(&reference("mountinfo.txt"));
    docker.insert("/proc/interrupts /null rw,nosuid tmpfs tmpfs rw,size=65536k,mode=755".into());
    let only_ours: Vec<_> = ours.difference(&docker).collect();
    let only_docker: Vec<_> = docker.difference(&ours).collect();
    assert!(
        only_ours.is_empty() && only_docker.is_empty(),
        "only kist: {only_ours:#?}\nonly docker: {only_docker:#?}"
    );

    // The cgroup view: every v1 hierarchy, the container's own cgroup.
    let norm = |t: &str| -> String {
        t.lines()
            .map(|l| match l.rsplit_once('/') {
                Some((a, _)) if l.contains(':') => format!("{a}/ID\n"),
                _ => format!("{l}\n"),
            })
            .collect()
    };
    assert_eq!(
        norm(&probe("cat /proc/self/cgroup; ls /sys/fs/cgroup")).replace("/kist/", "/RT/"),
        norm(&reference("cgroup.txt")).replace("/docker/", "/RT/")
    );
}

#[test]
fn without_clone3_the_parent_places_the_init_in_every_cgroup() {
    // Where clone3 is refused (Docker's default seccomp profile, so kist
    // run inside a Docker container; kernels before 5.3), ctr-spawn clones
    // with clone(2) and writes the init's pid to cgroup.procs itself: the
    // container must end up in the same cgroups, with its limits.
    let root = TestRoot::new();
    let img = busybox(root.path());
    let script =
        "cat /proc/self/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max";
    let flags = ["--rm", "-m", "48m", "--pids-limit", "9", "--", "sh", "-c", script];
    let mut refused = std::process::Command::new(kist_tests::bin("no-clone3"));
    refused
        .arg(kist_tests::bin("ctr-spawn"))
        .args(flags)
        .env("KIST_ROOT", root.path())
        .env("KIST_DEFAULT_NETWORK", "none");
    let out = kist_tests::run_with_stdin(&mut refused, img.record.as_bytes());
    out.assert_ok();
    let normal = spawn::spawn(&root, &img, &flags);
    normal.assert_ok();
    let shape = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| match l.rsplit_once("/kist/") {
                Some((head, id)) if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    format!("{head}/kist/ID")
                }
                _ => l.to_string(),
            })
            .collect()
    };
    let lines = shape(&out.stdout_str());
    assert_eq!(lines, shape(&normal.stdout_str()), "{}", out.stdout_str());
    assert!(lines.iter().any(|l| l.starts_with("0::/kist/ID")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains(":memory:/kist/ID")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains(":pids:/kist/ID")), "{lines:?}");
    assert_eq!(lines[lines.len() - 2..], ["50331648".to_string(), "9".to_string()]);
    let text = out.stdout_str();
    let ids: std::collections::HashSet<&str> =
        text.lines().filter_map(|l| l.rsplit_once("/kist/").map(|(_, id)| id)).collect();
    assert_eq!(ids.len(), 1, "one container's cgroup in every hierarchy: {ids:?}");
}

#[test]
fn user_workdir_env_and_entrypoint_follow_docker_rules() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let out = spawn::spawn(&root, &img, &["--rm", "-u", "www", "--", "sh", "-c", "id; echo $HOME"]);
    assert_eq!(
        out.stdout_str(),
        "uid=33(www) gid=33(www) groups=33(www),50(staff)\n/var/www\n",
        "{}",
        out.stderr_str()
    );
    let out = spawn::spawn(&root, &img, &["--rm", "-u", "1234:50", "--", "sh", "-c", "id; echo $HOME"]);
    assert_eq!(out.stdout_str(), "uid=1234 gid=50(staff) groups=50(staff)\n/\n");
    // Non-root: no capabilities at all, as under docker run -u.
    let out = spawn::spawn(&root, &img, &["--rm", "-u", "www", "--", "grep", "CapEff", "/proc/self/status"]);
    assert_eq!(out.stdout_str(), "CapEff:\t0000000000000000\n");
    let out = spawn::spawn(&root, &img, &["--rm", "-u", "nosuchuser", "--", "true"]);
    assert_eq!(out.code(), 125);
    assert!(out.stderr_str().contains("no matching entries in passwd file"), "{}", out.stderr_str());

    let out = spawn::spawn(&root, &img, &["--rm", "-w", "/made/here", "--", "pwd"]);
    assert_eq!(out.stdout_str(), "/made/here\n");

    let envfile = root.path().join("env.list");
    std::fs::write(&envfile, "# comment\nFROMFILE=1\nA=file\n").unwrap();
    let out = spawn::spawn(
        &root,
        &img,
        &["--rm", "--env-file", envfile.to_str().unwrap(), "-e", "A=flag", "-e", "PATH=/bin", "--", "env"],
    );
    assert_eq!(
        out.stdout_str(),
        format!(
            "PATH=/bin\nHOSTNAME={}\nFROMFILE=1\nA=flag\nHOME=/root\n",
            out.stdout_str().lines().nth(1).unwrap().trim_start_matches("HOSTNAME=")
        )
    );

    let out = spawn::spawn(&root, &img, &["--rm", "--entrypoint", "echo", "--", "a", "b"]);
    assert_eq!(out.stdout_str(), "a b\n");
    let ep = unpack(
        root.path(),
        &busybox_entries(),
        serde_json::json!({"Env": ["PATH=/bin"], "Entrypoint": ["echo", "ep"], "Cmd": ["default"], "WorkingDir": "/tmp", "User": "www"}),
    );
    assert_eq!(spawn::spawn(&root, &ep, &["--rm"]).stdout_str(), "ep default\n");
    assert_eq!(spawn::spawn(&root, &ep, &["--rm", "--", "x"]).stdout_str(), "ep x\n");
    assert_eq!(
        spawn::spawn(&root, &ep, &["--rm", "--entrypoint", "sh", "--", "-c", "pwd; id -u"]).stdout_str(),
        "/tmp\n33\n"
    );
}

#[test]
fn memory_limit_oom_kills_and_is_reported() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let record = root.path().join("record.json");
    let out = spawn::spawn(
        &root,
        &img,
        &[
            "--rm",
            "--memory",
            "32m",
            "--record",
            record.to_str().unwrap(),
            "--",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=100M",
            "count=1",
        ],
    );
    assert_eq!(out.code(), 137, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("OOM killer"), "{}", out.stderr_str());
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(rec["type"], "container");
    assert_eq!(rec["oomKilled"], true);
    assert_eq!(rec["exitCode"], 137);
    assert_eq!(rec["state"], "exited");
    // The same allocation without a limit succeeds.
    let out = spawn::spawn(
        &root,
        &img,
        &["--rm", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"],
    );
    assert_eq!(out.code(), 0, "{}", out.stderr_str());
    assert!(containers(&root).is_empty());
}

#[test]
fn pids_limit_holds_a_fork_bomb() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let start = Instant::now();
    let out = sh(
        &root,
        &img,
        &["--pids-limit", "10"],
        "(i=0; while [ $i -lt 100 ]; do sleep 3 & i=$((i+1)); done) 2>/dev/null; \
         cat /sys/fs/cgroup/pids/pids.current /sys/fs/cgroup/pids/pids.max",
    );
    let text = out.stdout_str();
    let mut lines = text.lines();
    let current: u32 =
        lines.next().unwrap_or("x").trim().parse().unwrap_or_else(|_| panic!("{text}\n{}", out.stderr_str()));
    assert!(current <= 10, "{current} processes in a 10-pid container");
    assert_eq!(lines.next(), Some("10"));
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(containers(&root).is_empty());
}

fn sha256(p: &Path) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn container_cannot_reach_the_host_binary() {
    // CVE-2019-5736 class: /proc/<pid>/exe of a host process (ctr-spawn as
    // the parent under --pid host, the --init reaper as pid 1) must not be
    // openable, and the binary must stay as it was.
    let root = TestRoot::new();
    let img = busybox(root.path());
    let bin = kist_tests::bin("ctr-spawn");
    let before = sha256(&bin);
    let attack = "for p in \"$@\"; do \
        if readlink /proc/$p/exe >/dev/null 2>&1; then echo readable $p; fi; \
        if cat /proc/$p/exe >/dev/null 2>&1; then echo opened $p; fi; \
        if printf x 2>/dev/null >>/proc/$p/exe; then echo wrote $p; fi; done; echo done";
    let out = spawn::spawn(&root, &img, &["--rm", "--init", "--", "sh", "-c", attack, "sh", "1"]);
    assert_eq!(out.stdout_str(), "done\n", "{}", out.stderr_str());
    let out = spawn::spawn(
        &root,
        &img,
        &["--rm", "--pid", "host", "--", "sh", "-c", &format!("set -- $PPID; {attack}")],
    );
    assert_eq!(out.stdout_str(), "done\n", "{}", out.stderr_str());
    // A control: the container's own binary is readable, so the probe works.
    let out = sh(&root, &img, &[], "readlink /proc/1/exe");
    assert_eq!(out.stdout_str(), "/bin/busybox\n");
    assert_eq!(sha256(&bin), before);
}

#[test]
fn no_host_descriptor_reaches_the_container() {
    // CVE-2024-21626 class: ctr-spawn is started with extra open
    // descriptors (a file and a directory); none may show up inside, and the
    // working directory must be inside the container.
    let root = TestRoot::new();
    let img = busybox(root.path());
    std::fs::write(root.path().join("record"), &img.record).unwrap();
    let bin = kist_tests::bin("ctr-spawn");
    let script = format!(
        "exec 7</etc/hostname 8</ 9<{root}; exec {bin} --rm -- sh -c 'ls /proc/$$/fd; readlink /proc/$$/cwd' < {root}/record",
        root = root.path().display(),
        bin = bin.display()
    );
    let out = kist_tests::run(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("KIST_ROOT", root.path())
            .env("KIST_DEFAULT_NETWORK", "none"),
    );
    out.assert_ok();
    assert_eq!(out.stdout_str(), "0\n1\n2\n/\n", "{}", out.stderr_str());
}

#[test]
fn symlinked_mount_target_stays_inside_the_root() {
    // CVE-2021-30465 class: the image's /evil is a symlink climbing out to
    // a host path; the bind mount must land inside the container's root.
    let root = TestRoot::new();
    let outside = tempfile::Builder::new().prefix("kist-escape-").tempdir_in("/tmp").unwrap();
    let escape = outside.path().join("target");
    let mut entries = busybox_entries();
    entries.push(Entry::symlink("evil", &format!("../../../../../../../..{}", escape.display())));
    entries.push(Entry::symlink("evil2", &escape.display().to_string()));
    let img = unpack(root.path(), &entries, busybox_config());
    let src = root.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("marker"), "inside\n").unwrap();
    for target in ["/evil", "/evil2"] {
        let vol = format!("{}:{target}", src.display());
        let out = sh(&root, &img, &["-v", &vol], &format!("cat {}/marker", escape.display()));
        assert_eq!(out.stdout_str(), "inside\n", "{}", out.stderr_str());
        assert!(!escape.exists(), "the mount target was created on the host");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&outside.path().display().to_string()));
}

#[test]
fn mounts_volumes_and_read_only_root() {
    let root = TestRoot::new();
    let mut entries = busybox_entries();
    entries.push(Entry::dir("data", 0o755));
    entries.push(Entry::file("data/from-image", 0o644, b"image\n"));
    let img = unpack(root.path(), &entries, busybox_config());
    let host = root.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("f"), "host\n").unwrap();
    let ro = format!("{}:/mnt:ro", host.display());
    let out = sh(&root, &img, &["-v", &ro], "cat /mnt/f; echo x > /mnt/g || echo refused");
    assert!(
        out.stdout_str().starts_with("host\n") && out.stdout_str().ends_with("refused\n"),
        "{}",
        out.stderr_str()
    );
    assert!(!host.join("g").exists());
    let rw = format!("type=bind,source={},target=/mnt", host.display());
    sh(&root, &img, &["--mount", &rw], "echo new > /mnt/g").assert_ok();
    assert_eq!(std::fs::read_to_string(host.join("g")).unwrap(), "new\n");

    // A named volume is filled from the image the first time and persists.
    let out = sh(&root, &img, &["-v", "vol1:/data"], "cat /data/from-image; echo kept > /data/mine");
    assert_eq!(out.stdout_str(), "image\n", "{}", out.stderr_str());
    assert_eq!(std::fs::read_to_string(root.path().join("volumes/vol1/_data/mine")).unwrap(), "kept\n");
    let out =
        sh(&root, &img, &["--mount", "type=volume,source=vol1,target=/elsewhere"], "cat /elsewhere/mine");
    assert_eq!(out.stdout_str(), "kept\n");

    let out = sh(&root, &img, &["--read-only", "--tmpfs", "/scratch"], "echo x > /etc/x 2>/dev/null || echo ro; echo y > /scratch/y && cat /scratch/y; grep ' /scratch ' /proc/self/mountinfo | cut -d' ' -f6");
    assert_eq!(out.stdout_str(), "ro\ny\nrw,nosuid,nodev,noexec,relatime\n", "{}", out.stderr_str());
}

#[test]
fn namespaces_and_host_modes() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let out = sh(&root, &img, &[], "echo $$; ip -o link 2>/dev/null | wc -l; cat /sys/class/net/lo/operstate 2>/dev/null; ls /sys/class/net");
    let lines: Vec<String> = out.stdout_str().lines().map(String::from).collect();
    assert_eq!(lines[0], "1", "pid namespace: {lines:?}");
    assert!(out.stdout_str().ends_with("lo\n"), "only loopback: {lines:?}");
    let host_hostname = nix_hostname();
    let out = sh(&root, &img, &["--network", "host"], "hostname; ls /sys/class/net | wc -l");
    assert_eq!(out.stdout_str().lines().next(), Some(host_hostname.as_str()));
    let out = sh(&root, &img, &["--pid", "host"], "test $$ != 1 && echo host-pids");
    assert_eq!(out.stdout_str(), "host-pids\n");
    let ns = |p: &str| std::fs::read_link(p).unwrap().display().to_string();
    let host_ipc = ns("/proc/self/ns/ipc");
    let out = sh(&root, &img, &["--ipc", "host"], "readlink /proc/self/ns/ipc");
    assert_eq!(out.stdout_str().trim(), host_ipc);
    let out = sh(&root, &img, &[], "readlink /proc/self/ns/ipc");
    assert_ne!(out.stdout_str().trim(), host_ipc);
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

#[test]
fn security_options() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let st = "grep -E 'CapEff|NoNewPrivs|Seccomp:' /proc/self/status";
    let out = sh(
        &root,
        &img,
        &["--security-opt", "no-new-privileges", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN"],
        st,
    );
    assert_eq!(
        out.stdout_str(),
        "CapEff:\t0000000000001000\nNoNewPrivs:\t1\nSeccomp:\t2\n",
        "{}",
        out.stderr_str()
    );
    let out = sh(&root, &img, &["--security-opt", "seccomp=unconfined"], st);
    assert_eq!(out.stdout_str(), "CapEff:\t00000000a80425fb\nNoNewPrivs:\t0\nSeccomp:\t0\n");
    let out = sh(
        &root,
        &img,
        &["--privileged"],
        "grep Seccomp: /proc/self/status; grep -c ' /proc/keys ' /proc/self/mountinfo",
    );
    assert_eq!(out.stdout_str(), "Seccomp:\t0\n0\n");
    // The default profile refuses what Docker's refuses.
    let out = sh(&root, &img, &[], "unshare -U true 2>/dev/null && echo allowed || echo refused");
    assert_eq!(out.stdout_str(), "refused\n");
}

#[test]
fn terminal_and_signals() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let out = spawn::spawn(
        &root,
        &img,
        &["--rm", "-t", "--", "sh", "-c", "tty; echo $TERM; ls -l /dev/console | cut -c1"],
    );
    assert_eq!(out.stdout_str().replace('\r', ""), "/dev/pts/0\nxterm\nc\n", "{}", out.stderr_str());

    // SIGTERM to ctr-spawn reaches the container.
    let mut c = spawn::command(
        &root,
        &[
            "--rm",
            "--",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 3' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(img.record.as_bytes()).unwrap();
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    use std::io::Read;
    stdout.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // SAFETY: signalling the ctr-spawn we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(3));
    assert_eq!(rest, "got TERM\n");
}

#[test]
fn names_state_and_records() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let rec = root.path().join("rec.json");
    let cid = root.path().join("cid");
    let out = spawn::spawn(
        &root,
        &img,
        &[
            "--name",
            "web",
            "--record",
            rec.to_str().unwrap(),
            "--cidfile",
            cid.to_str().unwrap(),
            "-l",
            "a=b",
            "--",
            "true",
        ],
    );
    out.assert_ok();
    let id = std::fs::read_to_string(&cid).unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(std::fs::read_to_string(root.path().join("names/web")).unwrap(), id);
    let dir = root.path().join("containers").join(&id);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["image"], img.image_id.to_string());
    assert_eq!(state["snapshots"][0], img.snapshot.display().to_string());
    assert_eq!(state["status"], "exited");
    assert_eq!(state["exitCode"], 0);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    assert_eq!(r["id"], id);
    assert_eq!(r["name"], "web");
    assert_eq!(r["command"], serde_json::json!(["true"]));
    assert_eq!(r["labels"]["a"], "b");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["root"]["path"], "rootfs");
    assert_eq!(config["process"]["args"], serde_json::json!(["true"]));
    // The name is taken: a second container of that name fails, 125, and
    // leaves nothing behind.
    let out = spawn::spawn(&root, &img, &["--name", "web", "--", "true"]);
    assert_eq!(out.code(), 125);
    assert!(out.stderr_str().contains("already in use"), "{}", out.stderr_str());
    assert_eq!(containers(&root), vec![id.clone()]);
}

#[test]
fn config_json_is_a_bundle_runc_runs() {
    if !kist_tests::have("runc") {
        eprintln!("runc not installed: skipped");
        return;
    }
    let root = TestRoot::new();
    let img = busybox(root.path());
    let cid = root.path().join("cid");
    spawn::spawn(&root, &img, &["--cidfile", cid.to_str().unwrap(), "--", "sh", "-c", "echo from-runc"])
        .assert_ok();
    let id = std::fs::read_to_string(&cid).unwrap();
    let dir = root.path().join("containers").join(&id);
    // The bundle's rootfs is the overlay of the snapshots: mount it for runc.
    let overlay = kist_tests::tree::Overlay::mount(std::slice::from_ref(&img.snapshot));
    let rootfs = dir.join("rootfs");
    kist_tests::run(std::process::Command::new("mount").arg("--bind").arg(&overlay.merged).arg(&rootfs))
        .assert_ok();
    let out = kist_tests::run(
        std::process::Command::new("runc")
            .arg("--root")
            .arg(root.path().join("runc"))
            .args(["run", "-b"])
            .arg(&dir)
            .arg(format!("kist-test-{}", &id[..12])),
    );
    kist_tests::run(std::process::Command::new("umount").arg(&rootfs));
    assert_eq!(out.stdout_str(), "from-runc\n", "{}", out.stderr_str());
}

#[test]
fn two_hundred_rm_runs_leave_nothing_behind() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let mut ids = Vec::new();
    for i in 0..200 {
        let cid = root.path().join(format!("cid{i}"));
        let out = spawn::spawn(
            &root,
            &img,
            &[
                "--rm",
                "--memory",
                "64m",
                "--pids-limit",
                "50",
                "--cidfile",
                cid.to_str().unwrap(),
                "--",
                "true",
            ],
        );
        assert_eq!(out.code(), 0, "run {i}: {}", out.stderr_str());
        ids.push(std::fs::read_to_string(&cid).unwrap());
    }
    assert!(containers(&root).is_empty(), "state left: {:?}", containers(&root));
    let names: Vec<_> = std::fs::read_dir(root.path().join("names")).unwrap().collect();
    assert!(names.is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&root.path().display().to_string()), "mounts left");
    let mut left = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for id in &ids {
            let p: PathBuf = h.path().join("kist").join(id);
            if p.exists() {
                left.push(p);
            }
        }
    }
    let unified = Path::new("/sys/fs/cgroup/kist");
    for id in &ids {
        if unified.join(id).exists() {
            left.push(unified.join(id));
        }
    }
    assert!(left.is_empty(), "cgroups left: {left:?}");
    // No process runs from a container of this root.
    let prefix = root.path().join("containers").display().to_string();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cwd) = std::fs::read_link(p.path().join("root")) {
            assert!(!cwd.display().to_string().starts_with(&prefix), "process {:?} left", p.file_name());
        }
    }
}

#[test]
fn runs_what_img_unpack_made() {
    // The real pipeline: an image in the store, img-unpack's snapshots
    // (three layers with a whiteout and an opaque directory), then ctr-spawn
    // from the record on stdin and from --image.
    let root = TestRoot::new();
    let reference = "docker.io/library/multi:latest";
    kist_tests::store::import(root.path(), &kist_tests::image::multilayer(), reference);
    let script = "ls /data; test -e /etc/motd && echo motd || echo no-motd";
    let out =
        kist_tests::run(root.cmd("ctr-spawn").args(["--rm", "--image", "multi", "--", "sh", "-c", script]));
    assert_eq!(out.code(), 125);
    assert!(out.stderr_str().contains("img-unpack"), "{}", out.stderr_str());

    let unpacked = kist_tests::run(root.cmd("img-unpack").arg(reference));
    unpacked.assert_ok();
    let record = unpacked.stdout_str();
    let rec: serde_json::Value = serde_json::from_str(record.lines().next().unwrap()).unwrap();
    assert_eq!(rec["snapshots"].as_array().unwrap().len(), 3);
    let out = kist_tests::run_with_stdin(
        root.cmd("ctr-spawn").args(["--rm", "--", "sh", "-c", script]),
        record.as_bytes(),
    );
    assert_eq!(out.stdout_str(), "new\nno-motd\n", "{}", out.stderr_str());
    let cid = root.path().join("cid");
    let out = kist_tests::run(
        root.cmd("ctr-spawn")
            .args(["--image", "multi", "--cidfile"])
            .arg(&cid)
            .args(["--", "sh", "-c", script]),
    );
    assert_eq!(out.stdout_str(), "new\nno-motd\n", "{}", out.stderr_str());
    let id = std::fs::read_to_string(&cid).unwrap();
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.path().join("containers").join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["snapshots"], rec["snapshots"]);
    assert_eq!(state["image"], rec["id"]);
}

#[test]
fn many_layers_fit_in_one_overlay() {
    // 100 lower layers: far beyond one page of mount options with 64-digit
    // snapshot names; the overlay still mounts and stacks them in order.
    let root = TestRoot::new();
    let base = busybox(root.path());
    let mut snapshots = vec![base.snapshot.clone()];
    for i in 0..99 {
        let d = root
            .path()
            .join("snapshots")
            .join(kist_common::Digest::of(format!("layer {i}").as_bytes()).hex());
        std::fs::create_dir_all(d.join("layers")).unwrap();
        std::fs::write(d.join("layers").join(format!("{i:03}")), "").unwrap();
        std::fs::write(d.join("layers/top"), format!("{i}\n")).unwrap();
        snapshots.push(d);
    }
    let mut rec: serde_json::Value = serde_json::from_str(&base.record).unwrap();
    rec["snapshots"] = serde_json::json!(snapshots);
    rec["chainIds"] = serde_json::json!(snapshots
        .iter()
        .map(|s| format!("sha256:{}", s.file_name().unwrap().to_string_lossy()))
        .collect::<Vec<_>>());
    let img = spawn::Unpacked { record: rec.to_string(), ..base };
    let out = sh(&root, &img, &[], "ls /layers | wc -l; cat /layers/top");
    assert_eq!(out.stdout_str(), "100\n98\n", "{}", out.stderr_str());
}

#[test]
fn cgroup_limits_reach_the_kernel() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let out = sh(
        &root,
        &img,
        &["--memory", "64m", "--memory-swap", "96m", "--cpus", "1.5", "--cpu-shares", "512", "--cpuset-cpus", "0", "--pids-limit", "20"],
        "cd /sys/fs/cgroup; cat memory/memory.limit_in_bytes cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu/cpu.shares cpuset/cpuset.cpus pids/pids.max; \
         cat memory/memory.memsw.limit_in_bytes 2>/dev/null || echo no-swap-accounting",
    );
    let lines: Vec<&str> = out.stdout_str().leak().lines().collect();
    assert_eq!(&lines[..6], &["67108864", "150000", "100000", "512", "0", "20"], "{}", out.stderr_str());
    assert!(lines[6] == "100663296" || lines[6] == "no-swap-accounting", "{lines:?}");
    // Docker's device rules: a block device node cannot be opened.
    let out = sh(
        &root,
        &img,
        &[],
        "mknod /tmp/blk b 7 0 && head -c1 /tmp/blk >/dev/null 2>&1 && echo opened || echo denied",
    );
    assert_eq!(out.stdout_str(), "denied\n", "{}", out.stderr_str());
}

#[test]
fn interactive_stdin_follows_the_record() {
    // `img-unpack | ctr-spawn -i`: the record is the first line of stdin,
    // everything after it is the container's.
    let root = TestRoot::new();
    let img = busybox(root.path());
    let input = format!("{}\nline one\nline two\n", img.record);
    let out =
        kist_tests::run_with_stdin(root.cmd("ctr-spawn").args(["--rm", "-i", "--", "cat"]), input.as_bytes());
    assert_eq!(out.stdout_str(), "line one\nline two\n", "{}", out.stderr_str());
    // Without -i the container's stdin is /dev/null, as Docker's.
    let out = kist_tests::run_with_stdin(root.cmd("ctr-spawn").args(["--rm", "--", "cat"]), input.as_bytes());
    assert_eq!(out.stdout_str(), "");
    assert_eq!(out.code(), 0);
}

#[test]
fn an_attached_run_is_logged_as_docker_logs_shows_it() {
    // docker logs works on a container run attached (with or without -t):
    // the output goes to the terminal and to the json-file log alike.
    let root = TestRoot::new();
    let img = busybox(root.path());
    let out = spawn::spawn(
        &root,
        &img,
        &[
            "--name",
            "talker",
            "--",
            "sh",
            "-c",
            "echo out1; echo err1 >&2; ls /proc/$$/fd; printf tail; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr_str());
    // Only the three standard descriptors reach the container.
    assert_eq!(out.stdout_str(), "out1\n0\n1\n2\ntail");
    assert_eq!(out.stderr_str(), "err1\n");
    let logs = kist_tests::run(root.cmd("ctr-logs").arg("talker"));
    logs.assert_ok();
    assert_eq!(logs.stdout_str(), "out1\n0\n1\n2\ntail");
    assert_eq!(logs.stderr_str(), "err1\n");
    // A reader of ctr-spawn's stdout that goes away is a broken pipe for
    // the container, as without the copy: it ends, and so does the run.
    std::fs::write(root.path().join("record"), &img.record).unwrap();
    let mut child = spawn::command(&root, &["--", "sh", "-c", "yes; echo yes-ended-$? >&2"])
        .stdin(Stdio::from(std::fs::File::open(root.path().join("record")).unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 2];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"y\n");
    drop(child.stdout.take());
    let t0 = Instant::now();
    let done = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&done.stderr).contains("yes-ended-141"),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // With -t the terminal's output is logged too, as stdout (a pty has one
    // stream), with the pty's line endings, as docker logs shows it.
    let out = spawn::spawn(
        &root,
        &img,
        &["-t", "--name", "typist", "--", "sh", "-c", "echo tty-out; echo tty-err >&2"],
    );
    out.assert_ok();
    assert_eq!(out.stdout_str(), "tty-out\r\ntty-err\r\n");
    let logs = kist_tests::run(root.cmd("ctr-logs").arg("typist"));
    logs.assert_ok();
    assert_eq!(logs.stdout_str(), "tty-out\r\ntty-err\r\n");
    assert_eq!(logs.stderr_str(), "");
    // --rm keeps no log: the container is gone.
    let out = spawn::spawn(&root, &img, &["--rm", "--name", "gone", "--", "echo", "x"]);
    out.assert_ok();
    let names: Vec<String> = containers(&root)
        .iter()
        .map(|c| std::fs::read_to_string(root.path().join("containers").join(c).join("state.json")).unwrap())
        .collect();
    assert_eq!(names.len(), 3, "talker, typist and the broken-pipe run stay, the --rm one is gone");
    assert!(!names.iter().any(|s| s.contains("\"gone\"")));
    for c in containers(&root) {
        let _ = kist_tests::run(root.cmd("ctr-kill").args(["--rm", "-f", &c]));
    }
}

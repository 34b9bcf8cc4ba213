//! ctr-stats against real containers (attached ctr-spawn in the background):
//! a busy loop reads near 100 % of a CPU and a sleeper near 0 %, 50 MB of
//! touched memory reads about 50 MB, network counters of the container's
//! own namespace grow after traffic inside it, the table has docker stats'
//! columns, and a stream picks up a container started after it began.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kist_tests::ctl::Attached;
use kist_tests::spawn::busybox;
use kist_tests::{run, OutputExt, TestRoot};

fn sample(root: &TestRoot, name: &str) -> serde_json::Value {
    let out = run(root.cmd("ctr-stats").args(["--no-stream", "--format", "json", name]));
    out.assert_ok();
    let recs = out.records();
    assert_eq!(recs.len(), 1, "{}", out.stdout_str());
    assert_eq!(recs[0]["type"], "stats");
    recs[0].clone()
}

#[test]
fn busy_reads_near_a_full_cpu_and_idle_near_zero() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let _busy = Attached::start(&root, &img, "busy", &[], &["sh", "-c", "while true; do :; done"]);
    let _idle = Attached::start(&root, &img, "idle", &[], &["sleep", "1000"]);
    std::thread::sleep(Duration::from_millis(300));
    // Best of a few samples: a loaded test machine may starve one window.
    let mut busy_best: f64 = 0.0;
    let mut idle_worst: f64 = 0.0;
    for _ in 0..5 {
        let out = run(root.cmd("ctr-stats").args(["--no-stream", "--format", "json"]));
        out.assert_ok();
        let recs = out.records();
        assert_eq!(recs.len(), 2, "both running containers are listed: {}", out.stdout_str());
        for r in &recs {
            let cpu = r["cpuPercent"].as_f64().unwrap();
            match r["name"].as_str().unwrap() {
                "busy" => busy_best = busy_best.max(cpu),
                "idle" => idle_worst = idle_worst.max(cpu),
                other => panic!("unexpected {other}"),
            }
        }
    }
    assert!(busy_best > 40.0 && busy_best < 115.0, "busy loop read {busy_best}%");
    assert!(idle_worst < 5.0, "sleeper read {idle_worst}%");
}

#[test]
fn fifty_megabytes_of_touched_memory_read_about_fifty() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let c = Attached::start(
        &root,
        &img,
        "mem",
        &[],
        &["sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=50 2>/dev/null; touch /done; sleep 1000"],
    );
    let done = root.path().join("containers").join(&c.id).join("upper/done");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done.exists() {
        assert!(Instant::now() < deadline, "the container never filled its memory");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = sample(&root, "mem");
    let usage = r["memory"]["usage"].as_u64().unwrap();
    let mb = usage as f64 / (1024.0 * 1024.0);
    assert!((48.0..75.0).contains(&mb), "50 MiB touched, read {mb:.1} MiB: {r}");
    let limit = r["memory"]["limit"].as_u64().unwrap();
    assert!(limit > usage);
    let pct = r["memory"]["percent"].as_f64().unwrap();
    assert!((pct - usage as f64 / limit as f64 * 100.0).abs() < 0.01);
    assert!(r["pids"].as_u64().unwrap() >= 1);

    // With a limit, the limit is the cgroup's.
    let _l = Attached::start(&root, &img, "limited", &["--memory", "64m"], &["sleep", "1000"]);
    let r = sample(&root, "limited");
    assert_eq!(r["memory"]["limit"].as_u64().unwrap(), 64 * 1024 * 1024, "{r}");
}

#[test]
fn network_counters_come_from_the_container_and_grow() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let c = Attached::start(&root, &img, "net", &[], &["sleep", "1000"]);
    let lo = |r: &serde_json::Value| r["networks"]["lo"]["txBytes"].as_u64().unwrap_or(0);
    let before = sample(&root, "net");
    assert!(before["networks"].get("lo").is_some(), "the container's loopback is listed: {before}");
    // Traffic inside the container's own loopback, sent from within its
    // network namespace (nsenter runs the host's ping, not the image's).
    let st = std::process::Command::new("nsenter")
        .args([
            "-t",
            &c.pid.to_string(),
            "-n",
            "/bin/busybox",
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-q",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ping inside the container's namespace failed");
    let after = sample(&root, "net");
    assert!(lo(&after) >= lo(&before) + 3 * 84, "lo tx {} -> {}", lo(&before), lo(&after));
    // Traffic on the host's loopback is not the container's.
    let host_lo = lo(&after);
    let _ = std::process::Command::new("/bin/busybox")
        .args(["ping", "-c", "3", "-i", "0.2", "-q", "127.0.0.1"])
        .stdout(Stdio::null())
        .status();
    assert_eq!(lo(&sample(&root, "net")), host_lo);
}

#[test]
fn table_has_docker_columns_and_a_stream_picks_up_new_containers() {
    let root = TestRoot::new();
    let img = busybox(root.path());
    let _a = Attached::start(&root, &img, "first", &[], &["sleep", "1000"]);
    let out = run(root.cmd("ctr-stats").args(["--no-stream", "--format", "table"]));
    out.assert_ok();
    let text = out.stdout_str();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    for col in ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
    {
        assert!(header.contains(col), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(row.contains("first") && row.contains("iB / ") && row.contains('%'), "{row}");

    let mut stream = root
        .cmd("ctr-stats")
        .args(["--format", "json", "--interval", "200ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(stream.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("\"first\""), "{line}");
    let _b = Attached::start(&root, &img, "second", &[], &["sleep", "1000"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = false;
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains("\"second\"") {
            seen = true;
            break;
        }
    }
    let _ = stream.kill();
    let _ = stream.wait();
    assert!(seen, "the stream never showed a container started after it");
}

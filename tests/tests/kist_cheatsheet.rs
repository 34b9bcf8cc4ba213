//! Done-means 1 of the wrapper: Docker's cheat sheet replayed with `kist`
//! in place of `docker`, each effect checked on the host (volume files, the
//! state directory, processes) or through the container. The wrapper is the
//! shell script tools/kist/kist, run from the source tree with the built
//! tools in KIST_BIN_DIR; the image comes from a loopback registry. Every
//! kist command but `pull` runs inside a private network namespace (the
//! registry lives in the host's), so the bridge and the published port
//! never touch the host's network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kist_tests::netns::NetNs;
use kist_tests::registry::Registry;
use kist_tests::{bin_dir, run, run_with_stdin, OutputExt, TestRoot};

/// The wrapper script in the source tree.
pub fn kist_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/kist/kist")
}

/// A state root, a registry holding busybox, a namespace, and the
/// containers to remove at the end.
struct Sheet {
    root: TestRoot,
    ns: NetNs,
    _registry: Registry,
    image: String,
    work: tempfile::TempDir,
}

impl Sheet {
    fn new() -> Sheet {
        let root = TestRoot::new();
        let registry = Registry::start();
        let busybox = kist_tests::image::busybox();
        registry.push(&busybox.layout, &busybox.tag, "test/busybox:latest");
        let image = registry.reference("test/busybox:latest");
        let work = tempfile::Builder::new().prefix("kist-sheet-").tempdir().unwrap();
        Sheet { root, ns: NetNs::new(), _registry: registry, image, work }
    }

    /// `kist ARGS` in the test's namespace.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.arg(kist_script()).args(args);
        c.env("KIST_ROOT", self.root.path()).env("KIST_BIN_DIR", bin_dir()).env_remove("KIST_DEBUG");
        c.current_dir(self.work.path());
        self.ns.enter(&mut c);
        c
    }

    fn kist(&self, args: &[&str]) -> Output {
        run(&mut self.cmd(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kist(args);
        out.assert_ok();
        out.stdout_str()
    }

    /// A shell line with `kist` on PATH (for `$(kist ps -a -q)`).
    fn shell(&self, line: &str) -> Output {
        let dir = self.work.path().join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("kist");
        if !link.exists() {
            std::os::unix::fs::symlink(kist_script(), &link).unwrap();
        }
        let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
        let mut c = Command::new("sh");
        c.args(["-c", line]).env("PATH", path);
        c.env("KIST_ROOT", self.root.path()).env("KIST_BIN_DIR", bin_dir());
        c.current_dir(self.work.path());
        self.ns.enter(&mut c);
        run(&mut c)
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.work.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// ps' template fields of one container (Names, State, Status).
    fn ps_line(&self, name: &str) -> String {
        let out = self.ok(&[
            "ps",
            "-a",
            "--filter",
            &format!("name=^{name}$"),
            "--format",
            "{{.Names}} {{.State}}",
        ]);
        out.trim().to_string()
    }

    fn wait_state(&self, name: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let want = format!("{name} {state}");
        loop {
            let have = self.ps_line(name);
            if have == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name} never became {state}: {have:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sheet {
    fn drop(&mut self) {
        // Whatever a failed assertion left running: removed by kist's own tool.
        let ids = run(self.root.cmd("ctr-list").args(["-a", "-q", "--no-trunc"])).stdout_str();
        for id in ids.split_whitespace() {
            let _ = run(self.root.cmd("ctr-kill").args(["--rm", "-f", id]));
        }
    }
}

/// `wget` inside the container, retried while httpd starts.
fn fetch_inside(s: &Sheet, name: &str, url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = s.kist(&["exec", name, "wget", "-q", "-O-", url]);
        if out.status.success() {
            return out.stdout_str();
        }
        assert!(Instant::now() < deadline, "GET {url} in {name} failed: {}", out.stderr_str());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cheat_sheet_replayed_with_kist() {
    let s = Sheet::new();
    let img = s.image.clone();
    let data = s.dir("data");
    let data2 = s.dir("data2");
    std::fs::write(data.join("index.html"), "served from the host's DIR\n").unwrap();

    // kist pull IMG (in the host's namespace: the registry is on its loopback).
    let mut pull = Command::new("sh");
    pull.arg(kist_script()).args(["pull", &img]);
    pull.env("KIST_ROOT", s.root.path()).env("KIST_BIN_DIR", bin_dir());
    let out = run(&mut pull);
    out.assert_ok();
    assert_eq!(out.stdout_str().lines().last(), Some(img.as_str()), "{}", out.stdout_str());
    let unpacked = run(s.root.cmd("img-list").args(["--format", "{{.ID}}", &img])).stdout_str();
    assert!(!unpacked.trim().is_empty(), "pulled image not in the store");
    assert!(
        std::fs::read_dir(s.root.path().join("snapshots")).map(|d| d.count() > 0).unwrap_or(false),
        "pull did not unpack (img-unpack)"
    );

    // kist images
    let images = s.ok(&["images"]);
    let mut lines = images.lines();
    let header = lines.next().unwrap();
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{images}");
    }
    let repo = img.rsplit_once(':').unwrap().0;
    let row = lines.find(|l| l.starts_with(&format!("{repo} "))).unwrap_or_else(|| panic!("{images}"));
    assert_eq!(row.split_whitespace().nth(1), Some("latest"), "{images}");

    // kist run --restart="always" --name "web" -p 18081:80 -d -t -v DIR:/home:ro -v DIR2:/home2 IMG httpd ...
    let ro = format!("{}:/home:ro", data.display());
    let rw = format!("{}:/home2", data2.display());
    let out = s.kist(&[
        "run",
        "--restart=always",
        "--name",
        "web",
        "-p",
        "18081:80",
        "-d",
        "-t",
        "-v",
        &ro,
        "-v",
        &rw,
        &img,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/home",
    ]);
    out.assert_ok();
    let id = out.stdout_str().trim().to_string();
    assert_eq!(id.len(), 64, "docker run -d prints the full id: {id:?}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert!(s.root.path().join("containers").join(&id).is_dir());
    // A GET on the published port returns a file from DIR; so does one inside.
    let reply = get_published(&s.ns, 18081);
    assert!(reply.starts_with("HTTP/1.") && reply.contains(" 200 "), "{reply}");
    assert!(reply.ends_with("\r\n\r\nserved from the host's DIR\n"), "{reply}");
    assert_eq!(fetch_inside(&s, "web", "http://127.0.0.1/index.html"), "served from the host's DIR\n");
    assert_eq!(s.ok(&["port", "web"]), "80/tcp -> 0.0.0.0:18081\n");
    assert!(
        !s.ok(&["ps", "--format", "{{.Networks}}"]).trim().is_empty(),
        "a bridge container names its network"
    );
    // Writing under /home fails (read-only); under /home2 it shows on the host.
    let out = s.kist(&["exec", "web", "sh", "-c", "echo x > /home/new"]);
    assert_ne!(out.code(), 0, "write to a :ro volume succeeded");
    assert!(!data.join("new").exists());
    s.ok(&["exec", "web", "sh", "-c", "echo written inside > /home2/new"]);
    assert_eq!(std::fs::read_to_string(data2.join("new")).unwrap(), "written inside\n");

    // kist ps -a
    let ps = s.ok(&["ps", "-a"]);
    let header = ps.lines().next().unwrap();
    for col in ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"] {
        assert!(header.contains(col), "{ps}");
    }
    let row = ps.lines().nth(1).unwrap_or_else(|| panic!("{ps}"));
    assert!(row.starts_with(&id[..12]) && row.contains("Up ") && row.trim_end().ends_with("web"), "{ps}");
    assert!(row.contains("\"httpd -f -p 80 -h /…\"") && row.contains("0.0.0.0:18081->80/tcp"), "{ps}");

    // kist stop web: prints the name, the container is exited and stays so (restart=always).
    assert_eq!(s.ok(&["stop", "web"]), "web\n");
    assert_eq!(s.ps_line("web"), "web exited");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.ps_line("web"), "web exited", "a stopped always-container was restarted");

    // kist start web
    assert_eq!(s.ok(&["start", "web"]), "web\n");
    s.wait_state("web", "running");
    assert!(
        get_published(&s.ns, 18081).ends_with("served from the host's DIR\n"),
        "port not published again"
    );

    // kist exec -it web sh, under a pty (script(1) gives it one).
    let mut c = Command::new("script");
    let line = format!("sh {} exec -it web sh", kist_script().display());
    c.args(["-q", "-e", "-c", &line, "/dev/null"]);
    c.env("KIST_ROOT", s.root.path()).env("KIST_BIN_DIR", bin_dir());
    s.ns.enter(&mut c);
    let out = run_with_stdin(&mut c, b"tty; echo $((6*7)) > /tmp/pty; exit 3\n");
    assert_eq!(out.code(), 3, "exec -it's status: {}{}", out.stdout_str(), out.stderr_str());
    assert!(out.stdout_str().contains("/dev/pts/"), "no terminal inside: {}", out.stdout_str());
    assert_eq!(s.ok(&["exec", "web", "cat", "/tmp/pty"]), "42\n");

    // kist cp web:/etc/hostname ./h, kist cp ./f web:/tmp/
    s.ok(&["cp", "web:/etc/hostname", "./h"]);
    assert_eq!(std::fs::read_to_string(s.work.path().join("h")).unwrap().trim(), &id[..12]);
    std::fs::write(s.work.path().join("f"), "from the host\n").unwrap();
    s.ok(&["cp", "./f", "web:/tmp/"]);
    assert_eq!(s.ok(&["exec", "web", "cat", "/tmp/f"]), "from the host\n");

    // kist exec -i web sh -c 'cat > /tmp/g' < file
    let out = run_with_stdin(&mut s.cmd(&["exec", "-i", "web", "sh", "-c", "cat > /tmp/g"]), b"piped in\n");
    out.assert_ok();
    assert_eq!(s.ok(&["exec", "web", "cat", "/tmp/g"]), "piped in\n");

    // kist stats --no-stream
    let stats = s.ok(&["stats", "--no-stream"]);
    let header = stats.lines().next().unwrap();
    for col in ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
    {
        assert!(header.contains(col), "{stats}");
    }
    let row = stats.lines().nth(1).unwrap_or_else(|| panic!("{stats}"));
    assert!(row.starts_with(&id[..12]) && row.contains(" web ") && row.contains("iB / "), "{stats}");

    // kist logs web: what ctr-logs has (httpd -f is silent; the exec'd shell was not the init).
    let logs = s.kist(&["logs", "web"]);
    logs.assert_ok();
    assert_eq!(logs.stdout, run(s.root.cmd("ctr-logs").arg("web")).stdout);

    // A second container, so that $(kist ps -a -q) names more than one;
    // it prints, so that kist logs has something to show.
    let out =
        s.kist(&["run", "-d", "--name", "idle", &img, "sh", "-c", "echo hello from idle; exec sleep 1000"]);
    out.assert_ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = s.kist(&["logs", "idle"]);
        logs.assert_ok();
        if logs.stdout_str() == "hello from idle\n" {
            break;
        }
        assert!(Instant::now() < deadline, "kist logs idle: {:?}", logs.stdout_str());
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = s.shell("kist stop $(kist ps -a -q) && kist rm $(kist ps -a -q)");
    out.assert_ok();
    assert_eq!(out.stdout_str().lines().count(), 4, "two stopped, two removed: {}", out.stdout_str());
    assert_eq!(s.ok(&["ps", "-a", "-q"]), "");
    let left: Vec<_> = std::fs::read_dir(s.root.path().join("containers")).unwrap().collect();
    assert!(left.is_empty(), "containers left: {left:?}");

    // kist rmi IMG
    let out = s.kist(&["rmi", &img]);
    out.assert_ok();
    assert!(
        out.stdout_str().contains("Untagged:") || out.stdout_str().contains("Deleted:"),
        "{}",
        out.stdout_str()
    );
    assert_eq!(s.ok(&["images", "-q"]), "");
}

/// GET /index.html on 127.0.0.1:PORT from inside the test's namespace
/// (where the published port lives), retried while httpd starts.
fn get_published(ns: &NetNs, port: u16) -> String {
    ns.run(move || {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = c.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut reply = String::new();
                let _ = c.read_to_string(&mut reply);
                if !reply.is_empty() {
                    return reply;
                }
            }
            assert!(Instant::now() < deadline, "nothing answers on 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// `kist port` prints docker port's lines: `PORT/PROTO -> HOSTIP:HOSTPORT`
/// one per binding in docker's natural order, the host sides alone for a
/// PRIVATE_PORT[/PROTO], and docker's errors (exit 1) for an unpublished
/// port, a bad port number and a missing container. The ports are really
/// published: the one `kist port` names answers.
#[test]
fn port_prints_dockers_lines() {
    let s = Sheet::new();
    let img = s.image.clone();
    let mut pull = Command::new("sh");
    pull.arg(kist_script()).args(["pull", "-q", &img]);
    pull.env("KIST_ROOT", s.root.path()).env("KIST_BIN_DIR", bin_dir());
    run(&mut pull).assert_ok();
    let data = s.dir("portdata");
    std::fs::write(data.join("index.html"), "port test\n").unwrap();
    let vol = format!("{}:/www:ro", data.display());
    #[rustfmt::skip]
    let out = s.kist(&[
        "run", "-d", "--name", "pw", "-v", &vol,
        "-p", "18090:80", "-p", "127.0.0.1:18091:80", "-p", "18092:9/udp", "-p", "100",
        "-p", "127.0.0.1:18093-18094:30-31",
        &img, "httpd", "-f", "-p", "80", "-h", "/www",
    ]);
    out.assert_ok();
    let id = out.stdout_str().trim().to_string();
    let all = s.ok(&["port", "pw"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 6, "{all}");
    // Natural order: 9 before 30, 0.0.0.0 before 127.0.0.1.
    assert_eq!(
        &lines[..5],
        [
            "9/udp -> 0.0.0.0:18092",
            "30/tcp -> 127.0.0.1:18093",
            "31/tcp -> 127.0.0.1:18094",
            "80/tcp -> 0.0.0.0:18090",
            "80/tcp -> 127.0.0.1:18091"
        ],
        "{all}"
    );
    assert!(lines[5].starts_with("100/tcp -> 0.0.0.0:"), "{all}");
    // inspect -f finds the address, gateway and prefix on the bridge, as
    // the container itself has them.
    let net = s.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.IPAddress}}/{{.NetworkSettings.IPPrefixLen}} {{(index .NetworkSettings.Networks \"bridge\").Gateway}}",
        "pw",
    ]);
    let (cidr, gw) = net.trim().split_once(' ').unwrap();
    let addrs = s.ok(&["exec", "pw", "ip", "-4", "-o", "addr"]);
    assert!(addrs.contains(&format!("inet {cidr} ")), "{net} vs {addrs}");
    let routes = s.ok(&["exec", "pw", "ip", "route"]);
    assert!(routes.contains(&format!("default via {gw} ")), "{net} vs {routes}");
    // By id prefix too, and PRIVATE_PORT alone means tcp.
    assert_eq!(s.ok(&["port", &id[..8], "80"]), "0.0.0.0:18090\n127.0.0.1:18091\n");
    assert_eq!(s.ok(&["port", "pw", "80/tcp"]), "0.0.0.0:18090\n127.0.0.1:18091\n");
    assert_eq!(s.ok(&["port", "pw", "9/udp"]), "0.0.0.0:18092\n");
    let ephemeral: u16 = s.ok(&["port", "pw", "100"]).trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!(ephemeral > 1024, "{ephemeral}");
    let first = s.ok(&["port", "pw", "80"]).lines().next().unwrap().rsplit(':').next().unwrap().to_string();
    assert!(get_published(&s.ns, first.parse().unwrap()).contains("port test"));
    for (args, err) in [
        (&["port", "pw", "81"][..], "Error: No public port '81' published for pw\n"),
        (&["port", "pw", "9"][..], "Error: No public port '9' published for pw\n"),
        (
            &["port", "pw", "abc"][..],
            "Error: invalid port (abc): strconv.ParseUint: parsing \"abc\": invalid syntax\n",
        ),
        (
            &["port", "pw", "70000"][..],
            "Error: invalid port (70000): strconv.ParseUint: parsing \"70000\": value out of range\n",
        ),
        (&["port", "nosuch"][..], "Error: No such container: nosuch\n"),
    ] {
        let out = s.kist(args);
        assert_eq!(out.code(), 1, "kist {args:?}");
        assert_eq!(out.stdout_str(), "", "kist {args:?}");
        assert_eq!(out.stderr_str(), err, "kist {args:?}");
    }
    assert_eq!(s.kist(&["port"]).code(), 1);
    assert_eq!(s.kist(&["port", "pw", "80", "81"]).code(), 1);
    // A stopped container publishes nothing: no lines, status 0, as docker's.
    s.ok(&["stop", "-t", "1", "pw"]);
    let out = s.kist(&["port", "pw"]);
    out.assert_ok();
    assert_eq!(out.stdout_str(), "");
    assert_eq!(s.kist(&["port", "pw", "80"]).code(), 1);
    s.ok(&["rm", "pw"]);
}

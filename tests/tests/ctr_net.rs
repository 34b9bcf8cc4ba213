//! Container networking against the real binaries, every test inside a
//! private network namespace of its own (kist_tests::netns::NetNs): the
//! kist0 bridge, the veths and kist's nftables table live there and the
//! host's interfaces and firewall are never touched. Covered: published
//! TCP and UDP ports reached at 127.0.0.1:HOSTPORT from the namespace, -P,
//! a port in use, outbound NAT to a simulated upstream in a second
//! namespace, user networks with names that survive re-creation, and no
//! veth, lease or nftables element left after many containers, some with
//! their monitor SIGKILLed. Every test removes its containers
//! (ctr-kill --rm -f) and then asserts that nothing is left.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kist_tests::netns::NetNs;
use kist_tests::spawn::{unpack, Unpacked};
use kist_tests::{run, run_with_stdin, OutputExt, TestRoot};
use serde_json::{json, Value};

/// A test's namespace, state root, image and containers.
struct Env {
    ns: NetNs,
    root: TestRoot,
    img: Unpacked,
    ids: std::sync::Mutex<Vec<String>>,
}

fn busybox_with(config: Value) -> impl Fn(&std::path::Path) -> Unpacked {
    move |root| unpack(root, &kist_tests::image::busybox_entries(), config.clone())
}

impl Env {
    fn new() -> Env {
        Env::with_config(kist_tests::spawn::busybox_config())
    }

    fn with_config(config: Value) -> Env {
        let ns = NetNs::new();
        let root = TestRoot::new();
        let img = busybox_with(config)(root.path());
        Env { ns, root, img, ids: std::sync::Mutex::new(Vec::new()) }
    }

    /// A kist tool running inside the test's namespace, bridge by default.
    fn cmd(&self, tool: &str) -> Command {
        let mut c = self.root.cmd(tool);
        c.env_remove("KIST_DEFAULT_NETWORK");
        self.ns.enter(&mut c);
        c
    }

    fn spawn(&self, args: &[&str]) -> Output {
        let out = run_with_stdin(self.cmd("ctr-spawn").args(args), self.img.record.as_bytes());
        let detached = args.contains(&"-d");
        if let Some(id) =
            detached.then(|| out.records()).and_then(|r| r.first()?["id"].as_str().map(String::from))
        {
            self.ids.lock().unwrap().push(id);
        }
        out
    }

    /// `ctr-spawn -d ARGS`; returns the record.
    fn detach(&self, args: &[&str]) -> Value {
        let mut a = vec!["-d"];
        a.extend_from_slice(args);
        let out = self.spawn(&a);
        out.assert_ok();
        out.records().remove(0)
    }

    fn state(&self, id: &str) -> Value {
        let p = self.root.path().join("containers").join(id).join("state.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    fn rm(&self, id: &str) {
        run(self.cmd("ctr-kill").args(["--rm", "-f", id])).assert_ok();
    }

    fn rm_all(&self) {
        let ids: Vec<String> = std::mem::take(&mut *self.ids.lock().unwrap());
        if !ids.is_empty() {
            let _ = run(self.cmd("ctr-kill").args(["--rm", "-f"]).args(&ids));
        }
    }

    /// Host-side veths in the test's namespace.
    fn veths(&self) -> Vec<String> {
        let out = run(self.ns.command("ip").args(["-o", "link", "show", "type", "veth"]));
        out.stdout_str()
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|s| s.split('@').next().unwrap_or(s).to_string())
            .filter(|n| n.starts_with("vk"))
            .collect()
    }

    /// The elements of kist's port maps.
    fn nft_elements(&self) -> Vec<String> {
        let mut out = Vec::new();
        for map in ["pub_any", "pub_addr"] {
            let o = run(self.ns.command("nft").args(["-j", "list", "map", "ip", "kist", map]));
            if !o.status.success() {
                continue;
            }
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            for item in v["nftables"].as_array().unwrap() {
                if let Some(elems) = item["map"]["elem"].as_array() {
                    out.extend(elems.iter().map(|e| e.to_string()));
                }
            }
        }
        out
    }

    /// Leases left in networks/*.json.
    fn leases(&self) -> Vec<String> {
        let dir = self.root.path().join("networks");
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                let v: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                for (id, _) in v["leases"].as_object().into_iter().flatten() {
                    out.push(format!("{}:{id}", v["name"]));
                }
            }
        }
        out
    }

    /// Removes every container, then checks that no veth, lease or port
    /// element is left. Veths go asynchronously: a released container whose
    /// network namespace died with its init (no joiner) has its host end
    /// only taken down, and the kernel removes the pair as it destroys the
    /// namespace, in its own time; so this waits, a bounded 10 s, for them.
    fn assert_clean(&self) {
        self.rm_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.veths().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(self.veths(), Vec::<String>::new(), "veths left");
        assert_eq!(self.leases(), Vec::<String>::new(), "leases left");
        assert_eq!(self.nft_elements(), Vec::<String>::new(), "nft port elements left");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.rm_all();
    }
}

/// An HTTP GET of `path` at 127.0.0.1:`port`, from inside the namespace.
fn http_get(ns: &NetNs, port: u16, path: &'static str) -> String {
    ns.run(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = (|| -> std::io::Result<String> {
                let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
                let mut body = String::new();
                s.read_to_string(&mut body)?;
                Ok(body)
            })();
            match attempt {
                Ok(b) if !b.is_empty() => return b,
                other if Instant::now() > deadline => panic!("GET 127.0.0.1:{port}{path}: {other:?}"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
}

const WEB: &str = "mkdir -p /www && echo hello-from-kist > /www/index.html && exec httpd -f -p 80 -h /www";

/// Runs a UDP echo server on `port` inside the network namespace of
/// process `pid` (the container's), on a thread, for `n` datagrams.
fn udp_echo_in(pid: i64, port: u16, n: usize) -> std::thread::JoinHandle<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        // SAFETY: setns on this thread only.
        assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        for _ in 0..n {
            let Ok((len, from)) = s.recv_from(&mut buf) else { return };
            let _ = s.send_to(&buf[..len], from);
        }
    });
    rx.recv().unwrap();
    h
}

fn udp_roundtrip(ns: &NetNs, port: u16) -> Vec<u8> {
    ns.run(move || {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(b"ping-udp", (Ipv4Addr::LOCALHOST, port)).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).expect("udp echo reply");
        buf[..n].to_vec()
    })
}

#[test]
fn published_tcp_and_udp_reach_the_container_from_127_0_0_1() {
    let env = Env::new();
    let rec = env.detach(&[
        "--name",
        "web",
        "-p",
        "127.0.0.1:18081:80",
        "-p",
        "18053:5353/udp",
        "--",
        "sh",
        "-c",
        WEB,
    ]);
    let id = rec["id"].as_str().unwrap().to_string();
    let mut ports: Vec<String> =
        rec["ports"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    ports.sort();
    assert_eq!(ports, vec!["0.0.0.0:18053->5353/udp", "127.0.0.1:18081->80/tcp"]);
    let body = http_get(&env.ns, 18081, "/index.html");
    assert!(body.starts_with("HTTP/1.") && body.contains("hello-from-kist"), "{body}");

    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let echo = udp_echo_in(pid, 5353, 1);
    assert_eq!(udp_roundtrip(&env.ns, 18053), b"ping-udp");
    echo.join().unwrap();

    // The container has its address on eth0 and a default route via the bridge.
    let addr = env.state(&id)["networks"]["bridge"].as_str().unwrap().to_string();
    assert!(addr.starts_with("172.17.0."), "{addr}");
    let list = run(env.cmd("ctr-list").args(["--all", "--format", "json"]));
    list.assert_ok();
    let listed = list.records().into_iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert!(listed["ports"].as_array().unwrap().contains(&json!("127.0.0.1:18081->80/tcp")), "{listed}");
    let table = run(env.cmd("ctr-list").args(["--format", "table"]));
    assert!(
        table.stdout_str().contains("PORTS") && table.stdout_str().contains("127.0.0.1:18081->80/tcp"),
        "{}",
        table.stdout_str()
    );

    // The port is held: a second container publishing it fails clearly.
    let again = env.spawn(&["-d", "-p", "127.0.0.1:18081:80", "--", "sleep", "30"]);
    assert_eq!(again.code(), 125, "{}", again.stderr_str());
    assert!(
        again.stderr_str().contains("Bind for 127.0.0.1:18081 failed: port is already allocated"),
        "{}",
        again.stderr_str()
    );

    env.rm(&id);
    env.assert_clean();
}

#[test]
fn a_port_held_by_another_process_is_a_clear_error() {
    let env = Env::new();
    let holder = env.ns.run(|| std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 18082)).unwrap());
    let out = env.spawn(&["-d", "-p", "18082:80", "--", "sleep", "30"]);
    assert_eq!(out.code(), 125, "{}", out.stderr_str());
    assert!(
        out.stderr_str().contains("Bind for 0.0.0.0:18082 failed: port is already allocated"),
        "{}",
        out.stderr_str()
    );
    // Attached runs too.
    let out = env.spawn(&["--rm", "-p", "18082:80", "--", "true"]);
    assert_eq!(out.code(), 125, "{}", out.stderr_str());
    drop(holder);
    env.assert_clean();
}

#[test]
fn publish_all_picks_free_ports_for_the_exposed_ones() {
    let mut config = kist_tests::spawn::busybox_config();
    config["ExposedPorts"] = json!(["80/tcp"]);
    let env = Env::with_config(config);
    // kist's table removed behind its back (after a first start recorded
    // it as applied): the next start puts the whole ruleset back.
    env.spawn(&["--rm", "-p", "18099:80", "--", "true"]).assert_ok();
    run(env.ns.command("nft").args(["delete", "table", "ip", "kist"])).assert_ok();
    let rec = env.detach(&["-P", "--", "sh", "-c", WEB]);
    let ports = rec["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{rec}");
    let p = ports[0].as_str().unwrap();
    let host_port: u16 =
        p.strip_prefix("0.0.0.0:").and_then(|r| r.strip_suffix("->80/tcp")).unwrap().parse().unwrap();
    assert!(host_port > 1024, "{p}");
    assert!(http_get(&env.ns, host_port, "/index.html").contains("hello-from-kist"));
    env.assert_clean();
}

#[test]
fn attached_run_has_eth0_address_route_and_resolv_conf() {
    let env = Env::new();
    let out = env.spawn(&[
        "--rm",
        "--hostname",
        "box",
        "--add-host",
        "db:10.1.2.3",
        "--dns",
        "10.0.0.53",
        "--ip",
        "172.17.0.9",
        "--",
        "sh",
        "-c",
        "ip -4 addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf; hostname",
    ]);
    out.assert_ok();
    let s = out.stdout_str();
    assert!(s.contains("inet 172.17.0.9/16"), "{s}");
    assert!(s.contains("default via 172.17.0.1 dev eth0"), "{s}");
    assert!(s.contains("10.1.2.3\tdb") && s.contains("172.17.0.9\tbox"), "{s}");
    assert!(s.contains("nameserver 10.0.0.53") && !s.contains("nameserver 127."), "{s}");
    assert!(s.trim_end().ends_with("box"), "{s}");
    env.assert_clean();
}

/// A TCP server in `ns` on `addr:port` that answers each connection with
/// the peer's address, for `n` connections, on a thread.
fn peer_echo_server(ns: &NetNs, addr: Ipv4Addr, port: u16, n: usize) -> std::thread::JoinHandle<Vec<String>> {
    let nsf = std::fs::File::open(ns.path()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        // SAFETY: setns on this thread only.
        assert_eq!(unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let l = std::net::TcpListener::bind((addr, port)).unwrap();
        tx.send(()).unwrap();
        let mut seen = Vec::new();
        for _ in 0..n {
            let (mut c, peer) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let body = peer.ip().to_string();
            let _ = c.write_all(
                format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
            );
            seen.push(body);
        }
        seen
    });
    rx.recv().unwrap();
    h
}

#[test]
fn outbound_traffic_is_masqueraded_to_an_upstream_namespace() {
    let env = Env::new();
    // The simulated upstream: a second namespace behind a veth pair made
    // in the test's namespace, 10.99.0.1 (ours) <-> 10.99.0.2 (upstream).
    let upstream = NetNs::new();
    let ip = |args: &[&str]| run(env.ns.command("ip").args(args)).assert_ok().status;
    let up_path = upstream.path();
    ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", up_path.to_str().unwrap()]);
    ip(&["addr", "add", "10.99.0.1/24", "dev", "up0"]);
    ip(&["link", "set", "up0", "up"]);
    run(upstream.command("ip").args(["addr", "add", "10.99.0.2/24", "dev", "up1"])).assert_ok();
    run(upstream.command("ip").args(["link", "set", "up1", "up"])).assert_ok();
    let server = peer_echo_server(&upstream, Ipv4Addr::new(10, 99, 0, 2), 8080, 1);

    // The upstream has no route to the bridge's subnet: only NAT gets an answer back.
    let out = env.spawn(&["--rm", "--", "timeout", "10", "wget", "-q", "-O", "-", "http://10.99.0.2:8080/"]);
    out.assert_ok();
    assert_eq!(out.stdout_str().trim(), "10.99.0.1", "the upstream saw the masqueraded source");
    assert_eq!(server.join().unwrap(), vec!["10.99.0.1"]);
    env.assert_clean();
}

#[test]
fn fifty_containers_leave_no_veth_lease_or_rule_even_with_killed_monitors() {
    let env = Env::new();
    let mut ids = Vec::new();
    for i in 0..50 {
        let mut args = vec!["--", "sleep", "300"];
        if i % 3 == 0 {
            args.splice(0..0, ["-p", "127.0.0.1::80"]);
        }
        if i % 4 == 0 {
            args.splice(0..0, ["-p", "::53/udp"]);
        }
        let rec = env.detach(&args);
        ids.push(rec["id"].as_str().unwrap().to_string());
    }
    assert_eq!(env.veths().len(), 50);
    assert_eq!(env.leases().len(), 50);
    let published = env.nft_elements().len();
    assert_eq!(published, 17 + 13, "one element per published port");

    // SIGKILL ten monitors: their containers die with them (PDEATHSIG),
    // their leases and port elements stay behind until collected.
    let mut killed = Vec::new();
    for id in ids.iter().step_by(5) {
        let owner = env.state(id)["ownerPid"].as_i64().unwrap() as i32;
        // SAFETY: signalling the monitor this test started.
        assert_eq!(unsafe { libc::kill(owner, libc::SIGKILL) }, 0);
        killed.push(id.clone());
    }
    // The next start collects the dead owners' leases.
    std::thread::sleep(Duration::from_millis(200));
    let extra = env.detach(&["--", "sleep", "300"]);
    let leases = env.leases();
    assert_eq!(leases.len(), 41, "{leases:?}");
    assert!(killed.iter().all(|k| !leases.iter().any(|l| l.ends_with(k.as_str()))));
    let killed_published = ids
        .iter()
        .step_by(5)
        .enumerate()
        .map(|(j, _)| j * 5)
        .map(|i| usize::from(i % 3 == 0) + usize::from(i % 4 == 0))
        .sum::<usize>();
    assert_eq!(env.nft_elements().len(), published - killed_published);
    let _ = extra;

    // Removing a container whose monitor is gone releases what is left too.
    env.assert_clean();
}

/// `ctr-exec NAME -- wget -qO- http://HOST/` from inside a container.
fn wget_from(env: &Env, container: &str, host: &str) -> Output {
    let url = format!("http://{host}/");
    run(env.cmd("ctr-exec").args([container, "--", "timeout", "10", "wget", "-q", "-O", "-", &url]))
}

fn serve(text: &str) -> String {
    format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www")
}

#[test]
fn user_network_names_resolve_and_survive_re_creation() {
    let env = Env::new();
    let created = run(env.cmd("ctr-net").args(["create", "--subnet", "10.30.0.0/24", "appnet"]));
    created.assert_ok();
    let net = created.records().remove(0);
    assert_eq!(net["type"], "network");
    assert_eq!(net["subnet"], "10.30.0.0/24");
    let bridge = net["bridge"].as_str().unwrap().to_string();
    let dup = run(env.cmd("ctr-net").args(["create", "appnet"]));
    assert_eq!(dup.code(), 6, "{}", dup.stderr_str());

    env.detach(&["--name", "web", "--network", "appnet", "--", "sleep", "300"]);
    let first = env.detach(&[
        "--name",
        "other",
        "--network",
        "appnet",
        "--network-alias",
        "backend",
        "--",
        "sh",
        "-c",
        &serve("v1"),
    ]);
    let first_addr =
        env.state(first["id"].as_str().unwrap())["networks"]["appnet"].as_str().unwrap().to_string();
    let out = wget_from(&env, "web", "other");
    out.assert_ok();
    assert_eq!(out.stdout_str().trim(), "v1");
    let out = wget_from(&env, "web", "backend");
    assert_eq!(out.stdout_str().trim(), "v1", "{}", out.stderr_str());
    // The default bridge network does not resolve names (as Docker's).
    let on_bridge = env.spawn(&["--rm", "--", "timeout", "5", "wget", "-q", "-O", "-", "http://other/"]);
    assert_ne!(on_bridge.code(), 0);

    // Re-created with a new address (a filler takes the old one): found again.
    env.rm(first["id"].as_str().unwrap());
    env.detach(&["--name", "filler", "--network", "appnet", "--ip", &first_addr, "--", "sleep", "300"]);
    let second = env.detach(&["--name", "other", "--network", "appnet", "--", "sh", "-c", &serve("v2")]);
    let second_addr =
        env.state(second["id"].as_str().unwrap())["networks"]["appnet"].as_str().unwrap().to_string();
    assert_ne!(first_addr, second_addr);
    let out = wget_from(&env, "web", "other");
    out.assert_ok();
    assert_eq!(out.stdout_str().trim(), "v2");
    let hosts = run(env.cmd("ctr-exec").args(["web", "--", "cat", "/etc/hosts"])).stdout_str();
    assert!(hosts.contains(&format!("{second_addr}\tother")) && !hosts.contains("backend"), "{hosts}");

    let inspect = run(env.cmd("ctr-net").args(["inspect", "appnet"]));
    assert_eq!(inspect.records()[0]["containers"].as_object().unwrap().len(), 3);
    let busy = run(env.cmd("ctr-net").args(["rm", "appnet"]));
    assert_eq!(busy.code(), 6, "{}", busy.stderr_str());
    env.assert_clean();
    run(env.cmd("ctr-net").args(["rm", "appnet"])).assert_ok();
    let links = run(env.ns.command("ip").args(["-o", "link", "show"])).stdout_str();
    assert!(!links.contains(&bridge), "{links}");
    let ls = run(env.cmd("ctr-net").args(["ls", "-q"])).stdout_str();
    assert!(!ls.contains("appnet"), "{ls}");
}

#[test]
fn container_network_mode_shares_the_namespace() {
    let env = Env::new();
    let web = env.detach(&["--name", "web", "--", "sh", "-c", &serve("shared")]);
    let out = env.spawn(&[
        "--rm",
        "--network",
        "container:web",
        "--",
        "timeout",
        "10",
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1/",
    ]);
    out.assert_ok();
    assert_eq!(out.stdout_str().trim(), "shared");
    let _ = web;
    env.assert_clean();
}

#[test]
fn stats_count_the_bridge_interface() {
    let env = Env::new();
    let rec = env.detach(&["--", "sleep", "300"]);
    let id = rec["id"].as_str().unwrap();
    let addr = env.state(id)["networks"]["bridge"].as_str().unwrap().to_string();
    // Traffic to the container over the bridge shows in its eth0 counters.
    let to: Ipv4Addr = addr.parse().unwrap();
    env.ns.run(move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        for _ in 0..5 {
            s.send_to(&[0u8; 200], (to, 9)).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let out = run(env.cmd("ctr-stats").args(["--no-stream", id]));
    out.assert_ok();
    let r = out.records().remove(0);
    assert!(r["networks"]["eth0"]["rxBytes"].as_u64().unwrap() > 0, "{r}");
    assert!(r["netRx"].as_u64().unwrap() > 0, "{r}");
    env.assert_clean();
}

/// Links in the network namespace of process `pid`.
fn links_of(env: &Env, pid: i64) -> String {
    let out =
        run(env.ns.command("nsenter").arg(format!("--net=/proc/{pid}/ns/net")).args(["ip", "-o", "link"]));
    out.stdout_str()
}

#[test]
fn a_joiner_outliving_its_owner_loses_the_owners_interfaces() {
    // The owner's namespace lives on in the joiner, so the kernel would not
    // remove the veth: the release deletes it, as Docker does.
    let env = Env::new();
    let web = env.detach(&["--name", "web", "--", "sleep", "300"]);
    let web_id = web["id"].as_str().unwrap().to_string();
    let joiner = env.detach(&["--network", "container:web", "--", "sleep", "300"]);
    let jid = joiner["id"].as_str().unwrap().to_string();
    let jpid = env.state(&jid)["pid"].as_i64().unwrap();
    assert!(links_of(&env, jpid).contains("eth0"), "{}", links_of(&env, jpid));
    env.rm(&web_id);
    env.ids.lock().unwrap().retain(|i| *i != web_id);
    // The delete is synchronous; the bound only absorbs scheduling.
    let deadline = Instant::now() + Duration::from_secs(3);
    while links_of(&env, jpid).contains("eth0") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!links_of(&env, jpid).contains("eth0"), "{}", links_of(&env, jpid));
    assert_eq!(env.veths(), Vec::<String>::new());
    assert_eq!(env.leases(), Vec::<String>::new());
    env.assert_clean();
}

#[test]
fn quick_restarts_reuse_the_veth_name_of_a_dying_namespace() {
    // Every start of one container names its veth after the id; the one of
    // the run before may still be being destroyed by the kernel.
    let env = Env::new();
    let out = env.spawn(&["--create", "--name", "again", "--", "sh", "-c", "ip -4 addr show eth0"]);
    out.assert_ok();
    let id = out.records()[0]["id"].as_str().unwrap().to_string();
    env.ids.lock().unwrap().push(id);
    for round in 0..5 {
        let out = run(env.cmd("ctr-spawn").args(["--start", "again", "-a"]));
        out.assert_ok();
        assert!(out.stdout_str().contains("inet 172.17.0."), "round {round}: {}", out.stdout_str());
    }
    env.assert_clean();
}

#[test]
fn attached_rm_runs_leave_no_veth_behind() {
    let env = Env::new();
    for _ in 0..10 {
        env.spawn(&["--rm", "--", "true"]).assert_ok();
    }
    assert_eq!(env.leases(), Vec::<String>::new());
    env.assert_clean();
}

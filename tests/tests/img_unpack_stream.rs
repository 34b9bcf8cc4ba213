//! `img-fetch --stream REF | img-unpack` as a pipe: the first layer's
//! snapshot is in place while the last layer is still held back by a
//! slow proxy in front of the registry, so unpacking overlaps the download.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kist_tests::image;
use kist_tests::registry::Registry;
use kist_tests::{OutputExt, TestRoot};

/// An HTTP proxy that holds back any request whose path contains `slow`
/// for `delay`, one request per connection (it asks for `Connection: close`).
struct SlowProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    /// When the held-back request was let through.
    released: Arc<Mutex<Option<Instant>>>,
}

impl SlowProxy {
    fn start(upstream: u16, slow: String, delay: Duration) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let released = Arc::new(Mutex::new(None));
        let (s, r) = (stop.clone(), released.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let slow = slow.clone();
                        let r = r.clone();
                        std::thread::spawn(move || {
                            let _ = proxy_one(client, upstream, &slow, delay, &r);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SlowProxy { port, stop, released }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn proxy_one(
    mut client: TcpStream,
    upstream: u16,
    slow: &str,
    delay: Duration,
    released: &Mutex<Option<Instant>>,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut b)? == 0 {
            return Ok(());
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let first = text.lines().next().unwrap_or_default().to_string();
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    if first.contains(slow) {
        std::thread::sleep(delay);
        *released.lock().unwrap() = Some(Instant::now());
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(out.as_bytes())?;
    std::io::copy(&mut up, &mut client)?;
    Ok(())
}

#[test]
fn fetch_stream_pipe_unpacks_the_first_layer_before_the_last_arrives() {
    let img = image::multilayer();
    let reg = Registry::start();
    reg.push(&img.layout, "latest", "stream/multi:latest");
    let last = img.layers.last().unwrap().hex().to_string();
    let proxy = SlowProxy::start(reg.port, last, Duration::from_millis(2500));
    let reference = format!("127.0.0.1:{}/stream/multi:latest", proxy.port);
    let root = TestRoot::new();
    let chains = kist_common::record::chain_ids(&img.diff_ids);
    let first_snapshot = root.path().join("snapshots").join(chains[0].hex());

    let start = Instant::now();
    let mut fetch = root
        .cmd("img-fetch")
        .args(["--stream", "--quiet", &reference])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fetch_out = fetch.stdout.take().unwrap();
    let unpack = root
        .cmd("img-unpack")
        .stdin(Stdio::from(fetch_out))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_seen = None;
    while start.elapsed() < Duration::from_secs(30) {
        if first_seen.is_none() && first_snapshot.is_dir() {
            first_seen = Some(Instant::now());
        }
        if proxy.released.lock().unwrap().is_some() && first_seen.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = unpack.wait_with_output().unwrap();
    let fetched = fetch.wait_with_output().unwrap();
    assert!(fetched.status.success(), "img-fetch: {}", fetched.stderr_str());
    out.assert_ok();
    let released = proxy.released.lock().unwrap().expect("the last layer was requested through the proxy");
    let first = first_seen.expect("first snapshot appeared");
    assert!(
        first < released,
        "layer 0's snapshot appeared {:?} before the last layer was let through",
        released.saturating_duration_since(first)
    );
    let recs = out.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["type"], "snapshot");
    assert_eq!(recs[0]["id"], img.config.to_string());
    let snaps: Vec<String> =
        recs[0]["snapshots"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    assert_eq!(snaps.len(), 3);
    for (s, c) in snaps.iter().zip(&chains) {
        assert!(s.ends_with(c.hex()) && std::path::Path::new(s).is_dir());
    }
    // The result equals unpacking the stored image afterwards.
    let again = kist_tests::run(
        Command::new(kist_tests::bin("img-unpack")).arg("--root").arg(root.path()).arg(&reference),
    );
    again.assert_ok();
    assert_eq!(again.records()[0]["snapshots"], recs[0]["snapshots"]);
}

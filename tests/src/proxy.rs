//! A TCP proxy on 127.0.0.1 for network-failure tests: it forwards to an
//! upstream port, can throttle what flows back to the client (so that a
//! transfer is still running when a test breaks it), and notes whether a
//! client sent a `Range` request header. Stopped on drop.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Shared {
    upstream: u16,
    /// Bytes per second towards the client; 0 means unlimited.
    rate: AtomicU64,
    saw_range: AtomicBool,
    stop: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: u16, rate: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            upstream,
            rate: AtomicU64::new(rate),
            saw_range: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let s2 = s.clone();
                std::thread::spawn(move || handle(s2, client));
            }
        });
        Proxy { port, shared, thread: Some(thread) }
    }

    pub fn set_rate(&self, rate: u64) {
        self.shared.rate.store(rate, Ordering::SeqCst);
    }

    pub fn saw_range(&self) -> bool {
        self.shared.saw_range.load(Ordering::SeqCst)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(s: Arc<Shared>, client: TcpStream) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", s.upstream)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), upstream.try_clone()) else { return };
    let s_up = s.clone();
    let up = std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        loop {
            let n = match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            if text.contains("\r\nrange: bytes=") {
                s_up.saw_range.store(true, Ordering::SeqCst);
            }
            if u_write.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let mut u_read = upstream;
    let mut c_write = client;
    let mut buf = [0u8; 16 << 10];
    let start = Instant::now();
    let mut sent: u64 = 0;
    loop {
        let rate = s.rate.load(Ordering::SeqCst);
        let chunk = if rate > 0 { buf.len().min((rate / 20).max(1024) as usize) } else { buf.len() };
        let n = match u_read.read(&mut buf[..chunk]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    // Upstream gone (or done): the client sees the connection close.
    let _ = c_write.shutdown(Shutdown::Both);
    let _ = up.join();
}

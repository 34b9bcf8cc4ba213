//! A small Bearer-token server for registry tests: it issues RS256 JWTs
//! that Debian's docker-registry (`auth: token`) accepts, signed with a
//! key and self-signed certificate that `openssl` generates once per
//! fixture cache. The certificate travels in the token's `x5c` header and
//! doubles as the registry's `rootcertbundle`.
//!
//! Optionally it demands Basic credentials, and it counts the tokens it
//! issued so that tests can check a client caches them.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::registry::Auth;

pub const ISSUER: &str = "kist-test-issuer";
pub const SERVICE: &str = "kist-test-registry";

/// Key and certificate, generated once and cached between runs.
pub fn key_and_cert() -> (PathBuf, PathBuf) {
    let dir = crate::cache_dir().join("token-key-v1");
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let _lock =
        kist_common::fsutil::Lock::exclusive(&crate::cache_dir().join("token-key-v1.lock")).expect("lock");
    if !key.exists() || !cert.exists() {
        std::fs::create_dir_all(&dir).expect("key dir");
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=kist-token",
            ])
            .arg("-keyout")
            .arg(dir.join("key.tmp"))
            .arg("-out")
            .arg(dir.join("cert.tmp"))
            .stdin(Stdio::null())
            .output()
            .expect("openssl must be installed");
        assert!(out.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::rename(dir.join("key.tmp"), &key).expect("key");
        std::fs::rename(dir.join("cert.tmp"), &cert).expect("cert");
    }
    (key, cert)
}

fn b64(data: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, for Basic auth headers and docker config files.
pub fn base64(data: &[u8]) -> String {
    b64(data, false)
}

/// The certificate's DER as standard base64: the PEM body without line breaks.
fn cert_x5c(cert: &Path) -> String {
    let pem = std::fs::read_to_string(cert).expect("read cert");
    pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>()
}

fn sign(key: &Path, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    child.stdin.take().expect("stdin").write_all(data).expect("write");
    let out = child.wait_with_output().expect("openssl dgst");
    assert!(out.status.success(), "openssl dgst failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h =
                    std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Shared {
    key: PathBuf,
    x5c: String,
    creds: Mutex<Option<(String, String)>>,
    issued: AtomicUsize,
    refused: AtomicUsize,
    stop: AtomicBool,
    scopes: Mutex<Vec<String>>,
}

/// A running token server on 127.0.0.1; stopped on drop.
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Starts a server issuing tokens to anyone (`creds` None) or only to
    /// clients presenting these Basic credentials.
    pub fn start(creds: Option<(&str, &str)>) -> TokenServer {
        let (key, cert) = key_and_cert();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            key,
            x5c: cert_x5c(&cert),
            creds: Mutex::new(creds.map(|(u, p)| (u.to_string(), p.to_string()))),
            issued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            scopes: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let s2 = s.clone();
                    std::thread::spawn(move || {
                        let _ = serve(&s2, c);
                    });
                }
            }
        });
        TokenServer { port, cert, shared, thread: Some(thread) }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The registry `Auth` that trusts this server.
    pub fn registry_auth(&self) -> Auth {
        Auth::Token {
            realm: self.realm(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            cert: self.cert.clone(),
        }
    }

    /// From now on, demand these Basic credentials (None: issue to anyone).
    pub fn require(&self, creds: Option<(&str, &str)>) {
        *self.shared.creds.lock().expect("creds") = creds.map(|(u, p)| (u.to_string(), p.to_string()));
    }

    pub fn issued(&self) -> usize {
        self.shared.issued.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    pub fn reset_counts(&self) {
        self.shared.issued.store(0, Ordering::SeqCst);
        self.shared.refused.store(0, Ordering::SeqCst);
        self.shared.scopes.lock().expect("scopes").clear();
    }

    /// The scopes asked for, in order.
    pub fn scopes(&self) -> Vec<String> {
        self.shared.scopes.lock().expect("scopes").clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(mut c: &TcpStream, status: &str, extra: &str, body: &str) -> std::io::Result<()> {
    write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn serve(s: &Shared, c: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authz = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("authorization") {
                authz = Some(v.trim().to_string());
            }
        }
    }
    let creds = s.creds.lock().expect("creds").clone();
    if let Some((u, p)) = &creds {
        let want = format!("Basic {}", base64(format!("{u}:{p}").as_bytes()));
        if authz.as_deref() != Some(want.as_str()) {
            s.refused.fetch_add(1, Ordering::SeqCst);
            return respond(
                &c,
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"kist-token\"\r\n",
                "{\"details\":\"bad credentials\"}",
            );
        }
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut service = String::new();
    let mut access = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "service" => service = v,
            "scope" => {
                s.scopes.lock().expect("scopes").push(v.clone());
                let parts: Vec<&str> = v.splitn(3, ':').collect();
                if parts.len() == 3 {
                    let actions: Vec<&str> = parts[2].split(',').collect();
                    access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": actions}));
                }
            }
            _ => {}
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [s.x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": authz.as_ref().map(|_| "user").unwrap_or(""),
        "aud": if service.is_empty() { SERVICE.to_string() } else { service },
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("kist-{now}-{}", s.issued.load(Ordering::SeqCst)),
        "access": access,
    });
    let signing_input =
        format!("{}.{}", b64(header.to_string().as_bytes(), true), b64(claims.to_string().as_bytes(), true));
    let sig = sign(&s.key, signing_input.as_bytes());
    let token = format!("{signing_input}.{}", b64(&sig, true));
    s.issued.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    respond(&c, "200 OK", "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_variants() {
        assert_eq!(base64(b"a:b"), "YTpi");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(b64(&[0xfb, 0xff], true), "-_8");
        assert_eq!(percent_decode("repository%3Aa%2Fb%3Apull"), "repository:a/b:pull");
    }
}

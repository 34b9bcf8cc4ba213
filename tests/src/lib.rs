//! Fixtures for kist's integration tests: paths to the real binaries, a
//! fresh state root per test, test images built as OCI layouts from the
//! host's `busybox-static`, and Debian's `docker-registry` on a free
//! loopback port. Everything a fixture starts it stops on drop, by pid.

pub mod ctl;
pub mod image;
pub mod netns;
pub mod proxy;
pub mod registry;
pub mod spawn;
pub mod store;
pub mod tarball;
pub mod token_server;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory holding the workspace's built binaries (`target/<profile>`),
/// found from the test executable's own location so that it follows
/// `CARGO_TARGET_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KIST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    if deps.ends_with("deps") {
        deps.parent().expect("profile dir").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// The path of a built tool; fails the test clearly if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace --bins` first (looked in {})",
        name,
        p.display()
    );
    p
}

/// Where fixtures are cached between test runs: next to the binaries, so
/// `cargo clean` clears them.
pub fn cache_dir() -> PathBuf {
    let dir = bin_dir().join("kist-fixtures");
    std::fs::create_dir_all(&dir).expect("fixture cache dir");
    dir
}

/// A fresh state root for one test, removed on drop.
pub struct TestRoot {
    dir: tempfile::TempDir,
}

impl TestRoot {
    pub fn new() -> TestRoot {
        let dir = tempfile::Builder::new().prefix("kist-test-").tempdir().expect("temp root");
        TestRoot { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A command for a tool with `KIST_ROOT` pointing at this root.
    pub fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(bin(tool));
        c.env("KIST_ROOT", self.path());
        c.env_remove("KIST_DEBUG");
        // ctr-spawn's default network is `bridge`, which builds kist0 and
        // nftables rules in the caller's network namespace: tests ask for
        // it explicitly, inside a kist_tests::netns::NetNs.
        c.env("KIST_DEFAULT_NETWORK", "none");
        c
    }
}

impl Default for TestRoot {
    fn default() -> Self {
        TestRoot::new()
    }
}

/// Output of a finished command, with helpers for assertions.
pub trait OutputExt {
    fn stdout_str(&self) -> String;
    fn stderr_str(&self) -> String;
    /// Parses stdout as JSON Lines.
    fn records(&self) -> Vec<serde_json::Value>;
    /// Panics with both streams unless the command exited 0.
    fn assert_ok(&self) -> &Self;
    fn code(&self) -> i32;
}

impl OutputExt for Output {
    fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    fn records(&self) -> Vec<serde_json::Value> {
        self.stdout_str()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}")))
            .collect()
    }

    fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "command failed with {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout_str(),
            self.stderr_str()
        );
        self
    }

    fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// Runs a command to completion, capturing both streams.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(std::process::Stdio::null());
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command with the given bytes on stdin.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

/// True when a host command exists on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

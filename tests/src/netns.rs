//! A private network namespace for one test, so that bridges, veths,
//! nftables rules and published ports never touch the host's network.
//! A holder process (`unshare --net sleep`) keeps the namespace alive;
//! commands join it with `setns` before they exec, and closures run on a
//! thread that joined it (network namespaces are per thread). Dropping the
//! fixture kills the holder by pid; the namespace, and everything kist
//! built inside it, goes when the last process in it has gone.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct NetNs {
    holder: Child,
}

impl NetNs {
    /// A new namespace with its loopback interface up.
    pub fn new() -> NetNs {
        let holder = Command::new("unshare")
            .args(["--net", "--", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare --net (util-linux)");
        let ns = NetNs { holder };
        // The holder has unshared once its namespace link differs from ours.
        let ours = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        for _ in 0..500 {
            if std::fs::read_link(ns.path()).map(|l| l != ours).unwrap_or(false) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_ne!(std::fs::read_link(ns.path()).expect("holder netns"), ours, "unshare --net did not take");
        let st = ns.command("ip").args(["link", "set", "lo", "up"]).status().expect("ip (iproute2)");
        assert!(st.success(), "ip link set lo up failed in the test's namespace");
        ns
    }

    /// `/proc/<holder>/ns/net`: the namespace, for `nsenter --net=` or setns.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.id()))
    }

    /// Makes `cmd` join this namespace before it execs.
    pub fn enter<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        let ns = File::open(self.path()).expect("open netns");
        // SAFETY: between fork and exec the child only calls setns, which is
        // async-signal-safe; `ns` is moved into the closure and stays open.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// A command for `program` that runs inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        self.enter(&mut c);
        c
    }

    /// Runs `f` on a thread inside this namespace (sockets it opens live
    /// there) and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = File::open(self.path()).expect("open netns");
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only; the fd is valid for the call.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in the test's namespace panicked")
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_private_and_has_loopback() {
        let ns = NetNs::new();
        let out = ns.command("ip").args(["-o", "link", "show"]).output().unwrap();
        let links = String::from_utf8_lossy(&out.stdout);
        assert_eq!(links.lines().count(), 1, "only lo in a fresh namespace: {links}");
        assert!(links.contains("lo:") && links.contains("UP"), "{links}");
        // Sockets opened by run() live inside: a listener there answers there.
        let port = ns.run(|| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
            port
        });
        assert!(port > 0);
    }
}

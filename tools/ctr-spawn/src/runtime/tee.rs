//! The output of an attached run without a terminal, kept in the
//! container's json-file log as well as passed to ctr-spawn's own stdout
//! and stderr, so that `ctr-logs` (`docker logs`) shows what an attached
//! run printed, as Docker does. A `--rm` run skips this: its log would go
//! with the container.
//!
//! The init inherits pipes as its stdout and stderr: ctr-spawn puts their
//! write ends on its own descriptors 1 and 2 for the clone and restores
//! the originals right after (the init closes every other inherited
//! descriptor before exec). A thread per stream copies and logs until the
//! stream ends. If ctr-spawn's own stdout or stderr goes away (`| head`),
//! that thread stops reading, so that the container sees the broken pipe
//! as it would without the copy. Meanwhile ctr-spawn's own diagnostics go
//! to the saved original stderr (kist_common::diag::send_to), so that none
//! of them lands in the container's log.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kist_common::logfile::{LogFile, Stream};
use kist_common::restart::LogOpts;
use nix::fcntl::OFlag;

use crate::Error;

/// Descriptors 1 and 2 diverted to pipes until [`Diverted::restore`].
pub struct Diverted {
    saved: [OwnedFd; 2],
    readers: [OwnedFd; 2],
    writers: Option<[OwnedFd; 2]>,
}

/// The copying threads of a started run.
pub struct Tee {
    done: mpsc::Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

fn dup_cloexec(fd: RawFd) -> Result<OwnedFd, Error> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor of ours; the result, if
    // valid, is a new descriptor only this value owns.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(Error::Sys(format!("dup: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: just created, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe"))
}

impl Diverted {
    /// Puts pipes on descriptors 1 and 2 for the init to inherit.
    pub fn divert() -> Result<Diverted, Error> {
        let saved = [dup_cloexec(1)?, dup_cloexec(2)?];
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        nix::unistd::dup2(out_w.as_raw_fd(), 1).map_err(Error::sys("dup2"))?;
        // ctr-spawn's own messages keep going to its stderr, not the log.
        kist_common::diag::send_to(saved[1].as_raw_fd());
        if let Err(e) = nix::unistd::dup2(err_w.as_raw_fd(), 2) {
            kist_common::diag::send_to(2);
            let _ = nix::unistd::dup2(saved[0].as_raw_fd(), 1);
            return Err(Error::sys("dup2")(e));
        }
        Ok(Diverted { saved, readers: [out_r, err_r], writers: Some([out_w, err_w]) })
    }

    /// ctr-spawn's own stdout and stderr back, and (when the init was
    /// started) the copying threads going.
    pub fn restore(mut self, started: bool, log: &std::path::Path, opts: LogOpts) -> Option<Tee> {
        let _ = nix::unistd::dup2(self.saved[0].as_raw_fd(), 1);
        let _ = nix::unistd::dup2(self.saved[1].as_raw_fd(), 2);
        kist_common::diag::send_to(2);
        self.writers = None;
        if !started {
            return None;
        }
        let file = Arc::new(Mutex::new(LogFile::new(log.to_path_buf(), opts)));
        let (tx, done) = mpsc::channel();
        let [out_r, err_r] = self.readers;
        let [out_s, err_s] = self.saved;
        let mut threads = Vec::new();
        for (from, to, stream) in [(out_r, out_s, Stream::Stdout), (err_r, err_s, Stream::Stderr)] {
            let (file, tx) = (file.clone(), tx.clone());
            let spawned = std::thread::Builder::new().name("tee".into()).spawn(move || {
                copy(&from, &to, &file, stream);
                let _ = tx.send(());
            });
            if let Ok(t) = spawned {
                threads.push(t);
            }
        }
        Some(Tee { done, threads })
    }
}

fn copy(from: &OwnedFd, to: &OwnedFd, file: &Mutex<LogFile>, stream: Stream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match nix::unistd::read(from.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        };
        if let Ok(mut f) = file.lock() {
            f.feed(stream, &buf[..n]);
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match nix::unistd::write(to, rest) {
                Ok(w) => rest = &rest[w..],
                Err(nix::errno::Errno::EINTR) => {}
                // The reader went away: stop reading too (see the header).
                Err(_) => {
                    if let Ok(mut f) = file.lock() {
                        f.flush(stream);
                    }
                    return;
                }
            }
        }
    }
    if let Ok(mut f) = file.lock() {
        f.flush(stream);
    }
}

impl Tee {
    /// Waits for both streams to end, but not for long once the init has
    /// exited: a process that outlived it (`--pid host`) may hold them.
    pub fn finish(self) {
        for _ in 0..self.threads.len() {
            if self.done.recv_timeout(Duration::from_millis(500)).is_err() {
                return;
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

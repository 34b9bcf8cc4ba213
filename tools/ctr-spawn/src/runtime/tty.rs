//! `-t`: the caller's terminal in raw mode (restored on exit, whatever
//! happens), bytes relayed between it and the container's pty master, and
//! the window size followed on SIGWINCH. What the container writes is also
//! logged (as stdout, the one stream a pty has, as Docker logs a `-t`
//! container) unless the run is `--rm`.

use std::os::fd::RawFd;

use kist_common::logfile::{LogFile, Stream};
use nix::sys::termios::{self, SetArg, Termios};

use crate::Error;

/// Puts stdin in raw mode and restores the saved mode when dropped.
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    /// Raw mode if stdin is a terminal; a no-op guard otherwise.
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, s);
        }
    }
}

/// Copies the caller's window size (from stdin, else stdout) to the master.
pub fn copy_window_size(master: RawFd) {
    // SAFETY: winsize is plain data; TIOCGWINSZ/TIOCSWINSZ take a pointer to it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 || libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// The byte relay between stdin/stdout and the master.
pub struct Relay {
    master: RawFd,
    stdin_open: bool,
    /// Bytes read from stdin not yet written to the master.
    pending: Vec<u8>,
    log: Option<LogFile>,
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: writing from a valid buffer.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = nix::errno::Errno::last();
            if e == nix::errno::Errno::EINTR {
                continue;
            }
            if e == nix::errno::Errno::EAGAIN {
                let mut p = [libc::pollfd { fd, events: libc::POLLOUT, revents: 0 }];
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(p.as_mut_ptr(), 1, 100) };
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

impl Relay {
    pub fn new(master: RawFd, interactive: bool, log: Option<LogFile>) -> Relay {
        Relay { master, stdin_open: interactive, pending: Vec::new(), log }
    }

    fn output(&mut self, bytes: &[u8]) {
        if let Some(l) = &mut self.log {
            l.feed(Stream::Stdout, bytes);
        }
        write_all(1, bytes);
    }

    /// Waits for input on stdin, the master or the signal descriptor; moves
    /// bytes; returns true when the signal descriptor is readable.
    pub fn poll(&mut self, sfd: RawFd) -> Result<bool, Error> {
        let mut fds = vec![
            libc::pollfd { fd: sfd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.master, events: libc::POLLIN, revents: 0 },
        ];
        if self.stdin_open {
            fds.push(libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: a valid array of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            return Ok(false);
        }
        let mut buf = [0u8; 16384];
        if fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            // SAFETY: reading into a local buffer.
            let r = unsafe { libc::read(self.master, buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                self.output(&buf[..r as usize]);
            } else if fds[1].revents & libc::POLLHUP != 0 {
                // The slave side is closed for now; avoid spinning.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        if self.stdin_open
            && fds.len() > 2
            && fds[2].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
        {
            // SAFETY: reading into a local buffer.
            let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                self.pending.extend_from_slice(&buf[..r as usize]);
                if write_all(self.master, &self.pending) {
                    self.pending.clear();
                }
            } else {
                self.stdin_open = false;
            }
        }
        Ok(fds[0].revents & libc::POLLIN != 0)
    }

    /// After the container exited: copies what is left in the master.
    pub fn drain(&mut self) {
        let _ = nix::fcntl::fcntl(self.master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
        let mut buf = [0u8; 16384];
        loop {
            // SAFETY: reading into a local buffer.
            let r = unsafe { libc::read(self.master, buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                break;
            }
            self.output(&buf[..r as usize]);
        }
        if let Some(l) = &mut self.log {
            l.flush(Stream::Stdout);
        }
    }
}

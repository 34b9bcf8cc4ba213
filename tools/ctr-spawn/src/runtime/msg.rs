//! The protocol between ctr-spawn and the container's init over a
//! SOCK_SEQPACKET socketpair (messages keep their boundaries, descriptors
//! travel with SCM_RIGHTS). The init's end is CLOEXEC, so a successful
//! execve shows as end-of-file.
//!
//! parent → init: `G` (placed in the cgroup: go on).
//! init → parent: `T` + a descriptor (the terminal's master),
//! `E` status message (setup or exec failed), or EOF (exec'd).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// A connected pair: (parent's end, init's end), both CLOEXEC.
pub fn pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    let rc = unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    };
    Errno::result(rc)?;
    // SAFETY: both descriptors were just created and are owned by us alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn send(sock: RawFd, bytes: &[u8], fd: Option<RawFd>) -> Result<(), Errno> {
    let iov = [IoSlice::new(bytes)];
    let fds;
    let cmsg: Vec<ControlMessage<'_>> = match fd {
        Some(f) => {
            fds = [f];
            vec![ControlMessage::ScmRights(&fds)]
        }
        None => Vec::new(),
    };
    loop {
        match sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            r => return r.map(drop),
        }
    }
}

pub fn send_go(sock: RawFd) -> Result<(), Errno> {
    send(sock, b"G", None)
}

pub fn wait_go(sock: RawFd) -> Result<(), Errno> {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(sock, b.as_mut_ptr().cast(), 1) };
        if n == 1 && b[0] == b'G' {
            return Ok(());
        }
        if n < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        return Err(if n == 0 { Errno::EPIPE } else { Errno::last() });
    }
}

pub fn send_fd(sock: RawFd, fd: RawFd) -> Result<(), Errno> {
    send(sock, b"T", Some(fd))
}

/// Sends a failure; best effort (the parent may be gone).
pub fn send_error(sock: RawFd, status: u8, message: &str) {
    let mut b = vec![b'E', status];
    b.extend_from_slice(message.as_bytes());
    let _ = send(sock, &b, None);
}

/// What the init said.
pub enum Message {
    Terminal(OwnedFd),
    Error {
        status: u8,
        message: String,
    },
    /// End of file: the command was exec'd.
    Execd,
}

pub fn recv(sock: RawFd) -> Result<Message, Errno> {
    let mut buf = vec![0u8; 8192];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let r = match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(Errno::EINTR) => continue,
            Err(Errno::ECONNRESET) => return Ok(Message::Execd),
            r => r?,
        };
        let mut passed = None;
        for c in r.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    // SAFETY: the kernel installed this descriptor for us.
                    let owned = unsafe { OwnedFd::from_raw_fd(f) };
                    if passed.is_none() {
                        passed = Some(owned);
                    }
                }
            }
        }
        let n = r.bytes;
        if n == 0 {
            return Ok(Message::Execd);
        }
        return Ok(match (buf[0], passed) {
            (b'T', Some(fd)) => Message::Terminal(fd),
            (b'E', _) if n >= 2 => {
                Message::Error { status: buf[1], message: String::from_utf8_lossy(&buf[2..n]).into_owned() }
            }
            _ => {
                Message::Error { status: 125, message: "unexpected message from the container's init".into() }
            }
        });
    }
}

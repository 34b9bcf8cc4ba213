//! `--init`: the container's pid 1 stays the (already confined) fork of
//! ctr-spawn and acts as a minimal reaper, like Docker's tini: it forks the
//! command, forwards every signal it receives to it, reaps all orphans and
//! exits with the command's status. Nothing from the host is exec'd, and
//! the reaper is non-dumpable, so /proc/1/exe is out of the container's reach.

use std::os::fd::RawFd;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::init::{exec, Failure};
use super::msg;

pub fn run(sock: RawFd, args: &[String], env: &[String]) -> Result<std::convert::Infallible, Failure> {
    let all = SigSet::all();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None);
    // SAFETY: single-threaded; the child only calls exec and _exit.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            let f = exec(args, env);
            msg::send_error(sock, f.status, &f.message);
            // SAFETY: leaving the forked child without destructors.
            unsafe { libc::_exit(i32::from(f.status)) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(Failure { status: 125, message: format!("fork: {}", e.desc()) }),
    };
    let _ = nix::unistd::close(sock);
    loop {
        let sig = match all.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(child, sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => finish(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => finish(128 + s as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

fn finish(code: i32) -> ! {
    // SAFETY: pid 1 leaving; the kernel kills what is left in the namespace.
    unsafe { libc::_exit(code) }
}

//! Diagnostics on stderr, one line per message, prefixed with the tool name,
//! so that the messages of a pipeline of tools stay attributable.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

static TOOL: OnceLock<&'static str> = OnceLock::new();

/// Where diagnostics go: descriptor 2, except while [`send_to`] says otherwise.
static DIAG_FD: AtomicI32 = AtomicI32::new(2);

/// Sets the name that prefixes every diagnostic; called once from `main`.
pub fn set_tool_name(name: &'static str) {
    let _ = TOOL.set(name);
}

pub fn tool_name() -> &'static str {
    TOOL.get().copied().unwrap_or("kist")
}

/// Sends diagnostics to `fd` rather than descriptor 2, until called again
/// with 2: ctr-spawn points descriptor 2 at a container's log pipe for the
/// moment of a start, and its own messages must not land in that log.
/// `fd` must stay open for as long as it is set.
pub fn send_to(fd: std::os::fd::RawFd) {
    DIAG_FD.store(fd, Ordering::Relaxed);
}

fn emit(level: &str, msg: &std::fmt::Arguments<'_>) {
    let line = if level.is_empty() {
        format!("{}: {}\n", tool_name(), msg)
    } else {
        format!("{}: {}: {}\n", tool_name(), level, msg)
    };
    // One write per line, so that lines of concurrent writers do not mix.
    let fd = DIAG_FD.load(Ordering::Relaxed);
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        // SAFETY: writing from a valid buffer to a descriptor the caller
        // keeps open (2, or one given to send_to).
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            // A diagnostic that cannot be written has nowhere else to go.
            return;
        }
        rest = &rest[n as usize..];
    }
}

pub fn error_fmt(msg: std::fmt::Arguments<'_>) {
    emit("error", &msg);
}

pub fn warn_fmt(msg: std::fmt::Arguments<'_>) {
    emit("warning", &msg);
}

pub fn info_fmt(msg: std::fmt::Arguments<'_>) {
    emit("", &msg);
}

/// Prints an error and its chain of sources as one line.
pub fn report(err: &(dyn std::error::Error + 'static)) {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    error_fmt(format_args!("{line}"));
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::diag::warn_fmt(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::diag::info_fmt(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd};

    #[test]
    fn diagnostics_follow_send_to_as_one_line_each() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two descriptors of a valid array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors are new and owned by nothing else.
        let (mut r, w) = unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
        super::send_to(w.as_raw_fd());
        crate::warn!("to the pipe {}", 1);
        super::send_to(2);
        drop(w);
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, format!("{}: warning: to the pipe 1\n", super::tool_name()));
    }
}

//! ctr-spawn's errors. Its own failures exit 125 (Docker's convention for
//! the runtime's errors); a command that cannot be executed 126, one that
//! does not exist 127.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Image(String),
    #[error("cannot read the snapshot record from stdin")]
    Stdin(#[source] std::io::Error),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Root(#[from] kist_common::root::RootError),
    #[error(transparent)]
    Container(#[from] kist_common::container::ContainerError),
    #[error(transparent)]
    Fs(#[from] kist_common::fsutil::FsError),
    #[error(transparent)]
    Store(#[from] kist_common::store::StoreError),
    #[error(transparent)]
    Teardown(#[from] kist_common::teardown::TeardownError),
    #[error(transparent)]
    Lifecycle(#[from] kist_common::lifecycle::LifecycleError),
    #[error(transparent)]
    Net(#[from] kist_common::net::NetError),
    #[error(transparent)]
    Restart(#[from] kist_common::restart::RestartError),
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error("{0}")]
    Security(String),
    #[error("{0}")]
    Sys(String),
    /// The container process could not be started: Docker's message, and 126 or 127.
    #[error("failed to create task for container: unable to start container process: {message}")]
    Exec { message: String, status: u8 },
}

impl Error {
    /// The exit status for this error.
    pub fn status(&self) -> u8 {
        match self {
            Error::Exec { status, .. } => *status,
            _ => 125,
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }

    pub(crate) fn sys(what: impl std::fmt::Display) -> impl FnOnce(nix::Error) -> Error {
        let what = what.to_string();
        move |e| Error::Sys(format!("{what}: {}", e.desc()))
    }
}

impl kist_common::HasExitCode for Error {
    fn exit_code(&self) -> kist_common::ExitCode {
        // ctr-spawn passes 125/126/127 through `status()`; this is for
        // callers that embed the library and want the common scheme.
        match self {
            Error::Usage(_) | Error::Restart(_) => kist_common::ExitCode::Usage,
            Error::Image(_) => kist_common::ExitCode::NotFound,
            Error::Container(e) => e.exit_code(),
            Error::Lifecycle(e) => e.exit_code(),
            Error::Net(e) => e.exit_code(),
            _ => kist_common::ExitCode::Failure,
        }
    }
}

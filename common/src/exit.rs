//! The exit-code scheme shared by every tool except the container runners,
//! which pass the container's own status through (see ctr-spawn(1)).
//!
//! Scripts branch on these numbers, so they are part of the interface and
//! documented in every man page's EXIT STATUS section.

/// The exit status of the container runners (ctr-spawn, ctr-exec) for
/// their own failures, a bad flag included, as `docker run` and `docker
/// exec` give it: a container's own status cannot be taken for it.
pub const RUNNER_FAILURE: u8 = 125;

/// Prints clap's verdict on a container runner's command line and maps
/// it: --help and --version exit 0, a usage error [`RUNNER_FAILURE`].
pub fn runner_clap_exit(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::from(RUNNER_FAILURE),
    }
}

/// Process exit codes of the kist tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Everything asked for was done.
    Success = 0,
    /// The operation failed for a reason not covered below (network, registry error).
    Failure = 1,
    /// The command line or the input records were malformed.
    Usage = 2,
    /// The image, tag, blob, container or file does not exist.
    NotFound = 3,
    /// The registry refused the credentials, or demanded some and none were given.
    Auth = 4,
    /// Data did not match its digest or size, or was not what its media type says.
    Integrity = 5,
    /// The object is in use or already exists (a name taken, an image used by a container).
    Conflict = 6,
    /// A local file-system error: permission, disk full, I/O.
    Io = 7,
}

impl ExitCode {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

/// Errors that know which exit code they deserve.
pub trait HasExitCode {
    fn exit_code(&self) -> ExitCode;
}

/// The text of the EXIT STATUS man page section for tools following the scheme.
pub const EXIT_STATUS_TEXT: &str = "\
0  success.\n\
1  the operation failed (network, registry or other runtime error).\n\
2  usage error: bad arguments or malformed input records.\n\
3  not found: no such image, tag, blob, container or file.\n\
4  authentication failed or was required.\n\
5  integrity error: digest or size mismatch, corrupt or unexpected data.\n\
6  conflict: the object exists already or is in use.\n\
7  local I/O error: permission denied, disk full.";

/// Maps an I/O error to the closest exit code.
pub fn io_exit_code(err: &std::io::Error) -> ExitCode {
    match err.kind() {
        std::io::ErrorKind::NotFound => ExitCode::NotFound,
        std::io::ErrorKind::AlreadyExists => ExitCode::Conflict,
        _ => ExitCode::Io,
    }
}

//! ctr-cp copies files, directories and tar streams between the host and a
//! container with `docker cp`'s rules. The container side is always reached
//! through a descriptor of the container's root (kist_common::croot): the
//! named path is opened with openat2(RESOLVE_IN_ROOT), and everything below
//! it one name at a time without following links ([`fsops`]), so neither a
//! symlink in the container nor one swapped in during the copy reaches the
//! host. ctr-cp never runs or loads anything from the container: no tar
//! binary, no NSS, no libc of the image.

pub mod fsops;
pub mod mounts;

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};
use kist_common::{lifecycle, ExitCode, HasExitCode, StateRoot};

use fsops::{Extractor, FsError, Map, TarSink};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{message}")]
    Refused { message: String, code: ExitCode },
    #[error("{what}")]
    Path {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Root(#[from] kist_common::root::RootError),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
    #[error(transparent)]
    Container(#[from] kist_common::container::ContainerError),
    #[error(transparent)]
    Croot(#[from] kist_common::croot::CrootError),
    #[error(transparent)]
    Mounts(#[from] mounts::MountError),
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Refused { code, .. } => *code,
            Error::Path { source, .. } => kist_common::exit::io_exit_code(source),
            Error::Fs(e) => e.exit_code(),
            Error::Root(e) => e.exit_code(),
            Error::Lifecycle(e) => e.exit_code(),
            Error::Container(e) => e.exit_code(),
            Error::Croot(e) => e.exit_code(),
            Error::Mounts(e) => e.exit_code(),
        }
    }
}

fn refused(code: ExitCode, message: String) -> Error {
    Error::Refused { message, code }
}

pub fn command() -> Command {
    Command::new("ctr-cp")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Copy files and tar streams between the host and a container (docker cp)")
        .long_about(
            "Copy files, directories and tar streams between the host and a container, with \
             docker cp's rules. One of SRC and DST is CONTAINER:PATH (id, id prefix or name); the \
             other is a host path, or - for a tar stream on stdin (SRC) or stdout (DST).\n\n\
             A file into an existing directory goes in under its own name; a file to a missing \
             path creates it, unless the path ends in / (an error); a directory to a missing path \
             is created with its content; a directory into an existing directory becomes a \
             subdirectory, unless SRC ends in /. (the content only). Parent directories are never \
             created. A DST that is a symlink is followed: onto a link to a file, that file is \
             written; onto a dangling link, its target is created (inside the container for a \
             container DST). With - as SRC, DST must be an existing directory.\n\n\
             Works on running containers (through the init's root, which shows the container's \
             volumes and tmpfs mounts) and stopped or created ones (their overlay and bind mounts \
             and volumes mounted in a private mount namespace of ctr-cp's own, as docker cp mounts \
             them: writes go to the upper directory, or to the volume or bind source under a \
             volume's path; :ro ones are read-only). Container paths are resolved inside the container's \
             root (openat2 RESOLVE_IN_ROOT) and below that one name at a time without following \
             symlinks, so links to /, ../.. or host paths, even ones swapped in during the copy, \
             never reach the host.",
        )
        .arg(
            Arg::new("root")
                .long("root")
                .global(true)
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("State root (default $KIST_ROOT, else /var/lib/kist)"),
        )
        .arg(
            Arg::new("archive")
                .short('a')
                .long("archive")
                .action(ArgAction::SetTrue)
                .help("Keep uid and gid of the source (default: owned by the copying user, root)"),
        )
        .arg(
            Arg::new("follow-link")
                .short('L')
                .long("follow-link")
                .action(ArgAction::SetTrue)
                .help("Follow a symlink given as SRC (inside the container's root)"),
        )
        .arg(
            Arg::new("src")
                .value_name("SRC")
                .required(true)
                .allow_hyphen_values(true)
                .help("CONTAINER:PATH, host path or -"),
        )
        .arg(
            Arg::new("dst")
                .value_name("DST")
                .required(true)
                .allow_hyphen_values(true)
                .help("CONTAINER:PATH, host path or -"),
        )
        .after_help(
            "Examples:\n  ctr-cp ./site web:/usr/share/html\n  ctr-cp web:/etc/hosts .\n  \
             ctr-cp web:/var/log/. ./logs\n  tar -C dir -c . | ctr-cp - web:/srv\n  \
             ctr-cp web:/srv - | tar -t",
        )
}

pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "Reads and writes no JSON. With - as SRC it reads a tar stream (ustar, GNU or pax) on \
           stdin; with - as DST it writes one (GNU long names) to stdout.",
    exit_status: kist_common::exit::EXIT_STATUS_TEXT,
    files: "containers/<id>/upper, containers/<id>/work\n    A stopped container's overlay \
            upper and work directories (writes land in upper).\ncontainers/<id>/config.json\n    \
            A stopped container's bind mounts and volumes, mounted for the copy (at \
            containers/<id>/rootfs, in ctr-cp's own mount namespace, gone when it exits).\n\
            volumes/<name>/_data\n    A volume's data, read and written under its path in the \
            container.\n/proc/<pid>/root\n    A running container's root, as its init sees it.",
    examples: "ctr-cp ./index.html web:/var/www/\nctr-cp web:/etc/. ./etc-copy\n\
               ctr-cp -a web:/home/app ./backup\ntar -c conf | ctr-cp - web:/etc",
    see_also: "ctr-exec(1), ctr-spawn(1), docker-cp(1)",
};

/// One side of the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Host(PathBuf),
    Container { name: String, path: String },
    Stream,
}

/// Docker's rule: `-` is a stream; a path starting with `/` or `.` is local;
/// otherwise `NAME:PATH` names a container.
pub fn parse_endpoint(arg: &str) -> Endpoint {
    if arg == "-" {
        return Endpoint::Stream;
    }
    if arg.starts_with('/') || arg.starts_with('.') {
        return Endpoint::Host(PathBuf::from(arg));
    }
    match arg.split_once(':') {
        Some((name, path)) if !name.is_empty() => {
            Endpoint::Container { name: name.to_string(), path: path.to_string() }
        }
        _ => Endpoint::Host(PathBuf::from(arg)),
    }
}

/// Where paths of one side are looked up: the host, or inside a root.
struct Side {
    root: Option<OwnedFd>,
    label: String,
}

impl Side {
    fn open(&self, path: &str, flags: i32) -> std::io::Result<OwnedFd> {
        match &self.root {
            Some(r) => kist_common::croot::open_in_root(r.as_raw_fd(), Path::new(path), flags, 0),
            None => {
                let c = std::ffi::CString::new(path.as_bytes())
                    .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
                // SAFETY: valid C string; the result is checked.
                let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: a descriptor we just opened.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        }
    }
    fn show(&self, path: &str) -> String {
        if self.label.is_empty() {
            path.to_string()
        } else {
            format!("{}:{}", self.label, path)
        }
    }
}

fn is_dir(fd: RawFd) -> std::io::Result<bool> {
    Ok(fsops::fstat(fd)?.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// The source: an O_PATH descriptor, whether it is a directory, its top
/// name in the stream, and whether only its content is wanted (`SRC/.`).
struct Source {
    fd: OwnedFd,
    dir: bool,
    name: OsString,
    content_only: bool,
}

fn open_source(side: &Side, path: &str, follow: bool) -> Result<Source, Error> {
    let content_only = path.ends_with("/.") || path == "." || path == "/";
    let trailing = path.ends_with('/') || content_only;
    let follow = follow || trailing;
    let flags = libc::O_PATH | if follow { 0 } else { libc::O_NOFOLLOW };
    let fd = side.open(path, flags).map_err(|source| match source.raw_os_error() {
        Some(libc::ENOENT) => {
            refused(ExitCode::NotFound, format!("no such file or directory: {}", side.show(path)))
        }
        Some(libc::ENOTDIR) => refused(ExitCode::Failure, format!("not a directory: {}", side.show(path))),
        _ => Error::Path { what: format!("cannot open {}", side.show(path)), source },
    })?;
    let dir = is_dir(fd.as_raw_fd()).map_err(|source| Error::Path { what: side.show(path), source })?;
    if trailing && !dir {
        return Err(refused(ExitCode::Failure, format!("not a directory: {}", side.show(path))));
    }
    let name = Path::new(path.trim_end_matches("/.").trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| OsString::from("root"));
    Ok(Source { fd, dir, name, content_only: content_only && dir })
}

/// Docker follows a symlink at the destination: a copy onto a link to a
/// file writes that file, and onto a dangling link creates its target.
/// Returns the path with its final symlinks replaced by their targets (a
/// relative target taken from the link's directory), still to be looked
/// up inside the side's root, so a target naming `/` or `..` stays in it;
/// None for a loop, whose link is then replaced like a file.
fn follow_final_links(side: &Side, path: &str) -> Option<String> {
    let mut cur = PathBuf::from(path);
    for _ in 0..40 {
        let Ok(fd) = side.open(&cur.to_string_lossy(), libc::O_PATH | libc::O_NOFOLLOW) else {
            return Some(cur.to_string_lossy().into_owned());
        };
        let is_link = fsops::fstat(fd.as_raw_fd()).map(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
        if !matches!(is_link, Ok(true)) {
            return Some(cur.to_string_lossy().into_owned());
        }
        let target = fsops::readlink_fd(fd.as_raw_fd()).ok()?;
        cur = match cur.parent() {
            Some(dir) if !target.is_absolute() => dir.join(target),
            _ => target,
        };
    }
    None
}

/// Docker's destination rules: which directory the entries go below and
/// how the source's top name is renamed.
fn plan_destination(side: &Side, path: &str, src: &Source) -> Result<Extractor, Error> {
    let show = side.show(path);
    let trailing = path.ends_with('/') || path.ends_with("/.");
    let followed = if trailing { None } else { follow_final_links(side, path) };
    let path = followed.as_deref().unwrap_or(path);
    // A symlink that resolves to nothing (dangling or looping inside the
    // root) is an existing non-directory: the link itself is replaced.
    let mut dangling = false;
    let found = match side.open(path, libc::O_PATH) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::ELOOP) => {
            dangling = !trailing && side.open(path, libc::O_PATH | libc::O_NOFOLLOW).is_ok();
            None
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(refused(ExitCode::Failure, format!("not a directory: {show}")))
        }
        Err(source) => return Err(Error::Path { what: format!("cannot open {show}"), source }),
    };
    let dst_dir = match &found {
        Some(fd) => {
            Some(is_dir(fd.as_raw_fd()).map_err(|source| Error::Path { what: show.clone(), source })?)
        }
        None if dangling => Some(false),
        None => None,
    };
    let base_name = || -> Result<OsString, Error> {
        Path::new(path.trim_end_matches('/'))
            .file_name()
            .map(|n| n.to_os_string())
            .filter(|n| n != "." && n != "..")
            .ok_or_else(|| refused(ExitCode::Usage, format!("invalid destination {show}")))
    };
    let parent_of = |p: &str| -> Result<OwnedFd, Error> {
        let parent = Path::new(p.trim_end_matches('/')).parent().map(|p| p.as_os_str().as_bytes().to_vec());
        let parent = match parent {
            Some(p) if !p.is_empty() => String::from_utf8_lossy(&p).into_owned(),
            _ => {
                if side.root.is_some() || p.starts_with('/') {
                    "/".to_string()
                } else {
                    ".".to_string()
                }
            }
        };
        side.open(&parent, libc::O_PATH | libc::O_DIRECTORY).map_err(|source| match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => refused(
                ExitCode::NotFound,
                format!("the parent directory of {show} does not exist (ctr-cp does not create parents)"),
            ),
            _ => Error::Path { what: format!("cannot open the parent of {show}"), source },
        })
    };
    let (base, map) = match (dst_dir, src.dir) {
        (None, false) if trailing => {
            return Err(refused(
                ExitCode::NotFound,
                format!("no such directory: {show} (the destination directory must exist)"),
            ))
        }
        (None, _) => (parent_of(path)?, Map::Rename { from: src.name.clone(), to: base_name()? }),
        (Some(false), true) => {
            return Err(refused(ExitCode::Conflict, format!("cannot copy a directory to a file: {show}")))
        }
        (Some(false), false) => (parent_of(path)?, Map::Rename { from: src.name.clone(), to: base_name()? }),
        (Some(true), _) if src.content_only => (
            found.ok_or_else(|| refused(ExitCode::Failure, show.clone()))?,
            Map::ContentOnly { from: src.name.clone() },
        ),
        (Some(true), _) => (found.ok_or_else(|| refused(ExitCode::Failure, show.clone()))?, Map::Identity),
    };
    // Messages name entries below the directory they go in: for a rename
    // that is the destination's parent.
    let shown = match &map {
        Map::Rename { .. } => Path::new(&show).parent().map(Path::to_path_buf).unwrap_or_default(),
        _ => PathBuf::from(show),
    };
    Ok(Extractor { base, shown, map, keep_owner: false })
}

fn container_side(root: &StateRoot, name: &str) -> Result<(Side, Option<kist_common::fsutil::Lock>), Error> {
    let id = lifecycle::resolve(root, name)?;
    let state = lifecycle::load(root, &id)?;
    let croot = kist_common::croot::open(root, &state)?;
    // A stopped container's overlay is mounted here: hold its lock so
    // that it is not started on the same upper directory meanwhile.
    let lock = if croot.pid.is_none() { Some(kist_common::container::lock(root, &id)?) } else { None };
    let fd = match croot.pid {
        Some(_) => croot.fd,
        None => {
            // Its volumes and bind mounts too, as docker cp mounts them.
            let binds = kist_common::container::bind_mounts(root, &id)?;
            if binds.is_empty() {
                croot.fd
            } else {
                let rootfs = kist_common::container::ContainerPaths::new(root, &id).rootfs();
                mounts::with_mounts(&id, croot.fd, &rootfs, &binds)?
            }
        }
    };
    Ok((Side { root: Some(fd), label: name.to_string() }, lock))
}

pub fn run(m: &clap::ArgMatches) -> Result<(), Error> {
    let src_arg = m.get_one::<String>("src").cloned().unwrap_or_default();
    let dst_arg = m.get_one::<String>("dst").cloned().unwrap_or_default();
    let keep_owner = m.get_flag("archive");
    let follow = m.get_flag("follow-link");
    let src = parse_endpoint(&src_arg);
    let dst = parse_endpoint(&dst_arg);
    let need_root = || StateRoot::resolve(m.get_one::<PathBuf>("root").map(|p| p.as_path()));
    let host = || Side { root: None, label: String::new() };
    match (src, dst) {
        (Endpoint::Container { name, path }, Endpoint::Host(h)) => {
            let (side, _lock) = container_side(&need_root()?, &name)?;
            let s = open_source(&side, &path, follow)?;
            let mut x = plan_destination(&host(), &h.to_string_lossy(), &s)?;
            x.keep_owner = keep_owner;
            fsops::walk(s.fd, PathBuf::from(&s.name), &mut x)?;
        }
        (Endpoint::Host(h), Endpoint::Container { name, path }) => {
            let s = open_source(&host(), &h.to_string_lossy(), follow)?;
            let (side, _lock) = container_side(&need_root()?, &name)?;
            let mut x = plan_destination(&side, &path, &s)?;
            x.keep_owner = keep_owner;
            fsops::walk(s.fd, PathBuf::from(&s.name), &mut x)?;
        }
        (Endpoint::Container { name, path }, Endpoint::Stream) => {
            let (side, _lock) = container_side(&need_root()?, &name)?;
            let s = open_source(&side, &path, follow)?;
            let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let mut sink = TarSink { builder: tar::Builder::new(out) };
            fsops::walk(s.fd, PathBuf::from(&s.name), &mut sink)?;
            let mut out = sink.builder.into_inner().map_err(FsError::Tar)?;
            std::io::Write::flush(&mut out).map_err(FsError::Tar)?;
        }
        (Endpoint::Stream, Endpoint::Container { name, path }) => {
            let (side, _lock) = container_side(&need_root()?, &name)?;
            let show = side.show(&path);
            let fd = side.open(&path, libc::O_PATH | libc::O_DIRECTORY).map_err(|source| {
                match source.raw_os_error() {
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => refused(
                        ExitCode::NotFound,
                        format!("destination {show} must be an existing directory"),
                    ),
                    _ => Error::Path { what: format!("cannot open {show}"), source },
                }
            })?;
            let mut x = Extractor { base: fd, shown: PathBuf::from(show), map: Map::Identity, keep_owner };
            fsops::read_tar(std::io::stdin().lock(), &mut x)?;
        }
        (Endpoint::Container { .. }, Endpoint::Container { .. }) => {
            return Err(Error::Usage("copying between containers is not supported".into()))
        }
        _ => return Err(Error::Usage("one of SRC and DST must be CONTAINER:PATH".into())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_like_docker() {
        assert_eq!(parse_endpoint("-"), Endpoint::Stream);
        assert_eq!(parse_endpoint("./a:b"), Endpoint::Host("./a:b".into()));
        assert_eq!(parse_endpoint("/x:y"), Endpoint::Host("/x:y".into()));
        assert_eq!(
            parse_endpoint("web:/etc"),
            Endpoint::Container { name: "web".into(), path: "/etc".into() }
        );
        assert_eq!(parse_endpoint("file"), Endpoint::Host("file".into()));
    }

    #[test]
    fn maps_rename_and_drop_the_top() {
        let r = Map::Rename { from: "a".into(), to: "b".into() };
        assert_eq!(r.apply(Path::new("a/x")), Some(PathBuf::from("b/x")));
        let c = Map::ContentOnly { from: "a".into() };
        assert_eq!(c.apply(Path::new("a")), None);
        assert_eq!(c.apply(Path::new("a/x/y")), Some(PathBuf::from("x/y")));
    }
}

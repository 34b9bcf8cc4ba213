//! ctr-logs prints a container's captured output as `docker logs` does:
//! the monitor writes `containers/<id>/log.jsonl` in Docker's json-file
//! format (`{"log":"…\n","stream":"stdout|stderr","time":"RFC3339Nano"}`)
//! and rotates it to `log.jsonl.1` (the newest rotated), `log.jsonl.2`, …
//! (Docker's naming for `--log-opt max-file`). ctr-logs reads the
//! generations oldest first and writes each entry's text raw, stdout
//! entries to stdout and stderr entries to stderr. `--tail` picks the last
//! N entries, then `--since`/`--until` filter them (Docker's order). `-f`
//! follows the live file across rotations and restarts by polling, until
//! the container is removed (its directory is gone), and then exits 0.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use kist_common::lifecycle;
use kist_common::timefmt;
use kist_common::{ExitCode, HasExitCode, StateRoot};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the output")]
    Write(#[source] std::io::Error),
    #[error(transparent)]
    Root(#[from] kist_common::root::RootError),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Read { source, .. } => kist_common::exit::io_exit_code(source),
            Error::Write(_) => ExitCode::Io,
            Error::Root(e) => e.exit_code(),
            Error::Lifecycle(e) => e.exit_code(),
        }
    }
}

pub fn command() -> Command {
    Command::new("ctr-logs")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Show a container's captured output (docker logs)")
        .long_about(
            "Show a container's captured output, as `docker logs` does: what the container wrote \
             to stdout goes to stdout and what it wrote to stderr to stderr, raw. The log is \
             containers/<id>/log.jsonl in Docker's json-file format, plus the rotated log.jsonl.1 \
             (newest) ... log.jsonl.N (oldest).",
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
            Arg::new("container")
                .value_name("CONTAINER")
                .required(true)
                .help("Container id, unique id prefix or name"),
        )
        .arg(
            Arg::new("follow").short('f').long("follow").action(ArgAction::SetTrue).help(
                "Keep printing new output, across restarts and rotation, until the container is removed",
            ),
        )
        .arg(
            Arg::new("tail")
                .short('n')
                .long("tail")
                .value_name("N|all")
                .default_value("all")
                .help("Print only the last N lines"),
        )
        .arg(Arg::new("since").long("since").value_name("TIME").help(
            "Only lines at or after TIME: RFC 3339, unix seconds, or a duration before now (10m, 1h30m)",
        ))
        .arg(
            Arg::new("until")
                .long("until")
                .value_name("TIME")
                .help("Only lines before TIME (same forms as --since)"),
        )
        .arg(
            Arg::new("timestamps")
                .short('t')
                .long("timestamps")
                .action(ArgAction::SetTrue)
                .help("Prefix each line with its RFC 3339 timestamp"),
        )
        .after_help(
            "Examples:\n  \
             ctr-logs web\n  \
             ctr-logs --tail 20 -t web\n  \
             ctr-logs --since 10m --until 2m web 2>/dev/null   # stdout only\n  \
             ctr-logs -f web",
        )
}

pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "Reads containers/<id>/log.jsonl and its rotated generations, one JSON object per line: \
           {\"log\": text, \"stream\": \"stdout\" or \"stderr\", \"time\": RFC 3339 with nanoseconds}. \
           Writes the `log` text raw (not JSON), like docker logs: stdout entries on stdout, stderr \
           entries on stderr. Lines that are not such objects are skipped with one warning.",
    exit_status: kist_common::exit::EXIT_STATUS_TEXT,
    files: "containers/<id>/log.jsonl\n    The live log, written by the monitor.\n\
            containers/<id>/log.jsonl.1 ... log.jsonl.N\n    Rotated generations, .1 the newest \
            (--log-opt max-size, max-file).",
    examples: "ctr-logs web\nctr-logs -f --tail 10 web\nctr-logs -t --since 2026-01-01T00:00:00Z web\n\
               ctr-logs --since 1h --until 30m web",
    see_also: "ctr-spawn(1), ctr-list(1), kist-state(5), docker-logs(1)",
};

/// One log entry as json-file writes it.
#[derive(Debug, serde::Deserialize)]
struct Entry {
    log: String,
    #[serde(default)]
    stream: String,
    #[serde(default)]
    time: String,
}

#[derive(Debug, Clone)]
struct Options {
    tail: Option<usize>,
    since: Option<i128>,
    until: Option<i128>,
    timestamps: bool,
}

/// Where entries go, with a writer per stream.
struct Sink {
    out: std::io::BufWriter<std::io::Stdout>,
    err: std::io::Stderr,
    timestamps: bool,
    malformed: usize,
}

/// EPIPE on our output: the reader has gone (`ctr-logs web | head`), not a failure.
#[derive(Debug)]
struct Closed;

impl Sink {
    fn write(&mut self, e: &Entry) -> Result<(), Result<Closed, Error>> {
        let prefix = if self.timestamps { format!("{} ", e.time) } else { String::new() };
        let r = if e.stream == "stderr" {
            self.out.flush().and_then(|_| {
                let mut w = self.err.lock();
                w.write_all(prefix.as_bytes()).and_then(|_| w.write_all(e.log.as_bytes()))
            })
        } else {
            self.out.write_all(prefix.as_bytes()).and_then(|_| self.out.write_all(e.log.as_bytes()))
        };
        r.map_err(closed_or)
    }

    fn flush(&mut self) -> Result<(), Result<Closed, Error>> {
        self.out.flush().map_err(closed_or)
    }
}

fn closed_or(e: std::io::Error) -> Result<Closed, Error> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(Closed)
    } else {
        Err(Error::Write(e))
    }
}

fn parse_entry(line: &str, sink: &mut Sink) -> Option<Entry> {
    let t = line.trim_end_matches(['\n', '\r']);
    if t.trim().is_empty() {
        return None;
    }
    match serde_json::from_str::<Entry>(t) {
        Ok(e) => Some(e),
        Err(_) => {
            sink.malformed += 1;
            None
        }
    }
}

fn entry_time(e: &Entry) -> Option<i128> {
    timefmt::parse_rfc3339_nanos(&e.time)
}

/// True if the entry passes --since/--until; `Err(())` once past --until.
fn in_window(e: &Entry, o: &Options) -> Result<bool, ()> {
    if o.since.is_none() && o.until.is_none() {
        return Ok(true);
    }
    let Some(t) = entry_time(e) else { return Ok(false) };
    if o.until.is_some_and(|u| t >= u) {
        return Err(());
    }
    Ok(o.since.is_none_or(|s| t >= s))
}

fn parse_time(flag: &str, v: &str) -> Result<i128, Error> {
    timefmt::parse_timestamp(v, timefmt::now_nanos()).ok_or_else(|| {
        Error::Usage(format!(
            "invalid value for --{flag}: {v:?} (RFC 3339, unix seconds or a duration like 10m)"
        ))
    })
}

/// The live file, read incrementally: its inode tells a rotation apart.
struct Live {
    file: File,
    inode: u64,
    pos: u64,
    partial: String,
}

impl Live {
    fn open(path: &Path) -> Option<Live> {
        let file = File::open(path).ok()?;
        let inode = file.metadata().ok()?.ino();
        Some(Live { file, inode, pos: 0, partial: String::new() })
    }

    /// Complete lines appended since the last call.
    fn read_lines(&mut self) -> Vec<String> {
        if let Ok(m) = self.file.metadata() {
            if m.len() < self.pos {
                // Truncated in place: start over.
                self.pos = 0;
                self.partial.clear();
            }
        }
        let mut buf = Vec::new();
        if self.file.seek(SeekFrom::Start(self.pos)).is_err() {
            return Vec::new();
        }
        let n = (&self.file).read_to_end(&mut buf).unwrap_or(0);
        self.pos += n as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut out = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            out.push(line);
        }
        out
    }
}

pub fn run(matches: &ArgMatches) -> Result<(), Error> {
    let root = StateRoot::resolve(matches.get_one::<PathBuf>("root").map(PathBuf::as_path))?;
    let query = matches.get_one::<String>("container").cloned().unwrap_or_default();
    let tail = match matches.get_one::<String>("tail").map(String::as_str) {
        None | Some("all") => None,
        Some(n) => match n.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(n as usize),
            Err(_) => return Err(Error::Usage(format!("invalid value for --tail: {n:?} (a number or all)"))),
        },
    };
    let opts = Options {
        tail,
        since: matches.get_one::<String>("since").map(|v| parse_time("since", v)).transpose()?,
        until: matches.get_one::<String>("until").map(|v| parse_time("until", v)).transpose()?,
        timestamps: matches.get_flag("timestamps"),
    };
    let id = lifecycle::resolve(&root, &query)?;
    let dir = root.container_dir(&id);
    let mut sink = Sink {
        out: std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()),
        err: std::io::stderr(),
        timestamps: opts.timestamps,
        malformed: 0,
    };
    let result = show(&dir, &opts, matches.get_flag("follow"), &mut sink);
    if sink.malformed > 0 {
        kist_common::warn!("skipped {} lines that are not json-file log entries", sink.malformed);
    }
    match result {
        Ok(()) | Err(Ok(Closed)) => Ok(()),
        Err(Err(e)) => Err(e),
    }
}

fn show(dir: &Path, o: &Options, follow: bool, sink: &mut Sink) -> Result<(), Result<Closed, Error>> {
    let files = lifecycle::log_files(dir);
    let (rotated, live_path) = files.split_at(files.len().saturating_sub(1));
    let live_path = live_path.first().cloned().unwrap_or_else(|| dir.join("log.jsonl"));
    // The live file is opened first and read through its descriptor, so
    // that a rotation during the read loses nothing.
    let mut live = Live::open(&live_path);
    let mut ring: VecDeque<Entry> = VecDeque::new();
    let mut past_until = false;
    let mut take =
        |e: Entry, sink: &mut Sink, ring: &mut VecDeque<Entry>| -> Result<(), Result<Closed, Error>> {
            match o.tail {
                Some(0) => Ok(()),
                Some(n) => {
                    if ring.len() == n {
                        ring.pop_front();
                    }
                    ring.push_back(e);
                    Ok(())
                }
                None => match in_window(&e, o) {
                    Ok(true) => sink.write(&e),
                    Ok(false) => Ok(()),
                    Err(()) => {
                        past_until = true;
                        Ok(())
                    }
                },
            }
        };
    for path in rotated {
        let f = match File::open(path) {
            Ok(f) => f,
            // Rotated away meanwhile: its entries are in an older generation now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(Err(Error::Read { path: path.clone(), source })),
        };
        for line in BufReader::new(f).lines() {
            let line = line.map_err(|source| Err(Error::Read { path: path.clone(), source }))?;
            if let Some(e) = parse_entry(&line, sink) {
                take(e, sink, &mut ring)?;
            }
        }
    }
    if let Some(l) = live.as_mut() {
        for line in l.read_lines() {
            if let Some(e) = parse_entry(&line, sink) {
                take(e, sink, &mut ring)?;
            }
        }
    }
    for e in ring.drain(..) {
        match in_window(&e, o) {
            Ok(true) => sink.write(&e)?,
            Ok(false) => {}
            Err(()) => {
                past_until = true;
                break;
            }
        }
    }
    sink.flush()?;
    if !follow || past_until {
        return Ok(());
    }
    let emit = |line: &str, sink: &mut Sink| -> Result<bool, Result<Closed, Error>> {
        if let Some(e) = parse_entry(line, sink) {
            match in_window(&e, o) {
                Ok(true) => sink.write(&e)?,
                Ok(false) => {}
                Err(()) => return Ok(false),
            }
        }
        Ok(true)
    };
    loop {
        if let Some(l) = live.as_mut() {
            for line in l.read_lines() {
                if !emit(&line, sink)? {
                    return sink.flush();
                }
            }
        }
        sink.flush()?;
        if !dir.is_dir() {
            return Ok(());
        }
        if o.until.is_some_and(|u| timefmt::now_nanos() >= u) {
            return Ok(());
        }
        // Rotated: the path names a new file. Drain the old one (done just
        // above, and once more for what landed since), then switch.
        let current = std::fs::metadata(&live_path).ok().map(|m| m.ino());
        let rotated = match (&live, current) {
            (Some(l), Some(ino)) => l.inode != ino,
            (None, Some(_)) => true,
            _ => false,
        };
        if rotated {
            if let Some(l) = live.as_mut() {
                for line in l.read_lines() {
                    if !emit(&line, sink)? {
                        return sink.flush();
                    }
                }
            }
            live = Live::open(&live_path);
            continue;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(t: &str) -> Entry {
        Entry { log: "x\n".into(), stream: "stdout".into(), time: t.into() }
    }

    #[test]
    fn window_bounds() {
        let o = Options {
            tail: None,
            since: timefmt::parse_rfc3339_nanos("2026-01-01T00:00:10Z"),
            until: timefmt::parse_rfc3339_nanos("2026-01-01T00:00:20Z"),
            timestamps: false,
        };
        assert_eq!(in_window(&entry("2026-01-01T00:00:05Z"), &o), Ok(false));
        assert_eq!(in_window(&entry("2026-01-01T00:00:10.000000001Z"), &o), Ok(true));
        assert_eq!(in_window(&entry("2026-01-01T00:00:20Z"), &o), Err(()));
    }
}

//! ctr-list lists containers as `docker ps` does: one `container` record
//! per container (JSON Lines), or docker ps' table. It reads the state
//! directory only: one readdir of `containers/` and one small read of each
//! `state.json` (replaced atomically by writers, so never seen half
//! written, and read without locks). Running states are checked against
//! the living processes, so a container whose process or owner died, or
//! that ran before a reboot, is shown as it really is (see
//! kist_common::lifecycle).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use kist_common::container::{ContainerState, Status};
use kist_common::lifecycle::{self, Host};
use kist_common::output::{self, Format};
use kist_common::record::{ContainerRecord, Record};
use kist_common::template::{self, Row};
use kist_common::{ExitCode, HasExitCode, StateRoot};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Root(#[from] kist_common::root::RootError),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Root(e) => e.exit_code(),
            Error::Lifecycle(e) => e.exit_code(),
            Error::Stdout(_) => ExitCode::Io,
        }
    }
}

pub fn command() -> Command {
    Command::new("ctr-list")
        .version(env!("CARGO_PKG_VERSION"))
        .about("List containers and their state (docker ps)")
        .long_about(
            "List containers as `docker ps` does: running ones by default, all with -a. \
             Prints one `container` record per container (JSON Lines) or, with --format table, \
             docker ps' columns. The newest container comes first.\n\n\
             A state that says running whose process is gone is shown `exited` (exit code 255 \
             unless one was recorded) with a `note`; one whose process still runs but whose owner \
             (ctr-spawn or its monitor) died is shown `dead`; state from before a reboot is \
             `exited`.",
        )
        .arg(
            Arg::new("root")
                .long("root")
                .global(true)
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("State root (default $KIST_ROOT, else /var/lib/kist)"),
        )
        .arg(Arg::new("all").short('a').long("all").action(ArgAction::SetTrue).help("Show all containers (default: running only)"))
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("Print only container ids, one per line"))
        .arg(Arg::new("latest").short('l').long("latest").action(ArgAction::SetTrue).help("Show the latest created container (any state)"))
        .arg(
            Arg::new("last")
                .short('n')
                .long("last")
                .value_name("N")
                .value_parser(clap::value_parser!(i64))
                .help("Show the N last created containers (any state)"),
        )
        .arg(
            Arg::new("filter")
                .short('f')
                .long("filter")
                .value_name("KEY=VALUE")
                .action(ArgAction::Append)
                .help("Filter: name=, id=, status=, label=KEY[=VALUE], ancestor=IMAGE, exited=CODE (same key: OR; different keys: AND)"),
        )
        .arg(Arg::new("no-trunc").long("no-trunc").action(ArgAction::SetTrue).help("Do not truncate ids and commands"))
        .arg(
            Arg::new("inspect")
                .long("inspect")
                .action(ArgAction::SetTrue)
                .help("Print docker inspect's document of the CONTAINERs named (a JSON array), or --format TEMPLATE rendered over each (Go template: {{.State.Running}}, {{json .Config}}, {{range .Mounts}}...{{end}})"),
        )
        .arg(
            Arg::new("container")
                .value_name("CONTAINER")
                .num_args(0..)
                .requires("inspect")
                .help("With --inspect: containers by id, name or unique id prefix"),
        )
        .arg(
            Arg::new("format")
                .long("format")
                .value_name("json|table|TEMPLATE")
                .help("Output format: json, table, or a Go template over Docker's fields ({{.ID}}, 'table {{.Names}}\\t{{.Status}}', {{json .}}); default table on a terminal, JSON Lines otherwise"),
        )
        .after_help(
            "Examples:\n  \
             ctr-list --format table\n  \
             ctr-list -a --filter status=exited --filter status=dead -q\n  \
             ctr-list -a --filter label=app=web | ctr-kill --stop --rm\n  \
             ctr-list --inspect --format '{{.State.Pid}} {{.NetworkSettings.IPAddress}}' web",
        )
}

pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "Reads nothing on stdin. Prints one `container` record per container: id, name, names, image, \
           imageRef, command, created, state (created, running, paused, restarting, removing, exited, dead), \
           status (Docker's words: \"Up 5 seconds\", \"Exited (0) 2 minutes ago\", \"Up 1 minute (Paused)\"), \
           ports, labels, pid, exitCode, restartCount, startedAt, finishedAt, oomKilled, and note when the \
           state differs from what state.json records (a dead process or owner, a reboot). \
           With -q, bare ids, one per line (12 digits unless --no-trunc), which ctr-kill reads as well. \
           With --inspect, docker inspect's documents of the containers named instead (a JSON array \
           indented as docker's: Id, Created, Path, Args, State, Image, Name, RestartCount, HostConfig \
           (AutoRemove, NetworkMode, RestartPolicy), Mounts, Config (Hostname, User, Tty, Env, Cmd, \
           Image, WorkingDir, Labels), NetworkSettings (Ports, IPAddress, Networks)), or --format \
           TEMPLATE rendered over each as a Go template; a key the document lacks is an error.",
    exit_status: kist_common::exit::EXIT_STATUS_TEXT,
    files: "containers/<id>/state.json\n    Read once per container, without locking.\n\
            /proc/<pid>/stat\n    Read for running containers to check that their process and owner live.\n\
            /proc/sys/kernel/random/boot_id\n    Compared with the boot id a running state recorded.",
    examples: "ctr-list --format table\nctr-list -aq\nctr-list -a --filter status=exited --filter exited=137\n\
               ctr-list -a --filter name=web --filter label=tier=front",
    see_also: "ctr-kill(1), ctr-spawn(1), ctr-logs(1), kist-state(5), kist-records(5), docker-ps(1)",
};

/// `--filter` parsed: values per key.
#[derive(Debug, Default)]
pub struct Filters {
    by_key: BTreeMap<String, Vec<String>>,
    exited: Vec<i32>,
    status: Vec<Status>,
}

const STATUSES: [Status; 7] = [
    Status::Created,
    Status::Restarting,
    Status::Running,
    Status::Removing,
    Status::Paused,
    Status::Exited,
    Status::Dead,
];

impl Filters {
    pub fn parse(values: &[String]) -> Result<Filters, Error> {
        let mut f = Filters::default();
        for v in values {
            let (k, val) = v
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("bad format of filter (expected name=value): {v}")))?;
            let key = k.trim().to_ascii_lowercase();
            match key.as_str() {
                "name" | "id" | "label" | "ancestor" => {}
                "status" => {
                    let s = STATUSES
                        .iter()
                        .find(|s| s.as_str() == val)
                        .ok_or_else(|| Error::Usage(format!("invalid filter 'status={val}'")))?;
                    f.status.push(*s);
                }
                "exited" => {
                    let code = val
                        .parse::<i32>()
                        .map_err(|_| Error::Usage(format!("invalid filter 'exited={val}'")))?;
                    f.exited.push(code);
                }
                _ => return Err(Error::Usage(format!("invalid filter '{k}'"))),
            }
            f.by_key.entry(key).or_default().push(val.to_string());
        }
        Ok(f)
    }

    /// Docker shows stopped containers without -a when a status filter asks for them.
    pub fn implies_all(&self) -> bool {
        !self.status.is_empty()
    }

    fn any(&self, key: &str, pred: impl Fn(&str) -> bool) -> bool {
        match self.by_key.get(key) {
            None => true,
            Some(vals) => vals.iter().any(|v| pred(v)),
        }
    }

    pub fn matches(&self, rec: &ContainerRecord) -> bool {
        self.any("name", |v| name_matches(&rec.name, v))
            && self.any("id", |v| rec.id.starts_with(&v.to_ascii_lowercase()))
            && (self.status.is_empty() || self.status.contains(&rec.state))
            && (self.exited.is_empty()
                || (rec.state == Status::Exited && rec.exit_code.is_some_and(|c| self.exited.contains(&c))))
            && self.any("label", |v| match v.split_once('=') {
                Some((k, want)) => rec.labels.get(k).is_some_and(|have| have == want),
                None => rec.labels.contains_key(v),
            })
            && self.any("ancestor", |v| ancestor_matches(rec, v))
    }
}

/// Docker matches names with a regular expression; kist takes the common
/// cases of one: a substring, anchored with `^` and/or `$`.
fn name_matches(name: &str, pattern: &str) -> bool {
    let p = pattern.strip_prefix('/').unwrap_or(pattern);
    let (start, p) = match p.strip_prefix('^') {
        Some(rest) => (true, rest.strip_prefix('/').unwrap_or(rest)),
        None => (false, p),
    };
    let (end, p) = match p.strip_suffix('$') {
        Some(rest) => (true, rest),
        None => (false, p),
    };
    match (start, end) {
        (true, true) => name == p,
        (true, false) => name.starts_with(p),
        (false, true) => name.ends_with(p),
        (false, false) => name.contains(p),
    }
}

/// The image by id (`sha256:…` or a hex prefix) or by reference; a
/// reference without tag matches every tag of the repository.
fn ancestor_matches(rec: &ContainerRecord, want: &str) -> bool {
    let hex = rec.image.hex();
    let w = want.strip_prefix("sha256:").unwrap_or(want);
    if w.len() >= 4 && w.bytes().all(|b| b.is_ascii_hexdigit()) && hex.starts_with(&w.to_ascii_lowercase()) {
        return true;
    }
    let Some(have) = rec.image_ref.as_deref().and_then(|r| r.parse::<kist_common::Reference>().ok()) else {
        return false;
    };
    let Ok(want_ref) = want.parse::<kist_common::Reference>() else { return false };
    if have.name() != want_ref.name() {
        return false;
    }
    let explicit_tag = want.rsplit('/').next().is_some_and(|last| last.contains(':')) || want.contains('@');
    !explicit_tag
        || have.tag() == want_ref.tag() && (want_ref.digest().is_none() || have.digest() == want_ref.digest())
}

/// Reads every container's record, newest first. A state that cannot be
/// read (a container being created or removed right now) is skipped.
pub fn collect(root: &StateRoot, host: &Host) -> Result<Vec<ContainerRecord>, Error> {
    let ids = lifecycle::container_ids(root)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let path = root.container_dir(&id).join("state.json");
        match ContainerState::load(&path) {
            Ok(state) => out.push(lifecycle::record(&state, host)),
            Err(kist_common::container::ContainerError::NotFound(_)) => {}
            Err(e) => kist_common::warn!("skipping container {id}: {e}"),
        }
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// docker ps' IMAGE: the image as the user named it (`bb`, `bb:1`, an ID
/// prefix); a name kist normalised itself (`docker.io/library/bb:latest`,
/// from a record piped in) in its familiar form.
fn image_column(rec: &ContainerRecord, trunc: bool) -> String {
    match rec.image_ref.as_deref() {
        Some(r) if !r.starts_with("docker.io/") => r.to_string(),
        Some(r) => {
            r.parse::<kist_common::Reference>().map(|r| r.familiar()).unwrap_or_else(|_| r.to_string())
        }
        None if trunc => rec.image.hex()[..12].to_string(),
        None => rec.image.to_string(),
    }
}

/// Docker's Ellipsis: at most `max` characters, the last one `…` when cut.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Go's strconv.Quote for the COMMAND column (the common escapes).
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `docker ps` table row.
pub fn table_row(rec: &ContainerRecord, trunc: bool, now: f64) -> Vec<String> {
    let id = if trunc { rec.id.chars().take(12).collect() } else { rec.id.clone() };
    let cmd = rec.command.join(" ");
    let cmd = quote(&if trunc { ellipsis(&cmd, 20) } else { cmd });
    let created = kist_common::timefmt::parse_rfc3339(&rec.created)
        .map(|t| format!("{} ago", output::human_duration((now - t).max(0.0) as u64)))
        .unwrap_or_default();
    vec![
        id,
        image_column(rec, trunc),
        cmd,
        created,
        rec.status.clone(),
        rec.ports.join(", "),
        rec.names.join(","),
    ]
}

/// The record as Docker's ps template fields (`{{.ID}}`, `{{.Names}}`, ...).
pub fn template_row(rec: &ContainerRecord, trunc: bool, now: f64) -> Row {
    let cells = table_row(rec, trunc, now);
    let labels: Vec<String> = rec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let [id, image, command, running_for, status, ports, names]: [String; 7] =
        cells.try_into().unwrap_or_default();
    Row {
        fields: vec![
            ("ID", id),
            ("Image", image),
            ("Command", command),
            ("CreatedAt", template::created_at(&rec.created)),
            ("RunningFor", running_for),
            ("Ports", ports),
            ("Status", status),
            ("State", rec.state.as_str().to_string()),
            ("Names", names),
            ("Labels", labels.join(",")),
            ("Size", "0B".to_string()),
            (
                "Mounts",
                rec.mounts
                    .iter()
                    .map(|m| if trunc { ellipsis(m, 15) } else { m.clone() })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("Networks", rec.networks.join(",")),
            ("LocalVolumes", "0".to_string()),
        ],
        labels: rec.labels.clone(),
    }
}

/// docker ps' Mounts (each volume's name, else the bind source, cut to 15
/// characters unless --no-trunc) and LocalVolumes (how many are volumes),
/// from the container's config.json; the record's volumes if that cannot
/// be read (a container being removed).
fn add_mounts(row: &mut Row, root: &StateRoot, rec: &ContainerRecord, trunc: bool) {
    let Ok(mounts) = kist_common::container::user_mounts(root, &rec.id) else { return };
    let cut = |m: String| if trunc { ellipsis(&m, 15) } else { m };
    let names: Vec<String> = mounts
        .iter()
        .map(|m| cut(m.volume.clone().unwrap_or_else(|| m.source.display().to_string())))
        .collect();
    row.set("Mounts", names.join(","));
    row.set("LocalVolumes", mounts.iter().filter(|m| m.volume.is_some()).count().to_string());
}

/// docker ps' column headers.
pub fn header(field: &str) -> Option<String> {
    let h = match field {
        "ID" => "CONTAINER ID",
        "RunningFor" => "CREATED",
        "CreatedAt" => "CREATED AT",
        "LocalVolumes" => "LOCAL VOLUMES",
        "Image" | "Command" | "Ports" | "Status" | "State" | "Names" | "Labels" | "Size" | "Mounts"
        | "Networks" => return Some(field.to_uppercase()),
        _ => return None,
    };
    Some(h.to_string())
}

/// `docker ps`' default table.
pub const DEFAULT_TABLE: &str =
    "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}\\t{{.Ports}}\\t{{.Names}}";

/// `--inspect`: docker inspect's documents of the containers named, as a
/// JSON array (Docker's indentation) or one rendered template each. Every
/// container found is printed; one not found fails the run afterwards.
fn inspect(root: &StateRoot, matches: &ArgMatches) -> Result<(), Error> {
    use std::io::Write;
    let format = matches.get_one::<String>("format").filter(|f| *f != "json");
    let tmpl = format
        .map(|f| kist_common::gotmpl::GoTemplate::parse(f))
        .transpose()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let host = Host::probe();
    let mut docs = Vec::new();
    let mut missing = Vec::new();
    for q in matches.get_many::<String>("container").into_iter().flatten() {
        let found = lifecycle::resolve(root, q).and_then(|id| Ok(lifecycle::load(root, &id)?));
        match found {
            Ok(state) => docs.push(kist_common::inspect::container(root, &lifecycle::record(&state, &host))),
            Err(e) => missing.push(e),
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match &tmpl {
        Some(t) => {
            for d in &docs {
                let line = t.render(d).map_err(|e| Error::Usage(e.to_string()))?;
                writeln!(out, "{line}").map_err(Error::Stdout)?;
            }
        }
        None => writeln!(out, "{}", kist_common::inspect::pretty_array(&docs)).map_err(Error::Stdout)?,
    }
    out.flush().map_err(Error::Stdout)?;
    // Each one not found is said; the last is the run's error.
    let last = missing.pop();
    for e in &missing {
        kist_common::diag::report(e);
    }
    match last {
        Some(e) => Err(Error::Lifecycle(e)),
        None => Ok(()),
    }
}

pub fn run(matches: &ArgMatches) -> Result<(), Error> {
    use std::io::Write;
    let root = StateRoot::resolve(matches.get_one::<PathBuf>("root").map(PathBuf::as_path))?;
    if matches.get_flag("inspect") {
        return inspect(&root, matches);
    }
    let format = template::Choice::parse(matches.get_one::<String>("format").map(String::as_str))
        .map_err(|e| Error::Usage(e.to_string()))?;
    let filter_args: Vec<String> =
        matches.get_many::<String>("filter").map(|v| v.cloned().collect()).unwrap_or_default();
    let filters = Filters::parse(&filter_args)?;
    let trunc = !matches.get_flag("no-trunc");
    let mut limit = matches.get_one::<i64>("last").copied().filter(|n| *n > 0).map(|n| n as usize);
    if matches.get_flag("latest") {
        limit = Some(1);
    }
    let all = matches.get_flag("all") || limit.is_some() || filters.implies_all();

    let host = Host::probe();
    let mut recs = collect(&root, &host)?;
    // -n/-l pick the last created before filtering, as Docker does.
    if let Some(n) = limit {
        recs.truncate(n);
    }
    recs.retain(|r| {
        (all || matches!(r.state, Status::Running | Status::Paused | Status::Restarting))
            && filters.matches(r)
    });

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if matches.get_flag("quiet") {
        for r in &recs {
            let id = if trunc { &r.id[..12.min(r.id.len())] } else { &r.id };
            writeln!(out, "{id}").map_err(Error::Stdout)?;
        }
    } else if format != template::Choice::Plain(Format::Json) {
        let tmpl = match format {
            template::Choice::Template(t) => t,
            template::Choice::Plain(_) => {
                template::Template::parse(DEFAULT_TABLE).map_err(|e| Error::Usage(e.to_string()))?
            }
        };
        // Mounts and LocalVolumes need the container's config.json: read
        // only when the template shows them.
        let mounts = tmpl.uses("Mounts") || tmpl.uses("LocalVolumes");
        let rows: Vec<Row> = recs
            .iter()
            .map(|r| {
                let mut row = template_row(r, trunc, host.now);
                if mounts {
                    add_mounts(&mut row, &root, r, trunc);
                }
                row
            })
            .collect();
        let t = tmpl.render(&rows, &header).map_err(|e| Error::Usage(e.to_string()))?;
        out.write_all(t.as_bytes()).map_err(Error::Stdout)?;
    } else {
        for r in recs {
            let line = Record::Container(r).to_line();
            out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n")).map_err(Error::Stdout)?;
        }
    }
    out.flush().map_err(Error::Stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipsis_like_docker() {
        assert_eq!(ellipsis("sleep 1000", 20), "sleep 1000");
        assert_eq!(ellipsis("sh -c 'while true; do echo hi; done'", 20), "sh -c 'while true; …");
        assert_eq!(ellipsis("sh -c 'while true; do echo hi; done'", 20).chars().count(), 20);
        assert_eq!(quote("a \"b\""), "\"a \\\"b\\\"\"");
    }

    #[test]
    fn names_match_as_anchored_substrings() {
        assert!(name_matches("web-1", "web"));
        assert!(name_matches("web-1", "^web"));
        assert!(!name_matches("my-web", "^web"));
        assert!(name_matches("web", "^/web$"));
        assert!(!name_matches("web1", "^web$"));
    }

    #[test]
    fn bad_filters_are_usage_errors() {
        assert!(Filters::parse(&["status=sleeping".into()]).is_err());
        assert!(Filters::parse(&["exited=x".into()]).is_err());
        assert!(Filters::parse(&["colour=red".into()]).is_err());
        assert!(Filters::parse(&["noequals".into()]).is_err());
        assert!(Filters::parse(&["status=exited".into(), "exited=0".into()]).unwrap().implies_all());
    }
}

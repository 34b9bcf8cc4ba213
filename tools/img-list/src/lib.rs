//! img-list: the images in the store, as `image` records (JSON Lines) or
//! as `docker images` prints them (REPOSITORY TAG IMAGE ID CREATED SIZE).
//! One row per name; an image without a name is shown as `<none>`.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use kist_common::catalog::{self, CatalogError, Image};
use kist_common::output::{self, Format};
use kist_common::record::Record;
use kist_common::root::RootError;
use kist_common::store::{Store, StoreError};
use kist_common::template::{self, Row};
use kist_common::{ExitCode, HasExitCode, Reference, StateRoot};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write standard output")]
    Stdout(#[source] std::io::Error),
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Root(e) => e.exit_code(),
            Error::Store(e) => e.exit_code(),
            Error::Catalog(e) => e.exit_code(),
            Error::Usage(_) => ExitCode::Usage,
            Error::Stdout(_) => ExitCode::Io,
        }
    }
}

pub fn command() -> Command {
    Command::new("img-list")
        .about("List the images in the kist store")
        .long_about(
            "Lists the images the store's index.json names, one row per name (an image with two \
             tags shows twice; one with none shows as <none>), newest first. JSON Lines of \
             `image` records by default when stdout is not a terminal, docker images' table \
             with --format table.",
        )
        .arg(
            Arg::new("root")
                .long("root")
                .global(true)
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("State root (default $KIST_ROOT, else /var/lib/kist or $XDG_DATA_HOME/kist)"),
        )
        .arg(
            Arg::new("quiet")
                .short('q')
                .long("quiet")
                .action(ArgAction::SetTrue)
                .help("Print image IDs only, one per line"),
        )
        .arg(
            Arg::new("no-trunc")
                .long("no-trunc")
                .action(ArgAction::SetTrue)
                .help("Print full image IDs (sha256:…) in the table and with -q"),
        )
        .arg(
            Arg::new("format")
                .long("format")
                .value_name("json|table|TEMPLATE")
                .help("json (JSON Lines, the default when stdout is not a terminal), table, or a Go template over Docker's fields ({{.Repository}}:{{.Tag}}, 'table {{.ID}}\\t{{.Size}}', {{json .}})"),
        )
        .arg(
            Arg::new("dangling")
                .long("dangling")
                .action(ArgAction::SetTrue)
                .help("Only images without a name (what img-rm --prune removes)"),
        )
        .arg(
            Arg::new("inspect")
                .long("inspect")
                .action(ArgAction::SetTrue)
                .help("Print docker image inspect's document of the image named (by name, ID or ID prefix) as a JSON array, or --format TEMPLATE rendered over it (Go template: {{.Id}}, {{json .Config.Env}}, {{range .RepoTags}}...{{end}})"),
        )
        .arg(
            Arg::new("repository")
                .value_name("REPOSITORY[:TAG]")
                .help("Only images of this repository (and tag), e.g. busybox or 127.0.0.1:5000/app:1"),
        )
        .after_help(
            "Examples:\n  img-list --format table\n  img-list -q | img-rm\n  img-list busybox | jq -r .id",
        )
}

pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "Writes one `image` record per name (see kist-records(5)): id (image ID, the config \
           digest), reference (the full name), digest (manifest), indexDigest, mediaType, config, \
           layers, diffIds, platform, created, size (compressed: manifest, config and layers), \
           store, and in addition repository and tag (\"<none>\" for an image without a name), \
           as docker images shows them. The table's SIZE (and {{.Size}}) is the unpacked size \
           once img-unpack has made every layer's snapshot, counted as docker images counts it \
           (the apparent sizes of the layers' files and symlinks, a file with several hard links \
           once, directories nothing), else the compressed size. With -q, bare image IDs instead, one per line, which \
           img-rm and img-unpack read. With --inspect, docker image inspect's document of the image \
           named instead (a JSON array: Id, RepoTags, RepoDigests, Created, Architecture, Os, Size, \
           Config, RootFS), or --format TEMPLATE rendered over it as a Go template. Reads nothing.",
    exit_status: kist_common::exit::EXIT_STATUS_TEXT,
    files: kist_common::man::STATE_FILES,
    examples: "img-list --format table\nimg-list -q | img-rm\nimg-list --dangling",
    see_also: "img-fetch(1), img-rm(1), img-unpack(1), kist-records(5)",
};

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds of an RFC 3339 time (`2023-11-14T22:13:20.5+01:00`).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) =
        (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" | "" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            let oh: i64 = r[1..3].parse().ok()?;
            let om: i64 = r[4..6].parse().ok()?;
            let o = oh * 3600 + om * 60;
            if r.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Repository and tag as docker images shows them.
fn repo_tag(img: &Image) -> (String, String) {
    match img.ref_name.as_deref() {
        None => ("<none>".into(), "<none>".into()),
        Some(name) => match name.parse::<Reference>() {
            Ok(r) => (r.familiar_name(), r.tag().unwrap_or("<none>").to_string()),
            Err(_) => (name.to_string(), "<none>".into()),
        },
    }
}

fn matches_filter(img: &Image, filter: &str) -> bool {
    let Some(name) = img.ref_name.as_deref() else { return false };
    if catalog::name_matches(name, filter) {
        return true;
    }
    // A repository without a tag matches every tag of it.
    if !filter.rsplit('/').next().unwrap_or("").contains(':') && !filter.contains('@') {
        if let (Ok(a), Ok(b)) = (name.parse::<Reference>(), filter.parse::<Reference>()) {
            return a.name() == b.name();
        }
    }
    false
}

/// `docker images`' default table.
pub const DEFAULT_TABLE: &str = "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}";

/// docker images' column headers.
pub fn header(field: &str) -> Option<String> {
    let h = match field {
        "ID" => "IMAGE ID",
        "CreatedSince" => "CREATED",
        "CreatedAt" => "CREATED AT",
        "VirtualSize" => "VIRTUAL SIZE",
        "SharedSize" => "SHARED SIZE",
        "UniqueSize" => "UNIQUE SIZE",
        "Repository" | "Tag" | "Digest" | "Size" | "Containers" => return Some(field.to_uppercase()),
        _ => return None,
    };
    Some(h.to_string())
}

/// The SIZE column: the unpacked size once every layer has its snapshot
/// (what `docker images` shows), else the compressed size.
pub fn shown_size(i: &Image, root: &StateRoot) -> u64 {
    i.unpacked_size(root).unwrap_or_else(|| i.size())
}

/// An image as Docker's images template fields (`{{.Repository}}`, `{{.ID}}`, ...).
/// `size` is what the SIZE column shows (see [`shown_size`]).
pub fn template_row(i: &Image, id: &str, now: i64, size: u64) -> Row {
    let (repo, tag) = repo_tag(i);
    let since = match i.created.as_deref().and_then(parse_rfc3339) {
        Some(t) => format!("{} ago", output::human_duration((now - t).max(0) as u64)),
        None => "N/A".to_string(),
    };
    let size = output::human_size_decimal(size);
    let created_at = i.created.as_deref().map(template::created_at).unwrap_or_default();
    let digest = if i.ref_name.is_some() { i.manifest.to_string() } else { "<none>".to_string() };
    Row {
        fields: vec![
            ("Repository", repo),
            ("Tag", tag),
            ("ID", id.to_string()),
            ("Digest", digest),
            ("CreatedSince", since),
            ("CreatedAt", created_at),
            ("Size", size.clone()),
            ("VirtualSize", size),
            ("SharedSize", "N/A".to_string()),
            ("UniqueSize", "N/A".to_string()),
            ("Containers", "N/A".to_string()),
        ],
        labels: i.run_config.labels.clone(),
    }
}

/// docker image inspect's document of one image (every name in the store
/// that holds it as RepoTags and RepoDigests), the fields kist knows.
fn inspect_doc(img: &Image, all: &[Image], root: &StateRoot) -> serde_json::Value {
    use serde_json::json;
    let names: Vec<Reference> = all
        .iter()
        .filter(|i| i.id == img.id)
        .filter_map(|i| i.ref_name.as_deref().and_then(|n| n.parse::<Reference>().ok()))
        .collect();
    let tags: Vec<String> = names.iter().filter(|r| r.tag().is_some()).map(|r| r.familiar()).collect();
    let digests: Vec<String> = names
        .iter()
        .map(|r| format!("{}@{}", r.familiar_name(), img.manifest))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let rc = &img.run_config;
    let set = |v: &[String]| -> serde_json::Value {
        if v.is_empty() {
            serde_json::Value::Null
        } else {
            v.iter().map(|k| (k.clone(), json!({}))).collect::<serde_json::Map<_, _>>().into()
        }
    };
    let size = shown_size(img, root);
    json!({
        "Id": img.id.to_string(),
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": "",
        "Comment": "",
        "Created": img.created.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "Architecture": img.platform.architecture,
        "Variant": img.platform.variant,
        "Os": img.platform.os,
        "Size": size,
        "VirtualSize": size,
        "Config": {
            "User": rc.user,
            "ExposedPorts": set(&rc.exposed_ports),
            "Env": rc.env,
            "Cmd": rc.cmd,
            "Volumes": set(&rc.volumes),
            "WorkingDir": rc.working_dir,
            "Entrypoint": rc.entrypoint,
            "Labels": if rc.labels.is_empty() { serde_json::Value::Null } else { json!(rc.labels) },
            "StopSignal": if rc.stop_signal.is_empty() { serde_json::Value::Null } else { json!(rc.stop_signal) },
        },
        "RootFS": {"Type": "layers", "Layers": img.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
    })
}

/// `--inspect`: the image named by REPOSITORY[:TAG] or an image ID (prefix).
fn inspect(store: &Store, images: &[Image], matches: &ArgMatches) -> Result<(), Error> {
    use std::io::Write;
    let q = matches.get_one::<String>("repository").cloned().unwrap_or_default();
    let found = match catalog::resolve(images, &q)? {
        catalog::Match::Tag(entries) => entries.first().and_then(|e| images.iter().find(|i| i.entry == *e)),
        catalog::Match::Id(id) => images.iter().find(|i| i.id == id),
    }
    .ok_or_else(|| Error::Catalog(CatalogError::NotFound(q.clone())))?;
    let doc = inspect_doc(found, images, store.root());
    let text = match matches.get_one::<String>("format").filter(|f| *f != "json") {
        Some(f) => kist_common::gotmpl::GoTemplate::parse(f)
            .and_then(|t| t.render(&doc))
            .map_err(|e| Error::Usage(e.to_string()))?,
        None => kist_common::inspect::pretty_array(&[doc]),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|_| out.flush()).map_err(Error::Stdout)
}

pub fn run(matches: &ArgMatches) -> Result<(), Error> {
    let root = StateRoot::resolve(matches.get_one::<PathBuf>("root").map(PathBuf::as_path))?;
    let store = Store::open(&root)?;
    if matches.get_flag("inspect") {
        return inspect(&store, &catalog::list(&store)?, matches);
    }
    let format = template::Choice::parse(matches.get_one::<String>("format").map(String::as_str))
        .map_err(|e| Error::Usage(e.to_string()))?;
    let mut images = catalog::list(&store)?;
    if let Some(f) = matches.get_one::<String>("repository") {
        images.retain(|i| matches_filter(i, f));
    }
    if matches.get_flag("dangling") {
        images.retain(|i| i.ref_name.is_none());
    }
    let created = |i: &Image| i.created.as_deref().and_then(parse_rfc3339).unwrap_or(0);
    images.sort_by(|a, b| created(b).cmp(&created(a)).then(a.ref_name.cmp(&b.ref_name)));
    let no_trunc = matches.get_flag("no-trunc");
    let id_text = |i: &Image| if no_trunc { i.id.to_string() } else { i.id.short().to_string() };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if matches.get_flag("quiet") {
        let mut seen = std::collections::HashSet::new();
        for i in &images {
            if seen.insert(i.id.clone()) {
                writeln!(out, "{}", id_text(i)).map_err(Error::Stdout)?;
            }
        }
        return Ok(());
    }
    match format {
        template::Choice::Plain(Format::Json) => {
            for i in &images {
                let (repo, tag) = repo_tag(i);
                let mut v = serde_json::to_value(Record::Image(i.record(&store)))
                    .map_err(|e| Error::Stdout(std::io::Error::other(e)))?;
                v["repository"] = serde_json::Value::String(repo);
                v["tag"] = serde_json::Value::String(tag);
                writeln!(out, "{v}").map_err(Error::Stdout)?;
            }
        }
        _ => {
            let tmpl = match format {
                template::Choice::Template(t) => t,
                template::Choice::Plain(_) => {
                    template::Template::parse(DEFAULT_TABLE).map_err(|e| Error::Usage(e.to_string()))?
                }
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let rows: Vec<Row> = images
                .iter()
                .map(|i| template_row(i, &id_text(i), now, shown_size(i, store.root())))
                .collect();
            let text = tmpl.render(&rows, &header).map_err(|e| Error::Usage(e.to_string()))?;
            out.write_all(text.as_bytes()).map_err(Error::Stdout)?;
        }
    }
    out.flush().map_err(Error::Stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.123456789Z"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-14T23:13:20+01:00"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

//! img-rm: untag and remove images, prune dangling ones, and collect the
//! blobs and snapshots nothing references any more. An image is removed
//! only when no name and no container refers to it; nothing a container
//! uses is ever removed, `--force` included.

pub mod gc;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use kist_common::catalog::{self, CatalogError, Match};
use kist_common::fsutil::{self, FsError, Lock};
use kist_common::input::InputError;
use kist_common::output::{self, Format};
use kist_common::root::RootError;
use kist_common::store::{Store, StoreError, IMAGE_NAME, REF_NAME};
use kist_common::{Digest, ExitCode, HasExitCode, StateRoot};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    Usage(String),
    #[error("conflict: unable to remove {what} (must force): {why}")]
    Conflict { what: String, why: String },
    #[error("cannot write standard output")]
    Stdout(#[source] std::io::Error),
    #[error("{0} of the images named could not be removed")]
    Some(usize, ExitCode),
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Root(e) => e.exit_code(),
            Error::Store(e) => e.exit_code(),
            Error::Catalog(e) => e.exit_code(),
            Error::Fs(e) => e.exit_code(),
            Error::Input(e) => e.exit_code(),
            Error::Usage(_) => ExitCode::Usage,
            Error::Conflict { .. } => ExitCode::Conflict,
            Error::Stdout(_) => ExitCode::Io,
            Error::Some(_, c) => *c,
        }
    }
}

pub fn command() -> Command {
    Command::new("img-rm")
        .about("Untag and remove images; collect unreferenced blobs and snapshots")
        .long_about(
            "Removes the names given (references) from the store; an image goes once no name and \
             no container refers to it. An image ID removes the image with all its names (with \
             --force if it has several). Afterwards, blobs that index.json no longer reaches and \
             snapshots that no remaining image or container uses are deleted. An image a \
             container uses is never deleted: without --force its last name is not removed \
             either; with --force the name goes and the image stays, nameless, until the \
             container is gone.",
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
            Arg::new("force")
                .short('f')
                .long("force")
                .action(ArgAction::SetTrue)
                .help("Remove an image ID with all its names; untag images that containers use (keeping them)"),
        )
        .arg(
            Arg::new("prune")
                .long("prune")
                .action(ArgAction::SetTrue)
                .help("Also remove every dangling image (one without a name) no container uses"),
        )
        .arg(
            Arg::new("format")
                .long("format")
                .value_name("FORMAT")
                .value_parser(["json", "table"])
                .help("json (event records, the default when stdout is not a terminal) or table (docker rmi's lines)"),
        )
        .arg(
            Arg::new("image")
                .value_name("IMAGE")
                .action(ArgAction::Append)
                .help("Reference, image ID or unique ID prefix; read from stdin (records with an id, or bare ids) when none"),
        )
        .after_help(
            "Examples:\n  img-rm busybox\n  img-rm --force 3f57d9401f8d\n  img-rm --prune\n  img-list --dangling | img-rm",
        )
}

pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "Reads images to remove from stdin when none are named: JSON records with an `id` \
           (img-list's image records) or bare ids, one per line. Writes `event` records: \
           {\"type\":\"event\",\"action\":\"untag\",\"id\",\"reference\"} for each name removed, \
           {\"action\":\"delete\",\"id\"} for each image removed, and one \
           {\"action\":\"collect\",\"blobs\",\"snapshots\",\"reclaimedBytes\"} after collection.",
    exit_status: kist_common::exit::EXIT_STATUS_TEXT,
    files: "$KIST_ROOT/index.json, blobs/sha256/\n    The image store; entries removed, unreachable blobs deleted.\n\
            $KIST_ROOT/snapshots/\n    Snapshots no remaining image or container uses are deleted.\n\
            $KIST_ROOT/containers/<id>/state.json\n    Read for the image (\"image\") and snapshots (\"snapshots\") each container uses.\n\
            $KIST_ROOT/tmp/\n    Work files older than a day are deleted.\n\
            $KIST_ROOT/locks/fetch.lock, snapshots.lock, store.lock\n    Taken exclusively, in this order, while collecting.",
    examples: "img-rm busybox\nimg-rm --prune\nimg-list --dangling | img-rm\nimg-rm --force $(img-list -q)",
    see_also: "img-list(1), img-fetch(1), img-unpack(1), kist-state(5)",
};

fn event(action: &str, fields: &[(&str, serde_json::Value)]) -> serde_json::Value {
    let mut v = serde_json::json!({"schemaVersion": kist_common::record::SCHEMA_VERSION, "type": "event", "action": action});
    for (k, x) in fields {
        v[*k] = x.clone();
    }
    v
}

pub fn run(matches: &ArgMatches) -> Result<(), Error> {
    let root = StateRoot::resolve(matches.get_one::<PathBuf>("root").map(PathBuf::as_path))?;
    let store = Store::open(&root)?;
    let format =
        Format::choose(matches.get_one::<String>("format").map(String::as_str)).map_err(Error::Usage)?;
    let force = matches.get_flag("force");
    let prune = matches.get_flag("prune");
    let args: Vec<String> =
        matches.get_many::<String>("image").map(|v| v.cloned().collect()).unwrap_or_default();
    let words: Vec<String> = if args.is_empty() && prune {
        Vec::new()
    } else {
        kist_common::input::targets(&args)?.into_iter().map(|t| t.id).collect()
    };
    if words.is_empty() && !prune {
        return Err(Error::Usage("name an image to remove, or give --prune".into()));
    }

    // Lock order: fetch, snapshots, store (see gc.rs).
    let _fetch = Lock::exclusive(&root.fetch_lock())?;
    let _snaps = Lock::exclusive(&root.snapshots_lock())?;
    let _store = Lock::exclusive(&root.store_lock())?;

    let used = gc::in_use(&root);
    for c in &used.unknown {
        kist_common::warn!(
            "container {c} has no readable state.json: keeping every image, blob and snapshot"
        );
    }
    let mut index = store.index()?;
    let images = catalog::list(&store)?;
    let mut events = Vec::new();
    let mut errors: Vec<Error> = Vec::new();
    // Entries to drop, and entries to keep without a name.
    let mut drop: HashSet<usize> = HashSet::new();
    let mut touched: Vec<(Digest, String)> = Vec::new();
    for w in &words {
        let entries: Vec<usize> = match catalog::resolve(&images, w) {
            Err(e) => {
                errors.push(e.into());
                continue;
            }
            Ok(Match::Tag(entries)) => entries,
            Ok(Match::Id(id)) => {
                let all: Vec<&catalog::Image> =
                    images.iter().filter(|i| i.id == id && !drop.contains(&i.entry)).collect();
                let named = all.iter().filter(|i| i.ref_name.is_some()).count();
                if named > 1 && !force {
                    errors.push(Error::Conflict {
                        what: format!("image {}", id.short()),
                        why: format!("it is referenced by {named} names"),
                    });
                    continue;
                }
                all.iter().map(|i| i.entry).collect()
            }
        };
        let Some(id) = images.iter().find(|i| entries.contains(&i.entry)).map(|i| i.id.clone()) else {
            continue;
        };
        let others = images
            .iter()
            .filter(|i| i.id == id && !drop.contains(&i.entry) && !entries.contains(&i.entry))
            .count();
        let in_use = used.images.contains(&id) || !used.unknown.is_empty();
        if others == 0 && in_use && !force {
            errors.push(Error::Conflict {
                what: format!("{w:?}"),
                why: format!("a container is using image {}", id.short()),
            });
            continue;
        }
        drop.extend(entries.iter().copied());
        touched.push((id, w.clone()));
    }
    if prune {
        for i in &images {
            if i.ref_name.is_none() && !drop.contains(&i.entry) {
                let named_elsewhere = images.iter().any(|j| j.id == i.id && j.ref_name.is_some());
                if !named_elsewhere && !used.images.contains(&i.id) && used.unknown.is_empty() {
                    drop.insert(i.entry);
                    touched.push((i.id.clone(), String::new()));
                }
            }
        }
    }

    // Untag events, deletions, and images that containers keep alive.
    let mut keep_nameless: BTreeMap<Digest, usize> = BTreeMap::new();
    let mut deleted: Vec<Digest> = Vec::new();
    for i in &images {
        if drop.contains(&i.entry) {
            if let Some(n) = &i.ref_name {
                events.push(event(
                    "untag",
                    &[("id", i.id.to_string().into()), ("reference", n.clone().into())],
                ));
            }
        }
    }
    let mut seen = HashSet::new();
    for (id, _) in &touched {
        if !seen.insert(id.clone()) {
            continue;
        }
        let remaining = images.iter().filter(|i| i.id == *id && !drop.contains(&i.entry)).count();
        if remaining > 0 {
            continue;
        }
        if used.images.contains(id) || !used.unknown.is_empty() {
            if let Some(first) = images.iter().find(|i| i.id == *id).map(|i| i.entry) {
                keep_nameless.insert(id.clone(), first);
            }
        } else {
            deleted.push(id.clone());
            events.push(event("delete", &[("id", id.to_string().into())]));
        }
    }
    // Blobs of what goes now, swept however young.
    let mut doomed_index = kist_common::store::Index::default();
    let mut new_manifests = Vec::new();
    for (pos, mut e) in std::mem::take(&mut index.manifests).into_iter().enumerate() {
        if !drop.contains(&pos) {
            new_manifests.push(e);
        } else if keep_nameless.values().any(|&k| k == pos) {
            e.annotations.remove(REF_NAME);
            e.annotations.remove(IMAGE_NAME);
            new_manifests.push(e);
        } else {
            doomed_index.manifests.push(e);
        }
    }
    index.manifests = new_manifests;
    if !drop.is_empty() {
        fsutil::atomic_write_json(&root.index_file(), &index)?;
    }

    if used.unknown.is_empty() {
        let live = gc::Marks::of_index(&store, &index);
        let doomed = gc::Marks::of_index(&store, &doomed_index).blobs;
        let swept = gc::sweep(&root, &live, &used, &doomed)?;
        events.push(event(
            "collect",
            &[
                ("blobs", swept.blobs.into()),
                ("snapshots", swept.snapshots.into()),
                ("tmp", swept.tmp.into()),
                ("reclaimedBytes", swept.bytes.into()),
            ],
        ));
    }
    print_events(&events, format)?;
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        n => {
            let code = errors[0].exit_code();
            for e in &errors {
                kist_common::diag::report(e);
            }
            Err(Error::Some(n, code))
        }
    }
}

fn print_events(events: &[serde_json::Value], format: Format) -> Result<(), Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for e in events {
        match format {
            Format::Json => writeln!(out, "{e}"),
            Format::Table => match e["action"].as_str() {
                Some("untag") => writeln!(out, "Untagged: {}", e["reference"].as_str().unwrap_or_default()),
                Some("delete") => writeln!(out, "Deleted: {}", e["id"].as_str().unwrap_or_default()),
                Some("collect") => writeln!(
                    out,
                    "Total reclaimed space: {}",
                    output::human_size_decimal(e["reclaimedBytes"].as_u64().unwrap_or(0))
                ),
                _ => Ok(()),
            },
        }
        .map_err(Error::Stdout)?;
    }
    out.flush().map_err(Error::Stdout)
}

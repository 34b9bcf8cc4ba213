//! img-unpack: an image's layers into snapshots (`snapshots/<chain-id>/`,
//! overlay lowerdirs), or into one flat root file system, or into an OCI
//! runtime bundle. Reads image and layer records on stdin (so that
//! `img-fetch --stream | img-unpack` starts on a layer as soon as it
//! lands) or takes image references and IDs as arguments.

pub mod bundle;
pub mod extract;
pub mod layer;
pub mod pipe;
pub mod resolve;
pub mod snapshot;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};
use kist_common::catalog::{self, CatalogError};
use kist_common::fsutil::{FsError, Lock};
use kist_common::record::{self, ErrorRecord, LayerRecord, Record, SnapshotRecord, SCHEMA_VERSION};
use kist_common::root::RootError;
use kist_common::store::{Store, StoreError};
use kist_common::{Digest, ExitCode, HasExitCode, StateRoot};

use crate::extract::Whiteouts;
use crate::layer::{LayerError, LayerSource};
use crate::snapshot::{LayerJob, SnapshotError, Snapshots};

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
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error(transparent)]
    Settle(#[from] kist_common::settle::SettleError),
    #[error("input line {line}: {message}")]
    Input { line: usize, message: String },
    #[error("cannot read standard input")]
    Stdin(#[source] std::io::Error),
    #[error("cannot write standard output")]
    Stdout(#[source] std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error("image {image}: config has {diff_ids} diff_ids but the manifest {layers} layers")]
    LayerCount { image: Digest, diff_ids: usize, layers: usize },
    #[error("{path} exists and is not empty")]
    NotEmpty { path: PathBuf },
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot flush {path} to disk")]
    Flush {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("an upstream tool failed: {0}")]
    Upstream(String, u8),
    #[error("{0} of the images failed to unpack")]
    Some(usize, ExitCode),
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Root(e) => e.exit_code(),
            Error::Store(e) => e.exit_code(),
            Error::Catalog(e) => e.exit_code(),
            Error::Fs(e) => e.exit_code(),
            Error::Snapshot(e) => e.exit_code(),
            Error::Layer(e) => e.exit_code(),
            Error::Bundle(e) => e.exit_code(),
            Error::Settle(e) => e.exit_code(),
            Error::Input { .. } | Error::Usage(_) => ExitCode::Usage,
            Error::Stdin(_) | Error::Stdout(_) => ExitCode::Io,
            Error::LayerCount { .. } => ExitCode::Integrity,
            Error::NotEmpty { .. } => ExitCode::Conflict,
            Error::Create { source, .. } | Error::Flush { source, .. } => {
                kist_common::exit::io_exit_code(source)
            }
            Error::Upstream(_, code) => match code {
                2 => ExitCode::Usage,
                3 => ExitCode::NotFound,
                4 => ExitCode::Auth,
                5 => ExitCode::Integrity,
                6 => ExitCode::Conflict,
                7 => ExitCode::Io,
                _ => ExitCode::Failure,
            },
            Error::Some(_, code) => *code,
        }
    }
}

pub fn command() -> Command {
    Command::new("img-unpack")
        .about("Unpack an image's layers into snapshots, a flat root file system or an OCI bundle")
        .long_about(
            "Turns each layer of an image into its own snapshot, snapshots/<chain-id>/ under the \
             state root, ready to be stacked as overlay lowerdirs: deletions become overlay \
             whiteouts, so layers unpack independently and in parallel. A snapshot already \
             present is reused. Every layer's uncompressed digest is checked against the \
             config's rootfs.diff_ids before its snapshot appears; every name in a layer is \
             resolved inside the snapshot, so no layer can touch anything outside it.\n\n\
             Images come as arguments (a reference, an image ID or a unique ID prefix) or, \
             with no arguments, as image and layer records on stdin, as img-fetch prints \
             them. Prints one snapshot record per image.",
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
            Arg::new("flatten")
                .long("flatten")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .conflicts_with("bundle")
                .help("Write one plain root file system into DIR (whiteouts applied) instead of snapshots"),
        )
        .arg(
            Arg::new("bundle")
                .long("bundle")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                "Write an OCI runtime bundle (DIR/config.json and DIR/rootfs/) that `runc run -b DIR` runs",
            ),
        )
        .arg(
            Arg::new("jobs")
                .long("jobs")
                .short('j')
                .value_name("N")
                .value_parser(clap::value_parser!(usize))
                .help("Layers unpacked at the same time (default: the number of CPUs)"),
        )
        .arg(kist_common::settle::sync_arg())
        .arg(kist_common::settle::settle_arg())
        .arg(
            Arg::new("image")
                .value_name("IMAGE")
                .action(ArgAction::Append)
                .help("Image reference, image ID or ID prefix; read records from stdin when none is given"),
        )
        .after_help(
            "Examples:\n  \
             img-fetch docker.io/library/busybox:latest | img-unpack\n  \
             img-fetch --stream 127.0.0.1:5000/app:1 | img-unpack | ctr-spawn -- sh\n  \
             img-unpack busybox\n  \
             img-unpack --bundle /tmp/bb busybox && runc run -b /tmp/bb bb",
        )
}

pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "Reads JSON Lines on stdin when no IMAGE is given: `image` records (img-fetch's \
           output) and `layer` records (img-fetch --stream), which start a layer's unpacking \
           as soon as it lands; a bare word on a line names an image like an argument; an \
           `error` record from upstream is passed on and makes the exit status non-zero. \
           Writes one `snapshot` record per image: id (image ID), reference, snapshots (the \
           snapshot directories, lowest layer first, the order overlay's lowerdir lists them \
           reversed), chainIds, platform, config (Env, Entrypoint, Cmd, WorkingDir, User, \
           ExposedPorts, Volumes, StopSignal, Labels, Healthcheck) and store. With --flatten or \
           --bundle, snapshots holds the one root file system written.",
    exit_status: kist_common::exit::EXIT_STATUS_TEXT,
    files: "$KIST_ROOT/snapshots/<chain-id>/\n    One unpacked layer; overlay whiteouts are 0/0 character devices and trusted.overlay.opaque=y directories.\n\
            $KIST_ROOT/snapshots/<chain-id>.json\n    What the snapshot holds: diffId, parent, layer digest, mediaType, size (of the tar stream), diskSize (as docker images counts it: files' and symlinks' apparent sizes, hard links once, directories nothing), created.\n\
            $KIST_ROOT/tmp/unpack-*\n    Layers being unpacked; renamed into snapshots/ once verified.\n\
            $KIST_ROOT/unsettled/<boot-id>.<pid>.<n>.json\n    The intent naming a snapshot published before the disk has it; a settler (img-unpack --settle, detached) deletes it once flushed. See UNSETTLED WRITES in kist-state(5).\n\
            $KIST_ROOT/locks/snapshots.lock\n    Held shared while unpacking, exclusively by img-rm's collection.",
    examples: "img-fetch busybox | img-unpack\n\
               img-fetch --stream 127.0.0.1:5000/app:1 | img-unpack\n\
               img-unpack --flatten /tmp/rootfs busybox\n\
               img-unpack --bundle /tmp/bundle busybox && runc run -b /tmp/bundle demo",
    see_also: "img-fetch(1), img-list(1), img-rm(1), ctr-spawn(1), umoci-unpack(1), kist-state(5), kist-records(5)",
};

/// An image to unpack, known fully.
#[derive(Debug, Clone)]
struct ImageJob {
    id: Digest,
    reference: Option<String>,
    layers: Vec<LayerJob>,
    config: catalog::ImageConfig,
}

fn image_job(
    store: &Store,
    id: &Digest,
    reference: Option<String>,
    layers: &[record::Descriptor],
) -> Result<ImageJob, Error> {
    let config = catalog::load_config(store, id)?;
    if config.diff_ids.len() != layers.len() {
        return Err(Error::LayerCount {
            image: id.clone(),
            diff_ids: config.diff_ids.len(),
            layers: layers.len(),
        });
    }
    let chains = record::chain_ids(&config.diff_ids);
    let jobs = layers
        .iter()
        .enumerate()
        .map(|(i, l)| LayerJob {
            chain_id: chains[i].clone(),
            lowers: chains[..i].to_vec(),
            source: LayerSource {
                blob: store.blob_path(&l.digest),
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                diff_id: config.diff_ids[i].clone(),
            },
        })
        .collect();
    Ok(ImageJob { id: id.clone(), reference, layers: jobs, config })
}

fn from_catalog(store: &Store, images: &[catalog::Image], word: &str) -> Result<ImageJob, Error> {
    let img = catalog::find(images, word)?;
    image_job(store, &img.id, img.ref_name.clone(), &img.layers)
}

fn emit(rec: &Record) -> Result<(), Error> {
    record::emit(rec).map_err(Error::Stdout)
}

fn snapshot_record(root: &StateRoot, job: &ImageJob, dirs: Vec<PathBuf>) -> Record {
    Record::Snapshot(SnapshotRecord {
        schema_version: SCHEMA_VERSION,
        id: job.id.clone(),
        reference: job.reference.clone(),
        snapshots: dirs,
        chain_ids: job.layers.iter().map(|l| l.chain_id.clone()).collect(),
        platform: job.config.platform.clone(),
        config: job.config.run_config.clone(),
        store: root.path().to_path_buf(),
    })
}

pub fn run(matches: &ArgMatches) -> Result<(), Error> {
    if let Some(paths) = kist_common::settle::settle_request(matches) {
        return kist_common::settle::settle_paths(&paths).map_err(Error::Settle);
    }
    let root = StateRoot::resolve(matches.get_one::<PathBuf>("root").map(PathBuf::as_path))?;
    let store = Store::open(&root)?;
    let words: Vec<String> =
        matches.get_many::<String>("image").map(|v| v.cloned().collect()).unwrap_or_default();
    let flat = matches
        .get_one::<PathBuf>("flatten")
        .map(|d| (d.clone(), false))
        .or_else(|| matches.get_one::<PathBuf>("bundle").map(|d| (d.clone(), true)));
    let jobs = matches
        .get_one::<usize>("jobs")
        .copied()
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));

    // Collection waits for this: blobs read and snapshots made stay put.
    let _lock = Lock::shared(&root.snapshots_lock())?;
    if let Some((dir, bundle)) = flat {
        let image = if !words.is_empty() {
            if words.len() > 1 {
                return Err(Error::Usage("--flatten and --bundle take exactly one image".into()));
            }
            from_catalog(&store, &catalog::list(&store)?, &words[0])?
        } else {
            let mut found = None;
            read_input(&store, |item| {
                if let Input::Image(j) = item {
                    if found.is_none() {
                        found = Some(*j);
                    }
                }
                Ok(())
            })?;
            found.ok_or_else(|| Error::Usage("no image given on the command line or stdin".into()))?
        };
        return flatten(&root, &image, &dir, bundle, matches.get_flag("sync"));
    }

    let snaps = Snapshots::new(&root, jobs, matches.get_flag("sync"));
    let mut failures: Vec<Error> = Vec::new();
    let unpacked = std::thread::scope(|scope| -> Result<(), Error> {
        let mut handles = Vec::new();
        let mut spawn = |job: LayerJob| {
            if snaps.claim(&job.chain_id) {
                let s = &snaps;
                handles.push(scope.spawn(move || s.run(&job)));
            }
        };
        let mut images: Vec<ImageJob> = Vec::new();
        let mut upstream: Option<Error> = None;
        let read = if words.is_empty() {
            if std::io::stdin().is_terminal() {
                Err(Error::Usage("no image given: name one, or pipe image records from img-fetch".into()))
            } else {
                read_input(&store, |item| {
                    match item {
                        Input::Layer(job) => spawn(job),
                        Input::Image(img) => {
                            for l in &img.layers {
                                spawn(l.clone());
                            }
                            images.push(*img);
                        }
                        Input::Error(rec) => {
                            emit(&Record::Error(rec.clone()))?;
                            upstream = Some(Error::Upstream(rec.message.clone(), rec.exit_code));
                        }
                    }
                    Ok(())
                })
            }
        } else {
            let listed = catalog::list(&store)?;
            let mut r = Ok(());
            for w in &words {
                match from_catalog(&store, &listed, w) {
                    Ok(img) => {
                        for l in &img.layers {
                            spawn(l.clone());
                        }
                        images.push(img);
                    }
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
            r
        };
        snaps.close();
        let mut seen = HashSet::new();
        for img in &images {
            if !seen.insert(img.id.clone()) {
                continue;
            }
            let chains: Vec<Digest> = img.layers.iter().map(|l| l.chain_id.clone()).collect();
            if snaps.wait_for(&chains).is_ok() {
                let dirs = chains.iter().map(|c| snaps.path(c)).collect();
                emit(&snapshot_record(&root, img, dirs))?;
            }
        }
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e.into()),
                Err(_) => failures.push(Error::Usage("a worker thread panicked".into())),
            }
        }
        read?;
        if let Some(e) = upstream {
            failures.push(e);
        }
        Ok(())
    });
    // Whatever was published, also by a run that failed half-way, is flushed.
    kist_common::settle::hand_off("img-unpack", snaps.take_intents())?;
    unpacked?;
    if matches.get_flag("sync") {
        kist_common::settle::flush_pending(&root)?;
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        n => {
            let code = failures[0].exit_code();
            for f in &failures {
                kist_common::diag::report(f);
            }
            Err(Error::Some(n, code))
        }
    }
}

enum Input {
    Layer(LayerJob),
    Image(Box<ImageJob>),
    Error(ErrorRecord),
}

/// Reads stdin line by line, handing each record on as it arrives.
/// Images seen only through layer records are completed from the store
/// at the end of input.
fn read_input(store: &Store, mut f: impl FnMut(Input) -> Result<(), Error>) -> Result<(), Error> {
    let stdin = std::io::stdin();
    let mut by_layers: BTreeMap<Digest, Option<String>> = BTreeMap::new();
    let mut complete: HashSet<Digest> = HashSet::new();
    let mut listed: Option<Vec<catalog::Image>> = None;
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line.map_err(Error::Stdin)?;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let n = i + 1;
        if !t.starts_with('{') {
            if listed.is_none() {
                listed = Some(catalog::list(store)?);
            }
            let job = from_catalog(store, listed.as_deref().unwrap_or_default(), t)?;
            complete.insert(job.id.clone());
            f(Input::Image(Box::new(job)))?;
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(t)
            .map_err(|e| Error::Input { line: n, message: format!("not valid JSON: {e}") })?;
        match value.get("type").and_then(|v| v.as_str()) {
            Some("layer") => {
                let rec: LayerRecord = serde_json::from_value(value)
                    .map_err(|e| Error::Input { line: n, message: format!("bad layer record: {e}") })?;
                let lowers = lower_chains(store, &rec);
                by_layers.entry(rec.image.clone()).or_insert(None);
                f(Input::Layer(LayerJob {
                    chain_id: rec.chain_id.clone(),
                    lowers,
                    source: LayerSource {
                        blob: StateRoot::at(&rec.store).blob_path(&rec.digest),
                        digest: rec.digest,
                        media_type: rec.media_type,
                        diff_id: rec.diff_id,
                    },
                }))?;
            }
            Some("image") => {
                let rec: record::ImageRecord = serde_json::from_value(value)
                    .map_err(|e| Error::Input { line: n, message: format!("bad image record: {e}") })?;
                let job = image_job(store, &rec.id, rec.reference.clone(), &rec.layers)?;
                complete.insert(job.id.clone());
                f(Input::Image(Box::new(job)))?;
            }
            Some("error") => {
                let rec: ErrorRecord = serde_json::from_value(value)
                    .map_err(|e| Error::Input { line: n, message: format!("bad error record: {e}") })?;
                f(Input::Error(rec))?;
            }
            Some("snapshot") | Some("container") => {
                let id = value.get("id").and_then(|v| v.as_str()).unwrap_or_default().to_string();
                if listed.is_none() {
                    listed = Some(catalog::list(store)?);
                }
                let job = from_catalog(store, listed.as_deref().unwrap_or_default(), &id)?;
                complete.insert(job.id.clone());
                f(Input::Image(Box::new(job)))?;
            }
            other => {
                return Err(Error::Input {
                    line: n,
                    message: format!("expected an image or layer record, got type {other:?}"),
                })
            }
        }
    }
    for (id, reference) in by_layers {
        if complete.contains(&id) {
            continue;
        }
        let listed = match &listed {
            Some(l) => l.clone(),
            None => catalog::list(store)?,
        };
        let job = from_catalog(store, &listed, &id.to_string()).map(|mut j| {
            if j.reference.is_none() {
                j.reference = reference.clone();
            }
            j
        })?;
        f(Input::Image(Box::new(job)))?;
    }
    Ok(())
}

/// The chain IDs below a streamed layer, from the image config if it has
/// landed already (img-fetch stores the config before the layers).
fn lower_chains(store: &Store, rec: &LayerRecord) -> Vec<Digest> {
    match catalog::load_config(store, &rec.image) {
        Ok(cfg) => record::chain_ids(&cfg.diff_ids).into_iter().take(rec.index).collect(),
        Err(_) => Vec::new(),
    }
}

/// `--flatten` and `--bundle`: every layer applied in order onto one tree.
fn flatten(root: &StateRoot, image: &ImageJob, dir: &Path, bundle: bool, sync: bool) -> Result<(), Error> {
    let rootfs = if bundle { dir.join("rootfs") } else { dir.to_path_buf() };
    if let Ok(mut entries) = std::fs::read_dir(&rootfs) {
        if entries.next().is_some() {
            return Err(Error::NotEmpty { path: rootfs });
        }
    }
    std::fs::create_dir_all(&rootfs).map_err(|source| Error::Create { path: rootfs.clone(), source })?;
    std::fs::set_permissions(&rootfs, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|source| Error::Create { path: rootfs.clone(), source })?;
    for l in &image.layers {
        let (mut ex, _) = layer::unpack(&l.source, &rootfs, Whiteouts::Apply, sync)?;
        ex.finish().map_err(|source| LayerError::Extract { digest: l.source.digest.clone(), source })?;
    }
    if bundle {
        bundle::write_config(dir, &image.config.run_config)?;
    }
    if sync {
        // --sync: the tree (and config.json) on disk before the exit.
        kist_common::fsutil::syncfs(dir)
            .map_err(|source| Error::Flush { path: dir.to_path_buf(), source })?;
    }
    let out = std::fs::canonicalize(&rootfs).unwrap_or(rootfs);
    emit(&snapshot_record(root, image, vec![out]))
}

//! img-fetch: pull an image into the kist store from a registry (API v2),
//! an OCI image layout or a `docker save` archive, verifying every
//! manifest and blob, and print its `image` record.

pub mod auth;
pub mod config;
pub mod fetch;
pub mod image;
pub mod platform;
pub mod progress;
pub mod registry;
pub mod source;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::{Arg, ArgAction, ArgMatches, Command};
use kist_common::man::ManExtra;
use kist_common::record::{Descriptor, Record};
use kist_common::store::{BlobWriter, Store};
use kist_common::{Digest, ExitCode, HasExitCode, Reference, StateRoot};

use crate::fetch::{FetchError, Puller, Top};
use crate::registry::{ClientOptions, FetchedManifest, RegistryClient, RegistryError};
use crate::source::{DockerArchive, OciLayout, Source, SourceError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Reference(#[from] kist_common::reference::ReferenceError),
    #[error(transparent)]
    Platform(#[from] platform::PlatformError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Root(#[from] kist_common::root::RootError),
    #[error(transparent)]
    Store(#[from] kist_common::store::StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) | Error::Reference(_) | Error::Platform(_) => ExitCode::Usage,
            Error::Config(e) => e.exit_code(),
            Error::Root(e) => e.exit_code(),
            Error::Store(e) => e.exit_code(),
            Error::Registry(e) => e.exit_code(),
            Error::Source(e) => e.exit_code(),
            Error::Fetch(e) => e.exit_code(),
            Error::Stdout(_) => ExitCode::Io,
        }
    }
}

pub fn command() -> Command {
    Command::new("img-fetch")
        .about("Pull an image into the kist store and print its image record")
        .long_about(
            "Pull an image into the kist image store (an OCI image layout at the state root) from a \
             registry (API v2), an OCI image layout or a `docker save` archive. Every manifest and blob \
             is verified against its digest and size before it enters the store; blobs already present \
             are not fetched again. Prints one `image` record (JSON) on stdout.",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .arg(
            Arg::new("source")
                .value_name("REF")
                .required(true)
                .help("Image to pull: [docker://]REGISTRY/REPO[:TAG][@DIGEST], oci:DIR[:TAG], docker-archive:FILE[:REF]"),
        )
        .arg(
            Arg::new("platform")
                .long("platform")
                .value_name("OS/ARCH[/VARIANT]")
                .help("Platform to choose from a multi-platform image [default: this host's]"),
        )
        .arg(
            Arg::new("insecure")
                .long("insecure")
                .action(ArgAction::SetTrue)
                .help("Talk plain HTTP to the registry (loopback registries always are)"),
        )
        .arg(
            Arg::new("stream")
                .long("stream")
                .action(ArgAction::SetTrue)
                .help("Print a `layer` record per layer as soon as it is verified, then the `image` record"),
        )
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("No progress or messages on stderr, only errors"))
        .arg(
            Arg::new("progress")
                .long("progress")
                .value_name("MODE")
                .value_parser(["auto", "plain", "json"])
                .default_value("auto")
                .help("Progress on stderr: bars when a terminal (auto), text lines (plain), JSON lines (json)"),
        )
        .arg(
            Arg::new("jobs")
                .short('j')
                .long("jobs")
                .value_name("N")
                .value_parser(clap::value_parser!(u16).range(1..=64))
                .default_value("3")
                .help("Layers downloaded in parallel"),
        )
        .arg(
            Arg::new("retries")
                .long("retries")
                .value_name("N")
                .value_parser(clap::value_parser!(u32).range(0..=20))
                .default_value("4")
                .help("Retries, with backoff, after a 5xx answer or a broken connection"),
        )
        .arg(kist_common::settle::sync_arg())
        .arg(kist_common::settle::settle_arg())
        .arg(
            Arg::new("name")
                .long("name")
                .value_name("REF")
                .help("Name to give an image imported from oci: or docker-archive: in the store"),
        )
        .arg(
            Arg::new("root")
                .long("root")
                .value_name("DIR")
                .global(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("State root [default: $KIST_ROOT, /var/lib/kist for root, $XDG_DATA_HOME/kist otherwise]"),
        )
        .after_help(
            "Examples:\n  \
             img-fetch docker.io/library/busybox:latest\n  \
             img-fetch --platform linux/arm64 localhost:5000/app:1.2\n  \
             img-fetch --stream localhost:5000/app:1.2 | img-unpack\n  \
             img-fetch oci:/srv/layouts/app:1.2 --name registry.lan/app:1.2\n  \
             img-fetch docker-archive:app.tar",
        )
}

pub const MAN: ManExtra = ManExtra {
    json: "Writes one `image` record on stdout (id = config digest, reference, digest, indexDigest, \
mediaType, config, layers, diffIds, platform, created, size, store). With --stream, first one \
`layer` record per layer (image, index, count, digest, size, mediaType, diffId, chainId, store) \
as soon as that layer is verified; layer records may come in any order, `index` gives the \
position. Reads nothing on stdin. With --progress=json, stderr carries JSON lines \
{\"type\":\"progress\",\"digest\",\"status\":\"downloading|done|exists\",\"current\",\"total\"}.",
    exit_status: "0  the image is in the store and tagged.\n\
1  network or registry failure (unknown host, connection refused after retries, 5xx).\n\
2  usage: malformed reference, platform or registries config.\n\
3  not found: no such repository, tag, manifest for the platform, layout tag or file.\n\
4  authentication: credentials required, refused, or access denied.\n\
5  integrity: a digest or size mismatch, a truncated or oversized body, corrupt JSON, an \
unsupported media type (schema 1, non-image artifacts, unknown layer types).\n\
7  local I/O: the store cannot be written (permission, disk full).",
    files: "$KIST_ROOT/{oci-layout,index.json,blobs/sha256/}\n    The image store, an OCI image layout.\n\
$KIST_ROOT/tmp/<hex>.partial\n    An interrupted download, resumed with a Range request by the next pull.\n\
$KIST_ROOT/locks/blob-<hex>.lock\n    Per-blob locks: concurrent pulls download each blob once.\n\
$KIST_ROOT/unsettled/<boot-id>.<pid>.<n>.json\n    The intent naming the blobs a pull writes without waiting for the disk; a settler \
(img-fetch --settle, detached) deletes it once they are flushed. See UNSETTLED WRITES in kist-state(5).\n\
$KIST_REGISTRIES_CONFIG, default /etc/kist/registries.json\n    {\"insecure\": [\"host:port\", \"host\", \"10.0.0.0/8\"]}: registries reached over plain HTTP.\n\
$REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, \
$DOCKER_CONFIG/config.json (~/.docker/config.json)\n    Credentials, looked up in that order \
(auths, credHelpers, credsStore; helpers run as docker-credential-NAME get).",
    examples: "img-fetch localhost:5000/busybox:latest | jq .digest\n\
img-fetch --stream --progress=json registry.lan/app:2 2>progress.jsonl | img-unpack\n\
skopeo inspect oci:$KIST_ROOT:localhost:5000/busybox:latest",
    see_also: "img-unpack(1), img-list(1), img-rm(1), kist-records(5), kist-state(5), skopeo(1), umoci(1)",
};

/// The registry client, built on first use: a pull that finds everything
/// in the store by digest never pays for it.
struct LazyRegistry {
    registry: String,
    api_host: String,
    repository: String,
    opts: ClientOptions,
    client: OnceLock<RegistryClient>,
}

impl LazyRegistry {
    fn get(&self) -> Result<&RegistryClient, RegistryError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = RegistryClient::new(&self.registry, &self.api_host, &self.repository, self.opts.clone())?;
        Ok(self.client.get_or_init(|| c))
    }
}

impl Source for LazyRegistry {
    fn get_manifest(&self, digest: &Digest) -> Result<FetchedManifest, SourceError> {
        Source::get_manifest(self.get()?, digest)
    }

    fn fetch_blob(
        &self,
        desc: &Descriptor,
        w: &mut BlobWriter,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(), SourceError> {
        Source::fetch_blob(self.get()?, desc, w, progress)
    }
}

/// A name for an image imported from a file: `--name`, else the tag if it
/// is a whole reference, else `localhost/<file name>:<tag>`, as podman
/// names images that come without one.
fn import_name(flag: Option<&String>, tag: Option<&str>, path: &Path) -> Result<Reference, Error> {
    if let Some(n) = flag {
        return Ok(n.parse()?);
    }
    if let Some(t) = tag.filter(|t| t.contains('/')) {
        return Ok(t.parse()?);
    }
    let stem = path
        .file_stem()
        .or(path.file_name())
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let clean: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect();
    let clean = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    let text =
        format!("localhost/{}:{}", if clean.is_empty() { "image" } else { &clean }, tag.unwrap_or("latest"));
    text.parse()
        .map_err(|_| Error::Usage(format!("cannot name the image from {}; give --name REF", path.display())))
}

fn emit(record: &Record) -> Result<(), Error> {
    kist_common::record::emit(record).map_err(Error::Stdout)
}

/// Where a registry pull starts: the pinned digest, or what the registry
/// says the tag points at (one HEAD, or a GET if HEAD tells nothing).
fn registry_top(reference: &Reference, src: &LazyRegistry) -> Result<Top, Error> {
    Ok(match reference.digest() {
        // Content-addressed: nothing to ask the registry if the store has it.
        Some(d) => Top::Digest { digest: d.clone(), size: None, media_type: None },
        None => {
            let client = src.get()?;
            let tag = reference.manifest_ref();
            match client.head_manifest(&tag)? {
                Some(h) => Top::Digest { digest: h.digest, size: h.size, media_type: h.media_type },
                None => {
                    let f = client.get_manifest(&tag)?;
                    let expected = f.header_digest.as_deref().and_then(|d| d.parse().ok());
                    Top::Fetched { bytes: f.bytes, media_type: f.media_type, expected }
                }
            }
        }
    })
}

/// Where an image comes from, parsed from REF.
enum Parsed {
    Registry(Reference),
    Layout(PathBuf, Option<String>),
    Archive(PathBuf, Option<String>),
}

pub fn run(m: &ArgMatches) -> Result<(), Error> {
    if let Some(paths) = kist_common::settle::settle_request(m) {
        return Ok(kist_common::settle::settle_paths(&paths).map_err(kist_common::store::StoreError::from)?);
    }
    let source = m.get_one::<String>("source").map(String::as_str).unwrap_or_default();
    let quiet = m.get_flag("quiet");
    let progress = progress::Progress::new(progress::Mode::choose(
        m.get_one::<String>("progress").map(String::as_str).unwrap_or("auto"),
        quiet,
    ));
    let want = match m.get_one::<String>("platform") {
        Some(p) => platform::parse(p)?,
        None => platform::host(),
    };
    let jobs = m.get_one::<u16>("jobs").copied().unwrap_or(3) as usize;
    let retries = m.get_one::<u32>("retries").copied().unwrap_or(4);
    let name_flag = m.get_one::<String>("name");

    // Parse the whole command line before touching the store.
    let parsed = if let Some(rest) = source.strip_prefix("oci:") {
        let (dir, tag) = match rest.split_once(':') {
            Some((d, t)) => (d, Some(t.to_string())),
            None => (rest, None),
        };
        if dir.is_empty() {
            return Err(Error::Usage("oci: needs a directory: oci:DIR[:TAG]".into()));
        }
        Parsed::Layout(PathBuf::from(dir), tag)
    } else if let Some(rest) = source.strip_prefix("docker-archive:") {
        let (file, r) = match rest.split_once(':') {
            Some((f, r)) => (f, Some(r.to_string())),
            None => (rest, None),
        };
        if file.is_empty() {
            return Err(Error::Usage("docker-archive: needs a file: docker-archive:FILE[:REF]".into()));
        }
        Parsed::Archive(PathBuf::from(file), r)
    } else {
        let text = source.strip_prefix("docker://").unwrap_or(source);
        Parsed::Registry(text.parse()?)
    };

    let root = StateRoot::resolve(m.get_one::<PathBuf>("root").map(PathBuf::as_path))?;
    // A registry pull starts with a round trip to the registry, and a first
    // pull with the creation of the layout (a few fsyncs): do both at once.
    let registry = match &parsed {
        Parsed::Registry(reference) => {
            let registry = reference.registry().to_string();
            let plain_http = m.get_flag("insecure")
                || config::is_loopback(&registry)
                || config::RegistriesConfig::load()?.is_insecure(&registry);
            Some(LazyRegistry {
                registry,
                api_host: reference.api_host().to_string(),
                repository: reference.repository().to_string(),
                opts: ClientOptions { plain_http, retries, credentials: auth::CredentialSources::from_env() },
                client: OnceLock::new(),
            })
        }
        _ => None,
    };
    let (store, early_top) = std::thread::scope(|s| {
        let opener = s.spawn(|| Store::open(&root));
        let top = match (&parsed, &registry) {
            (Parsed::Registry(reference), Some(src)) => Some(registry_top(reference, src)),
            _ => None,
        };
        let store = opener.join().unwrap_or_else(|_| {
            Err(kist_common::store::StoreError::Io {
                path: root.path().to_path_buf(),
                source: std::io::Error::other("the thread opening the store panicked"),
            })
        });
        (store, top)
    });
    let store = store?;
    // Held shared for the whole pull: blobs land before index.json names
    // them, and img-rm's collection (which takes this lock exclusively)
    // must not sweep a blob this pull found present and is about to tag.
    let _pull_lock = kist_common::fsutil::Lock::shared(&root.fetch_lock())
        .map_err(kist_common::store::StoreError::from)?;
    let puller = Puller {
        store: &store,
        progress: &progress,
        platform: want,
        stream: m.get_flag("stream"),
        jobs,
        explicit_platform: m.get_one::<String>("platform").is_some(),
        quiet,
        sync: m.get_flag("sync"),
        intents: std::sync::Mutex::new(Vec::new()),
    };

    let record = pull(&puller, parsed, registry.as_ref(), early_top, name_flag);
    // Whatever was written, also by a pull that failed half-way, is flushed.
    let intents = std::mem::take(&mut *puller.intents.lock().unwrap_or_else(|p| p.into_inner()));
    kist_common::settle::hand_off("img-fetch", intents).map_err(kist_common::store::StoreError::from)?;
    if puller.sync && record.is_ok() {
        kist_common::settle::flush_pending(store.root()).map_err(kist_common::store::StoreError::from)?;
    }
    emit(&Record::Image(record?))
}

fn pull(
    puller: &Puller,
    parsed: Parsed,
    registry: Option<&LazyRegistry>,
    early_top: Option<Result<Top, Error>>,
    name_flag: Option<&String>,
) -> Result<kist_common::record::ImageRecord, Error> {
    let record = match parsed {
        Parsed::Registry(reference) => {
            let (Some(src), Some(top)) = (registry, early_top) else {
                return Err(Error::Usage("internal: registry source not prepared".into()));
            };
            let name = if reference.tag().is_some() { reference.without_digest() } else { reference.clone() };
            puller.pull(src, top?, Some(&name))?
        }
        Parsed::Layout(dir, tag) => {
            let layout = OciLayout::open(&dir)?;
            let desc = layout.resolve(tag.as_deref())?;
            let name = import_name(name_flag, tag.as_deref(), &dir)?;
            let top =
                Top::Digest { digest: desc.digest, size: Some(desc.size), media_type: Some(desc.media_type) };
            puller.pull(&layout, top, Some(&name))?
        }
        Parsed::Archive(file, r) => {
            let want_ref = match &r {
                Some(t) => Some(t.parse::<Reference>()?),
                None => None,
            };
            let archive = DockerArchive::open(&file, want_ref.as_ref())?;
            let name = match (name_flag, &want_ref, &archive.repo_tag) {
                (Some(n), _, _) => n.parse()?,
                (None, Some(w), _) => w.clone(),
                (None, None, Some(t)) => t.parse()?,
                (None, None, None) => import_name(None, None, &file)?,
            };
            let (digest, _) = archive.manifest();
            let top = Top::Digest {
                digest,
                size: None,
                media_type: Some(kist_common::store::MEDIA_OCI_MANIFEST.into()),
            };
            puller.pull(&archive, top, Some(&name))?
        }
    };
    Ok(record)
}

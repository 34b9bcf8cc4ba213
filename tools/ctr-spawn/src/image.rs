//! Where the container's image comes from: img-unpack's `snapshot` record
//! on stdin, or `--image REF` looked up in the store. ctr-spawn does not
//! unpack: with --image, every snapshot must already exist.

use std::io::BufRead;
use std::path::PathBuf;

use kist_common::record::{Record, SnapshotRecord};
use kist_common::store::Store;
use kist_common::StateRoot;

use crate::Error;

/// Reads the first `snapshot` record from stdin (other records are skipped,
/// an `error` record from an earlier tool in the pipe is reported).
pub fn from_stdin() -> Result<SnapshotRecord, Error> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Error::Usage(
            "no image: pipe img-unpack's snapshot record into ctr-spawn, or give --image REF".into(),
        ));
    }
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(Error::Stdin)?;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(t) {
            Ok(Record::Snapshot(s)) => return Ok(s),
            Ok(Record::Error(e)) => {
                return Err(Error::Image(format!("{} failed: {}", e.tool, e.message)));
            }
            Ok(_) => continue,
            Err(e) => return Err(Error::Usage(format!("stdin is not a snapshot record: {e}"))),
        }
    }
    Err(Error::Usage("no snapshot record on stdin (is img-unpack's output piped in?)".into()))
}

/// Finds an unpacked image in the store by reference, name or id.
pub fn from_store(root: &StateRoot, query: &str) -> Result<SnapshotRecord, Error> {
    let store = Store::open(root)?;
    let images = kist_common::catalog::list(&store).map_err(|e| Error::Image(e.to_string()))?;
    let image = kist_common::catalog::find(&images, query).map_err(|e| match e {
        kist_common::catalog::CatalogError::NotFound(_) => Error::Image(format!(
            "Unable to find image '{query}' locally: fetch it with img-fetch and unpack it with img-unpack"
        )),
        other => Error::Image(other.to_string()),
    })?;
    let chain_ids = image.chain_ids();
    let snapshots: Vec<PathBuf> = chain_ids.iter().map(|c| root.snapshot_dir(c)).collect();
    if let Some(missing) = snapshots.iter().find(|p| !p.is_dir()) {
        return Err(Error::Image(format!(
            "image '{query}' is not unpacked ({} is missing): run `img-unpack {query}` first",
            missing.display()
        )));
    }
    Ok(SnapshotRecord {
        schema_version: kist_common::record::SCHEMA_VERSION,
        id: image.id.clone(),
        reference: image.ref_name.clone(),
        snapshots,
        chain_ids,
        platform: image.platform.clone(),
        config: image.run_config.clone(),
        store: root.path().to_path_buf(),
    })
}

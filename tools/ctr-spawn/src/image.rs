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
///
/// With `-i` the rest of stdin belongs to the container, so the record is
/// then read one byte at a time: nothing after its line is consumed.
pub fn from_stdin(keep_rest: bool) -> Result<SnapshotRecord, Error> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Error::Usage(
            "no image: pipe img-unpack's snapshot record into ctr-spawn, or give --image REF".into(),
        ));
    }
    let lines: Box<dyn Iterator<Item = std::io::Result<String>>> = if keep_rest {
        Box::new(std::iter::from_fn(unbuffered_line))
    } else {
        Box::new(std::io::stdin().lock().lines())
    };
    for line in lines {
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

/// One line of fd 0 read without buffering; None at end of file.
fn unbuffered_line() -> Option<std::io::Result<String>> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading one byte into a local buffer.
        let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Some(Err(e));
        }
        if n == 0 {
            return if line.is_empty() {
                None
            } else {
                Some(Ok(String::from_utf8_lossy(&line).into_owned()))
            };
        }
        if b[0] == b'\n' {
            return Some(Ok(String::from_utf8_lossy(&line).into_owned()));
        }
        line.push(b[0]);
    }
}

/// Finds an unpacked image in the store by reference, name or id.
pub fn from_store(root: &StateRoot, query: &str) -> Result<SnapshotRecord, Error> {
    let store = Store::open_with(root, kist_common::settle::Orphans::Leave)?;
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

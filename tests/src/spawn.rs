//! Fixtures for ctr-spawn's tests: an unpacked image made directly from
//! image entries (a snapshot directory under the test's state root plus
//! the `snapshot` record img-unpack would print), and helpers to run
//! ctr-spawn with that record on stdin.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kist_common::Digest;
use serde_json::json;

use crate::image::{layer_tar, Entry};

/// An unpacked single-layer image under a state root.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub snapshot: PathBuf,
    pub image_id: Digest,
    /// The `snapshot` record, one JSON line.
    pub record: String,
}

/// Writes `entries` as the snapshot `snapshots/<chain-id>/` under `root`
/// and returns the record for it, with `config` as the image's RunConfig.
pub fn unpack(root: &Path, entries: &[Entry], config: serde_json::Value) -> Unpacked {
    let diff_id = Digest::of(&layer_tar(entries));
    let snapshot = root.join("snapshots").join(diff_id.hex());
    if !snapshot.exists() {
        let tmp = root.join("snapshots").join(format!(".tmp-{}", diff_id.hex()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).expect("snapshot dir");
        extract(&tmp, entries);
        std::fs::rename(&tmp, &snapshot).expect("snapshot rename");
    }
    let image_id = Digest::of(serde_json::to_vec(&config).expect("json").as_slice());
    let record = json!({
        "type": "snapshot",
        "schemaVersion": 1,
        "id": image_id.to_string(),
        "reference": "kist.test/busybox:latest",
        "snapshots": [snapshot],
        "chainIds": [diff_id.to_string()],
        "platform": {"os": "linux", "architecture": crate::image::host_arch()},
        "config": config,
        "store": root,
    });
    Unpacked { snapshot, image_id, record: record.to_string() }
}

/// Docker's busybox config: PATH and `sh`.
pub fn busybox_config() -> serde_json::Value {
    json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]})
}

/// The busybox image unpacked under `root`.
pub fn busybox(root: &Path) -> Unpacked {
    unpack(root, &crate::image::busybox_entries(), busybox_config())
}

fn extract(dir: &Path, entries: &[Entry]) {
    for e in entries {
        match e {
            Entry::Dir { path, mode } => {
                let p = dir.join(path);
                std::fs::create_dir_all(&p).expect("dir");
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("chmod");
            }
            Entry::File { path, mode, data } => {
                let p = dir.join(path);
                std::fs::create_dir_all(p.parent().expect("parent")).expect("parent dir");
                std::fs::write(&p, data).expect("file");
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("chmod");
            }
            Entry::Symlink { path, target } => {
                let p = dir.join(path);
                std::fs::create_dir_all(p.parent().expect("parent")).expect("parent dir");
                std::os::unix::fs::symlink(target, &p).expect("symlink");
            }
            Entry::Hardlink { path, target } => {
                std::fs::hard_link(dir.join(target), dir.join(path)).expect("hardlink");
            }
        }
    }
}

/// Runs ctr-spawn (with `KIST_ROOT` = the test root) with the record on stdin.
pub fn spawn(root: &crate::TestRoot, img: &Unpacked, args: &[&str]) -> Output {
    let mut c = root.cmd("ctr-spawn");
    c.args(args);
    crate::run_with_stdin(&mut c, img.record.as_bytes())
}

/// A ctr-spawn command (not started) for tests that need more control.
pub fn command(root: &crate::TestRoot, args: &[&str]) -> Command {
    let mut c = root.cmd("ctr-spawn");
    c.args(args);
    c
}

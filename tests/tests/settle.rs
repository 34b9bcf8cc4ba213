//! Deferred durability on real stores: img-fetch and img-unpack publish
//! blobs and snapshots before the disk has them, under an intent in
//! `unsettled/` that a detached settler removes once it has flushed; and an
//! intent left by an earlier boot (the machine went down before the flush)
//! makes the next tool re-check the blobs it names and drop the snapshots,
//! after which a pull and an unpack make them whole again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kist_common::Digest;
use kist_tests::image::{self, BuiltImage};
use kist_tests::{run, OutputExt, TestRoot};

const ML: &str = "127.0.0.1:5000/test/multi:1";

fn intents(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("unsettled"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits (up to 20 s) for every intent under `root` to be settled.
fn wait_settled(root: &Path) -> Duration {
    let start = Instant::now();
    while !intents(root).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "still unsettled: {:?}", intents(root));
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Settler processes working on an intent under `root`.
fn settlers(root: &Path) -> Vec<u32> {
    let needle = format!("{}/unsettled/", root.display());
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().any(|a| a == "--settle") && args.iter().any(|a| a.contains(&needle)) {
            found.push(pid);
        }
    }
    found
}

fn pull(root: &TestRoot, img: &BuiltImage, extra: &[&str]) -> std::process::Output {
    let src = format!("oci:{}:{}", img.layout.display(), img.tag);
    run(root.cmd("img-fetch").args(["--quiet", "--name", ML]).args(extra).arg(src))
}

fn blob(root: &Path, d: &Digest) -> PathBuf {
    root.join("blobs/sha256").join(d.hex())
}

fn snapshot(root: &Path, c: &Digest) -> PathBuf {
    root.join("snapshots").join(c.hex())
}

#[test]
fn writes_are_settled_after_the_tools_return_and_sync_waits_for_the_disk() {
    let root = TestRoot::new();
    let img = image::multilayer();
    pull(&root, &img, &[]).assert_ok();
    // Everything is readable at once, and correct: the page cache serves it.
    for d in img.layers.iter().chain([&img.config, &img.manifest]) {
        let bytes = std::fs::read(blob(root.path(), d)).unwrap();
        assert_eq!(&Digest::of(&bytes), d);
    }
    wait_settled(root.path());
    assert!(settlers(root.path()).is_empty());

    run(root.cmd("img-unpack").arg(ML)).assert_ok();
    let chains = kist_common::record::chain_ids(&img.diff_ids);
    for c in &chains {
        assert!(snapshot(root.path(), c).is_dir());
    }
    assert_eq!(std::fs::read(snapshot(root.path(), &chains[2]).join("data/new")).unwrap(), b"new\n");
    wait_settled(root.path());

    // --sync: flushed before exit, so nothing is left to settle and no
    // settler was started.
    let synced = TestRoot::new();
    pull(&synced, &img, &["--sync"]).assert_ok();
    assert!(intents(synced.path()).is_empty(), "{:?}", intents(synced.path()));
    run(synced.cmd("img-unpack").args(["--sync", ML])).assert_ok();
    assert!(intents(synced.path()).is_empty(), "{:?}", intents(synced.path()));
    assert!(settlers(synced.path()).is_empty());
    assert!(!synced.path().join("unsettled").exists());
    // --flatten --sync flushes the tree it writes, and needs no intent.
    let flat = tempfile::tempdir().unwrap();
    let dir = flat.path().join("rootfs");
    run(synced.cmd("img-unpack").args(["--sync", "--flatten"]).arg(&dir).arg(ML)).assert_ok();
    assert_eq!(std::fs::read(dir.join("data/new")).unwrap(), b"new\n");
    assert!(!dir.join("data/old").exists(), "the opaque directory hides the lower layer's file");
    assert!(!synced.path().join("unsettled").exists());
}

#[test]
fn an_earlier_boots_intent_is_checked_and_what_it_lost_is_made_again() {
    let root = TestRoot::new();
    let img = image::multilayer();
    pull(&root, &img, &["--sync"]).assert_ok();
    run(root.cmd("img-unpack").args(["--sync", ML])).assert_ok();
    let chains = kist_common::record::chain_ids(&img.diff_ids);
    let made = run(root.cmd("ctr-spawn").args([
        "--create",
        "--network",
        "none",
        "--name",
        "before",
        "--image",
        ML,
        "--",
        "true",
    ]));
    made.assert_ok();

    // The crash: the first layer's blob lost its tail's content (same size),
    // and an intent of a boot that is not this one names it, the second
    // layer's blob (intact), the config and the two lowest snapshots.
    let torn = blob(root.path(), &img.layers[0]);
    let mut bytes = std::fs::read(&torn).unwrap();
    let n = bytes.len();
    bytes[n / 2..].fill(0);
    std::fs::write(&torn, &bytes).unwrap();
    std::fs::create_dir_all(root.path().join("unsettled")).unwrap();
    let intent = root.path().join("unsettled/00000000-0000-4000-8000-000000000000.1.0.json");
    let body = serde_json::json!({
        "schemaVersion": 1,
        "bootId": "00000000-0000-4000-8000-000000000000",
        "root": root.path(),
        "blobs": [img.layers[0].to_string(), img.layers[1].to_string(), img.config.to_string()],
        "snapshots": [chains[0].to_string(), chains[1].to_string()],
    });
    std::fs::write(&intent, serde_json::to_vec(&body).unwrap()).unwrap();

    // Any tool that opens the store repairs it first.
    run(root.cmd("img-list").arg("-q")).assert_ok();
    assert!(!intent.exists(), "the intent is settled once checked");
    assert!(!torn.exists(), "the torn blob is removed");
    assert!(blob(root.path(), &img.layers[1]).exists(), "an intact blob is kept");
    assert!(blob(root.path(), &img.config).exists());
    assert!(blob(root.path(), &img.layers[2]).exists(), "a blob the intent does not name is untouched");
    assert!(snapshot(root.path(), &chains[2]).is_dir(), "a snapshot it does not name stays");
    for c in &chains[..2] {
        assert!(!snapshot(root.path(), c).exists(), "snapshot {c} is discarded");
        assert!(!root.path().join(format!("snapshots/{}.json", c.hex())).exists());
    }

    // The container made before cannot start on what is gone, and says why.
    let start = run(root.cmd("ctr-spawn").args(["--start", "before"]));
    assert!(!start.status.success());
    assert!(start.stderr_str().contains("is missing"), "{}", start.stderr_str());

    // img-unpack needs the lost blob; a pull brings back exactly that one.
    let unpack = run(root.cmd("img-unpack").arg(ML));
    assert!(!unpack.status.success());
    pull(&root, &img, &[]).assert_ok();
    assert_eq!(Digest::of(&std::fs::read(&torn).unwrap()), img.layers[0]);
    run(root.cmd("img-unpack").arg(ML)).assert_ok();
    for c in &chains {
        assert!(snapshot(root.path(), c).is_dir());
    }
    assert_eq!(std::fs::read(snapshot(root.path(), &chains[1]).join("data/keep")).unwrap(), b"keep\n");
    wait_settled(root.path());
    run(root.cmd("ctr-kill").args(["--rm", "-f", "before"])).assert_ok();
}

//! img-list and img-rm on real stores: records and docker's table, untag
//! versus delete, images kept for containers, pruning, collection of blobs
//! and snapshots (with the grace and locks that protect a concurrent
//! img-fetch), and a store that skopeo, umoci and img-unpack still read.

use std::path::{Path, PathBuf};
use std::process::Command;

use kist_common::{Digest, StateRoot};
use kist_tests::image::{self, BuiltImage};
use kist_tests::{run, run_with_stdin, store, OutputExt, TestRoot};

const BB: &str = "127.0.0.1:5000/test/busybox:latest";
const ML1: &str = "127.0.0.1:5000/test/multi:1";
const ML2: &str = "127.0.0.1:5000/test/multi:2";

fn blob(root: &Path, d: &Digest) -> PathBuf {
    root.join("blobs/sha256").join(d.hex())
}

fn snapshot(root: &Path, d: &Digest) -> PathBuf {
    root.join("snapshots").join(d.hex())
}

/// The image's layers' unpacked sizes, as img-unpack recorded them.
fn unpacked_size(root: &Path, img: &BuiltImage) -> u64 {
    kist_common::record::chain_ids(&img.diff_ids)
        .iter()
        .map(|c| {
            let meta = std::fs::read(root.join("snapshots").join(format!("{}.json", c.hex()))).unwrap();
            serde_json::from_slice::<serde_json::Value>(&meta).unwrap()["diskSize"].as_u64().unwrap()
        })
        .sum()
}

/// Docker's size of a layer built from `entries` (moby's directory size of
/// the overlay2 diff directory): files' bytes and symlinks' target lengths;
/// directories and hard links (a second name of a counted file) count
/// nothing. Computed from the entries, not from what img-unpack wrote.
fn docker_size(entries: &[image::Entry]) -> u64 {
    entries
        .iter()
        .map(|e| match e {
            image::Entry::File { data, .. } => data.len() as u64,
            image::Entry::Symlink { target, .. } => target.len() as u64,
            image::Entry::Dir { .. } | image::Entry::Hardlink { .. } => 0,
        })
        .sum()
}

fn setup() -> (TestRoot, BuiltImage, BuiltImage) {
    let root = TestRoot::new();
    let bb = store::import(root.path(), &image::busybox(), BB);
    let ml = store::import(root.path(), &image::multilayer(), ML1);
    store::import(root.path(), &image::multilayer(), ML2);
    for r in [BB, ML1] {
        run(root.cmd("img-unpack").arg(r)).assert_ok();
    }
    (root, bb, ml)
}

fn events(out: &std::process::Output, action: &str) -> Vec<serde_json::Value> {
    out.records().into_iter().filter(|r| r["type"] == "event" && r["action"] == action).collect()
}

fn make_old(path: &Path, secs: i64) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs as u64);
    let f = std::fs::File::options().write(true).open(path).or_else(|_| std::fs::File::open(path)).unwrap();
    f.set_modified(t).unwrap();
}

fn store_is_readable(root: &Path, references: &[&str]) {
    let out = run(Command::new("umoci").arg("ls").arg("--layout").arg(root));
    assert!(out.status.success(), "umoci ls: {}", out.stderr_str());
    for r in references {
        assert!(out.stdout_str().lines().any(|l| l == *r), "umoci ls lists {r}: {}", out.stdout_str());
        let out = run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:{}", root.display(), r)));
        assert!(out.status.success(), "skopeo inspect {r}: {}", out.stderr_str());
        let flat = tempfile::tempdir().unwrap();
        let out = run(Command::new(kist_tests::bin("img-unpack"))
            .arg("--root")
            .arg(root)
            .arg("--flatten")
            .arg(flat.path().join("fs"))
            .arg(r));
        out.assert_ok();
        let out = run(Command::new(kist_tests::bin("img-unpack")).arg("--root").arg(root).arg(r));
        out.assert_ok();
        for s in out.records()[0]["snapshots"].as_array().unwrap() {
            assert!(Path::new(s.as_str().unwrap()).is_dir());
        }
    }
}

#[test]
fn list_prints_records_quiet_ids_and_dockers_table() {
    let (root, bb, ml) = setup();
    store::import(root.path(), &image::busybox(), "docker.io/library/busybox:1.36");
    let out = run(root.cmd("img-list").args(["--format", "json"]));
    out.assert_ok();
    let recs = out.records();
    assert_eq!(recs.len(), 4, "{recs:?}");
    let bbrec = recs.iter().find(|r| r["reference"] == BB).expect("busybox record");
    assert_eq!(bbrec["type"], "image");
    assert_eq!(bbrec["schemaVersion"], 1);
    assert_eq!(bbrec["id"], bb.config.to_string());
    assert_eq!(bbrec["digest"], bb.manifest.to_string());
    assert_eq!(bbrec["repository"], "127.0.0.1:5000/test/busybox");
    assert_eq!(bbrec["tag"], "latest");
    assert_eq!(bbrec["created"], "2023-11-14T22:13:20Z");
    let layer_size = std::fs::metadata(blob(root.path(), &bb.layers[0])).unwrap().len();
    let config_size = std::fs::metadata(blob(root.path(), &bb.config)).unwrap().len();
    assert_eq!(bbrec["size"].as_u64().unwrap(), layer_size + config_size + bb.manifest_size);
    // The record is the one common defines.
    let parsed: kist_common::record::Record = serde_json::from_value(bbrec.clone()).unwrap();
    assert!(matches!(parsed, kist_common::record::Record::Image(_)));
    let hub = recs.iter().find(|r| r["reference"] == "docker.io/library/busybox:1.36").unwrap();
    assert_eq!((hub["repository"].as_str(), hub["tag"].as_str()), (Some("busybox"), Some("1.36")));

    let out = run(root.cmd("img-list").arg("-q"));
    let mut ids: Vec<String> = out.stdout_str().lines().map(str::to_string).collect();
    ids.sort();
    let mut want = vec![bb.config.short().to_string(), ml.config.short().to_string()];
    want.sort();
    assert_eq!(ids, want);

    let out = run(root.cmd("img-list").args(["--format", "table"]));
    out.assert_ok();
    let text = out.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("REPOSITORY"), "{text}");
    let cols: Vec<usize> =
        ["TAG", "IMAGE ID", "CREATED", "SIZE"].iter().map(|h| lines[0].find(h).unwrap()).collect();
    assert!(cols.windows(2).all(|w| w[0] < w[1]), "{text}");
    let row = lines.iter().find(|l| l.starts_with("127.0.0.1:5000/test/busybox ")).expect("busybox row");
    assert_eq!(row[cols[0]..].split_whitespace().next(), Some("latest"));
    assert_eq!(row[cols[1]..].split_whitespace().next(), Some(bb.config.short()));
    assert!(row[cols[2]..].starts_with("3 years ago") || row[cols[2]..].starts_with("2 years ago"), "{row}");
    // Unpacked (setup ran img-unpack): the SIZE docker images shows.
    let size = kist_common::output::human_size_decimal(unpacked_size(root.path(), &bb));
    assert_eq!(row[cols[3]..].trim(), size);
    assert!(size.ends_with("MB") || size.ends_with("kB"), "{size}");
    // Filter by repository.
    let out = run(root.cmd("img-list").args(["--format", "json", "127.0.0.1:5000/test/multi"]));
    assert_eq!(out.records().len(), 2);
    let out = run(root.cmd("img-list").args(["--format", "json", "busybox"]));
    assert_eq!(out.records().len(), 1);
}

#[test]
fn untag_then_delete_collects_only_what_nothing_uses() {
    let (root, bb, ml) = setup();
    let ml_chains = kist_common::record::chain_ids(&ml.diff_ids);
    let bb_chains = kist_common::record::chain_ids(&bb.diff_ids);
    assert_eq!(ml_chains[0], bb_chains[0], "the multilayer image shares busybox's base layer");

    let out = run(root.cmd("img-rm").arg(ML2));
    out.assert_ok();
    assert_eq!(events(&out, "untag").len(), 1);
    assert!(events(&out, "delete").is_empty(), "another name still holds the image");
    assert!(blob(root.path(), &ml.config).exists());

    let out = run(root.cmd("img-rm").args(["--format", "table", ML1]));
    out.assert_ok();
    let text = out.stdout_str();
    assert!(text.contains(&format!("Untagged: {ML1}")), "{text}");
    assert!(text.contains(&format!("Deleted: {}", ml.config)), "{text}");
    assert!(text.contains("Total reclaimed space:"), "{text}");
    for d in [&ml.config, &ml.manifest, &ml.layers[1], &ml.layers[2]] {
        assert!(!blob(root.path(), d).exists(), "{d} collected");
    }
    assert!(blob(root.path(), &ml.layers[0]).exists(), "shared base layer kept");
    assert!(!snapshot(root.path(), &ml_chains[1]).exists() && !snapshot(root.path(), &ml_chains[2]).exists());
    assert!(!root.path().join("snapshots").join(format!("{}.json", ml_chains[2].hex())).exists());
    assert!(snapshot(root.path(), &bb_chains[0]).exists(), "busybox's snapshot kept");
    store_is_readable(root.path(), &[BB]);

    // Gone names: exit 3.
    let out = run(root.cmd("img-rm").arg(ML1));
    assert_eq!(out.code(), 3, "{}", out.stderr_str());
}

fn add_container(root: &Path, id: &str, image: &Digest, snapshots: &[PathBuf]) {
    let dir = root.join("containers").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let state = serde_json::json!({"schemaVersion": 1, "id": id, "name": "c", "image": image.to_string(),
        "snapshots": snapshots, "command": ["sh"], "created": "2024-01-01T00:00:00Z", "status": "exited", "hostname": "c"});
    std::fs::write(dir.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
}

#[test]
fn images_and_snapshots_a_container_uses_are_never_removed() {
    let (root, bb, _ml) = setup();
    let chains = kist_common::record::chain_ids(&bb.diff_ids);
    let cid = "c".repeat(64);
    add_container(root.path(), &cid, &bb.config, &[snapshot(root.path(), &chains[0])]);

    let out = run(root.cmd("img-rm").arg(BB));
    assert_eq!(out.code(), 6, "conflict without --force: {}", out.stderr_str());
    let out = run(root.cmd("img-list").args(["--format", "json", BB]));
    assert_eq!(out.records().len(), 1, "still tagged");

    let out = run(root.cmd("img-rm").args(["--force", BB]));
    out.assert_ok();
    assert_eq!(events(&out, "untag").len(), 1);
    assert!(events(&out, "delete").is_empty());
    let out = run(root.cmd("img-list").args(["--format", "json", "--dangling"]));
    let dangling = out.records();
    assert_eq!(dangling.len(), 1, "kept without a name");
    assert_eq!(dangling[0]["id"], bb.config.to_string());
    assert_eq!(dangling[0]["repository"], "<none>");

    let out = run(root.cmd("img-rm").arg("--prune"));
    out.assert_ok();
    assert!(events(&out, "delete").is_empty(), "the container still uses it");
    assert!(blob(root.path(), &bb.layers[0]).exists() && snapshot(root.path(), &chains[0]).exists());
    store_is_readable(root.path(), &[ML1, ML2]);

    // A container whose snapshots outlive its image keeps them too.
    let other = TestRoot::new();
    store::import(other.path(), &image::busybox(), BB);
    run(other.cmd("img-unpack").arg(BB)).assert_ok();
    add_container(
        other.path(),
        &cid,
        &Digest::of(b"some other image"),
        &[snapshot(other.path(), &chains[0])],
    );
    let out = run(other.cmd("img-rm").arg(BB));
    out.assert_ok();
    assert_eq!(events(&out, "delete").len(), 1);
    assert!(snapshot(other.path(), &chains[0]).exists(), "snapshot named by the container kept");

    // Once the container is gone, prune removes the image.
    std::fs::remove_dir_all(root.path().join("containers").join(&cid)).unwrap();
    let out = run(root.cmd("img-rm").arg("--prune"));
    out.assert_ok();
    assert_eq!(events(&out, "delete").len(), 1);
    assert!(
        !blob(root.path(), &bb.layers[0]).exists()
            || blob(root.path(), &bb.layers[0]) == blob(root.path(), &_ml.layers[0])
    );
    assert!(!blob(root.path(), &bb.config).exists());
    store_is_readable(root.path(), &[ML1, ML2]);
}

#[test]
fn ids_prefixes_and_stdin() {
    let (root, bb, ml) = setup();
    // An ID with two names needs --force.
    let out = run(root.cmd("img-rm").arg(&ml.config.hex()[..10]));
    assert_eq!(out.code(), 6, "{}", out.stderr_str());
    let out = run(root.cmd("img-rm").args(["--force", &ml.config.hex()[..10]]));
    out.assert_ok();
    assert_eq!(events(&out, "untag").len(), 2);
    assert_eq!(events(&out, "delete").len(), 1);
    // img-list's records piped in.
    let list = run(root.cmd("img-list").args(["--format", "json"]));
    let out = run_with_stdin(&mut root.cmd("img-rm"), &list.stdout);
    out.assert_ok();
    assert_eq!(events(&out, "delete")[0]["id"], bb.config.to_string());
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 0);
    assert_eq!(std::fs::read_dir(root.path().join("blobs/sha256")).unwrap().count(), 0);
    let snaps: Vec<_> = std::fs::read_dir(root.path().join("snapshots")).unwrap().collect();
    assert!(snaps.is_empty(), "{snaps:?}");
    let out = run(&mut root.cmd("img-rm"));
    assert_eq!(out.code(), 2, "nothing named: usage");
}

#[test]
fn collection_spares_young_orphans_locked_blobs_and_fresh_tmp() {
    let root = TestRoot::new();
    store::import(root.path(), &image::busybox(), BB);
    let sr = StateRoot::at(root.path());
    let blobs = root.path().join("blobs/sha256");
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    // A blob a running img-fetch has landed but not yet named: young.
    let young = Digest::of(b"young orphan");
    std::fs::write(blobs.join(young.hex()), b"young orphan").unwrap();
    // An old orphan, and an old one whose blob lock a fetch holds.
    let old = Digest::of(b"old orphan");
    std::fs::write(blobs.join(old.hex()), b"old orphan").unwrap();
    make_old(&blobs.join(old.hex()), 7200);
    let locked = Digest::of(b"locked orphan");
    std::fs::write(blobs.join(locked.hex()), b"locked orphan").unwrap();
    make_old(&blobs.join(locked.hex()), 7200);
    let held = kist_common::fsutil::Lock::exclusive(&sr.blob_lock(&locked)).unwrap();
    // Work files: a partial download from now, and one from two days ago.
    let fresh_tmp = root.path().join("tmp/fresh.partial");
    std::fs::write(&fresh_tmp, b"x").unwrap();
    let stale_tmp = root.path().join("tmp/stale.partial");
    std::fs::write(&stale_tmp, b"x").unwrap();
    make_old(&stale_tmp, 2 * 86400);

    let out = run(root.cmd("img-rm").arg("--prune"));
    out.assert_ok();
    assert!(blobs.join(young.hex()).exists(), "young orphan spared");
    assert!(!blobs.join(old.hex()).exists(), "old orphan collected");
    assert!(blobs.join(locked.hex()).exists(), "blob under a fetch's lock spared");
    assert!(fresh_tmp.exists() && !stale_tmp.exists());
    drop(held);
    let out = run(root.cmd("img-rm").arg("--prune"));
    out.assert_ok();
    assert!(!blobs.join(locked.hex()).exists());
    assert_eq!(events(&out, "collect")[0]["blobs"], 1);
    // The swept blobs' lock files go with them; the kept blobs' may stay.
    let lock_files: Vec<String> = std::fs::read_dir(root.path().join("locks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("blob-"))
        .collect();
    for d in [&old, &locked, &young] {
        assert!(!lock_files.contains(&format!("blob-{}.lock", d.hex())) || blobs.join(d.hex()).exists());
    }
    assert!(!lock_files.contains(&format!("blob-{}.lock", locked.hex())), "{lock_files:?}");
    store_is_readable(root.path(), &[BB]);
}

#[test]
fn collection_waits_for_a_running_unpack() {
    let root = TestRoot::new();
    store::import(root.path(), &image::busybox(), BB);
    let sr = StateRoot::at(root.path());
    // An unpack in progress holds the snapshots lock shared.
    let lock = kist_common::fsutil::Lock::shared(&sr.snapshots_lock()).unwrap();
    let mut child = root
        .cmd("img-rm")
        .args(["--force", BB])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert!(child.try_wait().unwrap().is_none(), "img-rm waits while an unpack runs");
    let idx = std::fs::read_to_string(root.path().join("index.json")).unwrap();
    assert!(idx.contains(BB), "nothing changed yet");
    drop(lock);
    let out = child.wait_with_output().unwrap();
    out.assert_ok();
    assert!(!root.path().join("blobs/sha256").join(image::busybox().layers[0].hex()).exists());
}

#[test]
fn size_is_the_unpacked_size_once_unpacked_as_docker_shows_it() {
    let root = TestRoot::new();
    let bb = store::import(root.path(), &image::busybox(), BB);
    let size = |root: &TestRoot| {
        let out = run(root.cmd("img-list").args(["--format", "{{.Size}}"]));
        out.assert_ok();
        out.stdout_str().trim().to_string()
    };
    let packed = size(&root);
    run(root.cmd("img-unpack").arg(BB)).assert_ok();
    let unpacked = unpacked_size(root.path(), &bb);
    // docker images shows 1.98MB (1984371 bytes with busybox 1.35's
    // binary) for this image where the tar streams add up to 2.13MB.
    assert_eq!(unpacked, docker_size(&image::busybox_entries()));
    assert_eq!(size(&root), kist_common::output::human_size_decimal(unpacked));
    assert_ne!(size(&root), packed, "busybox compresses, so the two sizes differ");
    // The record keeps the compressed size it documents.
    let rec = &run(&mut root.cmd("img-list")).records()[0];
    assert_ne!(rec["size"].as_u64().unwrap(), unpacked);
}

#[test]
fn size_follows_dockers_rule_files_symlinks_hardlinks_once_no_dirs() {
    use kist_tests::image::{layer_tar, Entry, ImageBuilder};
    let root = TestRoot::new();
    let big = vec![b'x'; 5000];
    let lower = vec![
        Entry::dir("a", 0o755),
        Entry::dir("a/deep", 0o700),
        Entry::dir("a/deep/er", 0o755),
        Entry::file("a/f", 0o644, &big),
        Entry::hardlink("a/deep/er/f2", "a/f"),
        Entry::hardlink("a/f3", "a/f"),
        Entry::file("a/empty", 0o644, b""),
        Entry::file("a/gone", 0o644, b"0123456789"),
        Entry::symlink("a/s", "deep/er/f2"),
        Entry::dir("b", 0o755),
    ];
    let upper = vec![
        Entry::dir("a", 0o755),
        // A whiteout: unpacked as a 0/0 device, it counts nothing.
        Entry::file("a/.wh.gone", 0o644, b""),
        Entry::file("c", 0o600, &[7u8; 321]),
        Entry::symlink("l", "/a/deep/er/f2"),
    ];
    let img = ImageBuilder::new()
        .layer(layer_tar(&lower))
        .layer(layer_tar(&upper))
        .write_layout(&root.path().join("layout"), "latest");
    let reference = "127.0.0.1:5000/test/sizes:1";
    store::import(root.path(), &img, reference);
    run(root.cmd("img-unpack").arg(reference)).assert_ok();
    let want_lower = 5000 + 10 + "deep/er/f2".len() as u64;
    let want_upper = 321 + "/a/deep/er/f2".len() as u64;
    assert_eq!(docker_size(&lower), want_lower);
    assert_eq!(docker_size(&upper), want_upper);
    assert_eq!(unpacked_size(root.path(), &img), want_lower + want_upper);
    let out = run(root.cmd("img-list").args(["--format", "{{.Size}}", reference]));
    out.assert_ok();
    // 5354 bytes, where the tar streams come to over 10 kB.
    assert_eq!(out.stdout_str().trim(), "5.35kB");
    let out = run(root.cmd("img-list").args(["--format", "table", reference]));
    out.assert_ok();
    assert!(out.stdout_str().lines().nth(1).unwrap().trim_end().ends_with("5.35kB"), "{}", out.stdout_str());
}

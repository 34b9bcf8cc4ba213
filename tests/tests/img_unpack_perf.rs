//! img-unpack's speed levers must not change what it produces or weaken
//! what it promises: layers unpacked side by side give the same snapshots
//! as one at a time (the decoder thread, early writeback and parallel
//! layers included, with hard links into lower layers forcing an order),
//! and an unpack killed mid-layer publishes no snapshot; the next run
//! makes it whole.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kist_tests::image::{self, Entry, ImageBuilder};
use kist_tests::tree;
use kist_tests::{run, store, OutputExt, TestRoot};

const REF: &str = "127.0.0.1:5000/test/perf:latest";

/// Bytes that gzip cannot shrink much, so a layer of them takes a while.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// Three layers: a base with big and small files, a layer hard-linking
/// into the base (copy-up, so it must wait for the base), and one with
/// whiteouts.
fn layered() -> ImageBuilder {
    let big = noise(3 << 20, 1);
    let mid = noise(100 << 10, 2);
    let mut base = vec![Entry::dir("bin", 0o755), Entry::dir("data", 0o755), Entry::dir("etc", 0o755)];
    base.push(Entry::file("data/big", 0o644, &big));
    base.push(Entry::file("data/mid", 0o600, &mid));
    base.push(Entry::file("bin/tool", 0o4755, b"#!/bin/sh\necho tool\n"));
    for i in 0..200 {
        base.push(Entry::file(&format!("etc/f{i:03}"), 0o644, format!("file {i}\n").as_bytes()));
    }
    base.push(Entry::symlink("etc/link", "f001"));
    let second = vec![
        Entry::dir("data", 0o755),
        Entry::hardlink("data/big-again", "data/big"),
        Entry::hardlink("data/mid-again", "data/mid"),
        Entry::file("data/new", 0o644, &noise(70 << 10, 3)),
    ];
    let third = vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/.wh.f000", 0o644, b""),
        Entry::dir("data", 0o755),
        Entry::file("data/.wh.mid", 0o644, b""),
    ];
    ImageBuilder::new()
        .layer(image::layer_tar(&base))
        .layer(image::layer_tar(&second))
        .layer(image::layer_tar(&third))
}

fn snapshots(root: &TestRoot, jobs: &str) -> Vec<PathBuf> {
    let out = run(root.cmd("img-unpack").arg("--jobs").arg(jobs).arg(REF));
    out.assert_ok();
    let recs = out.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    recs[0]["snapshots"].as_array().unwrap().iter().map(|p| PathBuf::from(p.as_str().unwrap())).collect()
}

#[test]
fn serial_and_parallel_unpacks_make_the_same_snapshots() {
    let serial = TestRoot::new();
    let parallel = TestRoot::new();
    let img = store::put(serial.path(), &layered(), REF);
    store::import(parallel.path(), &img, REF);
    let a = snapshots(&serial, "1");
    let b = snapshots(&parallel, "4");
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.file_name(), y.file_name(), "same chain IDs");
        let (tx, ty) = (tree::scan(x), tree::scan(y));
        let d = tree::diff(&tx, &ty, false);
        assert!(d.is_empty(), "{} vs {}:\n{}", x.display(), y.display(), d.join("\n"));
        // Times come from the layer, except for the snapshot's own root
        // and the whiteouts, which the layer does not date.
        for (k, n) in &tx {
            if k != "/" && (n.kind == "file" || n.kind == "dir" || n.kind == "symlink") {
                assert_eq!(n.mtime, ty[k].mtime, "mtime of {k}");
            }
        }
    }
    // The copy-up made the linked files whole in the second snapshot, and
    // the links to one lower file stay one inode there.
    for s in [&a[1], &b[1]] {
        let again = std::fs::read(s.join("data/big-again")).unwrap();
        assert_eq!(again, noise(3 << 20, 1));
        assert_eq!(std::fs::read(s.join("data/mid-again")).unwrap(), noise(100 << 10, 2));
        assert_eq!(std::fs::metadata(s.join("data/new")).unwrap().len(), 70 << 10);
    }
    // Whiteouts are 0/0 character devices.
    let wh = std::fs::symlink_metadata(b[2].join("etc/f000")).unwrap();
    assert_eq!(wh.mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(wh.rdev(), 0);
}

fn published(root: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(root.join("snapshots")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect(),
        Err(_) => Vec::new(),
    }
}

fn in_progress(root: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(root.join("tmp")) else { return false };
    rd.flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("unpack-")
            && std::fs::read_dir(e.path()).map(|mut d| d.next().is_some()).unwrap_or(false)
    })
}

#[test]
fn a_killed_unpack_publishes_no_snapshot() {
    // One layer of many files: long enough to be caught half-way.
    let mut entries = vec![Entry::dir("many", 0o755)];
    for i in 0..4000 {
        entries.push(Entry::file(&format!("many/f{i:05}"), 0o644, &noise(4096 + i, i as u64)));
    }
    let builder = ImageBuilder::new().layer(image::layer_tar(&entries));
    let mut caught = false;
    for attempt in 0..5 {
        let root = TestRoot::new();
        store::put(root.path(), &builder, REF);
        let mut child = root
            .cmd("img-unpack")
            .arg(REF)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Later attempts wait longer into the layer before the kill.
        let mut seen = 0;
        let done = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            if in_progress(root.path()) {
                seen += 1;
                if seen > attempt * 20 {
                    break false;
                }
            }
            assert!(Instant::now() < deadline, "img-unpack did not start");
            std::thread::sleep(Duration::from_millis(1));
        };
        if done {
            continue;
        }
        // SAFETY: signalling the child we spawned, by its pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        let status = child.wait().unwrap();
        if status.code() == Some(0) {
            // It finished between the check and the kill: try again.
            continue;
        }
        caught = true;
        assert!(
            published(root.path()).is_empty(),
            "a killed unpack left a snapshot: {:?}",
            published(root.path())
        );
        // The next run makes the whole snapshot.
        let out = run(root.cmd("img-unpack").arg(REF));
        out.assert_ok();
        let snaps = published(root.path());
        assert_eq!(snaps.len(), 1, "{snaps:?}");
        let n = std::fs::read_dir(snaps[0].join("many")).unwrap().count();
        assert_eq!(n, 4000, "the snapshot holds every file");
        let f = std::fs::read(snaps[0].join("many/f03999")).unwrap();
        assert_eq!(f, noise(4096 + 3999, 3999));
        break;
    }
    assert!(caught, "never caught img-unpack half-way through the layer");
}

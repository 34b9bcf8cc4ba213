//! img-unpack against a trusted unpacker: the overlay of kist's snapshots,
//! mounted, must equal `umoci unpack`'s rootfs (paths, types, modes,
//! owners, symlink targets, contents, xattrs) for busybox, the multilayer
//! fixture and a crafted image holding every entry type; plus snapshot
//! reuse, the digest check, compression by media type, `--flatten` and a
//! `--bundle` that runc runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use kist_tests::image::{self, BuiltImage, ImageBuilder};
use kist_tests::tarball::{tar, Item};
use kist_tests::tree::{self, Overlay};
use kist_tests::{run, store, OutputExt, TestRoot};

const REF: &str = "127.0.0.1:5000/test/img:latest";

fn umoci_rootfs(layout: &Path, tag: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("kist-umoci-").tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let out = run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{}", layout.display(), tag))
        .arg(&bundle));
    assert!(out.status.success(), "umoci unpack: {}", out.stderr_str());
    (dir, bundle.join("rootfs"))
}

/// Unpacks `reference` with img-unpack and returns its snapshot record.
fn unpack(root: &TestRoot, reference: &str) -> serde_json::Value {
    let out = run(root.cmd("img-unpack").arg(reference));
    out.assert_ok();
    let recs = out.records();
    assert_eq!(recs.len(), 1, "one snapshot record: {recs:?}");
    assert_eq!(recs[0]["type"], "snapshot");
    recs[0].clone()
}

fn snapshot_dirs(rec: &serde_json::Value) -> Vec<PathBuf> {
    rec["snapshots"].as_array().unwrap().iter().map(|p| PathBuf::from(p.as_str().unwrap())).collect()
}

/// The overlay of img-unpack's snapshots equals umoci's rootfs.
fn assert_parity(img: &BuiltImage) {
    let root = TestRoot::new();
    store::import(root.path(), img, REF);
    let rec = unpack(&root, REF);
    let dirs = snapshot_dirs(&rec);
    assert_eq!(dirs.len(), img.layers.len());
    let chains = kist_common::record::chain_ids(&img.diff_ids);
    for (d, c) in dirs.iter().zip(&chains) {
        assert_eq!(d, &root.path().join("snapshots").join(c.hex()));
        assert!(d.is_dir());
        assert!(root.path().join("snapshots").join(format!("{}.json", c.hex())).is_file());
    }
    let ovl = Overlay::mount(&dirs);
    let ours = tree::scan(&ovl.merged);
    let (_keep, theirs_root) = umoci_rootfs(&img.layout, &img.tag);
    let theirs = tree::scan(&theirs_root);
    let d = tree::diff(&ours, &theirs, false);
    assert!(d.is_empty(), "kist overlay (left) vs umoci rootfs (right):\n{}", d.join("\n"));
    assert!(ours.len() > 3);
    // --flatten applies the whiteouts itself and must agree as well.
    let flat = tempfile::tempdir().unwrap();
    let out = run(root.cmd("img-unpack").arg("--flatten").arg(flat.path().join("fs")).arg(REF));
    out.assert_ok();
    let mut flat_tree = tree::scan(&flat.path().join("fs"));
    // umoci dates the root from the archive or not at all; neither is image content.
    if let (Some(a), Some(b)) = (flat_tree.get_mut("/"), theirs.get("/")) {
        a.mtime = b.mtime;
    }
    // The crafted image's long-name parents (/deep/deep/…) have no entry
    // of their own in the archive: both unpackers date them "now", a
    // second apart when the clock ticks between the runs.
    for (path, node) in flat_tree.iter_mut() {
        if path.starts_with("/deep") && node.kind == "dir" {
            if let Some(b) = theirs.get(path) {
                node.mtime = b.mtime;
            }
        }
    }
    let d = tree::diff(&flat_tree, &theirs, true);
    assert!(d.is_empty(), "kist --flatten (left) vs umoci rootfs (right):\n{}", d.join("\n"));
}

#[test]
fn busybox_matches_umoci() {
    assert_parity(&image::busybox());
}

#[test]
fn multilayer_matches_umoci() {
    assert_parity(&image::multilayer());
}

/// Layers holding every entry type real images hold, with deletions,
/// opaque directories and hard links across layers.
pub fn crafted() -> BuiltImage {
    image::cached("unpack-crafted-v4", |dir| {
        let long_dir = "deep/".repeat(30);
        let base = tar(&[
            Item::dir("etc", 0o755),
            Item::file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\nwww:x:33:33::/var/www:/bin/sh\n"),
            Item::file("etc/group", 0o644, b"root:x:0:\nwww:x:33:\nstaff:x:50:www\n"),
            Item::dir("bin", 0o755),
            Item::file("bin/tool", 0o4755, b"#!/bin/sh\necho tool\n"),
            Item::file("bin/sgid", 0o2755, b"sgid\n").owner(0, 50),
            Item::symlink("bin/sh", "tool"),
            Item::symlink("abs", "/etc/passwd"),
            Item::symlink("dangling", "/nonexistent/x"),
            Item::dir("tmp", 0o1777),
            // A set-group-ID directory: what is created in it takes its
            // group, so entries the tar gives another group must be chowned.
            Item::dir("shared", 0o2775).owner(0, 50),
            Item::file("shared/root-file", 0o644, b"r\n"),
            Item::file("shared/staff-file", 0o644, b"s\n").owner(0, 50),
            Item::dir("shared/sub", 0o755),
            Item::symlink("shared/link", "root-file"),
            Item::dir("home", 0o755),
            Item::dir("home/user", 0o700).owner(1000, 1000),
            Item::file("home/user/own", 0o600, b"mine\n").owner(1000, 1000).mtime(1_600_000_000),
            Item::file("xattr-file", 0o644, b"x\n").xattr("user.kist", b"hello").xattr("trusted.kist", b"t"),
            Item::dir("data", 0o755),
            Item::file("data/f1", 0o644, b"one\n"),
            Item::hardlink("data/f1-link", "data/f1"),
            Item::file("data/f2", 0o644, b"two\n"),
            Item::dir("data/sub", 0o755),
            Item::file("data/sub/x", 0o644, b"x\n"),
            Item::dir("opq", 0o755),
            Item::file("opq/a", 0o644, b"a\n"),
            Item::dir("opq/old", 0o755),
            Item::file("opq/old/b", 0o644, b"b\n"),
            Item::file("hardsrc", 0o640, b"shared content\n").owner(33, 33).xattr("user.src", b"1"),
            Item::dir("repl", 0o755),
            Item::file("repl/inside", 0o644, b"inside\n"),
            Item::dir("run", 0o755),
            Item::fifo("run/fifo", 0o620),
            Item::dir("dev", 0o755),
            Item::char_dev("dev/null", 1, 3),
            Item::block_dev("dev/loop9", 7, 9),
            Item::file(&format!("{long_dir}gnu-long-name-file"), 0o644, b"gnu\n"),
            Item::file(&format!("{long_dir}pax-long-name-file"), 0o644, b"pax\n").pax(),
            Item::symlink(&format!("{long_dir}long-link"), &format!("/{long_dir}gnu-long-name-file")),
        ]);
        let second = tar(&[
            Item::dir("etc", 0o750),
            Item::file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n"),
            Item::dir("data", 0o755),
            Item::file("data/.wh.f2", 0o644, b""),
            Item::file("data/.wh.sub", 0o644, b""),
            Item::dir("opq", 0o755),
            Item::file("opq/.wh..wh..opq", 0o644, b""),
            Item::file("opq/new", 0o644, b"new\n"),
            Item::dir("links", 0o755),
            Item::hardlink("links/to-hardsrc", "hardsrc"),
            Item::hardlink("links/to-hardsrc-2", "links/to-hardsrc"),
            Item::file("links/gone", 0o644, b"gone\n"),
            Item::symlink("repl", "etc"),
            Item::file("layer2", 0o644, b"2\n").xattr("trusted.second", b"yes"),
        ]);
        let third = tar(&[
            Item::dir("links", 0o755),
            Item::file("links/.wh.gone", 0o644, b""),
            Item::dir("data", 0o755),
            Item::file("data/f2", 0o600, b"two again\n"),
            Item::dir("bin", 0o755),
            Item::hardlink("bin/tool2", "bin/tool"),
            Item::file(".wh.xattr-file", 0o644, b""),
        ]);
        ImageBuilder::new().layer(base).layer(second).layer(third).write_layout(dir, "latest")
    })
}

#[test]
fn crafted_image_matches_umoci() {
    let img = crafted();
    assert_parity(&img);
    // And what the comparison rests on is really there.
    let root = TestRoot::new();
    store::import(root.path(), &img, REF);
    let rec = unpack(&root, REF);
    let dirs = snapshot_dirs(&rec);
    let ovl = Overlay::mount(&dirs);
    let t = tree::scan(&ovl.merged);
    assert_eq!(t["/bin/tool"].mode, 0o4755);
    assert_eq!(t["/bin/tool2"].mode, 0o4755, "hard link copied up from two layers down keeps set-uid");
    assert_eq!((t["/bin/sgid"].mode, t["/bin/sgid"].gid), (0o2755, 50));
    assert_eq!(t["/tmp"].mode, 0o1777);
    assert_eq!((t["/shared"].mode, t["/shared"].gid), (0o2775, 50));
    assert_eq!(t["/shared/root-file"].gid, 0, "the tar's group, not the set-group-ID parent's");
    assert_eq!(t["/shared/staff-file"].gid, 50);
    assert_eq!((t["/shared/sub"].mode, t["/shared/sub"].gid), (0o755, 0));
    assert_eq!(t["/shared/link"].gid, 0);
    assert_eq!(t["/run/fifo"].kind, "fifo");
    assert_eq!(t["/dev/null"].data, "1:3");
    assert_eq!(t["/dev/loop9"].kind, "block");
    assert_eq!(t["/home/user/own"].uid, 1000);
    assert_eq!(t["/repl"].kind, "symlink");
    assert!(!t.contains_key("/data/sub/x") && !t.contains_key("/opq/a") && !t.contains_key("/links/gone"));
    assert!(!t.contains_key("/xattr-file"));
    assert_eq!(t["/layer2"].xattrs.get("trusted.second").map(Vec::as_slice), Some(&b"yes"[..]));
    assert_eq!(t["/links/to-hardsrc"].data, t["/hardsrc"].data);
    assert_eq!(t["/links/to-hardsrc"].uid, 33);
    assert_eq!(t["/links/to-hardsrc"].xattrs.get("user.src").map(Vec::as_slice), Some(&b"1"[..]));
    assert!(t.keys().any(|k| k.ends_with("/pax-long-name-file")));
    assert_eq!(t["/home/user/own"].mtime, 1_600_000_000);
    // In the snapshots themselves, deletions are overlay whiteouts.
    let second = tree::scan(&dirs[1]);
    assert_eq!(second["/data/f2"].kind, "char");
    assert_eq!(second["/data/f2"].data, "0:0");
    assert_eq!(second["/opq"].xattrs.get("trusted.overlay.opaque"), None, "scan hides overlay xattrs");
    let mut v = [0u8; 2];
    let p = std::ffi::CString::new(dirs[1].join("opq").to_str().unwrap()).unwrap();
    // SAFETY: valid strings and buffer.
    let n =
        unsafe { libc::lgetxattr(p.as_ptr(), c"trusted.overlay.opaque".as_ptr(), v.as_mut_ptr().cast(), 2) };
    assert_eq!(&v[..n.max(0) as usize], b"y");
    // The hard links within one layer are one inode, as in the tar.
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(dirs[0].join("data/f1")).unwrap();
    let b = std::fs::metadata(dirs[0].join("data/f1-link")).unwrap();
    assert_eq!(a.ino(), b.ino());
    let a = std::fs::metadata(dirs[1].join("links/to-hardsrc")).unwrap();
    let b = std::fs::metadata(dirs[1].join("links/to-hardsrc-2")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn fallback_resolver_gives_the_same_tree() {
    let img = crafted();
    let a = TestRoot::new();
    store::import(a.path(), &img, REF);
    let rec_a = unpack(&a, REF);
    let b = TestRoot::new();
    store::import(b.path(), &img, REF);
    let out = run(b.cmd("img-unpack").env("KIST_UNPACK_RESOLVER", "walk").arg(REF));
    out.assert_ok();
    let rec_b = &out.records()[0];
    for (x, y) in snapshot_dirs(&rec_a).iter().zip(snapshot_dirs(rec_b)) {
        // Implicit parent directories are dated when made; everything else must match.
        let d = tree::diff(&tree::scan(x), &tree::scan(&y), false);
        assert!(d.is_empty(), "openat2 (left) vs walk (right):\n{}", d.join("\n"));
    }
}

#[test]
fn snapshots_are_reused_and_record_carries_the_config() {
    let root = TestRoot::new();
    let img = image::multilayer();
    store::import(root.path(), &img, REF);
    let rec = unpack(&root, REF);
    assert_eq!(rec["id"], img.config.to_string());
    assert_eq!(rec["reference"], REF);
    assert_eq!(rec["config"]["Cmd"], serde_json::json!(["sh"]));
    assert!(rec["config"]["Env"][0].as_str().unwrap().starts_with("PATH="));
    let dirs = snapshot_dirs(&rec);
    let marker = dirs[0].join("bin/.kist-reuse-marker");
    std::fs::write(&marker, b"x").unwrap();
    // A second image sharing the base layer reuses its snapshot.
    let other = ImageBuilder::new()
        .layer(image::layer_tar(&image::busybox_entries()))
        .layer(image::layer_tar(&[image::Entry::file("extra", 0o644, b"extra\n")]))
        .config("Entrypoint", serde_json::json!(["/bin/echo"]))
        .config("WorkingDir", serde_json::json!("/tmp"))
        .config("User", serde_json::json!("www"))
        .config("ExposedPorts", serde_json::json!({"80/tcp": {}}))
        .config("Volumes", serde_json::json!({"/data": {}}))
        .config("StopSignal", serde_json::json!("SIGQUIT"))
        .config("Labels", serde_json::json!({"a": "b"}))
        .config("Healthcheck", serde_json::json!({"Test": ["CMD", "true"]}));
    store::put(root.path(), &other, "127.0.0.1:5000/test/other:1");
    let rec2 = unpack(&root, "127.0.0.1:5000/test/other:1");
    assert!(marker.exists(), "base snapshot reused, not rebuilt");
    assert_eq!(snapshot_dirs(&rec2)[0], dirs[0]);
    let c = &rec2["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/echo"]));
    assert_eq!(c["WorkingDir"], "/tmp");
    assert_eq!(c["User"], "www");
    assert_eq!(c["ExposedPorts"], serde_json::json!(["80/tcp"]));
    assert_eq!(c["Volumes"], serde_json::json!(["/data"]));
    assert_eq!(c["StopSignal"], "SIGQUIT");
    assert_eq!(c["Labels"]["a"], "b");
    assert_eq!(c["Healthcheck"]["Test"][1], "true");
    // By ID prefix, and from an image record on stdin.
    let id = img.config.hex()[..12].to_string();
    let rec3 = unpack(&root, &id);
    assert_eq!(rec3["id"], img.config.to_string());
    let list_line = format!("{}\n", serde_json::json!({"type": "snapshot", "id": img.config.to_string()}));
    let out = kist_tests::run_with_stdin(&mut root.cmd("img-unpack"), list_line.as_bytes());
    out.assert_ok();
    assert_eq!(out.records()[0]["id"], img.config.to_string());
    // No image: exit 3.
    let out = run(root.cmd("img-unpack").arg("127.0.0.1:5000/nope:1"));
    assert_eq!(out.code(), 3, "{}", out.stderr_str());
}

/// Writes a layout whose config claims a diff_id the layer does not have.
fn corrupt_diff_id(root: &Path, reference: &str) -> BuiltImage {
    let img = store::put(
        root,
        &ImageBuilder::new().layer(image::layer_tar(&[image::Entry::file("a", 0o644, b"a\n")])),
        reference,
    );
    // Rewrite the config with a wrong diff_id, and the manifest to point at it.
    let blobs = root.join("blobs/sha256");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(img.config.hex())).unwrap()).unwrap();
    cfg["rootfs"]["diff_ids"][0] = serde_json::json!(kist_common::Digest::of(b"not the layer").to_string());
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    let cfg_d = kist_common::Digest::of(&cfg_bytes);
    std::fs::write(blobs.join(cfg_d.hex()), &cfg_bytes).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(img.manifest.hex())).unwrap()).unwrap();
    m["config"]["digest"] = serde_json::json!(cfg_d.to_string());
    m["config"]["size"] = serde_json::json!(cfg_bytes.len());
    let m_bytes = serde_json::to_vec(&m).unwrap();
    let m_d = kist_common::Digest::of(&m_bytes);
    std::fs::write(blobs.join(m_d.hex()), &m_bytes).unwrap();
    let idx_path = root.join("index.json");
    let mut idx: serde_json::Value = serde_json::from_slice(&std::fs::read(&idx_path).unwrap()).unwrap();
    for e in idx["manifests"].as_array_mut().unwrap() {
        if e["annotations"]["org.opencontainers.image.ref.name"] == reference {
            e["digest"] = serde_json::json!(m_d.to_string());
            e["size"] = serde_json::json!(m_bytes.len());
        }
    }
    std::fs::write(&idx_path, serde_json::to_vec(&idx).unwrap()).unwrap();
    img
}

#[test]
fn digest_mismatch_leaves_no_snapshot() {
    let root = TestRoot::new();
    corrupt_diff_id(root.path(), REF);
    let out = run(root.cmd("img-unpack").arg(REF));
    assert_eq!(out.code(), 5, "integrity error expected: {}", out.stderr_str());
    assert!(out.stderr_str().contains("diff_id"), "{}", out.stderr_str());
    assert!(out.records().is_empty());
    let snaps: Vec<_> = std::fs::read_dir(root.path().join("snapshots")).unwrap().collect();
    assert!(snaps.is_empty(), "no snapshot after a mismatch: {snaps:?}");
    let tmp: Vec<_> = std::fs::read_dir(root.path().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "no leftovers in tmp/: {tmp:?}");
    // --flatten checks too.
    let flat = tempfile::tempdir().unwrap();
    let out = run(root.cmd("img-unpack").arg("--flatten").arg(flat.path().join("fs")).arg(REF));
    assert_eq!(out.code(), 5, "{}", out.stderr_str());
}

/// A layout with one layer stored as given, under the media type given.
fn raw_layer_image(root: &Path, reference: &str, tar_bytes: &[u8], blob: &[u8], media: &str) {
    let blobs = root.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(root.join("oci-layout"), b"{\"imageLayoutVersion\":\"1.0.0\"}").unwrap();
    let put = |b: &[u8]| {
        let d = kist_common::Digest::of(b);
        std::fs::write(blobs.join(d.hex()), b).unwrap();
        (d.to_string(), b.len())
    };
    let (ld, ls) = put(blob);
    let cfg = serde_json::json!({"architecture": image::host_arch(), "os": "linux", "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [kist_common::Digest::of(tar_bytes).to_string()]}});
    let (cd, cs) = put(&serde_json::to_vec(&cfg).unwrap());
    let m = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": media, "digest": ld, "size": ls}]});
    let (md, ms) = put(&serde_json::to_vec(&m).unwrap());
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": reference}}]});
    std::fs::write(root.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
}

#[test]
fn compression_follows_media_type_and_magic() {
    let t = tar(&[Item::file("hello", 0o644, b"hello zstd\n")]);
    let cases: Vec<(&str, Vec<u8>, &str, i32)> = vec![
        ("zstd", kist_tests::tarball::zstd(&t), "application/vnd.oci.image.layer.v1.tar+zstd", 0),
        ("gzip", image::gzip(&t), "application/vnd.docker.image.rootfs.diff.tar.gzip", 0),
        ("plain", t.clone(), "application/vnd.oci.image.layer.v1.tar", 0),
        ("gzip-says-zstd", image::gzip(&t), "application/vnd.oci.image.layer.v1.tar+zstd", 5),
        ("plain-says-gzip", t.clone(), "application/vnd.oci.image.layer.v1.tar+gzip", 5),
    ];
    for (name, blob, media, code) in cases {
        let root = TestRoot::new();
        raw_layer_image(root.path(), REF, &t, &blob, media);
        let out = run(root.cmd("img-unpack").arg(REF));
        assert_eq!(out.code(), code, "{name}: {}", out.stderr_str());
        if code == 0 {
            let dirs = snapshot_dirs(&out.records()[0]);
            assert_eq!(std::fs::read(dirs[0].join("hello")).unwrap(), b"hello zstd\n", "{name}");
        } else {
            assert_eq!(std::fs::read_dir(root.path().join("snapshots")).unwrap().count(), 0, "{name}");
        }
    }
}

#[test]
fn bundle_runs_with_runc() {
    let root = TestRoot::new();
    let img = ImageBuilder::new()
        .layer(image::layer_tar(&image::busybox_entries()))
        .config("Entrypoint", serde_json::json!(["/bin/sh", "-c"]))
        .config("Cmd", serde_json::json!(["echo from-bundle $GREETING; id -u; pwd"]))
        .config("Env", serde_json::json!(["PATH=/bin", "GREETING=hi"]))
        .config("WorkingDir", serde_json::json!("/var/www"))
        .config("User", serde_json::json!("www"));
    store::put(root.path(), &img, REF);
    let b = tempfile::tempdir().unwrap();
    let bundle = b.path().join("bundle");
    let out = run(root.cmd("img-unpack").arg("--bundle").arg(&bundle).arg(REF));
    out.assert_ok();
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["user"]["uid"], 33);
    assert_eq!(spec["process"]["cwd"], "/var/www");
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    let name = format!("kist-test-{}", std::process::id());
    let out = run(Command::new("runc").arg("run").arg("-b").arg(&bundle).arg(&name));
    let _ = run(Command::new("runc").args(["delete", "-f", &name]));
    assert!(out.status.success(), "runc run: {}\n{}", out.stdout_str(), out.stderr_str());
    assert_eq!(out.stdout_str(), "from-bundle hi\n33\n/var/www\n");
}

/// The debootstrap minbase root of `make bench` (shared at
/// /var/cache/kist-bench/minbase, built here with debootstrap if missing),
/// as two layers split like the bench's image.
fn minbase() -> BuiltImage {
    let cache = Path::new("/var/cache/kist-bench");
    let rootfs = cache.join("minbase");
    if !rootfs.join("var/lib/dpkg/status").exists() {
        std::fs::create_dir_all(cache).unwrap();
        let script = "exec 9>/var/cache/kist-bench/minbase.lock; flock 9; \
            [ -e /var/cache/kist-bench/minbase/var/lib/dpkg/status ] && exit 0; \
            m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null); \
            [ -n \"$m\" ] || m=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list); \
            t=/var/cache/kist-bench/minbase.tmp.$$; rm -rf $t; \
            debootstrap --variant=minbase bookworm $t $m >&2 && rm -rf $t/var/cache/apt/archives/*.deb && mv $t /var/cache/kist-bench/minbase";
        let out = run(Command::new("bash").arg("-c").arg(script));
        assert!(out.status.success(), "debootstrap: {}", out.stderr_str());
    }
    image::cached("minbase-v1", |dir| {
        let t = |args: &[&str]| -> Vec<u8> {
            let out = Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .args(["--numeric-owner", "--xattrs", "--sort=name"])
                .args(args)
                .output()
                .expect("tar");
            assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        let first = t(&["--exclude=./usr/lib", "--exclude=./usr/share", "-cf", "-", "."]);
        let second = t(&["-cf", "-", "--no-recursion", "./usr", "--recursion", "./usr/lib", "./usr/share"]);
        ImageBuilder::new().layer(first).layer(second).write_layout(dir, "latest")
    })
}

#[test]
fn debootstrap_minbase_matches_umoci() {
    assert_parity(&minbase());
}

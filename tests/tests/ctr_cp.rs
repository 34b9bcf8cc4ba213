//! ctr-cp against real containers (attached ctr-spawn in the background):
//! docker cp's rules in both directions, tar streams, -a and -L, stopped
//! containers (overlay upper, whiteouts, their volumes and bind mounts),
//! symlinks that point at the host
//! (`/escape -> /`, `/etc/shadow -> ../../../../etc/shadow`) and a
//! container swapping a directory for a symlink while copies run: nothing
//! on the host is read or written, proven by sentinels and hashes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kist_common::Digest;
use kist_tests::ctl::Attached;
use kist_tests::image::{busybox_entries, Entry};
use kist_tests::spawn::{busybox_config, unpack, Unpacked};
use kist_tests::{run, run_with_stdin, OutputExt, TestRoot};

fn cp(root: &TestRoot, args: &[&str]) -> std::process::Output {
    run(root.cmd("ctr-cp").args(args))
}

/// The container's view of a path, read by the test through its init's root.
fn inside(c: &Attached, p: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{}/root{}", c.pid, p))
}

fn image(root: &TestRoot) -> Unpacked {
    let mut e = busybox_entries();
    e.push(Entry::symlink("escape", "/"));
    e.push(Entry::symlink("etc/shadow", "../../../../etc/shadow"));
    e.push(Entry::file("etc/lower-only", 0o644, b"from the image\n"));
    e.push(Entry::dir("data", 0o755));
    e.push(Entry::file("data/one", 0o640, b"one\n"));
    e.push(Entry::dir("data/sub", 0o755));
    e.push(Entry::file("data/sub/two", 0o600, b"two\n"));
    e.push(Entry::symlink("data/link", "one"));
    e.push(Entry::symlink("filelink", "/data/one"));
    unpack(root.path(), &e, busybox_config())
}

fn host_tree(dir: &Path) -> PathBuf {
    let t = dir.join("tree");
    std::fs::create_dir_all(t.join("sub")).unwrap();
    std::fs::write(t.join("a"), b"alpha\n").unwrap();
    std::fs::write(t.join("sub/b"), b"beta\n").unwrap();
    t
}

#[test]
fn docker_rules_into_a_running_container() {
    let root = TestRoot::new();
    let img = image(&root);
    let c = Attached::start(&root, &img, "web", &[], &["sleep", "1000"]);
    let h = tempfile::tempdir().unwrap();
    let file = h.path().join("f.txt");
    std::fs::write(&file, b"payload\n").unwrap();
    let tree = host_tree(h.path());
    let f = file.to_str().unwrap();
    let t = tree.to_str().unwrap();

    // A file into an existing directory goes in under its name.
    cp(&root, &[f, "web:/tmp"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/tmp/f.txt")).unwrap(), b"payload\n");
    // A file to a missing path creates it.
    cp(&root, &[f, "web:/tmp/renamed"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/tmp/renamed")).unwrap(), b"payload\n");
    // A file over an existing file replaces it.
    std::fs::write(&file, b"second\n").unwrap();
    cp(&root, &[f, "web:/tmp/renamed"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/tmp/renamed")).unwrap(), b"second\n");
    // A missing path ending in / is an error.
    let out = cp(&root, &[f, "web:/tmp/nodir/"]);
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr_str().contains("does not exist") || out.stderr_str().contains("no such directory"),
        "{}",
        out.stderr_str()
    );
    assert!(!inside(&c, "/tmp/nodir").exists());
    // Parents are not created.
    let out = cp(&root, &[f, "web:/tmp/a/b/c"]);
    assert_eq!(out.code(), 3, "{}", out.stderr_str());
    assert!(!inside(&c, "/tmp/a").exists());
    // A directory to a missing path is created with its content.
    cp(&root, &[t, "web:/newdir"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/newdir/a")).unwrap(), b"alpha\n");
    assert_eq!(std::fs::read(inside(&c, "/newdir/sub/b")).unwrap(), b"beta\n");
    // A directory into an existing directory becomes a subdirectory...
    cp(&root, &[t, "web:/tmp"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/tmp/tree/sub/b")).unwrap(), b"beta\n");
    // ...unless SRC ends in /. (content only).
    std::fs::create_dir(inside(&c, "/content")).unwrap();
    cp(&root, &[&format!("{t}/."), "web:/content"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/content/a")).unwrap(), b"alpha\n");
    assert!(!inside(&c, "/content/tree").exists());
    // A directory onto a file is refused.
    let out = cp(&root, &[t, "web:/etc/passwd"]);
    assert_eq!(out.code(), 6, "{}", out.stderr_str());
    // Without -a the copy is owned by root; modes are kept.
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o751)).unwrap();
    std::os::unix::fs::chown(&file, Some(1234), Some(5678)).unwrap();
    cp(&root, &[f, "web:/tmp/owned"]).assert_ok();
    let md = std::fs::symlink_metadata(inside(&c, "/tmp/owned")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (0, 0, 0o751));
    cp(&root, &["-a", f, "web:/tmp/kept"]).assert_ok();
    let md = std::fs::symlink_metadata(inside(&c, "/tmp/kept")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    // A missing container path and a missing container are clear errors.
    assert_eq!(cp(&root, &["web:/nope", h.path().to_str().unwrap()]).code(), 3);
    assert_eq!(cp(&root, &[f, "ghost:/tmp"]).code(), 3);
}

#[test]
fn docker_rules_out_of_a_running_container() {
    let root = TestRoot::new();
    let img = image(&root);
    let _c = Attached::start(&root, &img, "src", &[], &["sleep", "1000"]);
    let h = tempfile::tempdir().unwrap();
    let d = |p: &str| h.path().join(p);
    let ds = |p: &str| h.path().join(p).to_str().unwrap().to_string();

    // File into an existing directory, and to a missing name.
    cp(&root, &["src:/data/one", &ds("")]).assert_ok();
    assert_eq!(std::fs::read(d("one")).unwrap(), b"one\n");
    assert_eq!(std::fs::metadata(d("one")).unwrap().mode() & 0o7777, 0o640);
    cp(&root, &["src:/data/one", &ds("copy")]).assert_ok();
    assert_eq!(std::fs::read(d("copy")).unwrap(), b"one\n");
    assert_ne!(cp(&root, &["src:/data/one", &ds("missing/")]).code(), 0);
    assert!(!d("missing").exists());
    // Directory to a missing path, into a directory, and its content only.
    cp(&root, &["src:/data", &ds("fresh")]).assert_ok();
    assert_eq!(std::fs::read(d("fresh/sub/two")).unwrap(), b"two\n");
    assert_eq!(std::fs::read_link(d("fresh/link")).unwrap(), PathBuf::from("one"));
    std::fs::create_dir(d("into")).unwrap();
    cp(&root, &["src:/data", &ds("into")]).assert_ok();
    assert_eq!(std::fs::read(d("into/data/one")).unwrap(), b"one\n");
    std::fs::create_dir(d("content")).unwrap();
    cp(&root, &["src:/data/.", &ds("content")]).assert_ok();
    assert_eq!(std::fs::read(d("content/sub/two")).unwrap(), b"two\n");
    assert!(!d("content/data").exists());
    assert_eq!(cp(&root, &["src:/data", &ds("copy")]).code(), 6, "directory onto a file");
    // A symlink as SRC is copied as a link; -L follows it (inside the root).
    cp(&root, &["src:/filelink", &ds("l1")]).assert_ok();
    assert_eq!(std::fs::read_link(d("l1")).unwrap(), PathBuf::from("/data/one"));
    cp(&root, &["-L", "src:/filelink", &ds("l2")]).assert_ok();
    assert_eq!(std::fs::read(d("l2")).unwrap(), b"one\n");
    // -a keeps the container's uid/gid.
    std::fs::write(_c_path(&_c, "/tmp/owned"), b"x").unwrap();
    std::os::unix::fs::chown(_c_path(&_c, "/tmp/owned"), Some(4321), Some(8765)).unwrap();
    cp(&root, &["src:/tmp/owned", &ds("o1")]).assert_ok();
    assert_eq!(std::fs::metadata(d("o1")).unwrap().uid(), 0);
    cp(&root, &["-a", "src:/tmp/owned", &ds("o2")]).assert_ok();
    let md = std::fs::metadata(d("o2")).unwrap();
    assert_eq!((md.uid(), md.gid()), (4321, 8765));
}

fn _c_path(c: &Attached, p: &str) -> PathBuf {
    inside(c, p)
}

#[test]
fn tar_streams_both_ways() {
    let root = TestRoot::new();
    let img = image(&root);
    let c = Attached::start(&root, &img, "tarry", &[], &["sleep", "1000"]);
    // Out: a tar of the directory under its name.
    let out = cp(&root, &["tarry:/data", "-"]);
    out.assert_ok();
    let mut ar = tar::Archive::new(out.stdout.as_slice());
    let mut names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["data", "data/link", "data/one", "data/sub", "data/sub/two"]);
    // The host's tar reads it too.
    let h = tempfile::tempdir().unwrap();
    let x = run_with_stdin(std::process::Command::new("tar").arg("-x").arg("-C").arg(h.path()), &out.stdout);
    x.assert_ok();
    assert_eq!(std::fs::read(h.path().join("data/sub/two")).unwrap(), b"two\n");

    // In: a tar made by the host's tar lands below an existing directory.
    let src = h.path().join("in");
    std::fs::create_dir_all(src.join("deep/er")).unwrap();
    std::fs::write(src.join("deep/er/file"), b"from tar\n").unwrap();
    std::os::unix::fs::symlink("file", src.join("deep/er/alias")).unwrap();
    let t = run(std::process::Command::new("tar").arg("-c").arg("-C").arg(&src).arg("."));
    t.assert_ok();
    run_with_stdin(root.cmd("ctr-cp").args(["-", "tarry:/tmp"]), &t.stdout).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/tmp/deep/er/file")).unwrap(), b"from tar\n");
    assert_eq!(std::fs::read_link(inside(&c, "/tmp/deep/er/alias")).unwrap(), PathBuf::from("file"));
    // The destination of a stream must be an existing directory.
    let out = run_with_stdin(root.cmd("ctr-cp").args(["-", "tarry:/tmp/none"]), &t.stdout);
    assert_eq!(out.code(), 3, "{}", out.stderr_str());
}

#[test]
fn stopped_container_reads_the_overlay_and_writes_the_upper() {
    let root = TestRoot::new();
    let img = image(&root);
    let mut c = Attached::start(
        &root,
        &img,
        "sleeper",
        &[],
        &["sh", "-c", "rm /etc/lower-only; echo run > /ran; sleep 1000"],
    );
    let upper = root.path().join("containers").join(&c.id).join("upper");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !upper.join("ran").exists() {
        assert!(std::time::Instant::now() < deadline, "container never wrote /ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: the container's init that the fixture started.
    unsafe { libc::kill(c.pid, libc::SIGKILL) };
    assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(137));
    let h = tempfile::tempdir().unwrap();
    // From the lower layer, from the upper, and a whiteout hides the deleted file.
    cp(&root, &["sleeper:/data/sub/two", h.path().to_str().unwrap()]).assert_ok();
    assert_eq!(std::fs::read(h.path().join("two")).unwrap(), b"two\n");
    cp(&root, &["sleeper:/ran", h.path().to_str().unwrap()]).assert_ok();
    assert_eq!(std::fs::read(h.path().join("ran")).unwrap(), b"run\n");
    assert_eq!(cp(&root, &["sleeper:/etc/lower-only", h.path().to_str().unwrap()]).code(), 3);
    // Writes go to the upper directory, never to the snapshot.
    let f = h.path().join("newfile");
    std::fs::write(&f, b"written while stopped\n").unwrap();
    cp(&root, &[f.to_str().unwrap(), "sleeper:/data/"]).assert_ok();
    assert_eq!(std::fs::read(upper.join("data/newfile")).unwrap(), b"written while stopped\n");
    assert!(!img.snapshot.join("data/newfile").exists());
    // Nothing stays mounted.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(root.path().to_str().unwrap()), "a mount was left: {mi}");
}

fn hash(p: &str) -> Option<Digest> {
    std::fs::read(p).ok().map(|b| Digest::of(&b))
}

fn token() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    )
}

#[test]
fn symlinks_to_the_host_never_reach_it() {
    let root = TestRoot::new();
    let img = image(&root);
    let c = Attached::start(&root, &img, "evil", &[], &["sleep", "1000"]);
    let tok = token();
    let shadow_before = hash("/etc/shadow");
    let passwd_before = hash("/etc/passwd");
    let host_secret = format!("/tmp/kist-cp-secret-{tok}");
    std::fs::write(&host_secret, b"HOST SECRET\n").unwrap();
    let sentinel_names = [format!("/kist-cp-sentinel-{tok}"), format!("/kist-cp-sentinel2-{tok}")];
    let h = tempfile::tempdir().unwrap();
    let f = h.path().join("payload");
    std::fs::write(&f, b"ATTACK\n").unwrap();
    let fs_ = f.to_str().unwrap();

    // In: through /escape the file lands in the container's root, not the host's.
    cp(&root, &[fs_, &format!("evil:/escape/kist-cp-sentinel-{tok}")]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, &sentinel_names[0])).unwrap(), b"ATTACK\n");
    cp(&root, &[fs_, "evil:/escape/../../../tmp/"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/tmp/payload")).unwrap(), b"ATTACK\n");
    // In: onto /etc/shadow replaces the container's link, not the host's file.
    cp(&root, &[fs_, "evil:/etc/shadow"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/etc/shadow")).unwrap(), b"ATTACK\n");
    assert!(!std::fs::symlink_metadata(inside(&c, "/etc/shadow")).unwrap().file_type().is_symlink());
    cp(&root, &[fs_, "evil:/escape/etc/passwd"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/etc/passwd")).unwrap(), b"ATTACK\n");
    // In: a tar stream through the link, or with '..', is refused.
    let mut b = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_size(7);
    hd.set_mode(0o644);
    hd.set_cksum();
    b.append_data(&mut hd.clone(), format!("escape/kist-cp-sentinel2-{tok}"), &b"ATTACK\n"[..]).unwrap();
    let t1 = b.into_inner().unwrap();
    assert_ne!(run_with_stdin(root.cmd("ctr-cp").args(["-", "evil:/"]), &t1).code(), 0);
    let mut raw = tar::Header::new_old();
    raw.as_old_mut().name[..format!("../../kist-cp-sentinel2-{tok}").len()]
        .copy_from_slice(format!("../../kist-cp-sentinel2-{tok}").as_bytes());
    raw.set_size(7);
    raw.set_mode(0o644);
    raw.set_cksum();
    let mut t2 = raw.as_bytes().to_vec();
    t2.extend_from_slice(b"ATTACK\n");
    t2.resize(512 + 512 + 1024, 0);
    assert_ne!(run_with_stdin(root.cmd("ctr-cp").args(["-", "evil:/tmp"]), &t2).code(), 0);

    // Out: /etc/shadow is copied as the link it is; with -L it resolves
    // inside the container (a loop there), never to the host's shadow.
    let out_dir = h.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let od = out_dir.to_str().unwrap();
    // (The container's /etc/shadow was replaced above; restore the link.)
    std::fs::remove_file(inside(&c, "/etc/shadow")).unwrap();
    std::os::unix::fs::symlink("../../../../etc/shadow", inside(&c, "/etc/shadow")).unwrap();
    cp(&root, &["evil:/etc/shadow", od]).assert_ok();
    assert!(std::fs::symlink_metadata(out_dir.join("shadow")).unwrap().file_type().is_symlink());
    let out = cp(&root, &["-L", "evil:/etc/shadow", &format!("{od}/followed")]);
    assert_ne!(out.code(), 0, "a link resolving to itself inside the root must fail");
    if let Some(sh) = &shadow_before {
        if let Ok(b) = std::fs::read(out_dir.join("followed")) {
            assert_ne!(&Digest::of(&b), sh, "host shadow leaked");
        }
    }
    // Out: the host's secret is not visible through /escape.
    let out = cp(&root, &[&format!("evil:/escape{host_secret}"), od]);
    assert_eq!(out.code(), 3, "{}", out.stderr_str());
    let out = cp(&root, &["evil:/escape/tmp", "-"]);
    out.assert_ok();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("HOST SECRET"));

    // The host is untouched.
    assert_eq!(hash("/etc/shadow"), shadow_before);
    assert_eq!(hash("/etc/passwd"), passwd_before);
    for s in &sentinel_names {
        assert!(!Path::new(s).exists(), "{s} was written on the host");
    }
    assert!(!Path::new("/tmp/payload").exists() || std::fs::read("/tmp/payload").unwrap() != b"ATTACK\n");
    std::fs::remove_file(&host_secret).unwrap();
}

#[test]
fn a_directory_swapped_for_a_symlink_in_a_loop_never_leads_out() {
    let root = TestRoot::new();
    let img = image(&root);
    let tok = token();
    let secret_name = format!("kist-race-secret-{tok}");
    std::fs::write(format!("/{secret_name}"), b"HOST SECRET\n").unwrap();
    let c = Attached::start(
        &root,
        &img,
        "racer",
        &[],
        &[
            "sh",
            "-c",
            "mkdir -p /x; while true; do rm -rf /x/d; mkdir /x/d; echo inner > /x/d/f; rm -rf /x/d; ln -s / /x/d; done",
        ],
    );
    let _ = &c;
    let before: std::collections::BTreeSet<String> = std::fs::read_dir("/")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let h = tempfile::tempdir().unwrap();
    let f = h.path().join("payload");
    std::fs::write(&f, b"ATTACK\n").unwrap();
    let out_dir = h.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut ok_in = 0;
    let mut ok_out = 0;
    for i in 0..150 {
        let dst = format!("racer:/x/d/kist-race-sentinel-{tok}-{i}");
        if cp(&root, &[f.to_str().unwrap(), &dst]).status.success() {
            ok_in += 1;
        }
        let out = cp(&root, &[&format!("racer:/x/d/{secret_name}"), "-"]);
        assert!(!String::from_utf8_lossy(&out.stdout).contains("HOST SECRET"), "read the host's file");
        let out = cp(&root, &["racer:/x/d/.", "-"]);
        if out.status.success() {
            ok_out += 1;
        }
        assert!(!String::from_utf8_lossy(&out.stdout).contains("HOST SECRET"), "read the host's file");
        // A directory copy into the moving target.
        let _ = cp(&root, &[h.path().join("out").to_str().unwrap(), "racer:/x/d/"]);
    }
    eprintln!("copies in that succeeded: {ok_in}, out: {ok_out}");
    let leaked: Vec<String> = std::fs::read_dir("/")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !before.contains(n))
        .collect();
    std::fs::remove_file(format!("/{secret_name}")).unwrap();
    assert!(leaked.is_empty(), "written on the host: {leaked:?}");
    assert!(ok_in > 0, "no copy ever succeeded: the race was never exercised");
}

#[test]
fn a_running_containers_mounts_are_seen_as_the_container_sees_them() {
    let root = TestRoot::new();
    let img = image(&root);
    let c = Attached::start(&root, &img, "mounted", &["--tmpfs", "/scratch"], &["sleep", "1000"]);
    let h = tempfile::tempdir().unwrap();
    let f = h.path().join("in-tmpfs");
    std::fs::write(&f, b"on the tmpfs\n").unwrap();
    cp(&root, &[f.to_str().unwrap(), "mounted:/scratch/"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/scratch/in-tmpfs")).unwrap(), b"on the tmpfs\n");
    let upper = root.path().join("containers").join(&c.id).join("upper");
    assert!(
        !upper.join("scratch/in-tmpfs").exists(),
        "the copy went under the tmpfs, not into the upper dir"
    );
    // And back out of it.
    let out = cp(&root, &["mounted:/scratch/in-tmpfs", "-"]);
    out.assert_ok();
    assert!(String::from_utf8_lossy(&out.stdout).contains("on the tmpfs"));
}

#[test]
fn a_paused_container_is_copied_from_and_to() {
    let root = TestRoot::new();
    let img = image(&root);
    let c = Attached::start(&root, &img, "frozen", &[], &["sleep", "1000"]);
    run(root.cmd("ctr-kill").args(["--pause", "frozen"])).assert_ok();
    let h = tempfile::tempdir().unwrap();
    cp(&root, &["frozen:/data/one", h.path().to_str().unwrap()]).assert_ok();
    assert_eq!(std::fs::read(h.path().join("one")).unwrap(), b"one\n");
    cp(&root, &[h.path().join("one").to_str().unwrap(), "frozen:/tmp/back"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/tmp/back")).unwrap(), b"one\n");
    run(root.cmd("ctr-kill").args(["--resume", "frozen"])).assert_ok();
}

#[test]
fn a_destination_symlink_is_followed_as_docker_does() {
    let root = TestRoot::new();
    let img = image(&root);
    let c = Attached::start(&root, &img, "links", &[], &["sleep", "1000"]);
    let h = tempfile::tempdir().unwrap();
    let f = h.path().join("f");
    std::fs::write(&f, b"new\n").unwrap();
    let f = f.to_str().unwrap();

    // In, onto a link to a file: the file is written, the link stays
    // (docker 20.10 does the same; checked by hand against dockerd).
    cp(&root, &[f, "links:/data/link"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/data/one")).unwrap(), b"new\n");
    assert_eq!(std::fs::read_link(inside(&c, "/data/link")).unwrap(), PathBuf::from("one"));
    // An absolute target is the container's, and a chain is followed.
    std::os::unix::fs::symlink("/data/link", inside(&c, "/tmp/chain")).unwrap();
    std::fs::write(f, b"chained\n").unwrap();
    cp(&root, &[f, "links:/tmp/chain"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/data/one")).unwrap(), b"chained\n");
    assert!(std::fs::symlink_metadata(inside(&c, "/tmp/chain")).unwrap().file_type().is_symlink());
    // Onto a dangling link: its target is created.
    std::os::unix::fs::symlink("/tmp/made-by-cp", inside(&c, "/tmp/dangling")).unwrap();
    cp(&root, &[f, "links:/tmp/dangling"]).assert_ok();
    assert_eq!(std::fs::read(inside(&c, "/tmp/made-by-cp")).unwrap(), b"chained\n");
    assert!(std::fs::symlink_metadata(inside(&c, "/tmp/dangling")).unwrap().file_type().is_symlink());

    // Out, onto a host link to a file: the host file is written.
    let target = h.path().join("target");
    std::fs::write(&target, b"old\n").unwrap();
    let link = h.path().join("hostlink");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    cp(&root, &["links:/etc/lower-only", link.to_str().unwrap()]).assert_ok();
    assert_eq!(std::fs::read(&target).unwrap(), b"from the image\n");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
}

/// docker cp reads and writes a stopped container's volumes and bind
/// mounts, not the directories they hide: so does ctr-cp, for a container
/// that ran and exited and for one only created. A `:ro` bind mount stays
/// read-only, a symlinked mount target is resolved inside the container,
/// and nothing stays mounted on the host.
#[test]
fn stopped_and_created_containers_show_their_volumes_and_bind_mounts() {
    let root = TestRoot::new();
    let mut e = busybox_entries();
    // The image's own file at a bind mount's target, which the mount hides
    // (a new volume is filled from the image, as Docker fills it).
    e.push(Entry::dir("bind", 0o755));
    e.push(Entry::file("bind/hidden", 0o644, b"image\n"));
    e.push(Entry::symlink("linked", "/escape-target"));
    let img = unpack(root.path(), &e, busybox_config());
    let h = tempfile::tempdir().unwrap();
    let bind = h.path().join("bind");
    std::fs::create_dir_all(&bind).unwrap();
    std::fs::write(bind.join("b.txt"), b"from the host\n").unwrap();
    let ro = h.path().join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let b = format!("{}:/bind", bind.display());
    let r = format!("{}:/robind:ro", ro.display());
    let l = format!("{}:/linked", bind.display());
    let out = kist_tests::spawn::spawn(
        &root,
        &img,
        &[
            "--name",
            "ran",
            "-v",
            "data:/vol",
            "-v",
            &b,
            "-v",
            &r,
            "-v",
            &l,
            "--",
            "sh",
            "-c",
            "echo in the volume > /vol/v.txt",
        ],
    );
    out.assert_ok();
    let vol = root.path().join("volumes/data/_data");
    assert_eq!(std::fs::read(vol.join("v.txt")).unwrap(), b"in the volume\n");
    let outdir = h.path().join("out");
    std::fs::create_dir_all(&outdir).unwrap();
    let o = outdir.to_str().unwrap();
    // Out of the volume and the bind mount.
    cp(&root, &["ran:/vol/v.txt", o]).assert_ok();
    assert_eq!(std::fs::read(outdir.join("v.txt")).unwrap(), b"in the volume\n");
    cp(&root, &["ran:/bind/b.txt", o]).assert_ok();
    assert_eq!(
        cp(&root, &["ran:/bind/hidden", o]).code(),
        3,
        "the image's file under the bind mount was seen"
    );
    assert_eq!(std::fs::read(outdir.join("b.txt")).unwrap(), b"from the host\n");
    // Into them: the data lands in the volume and the host directory.
    let f = h.path().join("f");
    std::fs::write(&f, b"copied in\n").unwrap();
    let f = f.to_str().unwrap();
    cp(&root, &[f, "ran:/vol/"]).assert_ok();
    assert_eq!(std::fs::read(vol.join("f")).unwrap(), b"copied in\n");
    cp(&root, &[f, "ran:/bind/"]).assert_ok();
    assert_eq!(std::fs::read(bind.join("f")).unwrap(), b"copied in\n");
    // A mount whose target is a symlink to `/escape-target` was mounted on
    // the container's own /escape-target, never on the host's.
    cp(&root, &["ran:/linked/b.txt", o]).assert_ok();
    assert!(!Path::new("/escape-target").exists());
    // :ro stays read-only.
    let out = cp(&root, &[f, "ran:/robind/"]);
    assert_ne!(out.code(), 0);
    assert!(out.stderr_str().contains("Read-only"), "{}", out.stderr_str());
    assert!(!ro.join("f").exists());
    // A tar stream of the volume.
    let out = cp(&root, &["ran:/vol", "-"]);
    out.assert_ok();
    let mut names: Vec<String> = tar::Archive::new(&out.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["vol", "vol/f", "vol/v.txt"]);

    // A created container: its new volume and its bind mount.
    let out = kist_tests::spawn::spawn(
        &root,
        &img,
        &["--create", "--name", "made", "-v", "fresh:/newvol", "-v", &b, "--", "true"],
    );
    out.assert_ok();
    cp(&root, &[f, "made:/newvol/"]).assert_ok();
    assert_eq!(std::fs::read(root.path().join("volumes/fresh/_data/f")).unwrap(), b"copied in\n");
    cp(&root, &["made:/bind/b.txt", h.path().join("b2").to_str().unwrap()]).assert_ok();
    assert_eq!(std::fs::read(h.path().join("b2")).unwrap(), b"from the host\n");
    // Nothing stays mounted.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(root.path().to_str().unwrap()), "a mount was left: {mi}");
}

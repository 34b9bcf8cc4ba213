//! Named volumes filled from the image as dockerd 20.10 fills them: the
//! image's content at the mount point is copied in only when the volume is
//! empty as the container is created (a volume that already holds anything
//! is left alone), what was written into it between create and the first
//! start (`ctr-cp` into the created container) is kept, and a volume that
//! several containers share is filled once, also when they start at once.

use std::path::{Path, PathBuf};

use kist_tests::image::{busybox_entries, Entry};
use kist_tests::spawn::{busybox_config, spawn, unpack, Unpacked};
use kist_tests::{run, run_with_stdin, OutputExt, TestRoot};

/// Removes the containers a test made, also when it fails.
struct Containers<'a> {
    root: &'a TestRoot,
    names: Vec<String>,
}

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let mut c = self.root.cmd("ctr-kill");
        c.args(["--rm", "-f"]).args(&self.names);
        let _ = run_with_stdin(&mut c, b"");
    }
}

impl<'a> Containers<'a> {
    fn new(root: &'a TestRoot) -> Self {
        Containers { root, names: Vec::new() }
    }

    fn create(&mut self, img: &Unpacked, name: &str, args: &[&str]) {
        let mut a = vec!["--create", "--name", name];
        a.extend_from_slice(args);
        self.names.push(name.to_string());
        spawn(self.root, img, &a).assert_ok();
    }
}

fn image(root: &TestRoot) -> Unpacked {
    let mut e = busybox_entries();
    e.push(Entry::dir("data", 0o750));
    e.push(Entry::file("data/from-image", 0o644, b"image\n"));
    e.push(Entry::file("data/both", 0o644, b"image's version\n"));
    e.push(Entry::dir("data/sub", 0o755));
    e.push(Entry::file("data/sub/deep", 0o600, b"deep\n"));
    unpack(root.path(), &e, busybox_config())
}

fn data(root: &TestRoot, volume: &str) -> PathBuf {
    root.path().join("volumes").join(volume).join("_data")
}

/// Every path under `dir`, relative and sorted.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn what_is_copied_in_before_the_first_start_is_kept() {
    let root = TestRoot::new();
    let img = image(&root);
    let mut cs = Containers::new(&root);
    cs.create(&img, "made", &["-v", "fresh:/data", "--", "sh", "-c", "cat /data/both /data/mine"]);
    let host = root.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("mine"), "copied in\n").unwrap();
    std::fs::write(host.join("both"), "my version\n").unwrap();
    for f in ["mine", "both"] {
        run(root.cmd("ctr-cp").args([host.join(f).to_str().unwrap(), "made:/data/"])).assert_ok();
    }
    let out = run(root.cmd("ctr-spawn").args(["--start", "made", "-a"]));
    out.assert_ok();
    // The file written before the start wins over the image's of the same
    // name; the rest of the image's content is there beside it, as dockerd
    // (which copies at create) leaves it.
    assert_eq!(out.stdout_str(), "my version\ncopied in\n", "{}", out.stderr_str());
    let d = data(&root, "fresh");
    assert_eq!(listing(&d), ["both", "from-image", "mine", "sub", "sub/deep"]);
    assert_eq!(read(d.join("from-image")), "image\n");
    // A second start copies nothing again: a file removed stays removed.
    std::fs::remove_file(d.join("from-image")).unwrap();
    run(root.cmd("ctr-spawn").args(["--start", "made", "-a"])).assert_ok();
    assert!(!d.join("from-image").exists());
}

#[test]
fn a_volume_with_content_is_not_filled_and_an_empty_one_is() {
    let root = TestRoot::new();
    let img = image(&root);
    // Written straight into the volume before any container uses it.
    let full = data(&root, "full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("already"), "here\n").unwrap();
    let out = spawn(&root, &img, &["--rm", "-v", "full:/data", "--", "ls", "-A", "/data"]);
    out.assert_ok();
    assert_eq!(out.stdout_str(), "already\n", "{}", out.stderr_str());
    assert_eq!(listing(&full), ["already"]);

    // An existing but empty volume is filled, as a new one is.
    let empty = data(&root, "empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = spawn(&root, &img, &["--rm", "-v", "empty:/data", "--", "cat", "/data/sub/deep"]);
    assert_eq!(out.stdout_str(), "deep\n", "{}", out.stderr_str());
    assert_eq!(listing(&empty), ["both", "from-image", "sub", "sub/deep"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&empty).unwrap().permissions().mode() & 0o7777, 0o750);

    // nocopy: never filled.
    let out = spawn(
        &root,
        &img,
        &[
            "--rm",
            "--mount",
            "type=volume,source=bare,target=/data,volume-nocopy=true",
            "--",
            "ls",
            "-A",
            "/data",
        ],
    );
    out.assert_ok();
    assert_eq!(out.stdout_str(), "", "{}", out.stderr_str());
}

#[test]
fn a_shared_new_volume_is_filled_once() {
    let root = TestRoot::new();
    let img = image(&root);
    let mut cs = Containers::new(&root);
    // Both created while the volume is empty; the first empties it.
    cs.create(&img, "first", &["-v", "shared:/data", "--", "rm", "/data/from-image"]);
    cs.create(&img, "second", &["-v", "shared:/data", "--", "ls", "/data"]);
    run(root.cmd("ctr-spawn").args(["--start", "first", "-a"])).assert_ok();
    let out = run(root.cmd("ctr-spawn").args(["--start", "second", "-a"]));
    out.assert_ok();
    assert_eq!(out.stdout_str(), "both\nsub\n", "{}", out.stderr_str());

    // Several first starts at once on one new volume: one fills it, none
    // fails on what another is copying.
    let names: Vec<String> = (0..4).map(|i| format!("race{i}")).collect();
    for n in &names {
        cs.create(&img, n, &["-v", "raced:/data", "--", "cat", "/data/sub/deep"]);
    }
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            root.cmd("ctr-spawn")
                .args(["--start", n, "-a"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, b"deep\n");
    }
    assert_eq!(listing(&data(&root, "raced")), ["both", "from-image", "sub", "sub/deep"]);
}

//! Hostile layers: absolute names, `../` traversal, writes through
//! symlinks, hard links to outside, a symlink to `/` with entries beneath,
//! whiteouts naming `..`, and a symlink that replaces a directory between
//! two entries. Each is refused or contained: a sentinel directory next to
//! the state root, and the whole tree around it, hash the same before and
//! after; names aimed at the host's `/` never appear there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kist_tests::image::ImageBuilder;
use kist_tests::tarball::{tar, Item};
use kist_tests::tree;
use kist_tests::{run, store, OutputExt};

const REF: &str = "127.0.0.1:5000/evil/layer:latest";

struct Case {
    name: &'static str,
    layers: Vec<Vec<Item>>,
    /// Paths that must exist inside the result when the layer is accepted
    /// (proof that it was contained, not ignored).
    inside: Vec<&'static str>,
}

fn cases(sentinel: &Path, host_name: &str) -> Vec<Case> {
    let s = sentinel.display().to_string();
    let abs_host = format!("/{host_name}");
    let leak = |p: &str| -> &'static str { Box::leak(p.to_string().into_boxed_str()) };
    vec![
        Case {
            name: "absolute paths",
            layers: vec![vec![
                Item::file(&abs_host, 0o644, b"abs\n"),
                Item::file(&format!("{s}/abs-written"), 0o644, b"abs\n"),
                Item::dir(&format!("{abs_host}-dir"), 0o755),
            ]],
            inside: vec![leak(&abs_host), leak(&format!("{s}/abs-written"))],
        },
        Case {
            name: "dot-dot traversal",
            layers: vec![vec![
                Item::file("../sentinel/victim", 0o644, b"overwritten\n"),
                Item::file(&format!("../../../../../../..{s}/dotdot"), 0o644, b"x\n"),
                Item::file(&format!("a/../../../../..{abs_host}"), 0o644, b"x\n"),
                Item::dir("../../../escape-dir", 0o755),
            ]],
            inside: vec!["/sentinel/victim", leak(&abs_host), "/escape-dir"],
        },
        Case {
            name: "write through a symlink",
            layers: vec![vec![
                Item::symlink("rel", "../../../../../../../../.."),
                Item::file(&format!("rel{s}/through-rel"), 0o644, b"x\n"),
                Item::symlink("abs", &s),
                Item::file("abs/through-abs", 0o644, b"x\n"),
                Item::file("abs/victim", 0o644, b"overwritten\n"),
                Item::symlink("filelink", &format!("{s}/victim")),
                Item::file("filelink", 0o644, b"replaces the link, not its target\n"),
                Item::symlink("hostfile", &abs_host),
                Item::fifo("hostfile", 0o644),
            ]],
            inside: vec![
                leak(&format!("{s}/through-rel")),
                leak(&format!("{s}/through-abs")),
                leak(&format!("{s}/victim")),
            ],
        },
        Case {
            name: "hard link to outside",
            layers: vec![vec![Item::hardlink("hl", &format!("../../../../../..{s}/victim"))]],
            inside: vec![],
        },
        Case {
            name: "hard link through a symlink",
            layers: vec![vec![Item::symlink("esc", &s), Item::hardlink("hl", "esc/victim")]],
            inside: vec![],
        },
        Case {
            name: "hard link to an absolute host file",
            layers: vec![vec![Item::hardlink("passwd", "/etc/passwd")]],
            inside: vec![],
        },
        Case {
            name: "symlink to / then entries beneath",
            layers: vec![vec![
                Item::symlink("rootlink", "/"),
                Item::file(&format!("rootlink{abs_host}"), 0o644, b"x\n"),
                Item::dir("rootlink/etc", 0o755),
                Item::file(&format!("rootlink{s}/beneath"), 0o644, b"x\n"),
                Item::symlink("rootlink/up", "/"),
                Item::file("rootlink/up/rootlink/deeper", 0o644, b"x\n"),
            ]],
            inside: vec![leak(&abs_host), leak(&format!("{s}/beneath")), "/deeper"],
        },
        Case {
            name: "whiteouts naming ..",
            layers: vec![
                vec![Item::dir("sub", 0o755), Item::file("sub/keep", 0o644, b"k\n")],
                vec![
                    Item::file("../sentinel/.wh.victim", 0o644, b""),
                    Item::file("sub/../../.wh.sentinel", 0o644, b""),
                    Item::file(".wh.../sentinel", 0o644, b""),
                ],
            ],
            inside: vec![],
        },
        Case {
            name: "whiteout of ..",
            layers: vec![vec![Item::dir("sub", 0o755), Item::file("sub/.wh..", 0o644, b"")]],
            inside: vec![],
        },
        Case {
            name: "whiteout through a symlink",
            layers: vec![
                vec![Item::symlink("out", &s)],
                vec![Item::symlink("out", &s), Item::file("out/.wh.victim", 0o644, b"")],
            ],
            inside: vec![],
        },
        Case {
            name: "symlink replaces a directory between entries",
            layers: vec![vec![
                Item::dir("d", 0o755),
                Item::file("d/first", 0o644, b"1\n"),
                Item::symlink("d", &s),
                Item::file("d/victim", 0o644, b"overwritten\n"),
                Item::dir("d/newdir", 0o755),
                Item::symlink("d/newdir/x", "/"),
            ]],
            inside: vec![leak(&format!("{s}/victim")), leak(&format!("{s}/newdir"))],
        },
        Case {
            name: "symlink in a lower layer, writes in the upper",
            layers: vec![vec![Item::symlink("d", &s)], vec![Item::file("d/victim", 0o644, b"overwritten\n")]],
            inside: vec!["/d/victim"],
        },
    ]
}

fn outside_state(parent: &Path, skip: &[PathBuf]) -> BTreeMap<String, tree::Node> {
    let mut t = tree::scan_except(parent, skip);
    // The parent itself changes as roots are made in it; its contents must not.
    t.remove("/");
    t
}

fn exercise(mode: &str, resolver: &str) {
    let parent = tempfile::Builder::new().prefix("kist-evil-").tempdir().unwrap();
    let sentinel = parent.path().join("sentinel");
    std::fs::create_dir(&sentinel).unwrap();
    std::fs::write(sentinel.join("victim"), b"original\n").unwrap();
    std::fs::create_dir(sentinel.join("subdir")).unwrap();
    std::fs::write(sentinel.join("subdir/file"), b"file\n").unwrap();
    let host_name = format!("kist-evil-{}-{mode}-{resolver}", std::process::id());
    let host_path = PathBuf::from(format!("/{host_name}"));
    let mut roots = Vec::new();
    for (i, _) in cases(&sentinel, &host_name).iter().enumerate() {
        roots.push(parent.path().join(format!("root-{i}")));
        roots.push(parent.path().join(format!("out-{i}")));
    }
    let before = outside_state(parent.path(), &roots);
    for (i, case) in cases(&sentinel, &host_name).into_iter().enumerate() {
        let root = parent.path().join(format!("root-{i}"));
        let mut b = ImageBuilder::new();
        for l in &case.layers {
            b = b.layer(tar(l));
        }
        store::put(&root, &b, REF);
        let out_dir = parent.path().join(format!("out-{i}"));
        let mut cmd = std::process::Command::new(kist_tests::bin("img-unpack"));
        cmd.arg("--root").arg(&root).env("KIST_UNPACK_RESOLVER", resolver);
        if mode == "flatten" {
            cmd.arg("--flatten").arg(&out_dir);
        }
        let out = run(cmd.arg(REF));
        let after = outside_state(parent.path(), &roots);
        let d = tree::diff(&before, &after, true);
        assert!(
            d.is_empty(),
            "[{mode}/{resolver}] {}: outside changed:\n{}\n{}",
            case.name,
            d.join("\n"),
            out.stderr_str()
        );
        assert!(!host_path.exists(), "[{mode}/{resolver}] {}: wrote {}", case.name, host_path.display());
        assert!(!PathBuf::from(format!("{}-dir", host_path.display())).exists());
        assert!(!Path::new("/escape-dir").exists() && !Path::new("/deeper").exists());
        assert_eq!(std::fs::read(sentinel.join("victim")).unwrap(), b"original\n");
        if out.status.success() {
            let rec = &out.records()[0];
            let dirs: Vec<PathBuf> = rec["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| PathBuf::from(p.as_str().unwrap()))
                .collect();
            for p in &case.inside {
                let found =
                    dirs.iter().any(|d| std::fs::symlink_metadata(d.join(p.trim_start_matches('/'))).is_ok());
                assert!(found, "[{mode}/{resolver}] {}: {p} should have landed inside {:?}", case.name, dirs);
            }
        } else {
            assert_ne!(out.code(), 0);
            assert!(
                case.inside.is_empty(),
                "[{mode}/{resolver}] {} refused: {}",
                case.name,
                out.stderr_str()
            );
            let snaps = std::fs::read_dir(root.join("snapshots")).unwrap().count();
            let layers = case.layers.len();
            assert!(snaps < 2 * layers, "[{mode}] {}: a refused layer left a snapshot", case.name);
        }
        let tmp = std::fs::read_dir(root.join("tmp")).unwrap().count();
        assert_eq!(tmp, 0, "[{mode}] {}: leftovers in tmp/", case.name);
    }
    let refused = cases(&sentinel, &host_name).len();
    assert!(refused > 5);
}

#[test]
fn hostile_layers_are_contained_in_snapshots() {
    exercise("snapshots", "openat2");
}

#[test]
fn hostile_layers_are_contained_in_snapshots_by_the_fallback_walk() {
    exercise("snapshots", "walk");
}

#[test]
fn hostile_layers_are_contained_when_flattening() {
    exercise("flatten", "openat2");
    exercise("flatten", "walk");
}

//! Done-means 3 of the wrapper issue: `make install PREFIX=/usr DESTDIR=…`
//! stages every tool, the wrapper, the man pages (sections 1 and 5), bash,
//! zsh and fish completions and the systemd unit; every page renders with
//! `man -l` without a warning; each tool's `--help` agrees with its page;
//! `make install-<tool>` stages one tool and its page alone, and that tool
//! runs from there by itself. The already-built binaries are installed
//! (`BINS=`), so no second cargo build runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use kist_tests::{bin_dir, run, OutputExt};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// The Rust tools: every tools/<tool>/ with a Cargo.toml, as the Makefile sees them.
fn tools() -> Vec<String> {
    let mut t: Vec<String> = std::fs::read_dir(repo().join("tools"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    t.sort();
    t
}

fn make(args: &[&str]) -> std::process::Output {
    let mut c = Command::new("make");
    c.arg("-s").arg("-C").arg(repo()).args(args).arg(format!("BINS={}", bin_dir().display()));
    run(&mut c)
}

/// `man -l PAGE` output and its warnings (groff's, with --warnings).
fn render(page: &Path) -> (String, String) {
    let out = run(Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .env("LC_ALL", "C.UTF-8"));
    assert!(out.status.success(), "man -l {} failed: {}", page.display(), out.stderr_str());
    (out.stdout_str(), out.stderr_str())
}

#[test]
fn make_install_stages_everything_and_every_page_renders() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let out = make(&["install", "PREFIX=/usr", &format!("DESTDIR={}", d.display())]);
    out.assert_ok();
    let usr = d.join("usr");
    let mut tools = tools();
    tools.push("kist".into());
    for t in &tools {
        let bin = usr.join("bin").join(t);
        assert!(bin.is_file(), "{t} not installed");
        let page = usr.join("share/man/man1").join(format!("{t}.1"));
        assert!(page.is_file(), "{t}.1 not installed");
        assert!(usr.join("share/bash-completion/completions").join(t).is_file(), "bash completion of {t}");
        assert!(
            usr.join("share/zsh/vendor-completions").join(format!("_{t}")).is_file(),
            "zsh completion of {t}"
        );
        assert!(usr.join("share/fish/vendor_completions.d").join(format!("{t}.fish")).is_file(), "fish: {t}");
    }
    for p in ["kist-records.5", "kist-state.5"] {
        assert!(usr.join("share/man/man5").join(p).is_file(), "{p} not installed");
    }
    let unit = std::fs::read_to_string(usr.join("lib/systemd/system/kist-restore.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/ctr-spawn --restore"), "{unit}");

    // Every page renders without a warning, and each tool's --help agrees
    // with its page: every long option of --help is on the page.
    for dir in ["man1", "man5"] {
        for e in std::fs::read_dir(usr.join("share/man").join(dir)).unwrap() {
            let page = e.unwrap().path();
            let (text, warnings) = render(&page);
            assert!(warnings.trim().is_empty(), "{}: {warnings}", page.display());
            assert!(
                text.contains("NAME") && text.len() > 200,
                "{} renders empty: {text:?} {warnings:?}",
                page.display()
            );
        }
    }
    for t in &tools {
        let help =
            run(Command::new(usr.join("bin").join(t)).arg("--help").env("KIST_BIN_DIR", usr.join("bin")));
        help.assert_ok();
        let (page, _) = render(&usr.join("share/man/man1").join(format!("{t}.1")));
        let page = page.replace(['\u{2010}', '\u{2212}'], "-");
        // The options clap lists: lines that start with a flag (`-a, --all`, `--root <DIR>`).
        let mut longs: Vec<String> = help
            .stdout_str()
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with('-'))
            .filter_map(|l| {
                l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .find(|w| w.starts_with("--") && w.len() > 2)
                    .map(str::to_string)
            })
            .collect();
        longs.sort();
        longs.dedup();
        assert!(!longs.is_empty() || t == "kist", "{t} --help shows no options");
        for l in longs {
            // kist's help is a mapping of commands whose options are the tools'.
            if t == "kist" && !["--root", "--help", "--version", "--format"].contains(&l.as_str()) {
                continue;
            }
            assert!(page.contains(&l), "{t}.1 does not document {l} (from {t} --help)");
        }
    }

    // The installed wrapper finds the installed tools next to itself.
    let root = tempfile::tempdir().unwrap();
    let out = run(Command::new("sh")
        .arg(usr.join("bin/kist"))
        .args(["images", "-q"])
        .env("KIST_ROOT", root.path())
        .env_remove("KIST_BIN_DIR")
        .env("PATH", "/usr/bin:/bin"));
    out.assert_ok();
    assert_eq!(out.stdout_str(), "");
    let out = run(Command::new("sh").arg(usr.join("bin/kist")).arg("version").env_remove("KIST_BIN_DIR"));
    assert!(
        out.stdout_str().contains(&format!("tools from {}", usr.join("bin").display())),
        "{}",
        out.stdout_str()
    );

    let out = make(&["uninstall", "PREFIX=/usr", &format!("DESTDIR={}", d.display())]);
    out.assert_ok();
    for t in &tools {
        assert!(!usr.join("bin").join(t).exists(), "{t} left after uninstall");
        assert!(!usr.join("share/man/man1").join(format!("{t}.1")).exists(), "{t}.1 left after uninstall");
    }
}

#[test]
fn one_tool_installs_and_runs_alone() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let out = make(&["install-img-list", "PREFIX=/usr", &format!("DESTDIR={}", d.display())]);
    out.assert_ok();
    let mut files: Vec<String> =
        walk(d).iter().map(|p| p.strip_prefix(d).unwrap().display().to_string()).collect();
    files.sort();
    assert_eq!(files, ["usr/bin/img-list", "usr/share/man/man1/img-list.1"]);
    let tool = d.join("usr/bin/img-list");
    let out = run(Command::new(&tool).arg("--help").env_clear());
    out.assert_ok();
    assert!(out.stdout_str().contains("--format"));
    // A real listing of an empty state root, with nothing else installed.
    let root = tempfile::tempdir().unwrap();
    let out =
        run(Command::new(&tool).args(["--root"]).arg(root.path()).args(["--format", "json"]).env_clear());
    out.assert_ok();
    assert_eq!(out.stdout_str(), "");
    let out = run(Command::new(&tool).arg("--root").arg(root.path()).args(["--format", "table"]).env_clear());
    out.assert_ok();
    assert!(out.stdout_str().starts_with("REPOSITORY"), "{}", out.stdout_str());
    let (page, warnings) = render(&d.join("usr/share/man/man1/img-list.1"));
    assert!(warnings.is_empty() && page.contains("img-list"), "{warnings}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn ctr_spawn_installs_with_its_monitor() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    make(&["install-ctr-spawn", "PREFIX=/usr", &format!("DESTDIR={}", d.display())]).assert_ok();
    let mut files: Vec<String> =
        walk(d).iter().map(|p| p.strip_prefix(d).unwrap().display().to_string()).collect();
    files.sort();
    // ctr-spawn -d execs the ctr-monitor found next to it.
    assert_eq!(
        files,
        [
            "usr/bin/ctr-monitor",
            "usr/bin/ctr-spawn",
            "usr/share/man/man1/ctr-monitor.1",
            "usr/share/man/man1/ctr-spawn.1"
        ]
    );
    let out = run(Command::new(d.join("usr/bin/ctr-monitor")).arg("--help").env_clear());
    out.assert_ok();
    assert!(out.stdout_str().contains("--respawn"), "{}", out.stdout_str());
}

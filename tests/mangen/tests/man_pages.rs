//! The committed man pages match what the tools' clap definitions generate,
//! every page has the sections a user looks for, and each renders with man.

use kist_mangen as man;

#[test]
fn committed_man_pages_match_the_code() {
    let man_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../man");
    let mut drift = Vec::new();
    for (name, cmd, extra) in man::tools() {
        let want = man::render(name, &cmd, &extra).unwrap();
        let path = man_dir.join(format!("{name}.1"));
        let have = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if want != have {
            drift.push(name);
        }
    }
    assert!(drift.is_empty(), "man pages out of date for {drift:?}: run `make man` and commit man/");
}

#[test]
fn every_page_has_the_required_sections() {
    for (name, cmd, extra) in man::tools() {
        let page = man::render(name, &cmd, &extra).unwrap();
        for s in ["EXIT STATUS", "FILES", "EXAMPLES", "JSON", "OPTIONS"] {
            assert!(
                page.contains(&format!(".SH \"{s}\"")) || page.contains(&format!(".SH {s}")),
                "{name}.1 lacks {s}"
            );
        }
    }
}

#[test]
fn every_tool_help_agrees_with_its_page() {
    for (name, cmd, _) in man::tools() {
        let out = std::process::Command::new(kist_tests::bin(name)).arg("--help").output().unwrap();
        assert!(out.status.success(), "{name} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        for arg in cmd.get_arguments() {
            if arg.is_hide_set() {
                continue;
            }
            if let Some(long) = arg.get_long() {
                assert!(help.contains(&format!("--{long}")), "{name} --help lacks --{long}");
            }
        }
    }
}

//! kist's defaults held against what a default `docker run` container
//! showed on the reference host (tests/data/docker-probe, captured by its
//! capture.sh): capability sets, no_new_privs, seccomp mode, and the device
//! nodes Docker creates being allowed by the device rules kist applies.

use std::path::PathBuf;

use super::{caps, seccomp};
use crate::cgroup::{dedup_device_rules, devices, docker_default_devices};

fn probe(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/docker-probe").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} missing"))
        .trim()
        .to_string()
}

#[test]
fn capabilities_match_docker() {
    let s = probe("status.txt");
    let want = format!("{:016x}", caps::mask(caps::docker_default().bounding().as_ref().unwrap()));
    for key in ["CapBnd:", "CapEff:", "CapPrm:"] {
        assert_eq!(field(&s, key), want, "{key}");
    }
    assert_eq!(field(&s, "CapInh:"), "0000000000000000");
    assert_eq!(field(&s, "CapAmb:"), "0000000000000000");
}

#[test]
fn seccomp_and_no_new_privs_match_docker() {
    let s = probe("status.txt");
    // Docker: a filter (mode 2), one of them, no_new_privs off by default.
    assert_eq!(field(&s, "Seccomp:"), "2");
    assert_eq!(field(&s, "Seccomp_filters:"), "1");
    assert_eq!(field(&s, "NoNewPrivs:"), "0");
    // kist's default is a filter too, and it compiles into one program.
    let prof = seccomp::docker_default(&caps::docker_default(), seccomp::native_arch());
    assert!(seccomp::compile(&prof).is_ok());
}

#[test]
fn dockers_device_nodes_are_allowed_and_others_not() {
    let rules: Vec<_> = dedup_device_rules(&docker_default_devices()).into_iter().cloned().collect();
    let prog = devices::compile(&rules);
    let mut nodes = 0;
    for l in probe("dev.txt").lines().chain(probe("dev-extra.txt").lines()) {
        // crw-rw-rw-    1 root     root        1,   7 Dec  1 14:10 full
        let f: Vec<&str> = l.split_whitespace().collect();
        if !l.starts_with('c') || f.len() < 6 {
            continue;
        }
        let major: u32 = f[4].trim_end_matches(',').parse().unwrap();
        let minor: u32 = f[5].parse().unwrap();
        assert!(devices::evaluate(&prog, 'c', major, minor, "rw"), "{l}");
        nodes += 1;
    }
    // full, null, random, tty, urandom, zero and /dev/pts/ptmx.
    assert_eq!(nodes, 7, "device nodes in the probe");
    assert!(!devices::evaluate(&prog, 'c', 1, 1, "r"), "/dev/mem stays closed");
}

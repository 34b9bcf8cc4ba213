//! The `kist` wrapper itself: it is POSIX sh (dash runs it, shellcheck
//! finds nothing), Docker's flag spellings reach the tools, exit codes are
//! Docker's (125 for kist's own errors, the container's status for run and
//! exec), `--pull` is honoured, `--format` templates are rendered by the
//! tools, `kist help` names the tool behind each command, and kist(1)
//! documents every command.

use std::path::{Path, PathBuf};
use std::process::Command;

use kist_tests::registry::Registry;
use kist_tests::{bin_dir, have, run, run_with_stdin, OutputExt, TestRoot};

fn kist_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/kist/kist")
}

/// `dash kist ARGS` with the built tools and a state root.
fn kist(root: &TestRoot, args: &[&str]) -> Command {
    let mut c = Command::new("dash");
    c.arg(kist_script()).args(args);
    c.env("KIST_ROOT", root.path()).env("KIST_BIN_DIR", bin_dir()).env_remove("KIST_DEBUG");
    // Outside a private namespace: no bridge on the host's network.
    c.env("KIST_DEFAULT_NETWORK", "none");
    c
}

/// A root with busybox fetched from a registry (not unpacked).
fn with_image() -> (TestRoot, Registry, String) {
    let root = TestRoot::new();
    let reg = Registry::start();
    let b = kist_tests::image::busybox();
    reg.push(&b.layout, &b.tag, "w/busybox:latest");
    let img = reg.reference("w/busybox:latest");
    (root, reg, img)
}

/// The commands `kist help` lists.
fn commands() -> Vec<String> {
    let out = run(&mut kist(&TestRoot::new(), &["help"]));
    out.assert_ok();
    let text = out.stdout_str();
    let mut cmds: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|w| w.to_string())
        .collect();
    cmds.dedup();
    cmds
}

#[test]
fn the_script_is_posix_sh() {
    let out = run(Command::new("dash").arg("-n").arg(kist_script()));
    out.assert_ok();
    if have("shellcheck") {
        let out = run(Command::new("shellcheck").args(["-s", "sh"]).arg(kist_script()));
        assert!(out.status.success(), "shellcheck:\n{}", out.stdout_str());
    } else {
        panic!("shellcheck missing: tests/host-deps.sh installs it");
    }
    let first = std::fs::read_to_string(kist_script()).unwrap();
    assert!(first.starts_with("#!/bin/sh\n"));
}

#[test]
fn help_names_the_tool_behind_every_command() {
    let cmds = commands();
    for want in [
        "pull", "images", "rmi", "run", "create", "start", "stop", "restart", "kill", "rm", "pause", "ps",
        "exec", "cp", "stats", "logs", "port", "inspect", "system", "version", "help",
    ] {
        assert!(cmds.iter().any(|c| c == want), "kist help lacks {want}: {cmds:?}");
    }
    let root = TestRoot::new();
    for (cmd, tool) in [
        ("run", "ctr-spawn"),
        ("pull", "img-fetch"),
        ("ps", "ctr-list"),
        ("stop", "ctr-kill"),
        ("exec", "ctr-exec"),
        ("cp", "ctr-cp"),
        ("stats", "ctr-stats"),
        ("logs", "ctr-logs"),
        ("images", "img-list"),
        ("rmi", "img-rm"),
    ] {
        let out = run(&mut kist(&root, &[cmd, "--help"]));
        out.assert_ok();
        let text = out.stdout_str();
        assert!(text.starts_with(&format!("kist {cmd}: ")) && text.contains(tool), "{cmd} --help: {text}");
        // The tool's own help follows, so its flags are one look away.
        assert!(text.contains(&format!("{tool} --help:")), "{cmd} --help: {text}");
        let help2 = run(&mut kist(&root, &["help", cmd])).stdout_str();
        assert_eq!(help2, text);
    }
}

#[test]
fn the_man_page_documents_every_command() {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../man/kist.1")).unwrap();
    for cmd in commands() {
        assert!(page.contains(&format!(".TP\n\\fB{cmd}")), "man/kist.1 lacks the command {cmd}");
    }
    for s in ["EXIT STATUS", "EXAMPLES", "SEE ALSO", "FORMATS"] {
        assert!(page.contains(&format!(".SH \"{s}\"")) || page.contains(&format!(".SH {s}")), "{s}");
    }
    // And the shell completions know every command too.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/kist/completions");
    for f in ["kist.bash", "_kist", "kist.fish"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        for cmd in commands() {
            assert!(text.contains(&cmd), "{f} lacks {cmd}");
        }
    }
}

#[test]
fn kist_errors_exit_125_like_docker() {
    let root = TestRoot::new();
    for args in [
        vec!["frobnicate"],
        vec!["run"],
        vec!["run", "--pull", "sometimes", "busybox"],
        vec!["run", "--pull=never", "no.such/image:1", "true"],
        vec!["run", "--no-such-flag", "busybox"],
        vec!["stop"],
        vec!["ps", "--format", "{{.NoSuchField}}"],
        vec!["ps", "--format", "{{range .}}"],
    ] {
        let out = run(&mut kist(&root, &args));
        assert_eq!(out.code(), 125, "kist {args:?}: {}", out.stderr_str());
        assert!(!out.stderr_str().is_empty(), "kist {args:?} says nothing");
    }
    // A failure that is not a usage error exits 1, as docker stop does.
    let out = run(&mut kist(&root, &["stop", "nosuch"]));
    assert_eq!(out.code(), 1, "{}", out.stderr_str());
    let out = run(&mut kist(&root, &["inspect", "nosuch"]));
    assert_eq!(out.code(), 1);
    assert!(out.stderr_str().contains("No such object: nosuch"));
    // docker exec and docker port on a missing container: 1, as the daemon's refusal.
    let out = run(&mut kist(&root, &["exec", "nosuch", "true"]));
    assert_eq!(out.code(), 1, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("no such container: nosuch"), "{}", out.stderr_str());
    let out = run(&mut kist(&root, &["exec", "--no-such-flag", "nosuch", "true"]));
    assert_eq!(out.code(), 125, "{}", out.stderr_str());
    let out = run(&mut kist(&root, &["port", "nosuch"]));
    assert_eq!(out.code(), 1);
    assert_eq!(out.stderr_str(), "Error: No such container: nosuch\n");
}

#[test]
fn run_pulls_a_missing_image_and_passes_the_status_through() {
    let (root, _reg, img) = with_image();
    // --pull never: not there, not fetched.
    let out = run(&mut kist(&root, &["run", "--rm", "--pull", "never", &img, "true"]));
    assert_eq!(out.code(), 125, "{}", out.stderr_str());
    // --pull missing (the default): fetched, unpacked, run; the status is the container's.
    let out = run(&mut kist(&root, &["run", "--rm", &img, "sh", "-c", "echo hi; exit 7"]));
    assert_eq!(out.code(), 7, "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "hi\n");
    assert!(out.stderr_str().contains("Unable to find image"), "{}", out.stderr_str());
    // Present now: no pull message; -q is quiet anyway.
    let out = run(&mut kist(&root, &["run", "--rm", "-e", "A=1", "-eB=2", &img, "sh", "-c", "echo $A$B"]));
    out.assert_ok();
    assert_eq!(out.stdout_str(), "12\n");
    assert!(!out.stderr_str().contains("Unable to find image"), "{}", out.stderr_str());
    // By image ID (docker images -q), as docker run takes it.
    let short = run(&mut kist(&root, &["images", "-q"])).stdout_str().trim().to_string();
    assert_eq!(short.len(), 12, "{short}");
    let out = run(&mut kist(&root, &["run", "--rm", "--pull=never", &short, "echo", "by id"]));
    out.assert_ok();
    assert_eq!(out.stdout_str(), "by id\n");
    // --pull=always fetches again (and still runs); 126/127 as Docker's.
    let out = run(&mut kist(&root, &["run", "--rm", "--pull=always", "-q", &img, "nosuchcommand"]));
    assert_eq!(out.code(), 127, "{}", out.stderr_str());
    // Combined short flags with a value at the end (-iv DIR:DST) and stdin.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x"), "vol\n").unwrap();
    let v = format!("{}:/v:ro", dir.path().display());
    let out = run_with_stdin(
        &mut kist(&root, &["run", "--rm", "-iv", &v, &img, "sh", "-c", "cat /v/x; cat"]),
        b"in\n",
    );
    out.assert_ok();
    assert_eq!(out.stdout_str(), "vol\nin\n");
    // run -it under a pty (script(1) gives one): a terminal inside, the status out.
    let line = format!("dash {} run --rm -it {img} sh -c 'tty; exit 5'", kist_script().display());
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &line, "/dev/null"]);
    c.env("KIST_ROOT", root.path()).env("KIST_BIN_DIR", bin_dir()).env("KIST_DEFAULT_NETWORK", "none");
    let out = run(&mut c);
    assert_eq!(out.code(), 5, "{}{}", out.stdout_str(), out.stderr_str());
    assert!(out.stdout_str().contains("/dev/pts/"), "{}", out.stdout_str());
    // --name "x" and --name=x, create then start -a.
    let out = run(&mut kist(&root, &["create", "--name=job", &img, "sh", "-c", "echo job ran; exit 4"]));
    out.assert_ok();
    let id = out.stdout_str().trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let out = run(&mut kist(&root, &["start", "-a", "job"]));
    assert_eq!(out.code(), 4, "{}", out.stderr_str());
    assert!(out.stdout_str().contains("job ran"), "{}", out.stdout_str());
    let out = run(&mut kist(&root, &["rm", "job"]));
    out.assert_ok();
    assert_eq!(out.stdout_str(), "job\n");
}

#[test]
fn ps_images_and_stats_take_docker_templates() {
    let (root, _reg, img) = with_image();
    run(&mut kist(&root, &["pull", "-q", &img])).assert_ok();
    let out = run(&mut kist(
        &root,
        &["run", "-d", "--name", "tpl", "-l", "tier=front", "-v", "tplvol:/data", &img, "sleep", "1000"],
    ));
    out.assert_ok();
    let id = out.stdout_str().trim().to_string();

    let out = run(&mut kist(&root, &["ps", "--format", "{{.ID}} {{.Names}} {{.State}} {{.Label \"tier\"}}"]));
    out.assert_ok();
    assert_eq!(out.stdout_str(), format!("{} tpl running front\n", &id[..12]));
    let out = run(&mut kist(&root, &["ps", "--format", "table {{.Names}}\\t{{.Image}}"]));
    out.assert_ok();
    let repo = img.clone();
    assert_eq!(out.stdout_str(), format!("NAMES     IMAGE\ntpl       {repo}\n"));
    let out = run(&mut kist(&root, &["ps", "--format", "{{json .}}"]));
    out.assert_ok();
    let v: serde_json::Value = serde_json::from_str(out.stdout_str().trim()).unwrap();
    for k in [
        "ID",
        "Image",
        "Command",
        "CreatedAt",
        "RunningFor",
        "Ports",
        "Status",
        "Size",
        "Names",
        "Labels",
        "Mounts",
        "Networks",
        "State",
    ] {
        assert!(v.get(k).is_some(), "{{{{json .}}}} lacks {k}: {v}");
    }
    assert_eq!(v["Labels"], "tier=front");
    assert_eq!(v["Mounts"], "tplvol");
    assert!(v["CreatedAt"].as_str().unwrap().ends_with(" +0000 UTC"), "{v}");
    assert_eq!(run(&mut kist(&root, &["ps", "-q"])).stdout_str(), format!("{}\n", &id[..12]));

    let out = run(&mut kist(&root, &["images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"]));
    out.assert_ok();
    assert!(out.stdout_str().starts_with(&format!("{img} ")), "{}", out.stdout_str());
    let out = run(&mut kist(&root, &["images", "--format", "{{json .}}"]));
    let v: serde_json::Value = serde_json::from_str(out.stdout_str().trim()).unwrap();
    for k in ["Repository", "Tag", "ID", "Digest", "CreatedSince", "CreatedAt", "Size"] {
        assert!(v.get(k).is_some(), "images {{{{json .}}}} lacks {k}: {v}");
    }
    assert!(v["Digest"].as_str().unwrap().starts_with("sha256:"), "{v}");
    let out = run(&mut kist(&root, &["images", "--digests"]));
    assert!(out.stdout_str().lines().next().unwrap().contains("DIGEST"), "{}", out.stdout_str());

    let out = run(&mut kist(&root, &["stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}} {{.ID}}"]));
    out.assert_ok();
    assert_eq!(out.stdout_str(), format!("tpl 1 {}\n", &id[..12]));
    let out = run(&mut kist(&root, &["stats", "--no-stream", "--format", "{{json .}}"]));
    let v: serde_json::Value = serde_json::from_str(out.stdout_str().trim()).unwrap();
    for k in ["Container", "Name", "ID", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs"] {
        assert!(v.get(k).is_some(), "stats {{{{json .}}}} lacks {k}: {v}");
    }

    // inspect prints docker's documents; pause/unpause/kill map onto ctr-kill.
    let out = run(&mut kist(&root, &["inspect", "tpl"]));
    out.assert_ok();
    let docs: serde_json::Value = serde_json::from_str(&out.stdout_str()).unwrap();
    assert_eq!(docs[0]["Id"], id.as_str());
    assert_eq!(run(&mut kist(&root, &["pause", "tpl"])).stdout_str(), "tpl\n");
    assert_eq!(run(&mut kist(&root, &["ps", "--format", "{{.State}}"])).stdout_str(), "paused\n");
    assert_eq!(run(&mut kist(&root, &["unpause", "tpl"])).stdout_str(), "tpl\n");
    assert_eq!(run(&mut kist(&root, &["restart", "-t", "1", "tpl"])).stdout_str(), "tpl\n");
    assert_eq!(run(&mut kist(&root, &["ps", "--format", "{{.State}}"])).stdout_str(), "running\n");
    assert_eq!(run(&mut kist(&root, &["kill", "tpl"])).stdout_str(), "tpl\n");
    let out = run_with_stdin(&mut kist(&root, &["system", "prune", "-f"]), b"");
    out.assert_ok();
    assert!(out.stdout_str().contains(&id), "{}", out.stdout_str());
    assert_eq!(run(&mut kist(&root, &["ps", "-a", "-q"])).stdout_str(), "");
    let out = run(&mut kist(&root, &["version"]));
    out.assert_ok();
    assert!(out.stdout_str().contains("ctr-spawn"), "{}", out.stdout_str());
}

/// `{{.Mounts}}` as docker ps renders it: each volume's name, else the
/// bind mount's source, cut to 15 characters (the last one `…`) unless
/// --no-trunc; tmpfs and kist's own /etc files are not listed; and
/// `{{.LocalVolumes}}` counts the volumes.
#[test]
fn ps_mounts_show_volumes_and_bind_sources_like_docker() {
    let (root, _reg, img) = with_image();
    run(&mut kist(&root, &["pull", "-q", &img])).assert_ok();
    let dir = tempfile::Builder::new().prefix("kist-a-long-bind-source-").tempdir().unwrap();
    let src = std::fs::canonicalize(dir.path()).unwrap().display().to_string();
    let bind = format!("{src}:/b:ro");
    #[rustfmt::skip]
    let out = run(&mut kist(&root, &[
        "create", "--name", "mnt", "-v", "named1:/n", "-v", &bind, "-v", "/anon", "--tmpfs", "/t", &img, "true",
    ]));
    out.assert_ok();
    let full =
        run(&mut kist(&root, &["ps", "-a", "--no-trunc", "--format", "{{.Mounts}}|{{.LocalVolumes}}"]));
    full.assert_ok();
    let (mounts, count) =
        full.stdout_str().trim().split_once('|').map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
    let parts: Vec<&str> = mounts.split(',').collect();
    assert_eq!(parts.len(), 3, "{mounts}");
    assert_eq!(parts[0], "named1");
    assert_eq!(parts[1], src);
    let anon = parts[2];
    assert_eq!(anon.len(), 64, "{mounts}");
    assert!(root.path().join("volumes").join(anon).join("_data").is_dir(), "{anon} is not a volume");
    assert_eq!(count, "2");
    let short: String = src.chars().take(14).collect::<String>() + "…";
    let cut = run(&mut kist(&root, &["ps", "-a", "--format", "{{.Mounts}}"]));
    assert_eq!(cut.stdout_str(), format!("named1,{short},{}…\n", &anon[..14]));
    let out = run(&mut kist(&root, &["ps", "-a", "--format", "{{json .}}"]));
    let v: serde_json::Value = serde_json::from_str(out.stdout_str().trim()).unwrap();
    assert_eq!(v["Mounts"], format!("named1,{short},{}…", &anon[..14]).as_str());
    assert_eq!(v["LocalVolumes"], "2");
    run(&mut kist(&root, &["rm", "-v", "mnt"])).assert_ok();
}

/// `system prune` as docker 20.10's: the prompt lists what -a and
/// --volumes add and nothing happens without a yes; -f removes the
/// stopped containers, then (--volumes) every volume no remaining
/// container mounts, named or anonymous, then the dangling images, or
/// with -a every image name no container holds (an in-use image keeps its
/// last name), in docker's sections.
#[test]
fn system_prune_all_and_volumes_like_docker() {
    let (root, reg, img) = with_image();
    let m = kist_tests::image::multilayer();
    reg.push(&m.layout, &m.tag, "w/other:1");
    let other = reg.reference("w/other:1");
    reg.push(&kist_tests::image::busybox().layout, &kist_tests::image::busybox().tag, "w/busybox:second");
    let second = reg.reference("w/busybox:second");
    for r in [&img, &other, &second] {
        run(&mut kist(&root, &["pull", "-q", r])).assert_ok();
    }
    let vols = root.path().join("volumes");
    run(&mut kist(&root, &["run", "-d", "--name", "keeper", "-v", "inuse:/u", &img, "sleep", "1000"]))
        .assert_ok();
    run(&mut kist(&root, &["create", "--name", "stopped", "-v", "gone:/g", "-v", "/anon", &img, "true"]))
        .assert_ok();
    std::fs::create_dir_all(vols.join("loose").join("_data")).unwrap();
    std::fs::write(vols.join("loose/_data/f"), "x").unwrap();
    let anon: Vec<String> = std::fs::read_dir(&vols)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64)
        .collect();
    assert_eq!(anon.len(), 1, "{anon:?}");

    // No yes, nothing removed; the prompt says what -a and --volumes add.
    let out = run_with_stdin(&mut kist(&root, &["system", "prune", "-a", "--volumes"]), b"n\n");
    out.assert_ok();
    let text = out.stdout_str();
    for line in [
        "WARNING! This will remove:",
        "  - all stopped containers",
        "  - all volumes not used by at least one container",
        "  - all images without at least one container associated to them",
        "Are you sure you want to continue? [y/N] ",
    ] {
        assert!(text.contains(line), "{text}");
    }
    let plain = run_with_stdin(&mut kist(&root, &["system", "prune"]), b"\n").stdout_str();
    assert!(plain.contains("  - all dangling images") && !plain.contains("volumes"), "{plain}");
    assert_eq!(run(&mut kist(&root, &["ps", "-a", "-q"])).stdout_str().lines().count(), 2);
    assert!(vols.join("loose").exists() && vols.join("gone").exists());

    // Without -a the named images stay; without --volumes the volumes stay.
    let out = run_with_stdin(&mut kist(&root, &["system", "prune", "-f"]), b"");
    out.assert_ok();
    assert!(out.stdout_str().starts_with("Deleted Containers:\n"), "{}", out.stdout_str());
    assert!(out.stdout_str().contains("Total reclaimed space: "), "{}", out.stdout_str());
    assert_eq!(run(&mut kist(&root, &["ps", "-a", "--format", "{{.Names}}"])).stdout_str(), "keeper\n");
    assert_eq!(run(&mut kist(&root, &["images", "-q"])).stdout_str().lines().count(), 2);
    assert!(vols.join("gone").exists() && vols.join(&anon[0]).exists());

    // -a --volumes (with a yes on stdin): unused volumes, named or not, and
    // every image no container uses; the running container's survive.
    let out = run_with_stdin(&mut kist(&root, &["system", "prune", "-a", "--volumes"]), b"y\n");
    out.assert_ok();
    let text = out.stdout_str();
    assert!(text.contains("Deleted Volumes:\n"), "{text}");
    for v in ["gone", "loose", anon[0].as_str()] {
        assert!(!vols.join(v).exists(), "volume {v} left: {text}");
        assert!(text.lines().any(|l| l == v), "{v} not reported: {text}");
    }
    assert!(vols.join("inuse").is_dir(), "a running container's volume was removed: {text}");
    assert!(text.contains("Deleted Images:\nuntagged: "), "{text}");
    assert!(text.lines().any(|l| l.starts_with("deleted: sha256:")), "{text}");
    let left = run(&mut kist(&root, &["images", "--format", "{{.Repository}}:{{.Tag}}"])).stdout_str();
    assert_eq!(left.lines().count(), 1, "{left}");
    assert!(!left.contains("w/other"), "{left}");
    let out = run(&mut kist(&root, &["exec", "keeper", "true"]));
    out.assert_ok();
    run(&mut kist(&root, &["rm", "-f", "keeper"])).assert_ok();
}

/// `kist inspect` prints docker inspect's documents (one JSON array, in
/// the order named, containers and images alike) and `-f` renders Go
/// templates over Docker's field names, with docker's errors.
#[test]
fn inspect_prints_dockers_documents_and_takes_go_templates() {
    let (root, reg, img) = with_image();
    run(&mut kist(&root, &["pull", "-q", &img])).assert_ok();
    let dir = tempfile::tempdir().unwrap();
    let bind = format!("{}:/b:ro", dir.path().display());
    #[rustfmt::skip]
    let out = run(&mut kist(&root, &[
        "run", "-d", "--name", "insp", "-l", "tier=front", "-e", "GREETING=hi", "-v", "ivol:/v", "-v", &bind, "-v", "/anonvol",
        "--restart", "on-failure:3", &img, "sleep", "1000",
    ]));
    out.assert_ok();
    let id = out.stdout_str().trim().to_string();
    let pid = run(root.cmd("ctr-list").args(["--format", "json"])).records()[0]["pid"].as_i64().unwrap();
    let f = |t: &str, what: &str| -> String {
        let out = run(&mut kist(&root, &["inspect", "-f", t, what]));
        out.assert_ok();
        out.stdout_str()
    };
    assert_eq!(
        f("{{.State.Running}} {{.State.Status}} {{.State.Pid}}", "insp"),
        format!("true running {pid}\n")
    );
    assert_eq!(f("{{.Id}} {{.Name}} {{.RestartCount}}", &id[..10]), format!("{id} /insp 0\n"));
    assert_eq!(
        f("{{index .Config.Labels \"tier\"}} {{json .Config.Labels}}", "insp"),
        "front {\"tier\":\"front\"}\n"
    );
    assert!(f("{{range .Config.Env}}{{.}};{{end}}", "insp").contains("GREETING=hi;"));
    assert_eq!(f("{{.Config.Image}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}", "insp"), format!("{img} on-failure:3\n"));
    let mounts =
        f("{{range .Mounts}}{{.Type}} {{if .Name}}{{.Name}} {{end}}{{.Destination}} {{.RW}};{{end}}", "insp");
    assert!(mounts.starts_with("volume ivol /v true;bind /b false;volume "), "{mounts}");
    assert!(mounts.ends_with(" /anonvol true;\n"), "{mounts}");
    // The image's config and the container's: anonymous volumes, no exposed ports here.
    assert_eq!(f("{{json .Config.Volumes}} {{.Config.ExposedPorts}}", "insp"), "{\"/anonvol\":{}} <nil>\n");
    assert_eq!(f("{{json .Config.Cmd}}", "insp"), "[\"sleep\",\"1000\"]\n");
    // The stopped container: its exit code and times, Docker's zero time before a start.
    run(&mut kist(&root, &["stop", "-t", "1", "insp"])).assert_ok();
    assert_eq!(f("{{.State.Running}} {{.State.Pid}} {{ne .State.ExitCode 0}}", "insp"), "false 0 true\n");
    run(&mut kist(&root, &["create", "--name", "fresh", &img, "true"])).assert_ok();
    assert_eq!(f("{{.State.Status}} {{.State.StartedAt}}", "fresh"), "created 0001-01-01T00:00:00Z\n");
    // Images: by name and by ID.
    let image_id = f("{{.Id}}", &img);
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    assert_eq!(f("{{.Id}}", &image_id.trim()[7..19]), image_id);
    assert!(f("{{json .RepoTags}} {{.Os}}", &img).starts_with(&format!("[\"{img}\"] linux")));
    // No format: one JSON array in the order named, as docker prints it.
    let out = run(&mut kist(&root, &["inspect", "fresh", &img, "insp"]));
    out.assert_ok();
    assert!(out.stdout_str().starts_with("[\n    {\n        \""), "{}", out.stdout_str());
    let docs: serde_json::Value = serde_json::from_str(&out.stdout_str()).unwrap();
    assert_eq!(docs.as_array().unwrap().len(), 3);
    assert_eq!(docs[0]["Name"], "/fresh");
    assert_eq!(docs[1]["Id"], image_id.trim());
    assert_eq!(docs[2]["State"]["Running"], false);
    // An image with an entrypoint, exposed ports, volumes and labels: the
    // container's Config starts from them, as Docker's does.
    let ep_dir = tempfile::tempdir().unwrap();
    let built = kist_tests::image::ImageBuilder::new()
        .layer(kist_tests::image::layer_tar(&kist_tests::image::busybox_entries()))
        .config("Entrypoint", serde_json::json!(["sleep"]))
        .config("Cmd", serde_json::json!(["1000"]))
        .config("ExposedPorts", serde_json::json!({"8080/tcp": {}}))
        .config("Volumes", serde_json::json!({"/cache": {}}))
        .config("Labels", serde_json::json!({"from": "image", "tier": "image"}))
        .write_layout(ep_dir.path(), "ep");
    reg.push(&built.layout, &built.tag, "w/ep:1");
    let ep = reg.reference("w/ep:1");
    run(&mut kist(&root, &["pull", "-q", &ep])).assert_ok();
    run(&mut kist(&root, &["create", "--name", "epc", "-l", "tier=box", &ep])).assert_ok();
    assert_eq!(
        f("{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .Config.ExposedPorts}} {{json .Config.Volumes}} {{json .Config.Labels}}", "epc"),
        "[\"sleep\"] [\"1000\"] {\"8080/tcp\":{}} {\"/cache\":{}} {\"from\":\"image\",\"tier\":\"box\"}\n"
    );
    run(&mut kist(&root, &["rm", "-v", "epc"])).assert_ok();
    // Docker's errors: a missing object (the others still printed), a key no document has.
    let out = run(&mut kist(&root, &["inspect", "-f", "{{.Name}}", "nosuch", "insp"]));
    assert_eq!(out.code(), 1);
    assert_eq!(out.stdout_str(), "/insp\n");
    assert!(out.stderr_str().contains("No such object: nosuch"), "{}", out.stderr_str());
    let out = run(&mut kist(&root, &["inspect", "nosuch"]));
    assert_eq!((out.code(), out.stdout_str()), (1, "[]\n".to_string()));
    let out = run(&mut kist(&root, &["inspect", "-f", "{{.State.Nope}}", "insp"]));
    assert_eq!(out.code(), 1);
    assert!(out.stderr_str().contains("map has no entry for key \"Nope\""), "{}", out.stderr_str());
    let out = run(&mut kist(&root, &["inspect", "--type", "image", "insp"]));
    assert_eq!(out.code(), 1);
    run(&mut kist(&root, &["rm", "-v", "insp", "fresh"])).assert_ok();
}

/// docker ps' IMAGE is the image as the user named it (here an ID prefix
/// and a full reference), and docker rmi prints only its Untagged and
/// Deleted lines.
#[test]
fn ps_shows_the_image_as_named_and_rmi_prints_dockers_lines() {
    let (root, _reg, img) = with_image();
    run(&mut kist(&root, &["pull", "-q", &img])).assert_ok();
    let short = run(&mut kist(&root, &["images", "-q"])).stdout_str().trim().to_string();
    run(&mut kist(&root, &["create", "--name", "byid", &short[..8], "true"])).assert_ok();
    run(&mut kist(&root, &["create", "--name", "byref", &img, "true"])).assert_ok();
    let out = run(&mut kist(&root, &["ps", "-a", "--format", "{{.Names}} {{.Image}}"]));
    let mut lines: Vec<String> = out.stdout_str().lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, [format!("byid {}", &short[..8]), format!("byref {img}")]);
    // ps -s is accepted; images --filter dangling= and reference= map onto img-list.
    assert_eq!(run(&mut kist(&root, &["ps", "-a", "-s", "-q"])).stdout_str().lines().count(), 2);
    let out = run(&mut kist(&root, &["images", "-f", "dangling=true"]));
    out.assert_ok();
    assert_eq!(out.stdout_str().lines().count(), 1, "{}", out.stdout_str());
    let out = run(&mut kist(&root, &["images", "--filter", &format!("reference={img}"), "-q"]));
    assert_eq!(out.stdout_str().trim(), short);
    assert_eq!(run(&mut kist(&root, &["images", "--filter=reference=no/such", "-q"])).stdout_str(), "");
    assert_eq!(run(&mut kist(&root, &["images", "-f", "before=x"])).code(), 125);
    run(&mut kist(&root, &["rm", "byid", "byref"])).assert_ok();
    let out = run(&mut kist(&root, &["rmi", &img]));
    out.assert_ok();
    let text = out.stdout_str();
    assert!(text.starts_with("Untagged: "), "{text}");
    assert!(text.lines().all(|l| l.starts_with("Untagged: ") || l.starts_with("Deleted: ")), "{text}");
    let out = run(&mut kist(&root, &["rmi", "nosuch:1"]));
    assert_eq!((out.code(), out.stdout_str()), (1, String::new()));
}

/// Docker's management commands: `container prune`, `image prune [-a]`,
/// `volume prune` and `network prune` are the sections of system prune,
/// each with docker's warning; `container inspect` and `image inspect`
/// look at one kind only, with docker's error.
#[test]
fn prune_and_inspect_management_commands() {
    let (root, _reg, img) = with_image();
    run(&mut kist(&root, &["pull", "-q", &img])).assert_ok();
    run(&mut kist(&root, &["create", "--name", "c1", "-v", "pv:/p", &img, "true"])).assert_ok();
    let out = run_with_stdin(&mut kist(&root, &["container", "prune"]), b"no\n");
    assert_eq!(
        out.stdout_str(),
        "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] "
    );
    assert_eq!(run(&mut kist(&root, &["ps", "-a", "-q"])).stdout_str().lines().count(), 1);
    let out = run(&mut kist(&root, &["container", "inspect", "-f", "{{.Name}}", "c1"]));
    assert_eq!(out.stdout_str(), "/c1\n");
    let out = run(&mut kist(&root, &["image", "inspect", "c1"]));
    assert_eq!((out.code(), out.stdout_str()), (1, "[]\n".to_string()));
    assert!(out.stderr_str().contains("No such image: c1"), "{}", out.stderr_str());
    let out = run(&mut kist(&root, &["container", "inspect", &img]));
    assert!(out.stderr_str().contains("No such container: "), "{}", out.stderr_str());
    assert_eq!(run(&mut kist(&root, &["image", "inspect", "-f", "{{.Os}}", &img])).stdout_str(), "linux\n");

    let out = run(&mut kist(&root, &["container", "prune", "-f"]));
    out.assert_ok();
    assert!(out.stdout_str().starts_with("Deleted Containers:\n"), "{}", out.stdout_str());
    assert_eq!(run(&mut kist(&root, &["ps", "-a", "-q"])).stdout_str(), "");
    assert!(root.path().join("volumes/pv").is_dir(), "container prune took the volume");
    let out = run_with_stdin(&mut kist(&root, &["volume", "prune"]), b"y\n");
    out.assert_ok();
    assert!(out.stdout_str().contains("all local volumes not used by at least one container"));
    assert!(out.stdout_str().contains("Deleted Volumes:\npv\n"), "{}", out.stdout_str());
    assert!(!root.path().join("volumes/pv").exists());
    // A container directory without state.json (one being created, whose
    // volume exists already) keeps every volume.
    std::fs::create_dir_all(root.path().join("volumes/young/_data")).unwrap();
    let busy = root.path().join("containers").join("b".repeat(64));
    std::fs::create_dir_all(&busy).unwrap();
    let out = run(&mut kist(&root, &["volume", "prune", "-f"]));
    out.assert_ok();
    assert!(out.stderr_str().contains("volumes not pruned"), "{}", out.stderr_str());
    assert!(root.path().join("volumes/young").is_dir());
    std::fs::remove_dir(&busy).unwrap();
    run(&mut kist(&root, &["volume", "prune", "-f"])).assert_ok();
    assert!(!root.path().join("volumes/young").exists());
    let out = run(&mut kist(&root, &["image", "prune", "-f"]));
    out.assert_ok();
    assert_eq!(run(&mut kist(&root, &["images", "-q"])).stdout_str().lines().count(), 1);
    let out = run(&mut kist(&root, &["image", "prune", "-a", "-f"]));
    out.assert_ok();
    assert!(out.stdout_str().contains("Deleted Images:\nuntagged: "), "{}", out.stdout_str());
    assert_eq!(run(&mut kist(&root, &["images", "-q"])).stdout_str(), "");
    assert_eq!(run(&mut kist(&root, &["network", "prune", "-f"])).code(), 0);
}

//! img-fetch against real fixtures: Debian's docker-registry on loopback
//! (no auth, htpasswd Basic, Bearer tokens from a test token server),
//! OCI layouts and docker-archives that skopeo wrote, interrupted and
//! concurrent pulls, and malformed input with its documented exit codes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kist_common::Digest;
use kist_tests::image::{self, BuiltImage, Entry, ImageBuilder};
use kist_tests::proxy::Proxy;
use kist_tests::registry::{Auth, Registry};
use kist_tests::token_server::{base64, TokenServer};
use kist_tests::{run, OutputExt, TestRoot};

/// A home directory with no credentials, so the host's never leak in.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home { dir: tempfile::Builder::new().prefix("kist-home-").tempdir().unwrap() }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn fetch_cmd(root: &TestRoot, home: &Home) -> Command {
    let mut c = root.cmd("img-fetch");
    c.env("HOME", home.path());
    for v in [
        "DOCKER_CONFIG",
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME",
        "KIST_REGISTRIES_CONFIG",
    ] {
        c.env_remove(v);
    }
    c
}

fn fetch(root: &TestRoot, args: &[&str]) -> std::process::Output {
    let home = Home::new();
    run(fetch_cmd(root, &home).args(args))
}

/// Every file under blobs/sha256 hashes to its name.
fn assert_store_verified(root: &Path) {
    let dir = root.join("blobs/sha256");
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            Digest::of(&bytes).hex(),
            e.file_name().to_string_lossy(),
            "unverified blob {:?}",
            e.path()
        );
    }
}

fn has_blob(root: &Path, d: &Digest) -> bool {
    root.join("blobs/sha256").join(d.hex()).is_file()
}

/// GETs of each blob that img-fetch made, from the registry's access log.
fn blob_gets(reg: &Registry) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for line in reg.log().lines() {
        if !line.contains("kist-img-fetch") || !line.contains("\"GET /v2/") {
            continue;
        }
        let Some(i) = line.find("/blobs/sha256:") else { continue };
        let rest = &line[i + "/blobs/".len()..];
        let digest: String = rest.chars().take(71).collect();
        let status_ok = line.contains("HTTP/1.1\" 200 ") || line.contains("HTTP/1.1\" 206 ");
        if status_ok {
            *out.entry(digest).or_insert(0) += 1;
        }
    }
    out
}

fn image_record(out: &std::process::Output) -> serde_json::Value {
    let recs = out.records();
    let last = recs.last().unwrap_or_else(|| panic!("no records; stderr: {}", out.stderr_str())).clone();
    assert_eq!(last["type"], "image", "{last}");
    last
}

fn check_record(rec: &serde_json::Value, img: &BuiltImage, reference: &str, root: &Path) {
    assert_eq!(rec["schemaVersion"], 1);
    assert_eq!(rec["reference"], reference);
    assert_eq!(rec["digest"], img.manifest.to_string());
    assert_eq!(rec["id"], img.config.to_string());
    assert_eq!(rec["config"]["digest"], img.config.to_string());
    let layers: Vec<String> =
        rec["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    assert_eq!(layers, img.layers.iter().map(|d| d.to_string()).collect::<Vec<_>>());
    let diffs: Vec<String> =
        rec["diffIds"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    assert_eq!(diffs, img.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>());
    assert_eq!(rec["platform"]["os"], "linux");
    assert_eq!(rec["platform"]["architecture"], image::host_arch());
    assert_eq!(rec["store"], root.to_string_lossy().as_ref());
    for d in img.layers.iter().chain([&img.config, &img.manifest]) {
        assert!(has_blob(root, d), "{d} missing from the store");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .unwrap_or_else(|| panic!("{reference} not in index.json: {index}"));
    assert_eq!(entry["digest"], img.manifest.to_string());
    assert_store_verified(root);
}

#[test]
fn pulls_without_auth_and_second_pull_fetches_nothing() {
    let img = image::multilayer();
    let reg = Registry::start();
    reg.push(&img.layout, &img.tag, "kist/multi:1");
    let root = TestRoot::new();
    let reference = format!("{}/kist/multi:1", reg.host());
    let out = fetch(&root, &[&reference]);
    out.assert_ok();
    assert_eq!(out.records().len(), 1, "one record without --stream");
    check_record(&image_record(&out), &img, &reference, root.path());
    let gets = blob_gets(&reg);
    assert_eq!(gets.len(), img.layers.len() + 1, "config and layers fetched: {gets:?}");
    assert!(gets.values().all(|&n| n == 1), "{gets:?}");
    let index_before = std::fs::read(root.path().join("index.json")).unwrap();

    let out = fetch(&root, &[&reference]);
    out.assert_ok();
    check_record(&image_record(&out), &img, &reference, root.path());
    assert_eq!(blob_gets(&reg), gets, "second pull downloaded blobs again");
    assert_eq!(std::fs::read(root.path().join("index.json")).unwrap(), index_before, "index.json rewritten");

    // Pinned by digest and present: no network at all, even with the registry gone.
    drop(reg);
    let pinned = format!(
        "{}/kist/multi@{}",
        reference.rsplit_once('/').unwrap().0.rsplit_once('/').unwrap().0,
        img.manifest
    );
    let out = fetch(&root, &[&pinned]);
    out.assert_ok();
    assert_eq!(image_record(&out)["digest"], img.manifest.to_string());
}

#[test]
fn skopeo_and_umoci_read_the_store() {
    let img = image::busybox();
    let reg = Registry::start();
    reg.push(&img.layout, &img.tag, "library/busybox:latest");
    let root = TestRoot::new();
    let reference = format!("{}/library/busybox:latest", reg.host());
    fetch(&root, &[&reference]).assert_ok();
    let out = run(Command::new("skopeo").arg("inspect").arg(format!(
        "oci:{}:{}",
        root.path().display(),
        reference
    )));
    out.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout_str()).unwrap();
    assert_eq!(v["Digest"], img.manifest.to_string());
    assert_eq!(v["Layers"][0], img.layers[0].to_string());
    let out = run(Command::new("umoci").arg("ls").arg("--layout").arg(root.path()));
    out.assert_ok();
    assert!(out.stdout_str().lines().any(|l| l.trim() == reference), "umoci ls: {}", out.stdout_str());
}

#[test]
fn stream_emits_layer_records_before_the_image() {
    let img = image::multilayer();
    let reg = Registry::start();
    reg.push(&img.layout, &img.tag, "kist/multi:s");
    let root = TestRoot::new();
    let reference = reg.reference("kist/multi:s");
    for round in 0..2 {
        let out = fetch(&root, &["--stream", &reference]);
        out.assert_ok();
        let recs = out.records();
        assert_eq!(recs.len(), img.layers.len() + 1, "round {round}: {recs:?}");
        let chain = kist_common::record::chain_ids(&img.diff_ids);
        let mut seen = vec![false; img.layers.len()];
        for r in &recs[..img.layers.len()] {
            assert_eq!(r["type"], "layer");
            let i = r["index"].as_u64().unwrap() as usize;
            seen[i] = true;
            assert_eq!(r["count"], img.layers.len());
            assert_eq!(r["digest"], img.layers[i].to_string());
            assert_eq!(r["diffId"], img.diff_ids[i].to_string());
            assert_eq!(r["chainId"], chain[i].to_string());
            assert_eq!(r["image"], img.config.to_string());
            // Emitted only once the blob is verified in the store.
            assert!(has_blob(root.path(), &img.layers[i]));
        }
        assert!(seen.iter().all(|&s| s));
        check_record(&recs[img.layers.len()], &img, &reference, root.path());
    }
}

#[test]
fn basic_auth_from_docker_config_and_auth_json() {
    let img = image::busybox();
    let reg = Registry::start_with(Auth::Basic { user: "alice".into(), password: "s3cret".into() });
    reg.push(&img.layout, &img.tag, "kist/bb:1");
    let reference = reg.reference("kist/bb:1");

    // No credentials: exit 4 with a clear message.
    let root = TestRoot::new();
    let out = fetch(&root, &[&reference]);
    assert_eq!(out.code(), 4, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("requires authentication"), "{}", out.stderr_str());
    assert_eq!(out.stderr_str().lines().count(), 1, "one line: {}", out.stderr_str());

    // ~/.docker/config.json with auths base64.
    let home = Home::new();
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    let auth = base64(b"alice:s3cret");
    std::fs::write(
        home.path().join(".docker/config.json"),
        format!(r#"{{"auths":{{"http://{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let out = run(fetch_cmd(&root, &home).arg(&reference));
    out.assert_ok();
    check_record(&image_record(&out), &img, &reference, root.path());

    // A wrong password in containers' auth.json ($REGISTRY_AUTH_FILE wins over Docker's file).
    let root2 = TestRoot::new();
    let bad = home.path().join("auth.json");
    std::fs::write(
        &bad,
        format!(r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#, reg.host(), base64(b"alice:wrong")),
    )
    .unwrap();
    let out = run(fetch_cmd(&root2, &home).env("REGISTRY_AUTH_FILE", &bad).arg(&reference));
    assert_eq!(out.code(), 4, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("refused the credentials of user \"alice\""), "{}", out.stderr_str());
    assert!(!out.stderr_str().contains("wrong"), "password leaked: {}", out.stderr_str());
    assert!(!has_blob(root2.path(), &img.config));

    // $XDG_RUNTIME_DIR/containers/auth.json with the right one.
    let xdg = home.path().join("run");
    std::fs::create_dir_all(xdg.join("containers")).unwrap();
    std::fs::write(
        xdg.join("containers/auth.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    std::fs::remove_file(home.path().join(".docker/config.json")).unwrap();
    let out = run(fetch_cmd(&root2, &home).env("XDG_RUNTIME_DIR", &xdg).arg(&reference));
    out.assert_ok();
}

#[test]
fn credential_helper_from_docker_config() {
    let img = image::busybox();
    let reg = Registry::start_with(Auth::Basic { user: "bob".into(), password: "helper-pw".into() });
    reg.push(&img.layout, &img.tag, "kist/bb:h");
    let home = Home::new();
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-kisttest");
    // The helper checks it is asked about the right server.
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\necho '{{\"ServerURL\":\"x\",\"Username\":\"bob\",\"Secret\":\"helper-pw\"}}'\n",
            reg.host()
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&helper).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    std::fs::write(
        home.path().join(".docker/config.json"),
        format!(r#"{{"credHelpers":{{"{}":"kisttest"}}}}"#, reg.host()),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let root = TestRoot::new();
    let reference = reg.reference("kist/bb:h");
    let out = run(fetch_cmd(&root, &home).env("PATH", &path).arg(&reference));
    out.assert_ok();
    check_record(&image_record(&out), &img, &reference, root.path());
}

#[test]
fn token_auth_with_an_rs256_token_server() {
    let img = image::multilayer();
    let tokens = TokenServer::start(None);
    let reg = Registry::start_with(tokens.registry_auth());
    reg.push(&img.layout, &img.tag, "kist/tok:1");
    let reference = reg.reference("kist/tok:1");

    // Anonymous token flow; the token is fetched once and reused for every blob.
    tokens.reset_counts();
    let root = TestRoot::new();
    let out = fetch(&root, &[&reference]);
    out.assert_ok();
    check_record(&image_record(&out), &img, &reference, root.path());
    assert_eq!(tokens.issued(), 1, "token not cached: scopes {:?}", tokens.scopes());
    assert_eq!(tokens.scopes(), vec!["repository:kist/tok:pull".to_string()]);

    // The token server now wants credentials: none → 4, wrong → 4, right → ok.
    tokens.require(Some(("carol", "tokpw")));
    let root = TestRoot::new();
    let out = fetch(&root, &[&reference]);
    assert_eq!(out.code(), 4, "{}", out.stderr_str());
    let home = Home::new();
    let auth_file = home.path().join("auth.json");
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#, reg.host(), base64(b"carol:nope")),
    )
    .unwrap();
    let out = run(fetch_cmd(&root, &home).env("REGISTRY_AUTH_FILE", &auth_file).arg(&reference));
    assert_eq!(out.code(), 4, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("refused the credentials"), "{}", out.stderr_str());
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#, reg.host(), base64(b"carol:tokpw")),
    )
    .unwrap();
    let out = run(fetch_cmd(&root, &home).env("REGISTRY_AUTH_FILE", &auth_file).arg(&reference));
    out.assert_ok();
    check_record(&image_record(&out), &img, &reference, root.path());
}

#[test]
fn imports_oci_layout_and_docker_archive_written_by_skopeo() {
    let img = image::multilayer();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let out = run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:{}", img.layout.display(), img.tag))
        .arg(format!("oci:{}:v2", layout.display())));
    out.assert_ok();
    let root = TestRoot::new();
    let out = fetch(&root, &[&format!("oci:{}:v2", layout.display()), "--name", "example.com/kist/multi:v2"]);
    out.assert_ok();
    let rec = image_record(&out);
    assert_eq!(rec["reference"], "example.com/kist/multi:v2");
    assert_eq!(
        rec["diffIds"],
        serde_json::json!(img.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>())
    );
    assert_store_verified(root.path());
    let out = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:example.com/kist/multi:v2", root.path().display())));
    out.assert_ok();
    // Without --name: localhost/<dir>:<tag>.
    let out = fetch(&root, &[&format!("oci:{}:v2", layout.display())]);
    out.assert_ok();
    assert_eq!(image_record(&out)["reference"], "localhost/layout:v2");

    let archive = work.path().join("multi.tar");
    let out = run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:{}", img.layout.display(), img.tag))
        .arg(format!("docker-archive:{}:kist/archived:3", archive.display())));
    out.assert_ok();
    let root = TestRoot::new();
    for _ in 0..2 {
        let out = fetch(&root, &[&format!("docker-archive:{}", archive.display())]);
        out.assert_ok();
        let rec = image_record(&out);
        assert_eq!(rec["reference"], "docker.io/kist/archived:3");
        // Layers come in uncompressed: their digests are the diff IDs.
        assert_eq!(
            rec["diffIds"],
            serde_json::json!(img.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>())
        );
        for l in rec["layers"].as_array().unwrap() {
            assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar");
        }
        assert_eq!(
            rec["layers"].as_array().unwrap().iter().map(|l| l["digest"].clone()).collect::<Vec<_>>(),
            rec["diffIds"].as_array().unwrap().clone()
        );
        assert_store_verified(root.path());
    }
    let out = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:docker.io/kist/archived:3", root.path().display())));
    out.assert_ok();
    let out = run(Command::new("umoci").arg("ls").arg("--layout").arg(root.path()));
    out.assert_ok();
    assert!(out.stdout_str().contains("docker.io/kist/archived:3"));
}

/// An image of one large, incompressible layer (24 MiB), stored uncompressed.
fn big_image() -> BuiltImage {
    image::cached("img-fetch-big-v1", |dir| {
        let mut data = vec![0u8; 24 << 20];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        ImageBuilder::new()
            .layer(image::layer_tar(&[Entry::dir("data", 0o755), Entry::file("data/random", 0o644, &data)]))
            .uncompressed()
            .write_layout(dir, "latest")
    })
}

/// Polls blobs/ until stopped, hashing every new file: returns the names
/// of any that did not match their digest.
fn watch_blobs(root: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Vec<String>, usize)> {
    std::thread::spawn(move || {
        let mut checked: HashMap<String, bool> = HashMap::new();
        let mut polls = 0;
        loop {
            let done = stop.load(Ordering::SeqCst);
            if let Ok(rd) = std::fs::read_dir(root.join("blobs/sha256")) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if checked.contains_key(&name) {
                        continue;
                    }
                    let ok = std::fs::read(e.path()).map(|b| Digest::of(&b).hex() == name).unwrap_or(false);
                    checked.insert(name, ok);
                }
            }
            polls += 1;
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (checked.into_iter().filter(|(_, ok)| !ok).map(|(n, _)| n).collect(), polls)
    })
}

#[test]
fn registry_stopped_mid_layer_then_next_pull_resumes() {
    let img = big_image();
    let mut reg = Registry::start();
    reg.push(&img.layout, &img.tag, "kist/big:1");
    let proxy = Proxy::start(reg.port, 4 << 20);
    let reference = format!("{}/kist/big:1", proxy.host());
    let root = TestRoot::new();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_blobs(root.path().to_path_buf(), stop.clone());

    let home = Home::new();
    let mut child = fetch_cmd(&root, &home)
        .args(["--retries", "1", &reference])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // skopeo compresses the layer on push, so its digest is learnt from tmp/.
    let deadline = Instant::now() + Duration::from_secs(30);
    let partial = loop {
        let found = std::fs::read_dir(root.path().join("tmp")).ok().and_then(|rd| {
            rd.flatten().map(|e| e.path()).find(|p| {
                p.extension().is_some_and(|x| x == "partial")
                    && std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) >= (4 << 20)
            })
        });
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "download never started");
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!("img-fetch finished before the registry was stopped: {}", out.stderr_str());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    reg.stop();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.code(), 1, "interrupted pull: {}", out.stderr_str());
    assert_eq!(out.stderr_str().lines().count(), 1, "{}", out.stderr_str());
    let kept = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let hex = partial.file_stem().unwrap().to_string_lossy().into_owned();
    let layer: Digest = format!("sha256:{hex}").parse().unwrap();
    assert!(kept >= (4 << 20), "partial download kept: {kept}");
    assert!(!has_blob(root.path(), &layer));
    assert!(!std::fs::read_to_string(root.path().join("index.json")).unwrap().contains("kist/big"));

    reg.restart();
    proxy.set_rate(0);
    let out = fetch(&root, &[&reference]);
    out.assert_ok();
    let rec = image_record(&out);
    assert_eq!(rec["layers"][0]["digest"], layer.to_string());
    assert!(kept < rec["layers"][0]["size"].as_u64().unwrap());
    assert_eq!(rec["diffIds"][0], img.diff_ids[0].to_string());
    assert!(has_blob(root.path(), &layer));
    assert!(proxy.saw_range(), "second pull did not resume with Range");
    assert!(!partial.exists());
    assert_store_verified(root.path());
    stop.store(true, Ordering::SeqCst);
    let (bad, polls) = watcher.join().unwrap();
    assert!(bad.is_empty(), "unverified blobs appeared under blobs/: {bad:?}");
    assert!(polls > 10);
}

#[test]
fn concurrent_pulls_download_each_blob_once() {
    let img = image::multilayer();
    let reg = Registry::start();
    reg.push(&img.layout, &img.tag, "kist/conc:1");
    // Throttled so the two pulls really overlap.
    let proxy = Proxy::start(reg.port, 2 << 20);
    let reference = format!("{}/kist/conc:1", proxy.host());
    let root = TestRoot::new();
    let home = Home::new();
    let spawn = || {
        fetch_cmd(&root, &home)
            .arg(&reference)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    a.assert_ok();
    b.assert_ok();
    check_record(&image_record(&a), &img, &reference, root.path());
    check_record(&image_record(&b), &img, &reference, root.path());
    let gets = blob_gets(&reg);
    assert_eq!(gets.len(), img.layers.len() + 1, "{gets:?}");
    assert!(gets.values().all(|&n| n == 1), "a blob was downloaded twice: {gets:?}");
}

/// Path of a blob in the registry's filesystem storage.
fn registry_blob(reg: &Registry, d: &Digest) -> PathBuf {
    reg.storage().join("docker/registry/v2/blobs/sha256").join(&d.hex()[..2]).join(d.hex()).join("data")
}

#[test]
fn damaged_blobs_in_the_registry_are_refused() {
    let img = image::multilayer();
    let reg = Registry::start();
    reg.push(&img.layout, &img.tag, "kist/bad:1");
    let reference = reg.reference("kist/bad:1");

    // Same size, one byte flipped: digest mismatch.
    let victim = registry_blob(&reg, &img.layers[1]);
    let good = std::fs::read(&victim).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&victim, &bad).unwrap();
    let root = TestRoot::new();
    let out = fetch(&root, &[&reference]);
    assert_eq!(out.code(), 5, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("digest mismatch"), "{}", out.stderr_str());
    assert_eq!(out.stderr_str().lines().count(), 1, "{}", out.stderr_str());
    assert!(!has_blob(root.path(), &img.layers[1]));
    assert!(!std::fs::read_to_string(root.path().join("index.json")).unwrap().contains("kist/bad"));
    assert!(!root.path().join("tmp").join(format!("{}.partial", img.layers[1].hex())).exists());
    assert_store_verified(root.path());

    // Truncated: size mismatch.
    std::fs::write(&victim, &good[..good.len() - 100]).unwrap();
    let out = fetch(&root, &[&reference]);
    assert_eq!(out.code(), 5, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("size mismatch"), "{}", out.stderr_str());
    assert!(!has_blob(root.path(), &img.layers[1]));
    assert_store_verified(root.path());

    // Repaired: the pull completes, reusing what was already verified.
    std::fs::write(&victim, &good).unwrap();
    fetch(&root, &[&reference]).assert_ok();
}

fn write_raw_layout(dir: &Path, manifest: &[u8], extra: &[&[u8]]) -> Digest {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for b in extra.iter().chain([&manifest]) {
        std::fs::write(dir.join("blobs/sha256").join(Digest::of(b).hex()), b).unwrap();
    }
    let d = Digest::of(manifest);
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    d
}

#[test]
fn malformed_input_gives_documented_exit_codes() {
    let root = TestRoot::new();
    for (args, code, needle) in [
        (vec!["Busybox"], 2, "must be lowercase"),
        (vec!["a:"], 2, "not a valid tag"),
        (vec!["--platform", "linux", "busybox"], 2, "invalid platform"),
        (vec!["--jobs", "0", "busybox"], 2, ""),
        (vec!["no-such-host.invalid/kist/x:1"], 1, "unknown host"),
        (vec!["oci:/nonexistent/layout:t"], 3, "not an OCI image layout"),
        (vec!["docker-archive:/nonexistent.tar"], 3, "nonexistent.tar"),
    ] {
        let out = fetch(&root, &args);
        assert_eq!(out.code(), code, "{args:?}: {}", out.stderr_str());
        assert!(out.stderr_str().contains(needle), "{args:?}: {}", out.stderr_str());
        assert!(out.stdout.is_empty(), "{args:?} wrote stdout");
    }

    let img = image::busybox();
    let reg = Registry::start();
    reg.push(&img.layout, &img.tag, "kist/bb:1");
    for (r, code) in [("kist/bb:nope", 3), ("kist/nothere:1", 3)] {
        let out = fetch(&root, &[&reg.reference(r)]);
        assert_eq!(out.code(), code, "{r}: {}", out.stderr_str());
        assert_eq!(out.stderr_str().lines().count(), 1, "{}", out.stderr_str());
        assert!(out.stderr_str().contains("not found"), "{}", out.stderr_str());
    }
    let pinned = format!("{}/kist/bb@{}", reg.host(), Digest::of(b"nothing"));
    assert_eq!(fetch(&root, &[&pinned]).code(), 3);

    // Crafted layouts: unknown layer media type, corrupt JSON, a manifest that lies about its digest.
    let work = tempfile::tempdir().unwrap();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#;
    let layer = b"not really a tar";
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/x-kist-unknown","digest":"{}","size":{}}}]}}"#,
        Digest::of(config),
        config.len(),
        Digest::of(layer),
        layer.len()
    );
    let dir = work.path().join("unknown");
    write_raw_layout(&dir, manifest.as_bytes(), &[config, layer]);
    let out = fetch(&root, &[&format!("oci:{}:t", dir.display())]);
    assert_eq!(out.code(), 5, "{}", out.stderr_str());
    assert!(
        out.stderr_str().contains("unsupported media type \"application/x-kist-unknown\""),
        "{}",
        out.stderr_str()
    );

    let dir = work.path().join("corrupt");
    write_raw_layout(&dir, b"{\"schemaVersion\":2,", &[]);
    let out = fetch(&root, &[&format!("oci:{}:t", dir.display())]);
    assert_eq!(out.code(), 5, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("not valid JSON"), "{}", out.stderr_str());

    let dir = work.path().join("lying");
    let d = write_raw_layout(&dir, manifest.as_bytes(), &[]);
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), manifest.replace("x-kist", "y-kist")).unwrap();
    let out = fetch(&root, &[&format!("oci:{}:t", dir.display())]);
    assert_eq!(out.code(), 5, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("digest mismatch"), "{}", out.stderr_str());

    let out = fetch(&root, &[&format!("oci:{}:missing", dir.display())]);
    assert_eq!(out.code(), 3, "{}", out.stderr_str());
    assert_store_verified(root.path());
    let index = std::fs::read_to_string(root.path().join("index.json")).unwrap();
    assert!(!index.contains("ref.name\": \""), "nothing tagged: {index}");
}

#[test]
fn full_disk_fails_with_exit_7_and_leaves_nothing() {
    if !kist_tests::have("unshare") || unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root and unshare for a private tmpfs");
        return;
    }
    let img = big_image();
    let reg = Registry::start();
    reg.push(&img.layout, &img.tag, "kist/big:full");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    // A private mount namespace: the 8 MiB tmpfs vanishes with the shell.
    let script = format!(
        "mount -t tmpfs -o size=8m kist-test {root} || exit 99\n\
         {bin} --root {root} {reference} >{out}/stdout 2>{out}/stderr; echo $? >{out}/code\n\
         find {root}/blobs -type f -exec sha256sum {{}} + >{out}/blobs; ls -A {root}/tmp >{out}/tmp; cp {root}/index.json {out}/index.json",
        root = root.display(),
        bin = kist_tests::bin("img-fetch").display(),
        reference = reg.reference("kist/big:full"),
        out = dir.path().display(),
    );
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .status()
        .unwrap();
    assert!(status.success(), "unshare script failed");
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    assert_eq!(read("code").trim(), "7", "stderr: {}", read("stderr"));
    assert!(read("stderr").contains("No space left on device"), "{}", read("stderr"));
    assert_eq!(read("stderr").lines().count(), 1, "{}", read("stderr"));
    assert!(read("stdout").is_empty());
    for line in read("blobs").lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        assert!(path.ends_with(sum), "unverified blob {path}");
    }
    // At most the config made it in: the layer did not fit.
    assert!(read("blobs").lines().count() <= 1, "{}", read("blobs"));
    assert!(read("tmp").trim().is_empty(), "tmp/ not cleaned: {}", read("tmp"));
    assert!(!read("index.json").contains("kist/big"));
}

/// An OCI layout whose index offers two platforms: busybox as linux/amd64
/// and the multilayer image as linux/arm64/v8 (labels in the index only).
fn two_platform_layout(dir: &Path) -> (BuiltImage, BuiltImage) {
    let a = image::busybox();
    let b = image::multilayer();
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for img in [&a, &b] {
        for e in std::fs::read_dir(img.layout.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join("blobs/sha256").join(e.file_name())).unwrap();
        }
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
        {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},
        {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
        {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#,
        a.manifest, a.manifest_size, b.manifest, b.manifest_size, a.manifest, a.manifest_size
    );
    let d = Digest::of(index.as_bytes());
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), &index).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{d}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"multi"}}}}]}}"#,
            index.len()
        ),
    )
    .unwrap();
    (a, b)
}

#[test]
fn platform_is_chosen_from_an_index() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("plat");
    let (a, b) = two_platform_layout(&layout);
    let src = format!("oci:{}:multi", layout.display());
    let root = TestRoot::new();
    let out = fetch(&root, &["--platform", "linux/amd64", &src, "--name", "example.com/p:amd"]);
    out.assert_ok();
    let rec = image_record(&out);
    assert_eq!(rec["digest"], a.manifest.to_string());
    assert!(rec["indexDigest"].as_str().unwrap().starts_with("sha256:"));
    for (p, want) in [("linux/arm64", &b), ("linux/aarch64/v8", &b), ("linux/x86_64", &a)] {
        let out = fetch(&root, &["--platform", p, &src, "--name", "example.com/p:x"]);
        out.assert_ok();
        assert_eq!(image_record(&out)["digest"], want.manifest.to_string(), "{p}");
    }
    // The index.json entry names the chosen manifest, and the index it came from.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("index.json")).unwrap()).unwrap();
    let e = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "example.com/p:x")
        .unwrap();
    assert_eq!(e["digest"], a.manifest.to_string());
    assert_eq!(e["annotations"]["io.kist.image.index.digest"], rec["indexDigest"]);
    // A single-platform image is taken as it is, with a warning when it does not match.
    let single = format!("oci:{}:{}", a.layout.display(), a.tag);
    let out = fetch(&root, &["--platform", "linux/s390x", &single, "--name", "example.com/p:single"]);
    out.assert_ok();
    assert!(out.stderr_str().contains("does not match the requested linux/s390x"), "{}", out.stderr_str());
    let out = fetch(&root, &["--platform", "linux/s390x", &src]);
    assert_eq!(out.code(), 3, "{}", out.stderr_str());
    assert!(
        out.stderr_str()
            .contains("no manifest for platform linux/s390x (available: linux/amd64, linux/arm64/v8)"),
        "{}",
        out.stderr_str()
    );
}

#[test]
fn progress_json_lines_on_stderr() {
    let img = image::multilayer();
    let reg = Registry::start();
    reg.push(&img.layout, &img.tag, "kist/prog:1");
    let root = TestRoot::new();
    let reference = reg.reference("kist/prog:1");
    for (round, want) in [(0, "done"), (1, "exists")] {
        let out = fetch(&root, &["--progress", "json", &reference]);
        out.assert_ok();
        let lines: Vec<serde_json::Value> = out
            .stderr_str()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        for d in img.layers.iter().chain([&img.config]) {
            let last = lines
                .iter()
                .rev()
                .find(|v| v["digest"] == d.to_string())
                .unwrap_or_else(|| panic!("round {round}: no progress for {d}"));
            assert_eq!(last["type"], "progress");
            assert_eq!(last["status"], want, "round {round}");
            assert_eq!(last["current"], last["total"]);
        }
    }
    // Quiet, and silent when stderr is not a terminal: nothing at all.
    let out = fetch(&root, &[&reference]);
    out.assert_ok();
    assert!(out.stderr.is_empty(), "{}", out.stderr_str());
    let out = fetch(&root, &["--quiet", "--progress", "json", &reference]);
    assert!(out.stderr.is_empty(), "{}", out.stderr_str());
}

type Handler = dyn Fn(&str, &str, &[(String, String)]) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync;

/// A minimal HTTP/1.1 server for crafted registry answers; one request per connection.
fn tiny_server(handler: Arc<Handler>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let h = handler.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                let mut parts = line.split_whitespace();
                let (method, path) =
                    (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                let mut headers = Vec::new();
                loop {
                    let mut hl = String::new();
                    if r.read_line(&mut hl).unwrap_or(0) == 0 || hl.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = hl.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let (status, extra, body) = h(&method, &path, &headers);
                let mut c = c;
                let mut head =
                    format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
                for (k, v) in extra {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = c.write_all(head.as_bytes());
                if method != "HEAD" {
                    let _ = c.write_all(&body);
                }
            });
        }
    });
    port
}

#[test]
fn authorization_is_not_sent_to_a_redirect_target() {
    let tar = image::layer_tar(&[Entry::file("hello", 0o644, b"hello\n")]);
    let layer = image::gzip(&tar);
    let layer_d = Digest::of(&layer);
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        image::host_arch(),
        Digest::of(&tar)
    );
    let config_d = Digest::of(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{layer_d}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_d = Digest::of(manifest.as_bytes());

    let blob_saw_auth = Arc::new(AtomicBool::new(false));
    let blob_hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (saw, hits, layer2) = (blob_saw_auth.clone(), blob_hits.clone(), layer.clone());
    let blob_port = tiny_server(Arc::new(move |_m, _p, h| {
        hits.fetch_add(1, Ordering::SeqCst);
        if h.iter().any(|(k, _)| k == "authorization") {
            saw.store(true, Ordering::SeqCst);
        }
        (200, vec![], layer2.clone())
    }));
    let want_auth = format!("Basic {}", base64(b"u:p"));
    let (manifest_d2, layer_d2) = (manifest_d.clone(), layer_d.clone());
    let reg_port = tiny_server(Arc::new(move |_m, path, h| {
        let (manifest_d, layer_d) = (&manifest_d2, &layer_d2);
        if !h.iter().any(|(k, v)| k == "authorization" && *v == want_auth) {
            return (401, vec![("WWW-Authenticate".into(), "Basic realm=\"x\"".into())], b"{}".to_vec());
        }
        if path == "/v2/r/manifests/t" || path == format!("/v2/r/manifests/{manifest_d}") {
            return (
                200,
                vec![
                    ("Content-Type".into(), "application/vnd.docker.distribution.manifest.v2+json".into()),
                    ("Docker-Content-Digest".into(), manifest_d.to_string()),
                ],
                manifest.clone().into_bytes(),
            );
        }
        if path == format!("/v2/r/blobs/{config_d}") {
            return (200, vec![], config.clone().into_bytes());
        }
        if path == format!("/v2/r/blobs/{layer_d}") {
            return (
                307,
                vec![("Location".into(), format!("http://localhost:{blob_port}/storage/layer"))],
                vec![],
            );
        }
        (404, vec![], br#"{"errors":[{"code":"NOT_FOUND","message":"nope"}]}"#.to_vec())
    }));
    let home = Home::new();
    let auth = home.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(r#"{{"auths":{{"127.0.0.1:{reg_port}":{{"auth":"{}"}}}}}}"#, base64(b"u:p")),
    )
    .unwrap();
    let root = TestRoot::new();
    let out = run(fetch_cmd(&root, &home)
        .env("REGISTRY_AUTH_FILE", &auth)
        .arg(format!("127.0.0.1:{reg_port}/r:t")));
    out.assert_ok();
    let rec = image_record(&out);
    assert_eq!(rec["digest"], manifest_d.to_string());
    assert_eq!(rec["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert!(has_blob(root.path(), &layer_d));
    assert_eq!(blob_hits.load(Ordering::SeqCst), 1);
    assert!(!blob_saw_auth.load(Ordering::SeqCst), "Authorization leaked to the redirect target");
    assert_store_verified(root.path());
}

#[test]
fn retries_5xx_and_resumes_a_broken_transfer_within_one_pull() {
    use std::sync::atomic::AtomicUsize;
    let tar = image::layer_tar(&[Entry::file("big", 0o644, &vec![7u8; 3 << 20])]);
    let layer = tar.clone();
    let layer_d = Digest::of(&layer);
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        image::host_arch(),
        Digest::of(&tar)
    );
    let config_d = Digest::of(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_d}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_d = Digest::of(manifest.as_bytes());
    let manifest_503s = Arc::new(AtomicUsize::new(0));
    let blob_requests = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let (m503, reqs) = (manifest_503s.clone(), blob_requests.clone());
    let (manifest_d2, layer_d2) = (manifest_d.clone(), layer_d.clone());
    let port = tiny_server(Arc::new(move |_m, path, h| {
        let (manifest_d, layer_d) = (&manifest_d2, &layer_d2);
        if path.starts_with("/v2/r/manifests/") {
            // The first two manifest requests fail as an overloaded registry would.
            if m503.fetch_add(1, Ordering::SeqCst) < 2 {
                return (
                    503,
                    vec![],
                    br#"{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}"#.to_vec(),
                );
            }
            return (
                200,
                vec![
                    ("Content-Type".into(), "application/vnd.oci.image.manifest.v1+json".into()),
                    ("Docker-Content-Digest".into(), manifest_d.to_string()),
                ],
                manifest.clone().into_bytes(),
            );
        }
        if path == format!("/v2/r/blobs/{config_d}") {
            return (200, vec![], config.clone().into_bytes());
        }
        if path == format!("/v2/r/blobs/{layer_d}") {
            let range = h.iter().find(|(k, _)| k == "range").map(|(_, v)| v.clone());
            let mut r = reqs.lock().unwrap();
            r.push(range.clone());
            if r.len() == 1 {
                // First attempt: the connection dies after a megabyte (the
                // server claims the full length and sends part of it).
                return (200, vec![("X-Truncate".into(), "1".into())], layer[..1 << 20].to_vec());
            }
            let start: usize = range
                .as_deref()
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|v| v.trim_end_matches('-').parse().ok())
                .unwrap_or(0);
            return (
                206,
                vec![("Content-Range".into(), format!("bytes {start}-{}/{}", layer.len() - 1, layer.len()))],
                layer[start..].to_vec(),
            );
        }
        (404, vec![], vec![])
    }));
    let root = TestRoot::new();
    let out = fetch(&root, &[&format!("127.0.0.1:{port}/r:t")]);
    assert!(out.status.success(), "{} requests: {:?}", out.stderr_str(), blob_requests.lock().unwrap());
    assert_eq!(image_record(&out)["digest"], manifest_d.to_string());
    assert!(has_blob(root.path(), &layer_d));
    assert!(manifest_503s.load(Ordering::SeqCst) >= 3);
    let reqs = blob_requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0], None);
    assert_eq!(reqs[1].as_deref(), Some(format!("bytes={}-", 1 << 20).as_str()), "resumed where it broke");
    assert_store_verified(root.path());
}

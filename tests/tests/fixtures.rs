//! The fixture layer itself: the busybox image is a valid OCI layout that
//! skopeo reads, and a registry seeded from it serves its manifest.

use kist_tests::{image, registry::Registry};

#[test]
fn busybox_layout_is_read_by_skopeo_and_served_by_a_registry() {
    let img = image::busybox();
    let out = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:latest", img.layout.display()))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Layers"][0], img.layers[0].to_string());

    let reg = Registry::start();
    reg.push(&img.layout, "latest", "busybox:latest");
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}", reg.reference("busybox:latest")))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["config"]["digest"], img.config.to_string());
}

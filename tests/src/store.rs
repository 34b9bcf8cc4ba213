//! Images put straight into a kist state root: the root is an OCI image
//! layout, so a fixture image is copied in (blobs, plus an `index.json`
//! entry named by the full reference, as `Store::tag` writes it) without
//! going through img-fetch.

use std::path::Path;

use serde_json::json;

use crate::image::{BuiltImage, ImageBuilder};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const IMAGE_NAME: &str = "io.containerd.image.name";

fn name_entry(root: &Path, reference: &str) {
    let index_path = root.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).expect("index.json")).expect("index json");
    for m in index["manifests"].as_array_mut().expect("manifests") {
        if m["annotations"][REF_NAME] == reference {
            m["annotations"][IMAGE_NAME] = json!(reference);
        }
    }
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).expect("json")).expect("write index.json");
}

/// Builds an image into the state root under the full `reference`
/// (`127.0.0.1:5000/x:1`), replacing an earlier image of that name.
pub fn put(root: &Path, builder: &ImageBuilder, reference: &str) -> BuiltImage {
    let img = builder.write_layout(root, reference);
    name_entry(root, reference);
    img
}

/// Copies a built image (from a cached fixture layout) into the state root
/// under the full `reference`.
pub fn import(root: &Path, img: &BuiltImage, reference: &str) -> BuiltImage {
    let blobs = root.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs dir");
    if !root.join("oci-layout").exists() {
        std::fs::write(root.join("oci-layout"), b"{\"imageLayoutVersion\":\"1.0.0\"}").expect("oci-layout");
    }
    let src = img.layout.join("blobs/sha256");
    for d in img.layers.iter().chain([&img.config, &img.manifest]) {
        let to = blobs.join(d.hex());
        if !to.exists() {
            std::fs::copy(src.join(d.hex()), &to).expect("copy blob");
        }
    }
    let index_path = root.join("index.json");
    let mut index: serde_json::Value = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}));
    let manifests = index["manifests"].as_array_mut().expect("manifests");
    manifests.retain(|m| m["annotations"][REF_NAME] != reference);
    manifests.push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": img.manifest.to_string(),
        "size": img.manifest_size,
        "annotations": {REF_NAME: reference, IMAGE_NAME: reference},
    }));
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).expect("json")).expect("write index.json");
    BuiltImage { layout: root.to_path_buf(), tag: reference.to_string(), ..img.clone() }
}

//! Docker >= 25 `docker save`: an OCI layout (`index.json`, `blobs/`) plus the
//! legacy `manifest.json` pointing into `blobs/`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::blob::{blob_path, hexpart};
use super::config::to_bytes;
use super::oci::{oci_layer_descriptors, oci_manifest};
use super::{Ctx, Doc, ANN_REF_NAME, MT_OCI_INDEX, MT_OCI_MANIFEST, OCI_LAYOUT};
use crate::{normalize_tag, split_tag, BuildError, Tamper};

/// `docker.io/library/` expansion for `io.containerd.image.name`.
fn full_name(tag: &str) -> String {
    let first = tag.split('/').next().unwrap_or("");
    let has_domain =
        tag.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain {
        tag.to_string()
    } else if tag.contains('/') {
        format!("docker.io/{tag}")
    } else {
        format!("docker.io/library/{tag}")
    }
}

pub(super) fn docker25(cx: &mut Ctx<'_>) -> Result<(), BuildError> {
    let mut index = Vec::new();
    for i in 0..cx.imgs.len() {
        let layers = oci_layer_descriptors(cx, i)?;
        let (md, ms) = oci_manifest(cx, i, &layers)?;
        let tags: Vec<String> = cx.images[i].tags.iter().map(|t| normalize_tag(t)).collect();
        if tags.is_empty() {
            index.push(json!({"mediaType": MT_OCI_MANIFEST, "digest": md, "size": ms}));
        }
        for t in &tags {
            let (_, tag) = split_tag(t);
            index.push(
                json!({"mediaType": MT_OCI_MANIFEST, "digest": md, "size": ms,
                "annotations": {"io.containerd.image.name": full_name(t), ANN_REF_NAME: tag}}),
            );
        }
    }
    let mut idx = json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX,
        "manifests": if cx.opts.docker25_null_manifests { Value::Null } else { json!(index) }});
    cx.hook(Doc::Index, &mut idx);
    let b = to_bytes("index.json", &idx)?;
    cx.plan.file("index.json", 0o644, b);
    cx.plan.file("oci-layout", 0o644, OCI_LAYOUT.to_vec());
    // The legacy manifest.json Docker 25 still writes, pointing into blobs/.
    docker_formats_on_blobs(cx)
}

fn docker_formats_on_blobs(cx: &mut Ctx<'_>) -> Result<(), BuildError> {
    let mut manifest = Vec::new();
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for i in 0..cx.imgs.len() {
        let tags: Vec<String> = cx.images[i].tags.iter().map(|t| normalize_tag(t)).collect();
        let mut layers: Vec<Value> = cx.imgs[i]
            .blobs
            .iter()
            .enumerate()
            .map(|(j, b)| {
                let d = if cx.wrong_blob(i, j) {
                    Ctx::forged_digest(&b.digest)
                } else {
                    b.digest.clone()
                };
                json!(blob_path(&d))
            })
            .collect();
        let mut config = json!(blob_path(&cx.imgs[i].config_digest));
        let mut drops = Vec::new();
        for t in cx.tampers() {
            match t {
                Tamper::LayerPath {
                    image,
                    layer,
                    value,
                } if *image == i => layers[*layer] = json!(value),
                Tamper::ConfigNull { image } if *image == i => config = Value::Null,
                Tamper::DropLayer { image, layer } if *image == i => drops.push(*layer),
                _ => {}
            }
        }
        if cx
            .tampers()
            .any(|t| matches!(t, Tamper::ExtraLayer { image } if *image == i))
        {
            let b = cx.extra_layer()?;
            layers.push(json!(blob_path(&b.digest)));
        }
        drops.sort_unstable();
        for l in drops.into_iter().rev() {
            if l < layers.len() {
                layers.remove(l);
            }
        }
        if let Some(top) = cx.imgs[i].blobs.last() {
            for t in &tags {
                let (r, tag) = split_tag(t);
                repos
                    .entry(r)
                    .or_default()
                    .insert(tag, hexpart(&top.digest).to_string());
            }
        }
        manifest.push(json!({"Config": config, "RepoTags": if tags.is_empty() { Value::Null } else { json!(tags) }, "Layers": layers}));
    }
    let mut manifest = Value::Array(manifest);
    cx.hook(Doc::DockerManifest, &mut manifest);
    let mut repos = json!(repos);
    cx.hook(Doc::Repositories, &mut repos);
    let m = to_bytes("manifest.json", &manifest)?;
    let r = to_bytes("repositories", &repos)?;
    cx.plan.file("manifest.json", 0o644, m);
    cx.plan.file("repositories", 0o644, r);
    Ok(())
}

//! OCI layer descriptors and image manifests (shared with Docker25), and the
//! oci-archive format: `index.json`, optionally nested or multi-platform with an
//! attestation manifest.

use serde_json::{json, Value};

use super::blob::{blob_path, hexpart};
use super::config::to_bytes;
use super::{
    Ctx, Doc, Member, ANN_REF_NAME, MT_IN_TOTO, MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_MANIFEST,
    OCI_LAYOUT,
};
use crate::{normalize_tag, sha256_digest, BuildError, Tamper};

/// Adds an image's layer blobs and returns their descriptors (tampers applied).
pub(super) fn oci_layer_descriptors(cx: &mut Ctx<'_>, i: usize) -> Result<Vec<Value>, BuildError> {
    let mut descs = Vec::new();
    for (j, blob) in cx.imgs[i].blobs.clone().iter().enumerate() {
        let digest = if cx.wrong_blob(i, j) {
            Ctx::forged_digest(&blob.digest)
        } else {
            blob.digest.clone()
        };
        let p = blob_path(&digest);
        cx.plan.add(Member {
            path: p.clone(),
            mode: 0o644,
            body: blob.body.clone(),
        });
        cx.plan.layer_member.insert((i, j), p.clone());
        cx.plan.symlink_member.insert((i, j), p);
        descs.push(json!({"mediaType": blob.media_type, "digest": digest, "size": blob.size}));
    }
    let mut drops = Vec::new();
    for t in cx.opts.tamper.iter() {
        match t {
            Tamper::LayerDigest {
                image,
                layer,
                value,
            } if *image == i => descs[*layer]["digest"] = json!(value),
            Tamper::LayerSize { image, layer, size } if *image == i => {
                descs[*layer]["size"] = json!(size)
            }
            Tamper::DropLayer { image, layer } if *image == i => drops.push(*layer),
            Tamper::ExtraLayer { image } if *image == i => {
                let b = cx.extra_layer()?;
                cx.plan.add(Member {
                    path: blob_path(&b.digest),
                    mode: 0o644,
                    body: b.body.clone(),
                });
                descs.push(json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size}));
            }
            _ => {}
        }
    }
    drops.sort_unstable();
    for l in drops.into_iter().rev() {
        if l < descs.len() {
            descs.remove(l);
        }
    }
    Ok(descs)
}

/// Builds + stores an OCI manifest; returns (digest, size, docker path of config).
pub(super) fn oci_manifest(
    cx: &mut Ctx<'_>,
    i: usize,
    layers: &[Value],
) -> Result<(String, u64), BuildError> {
    let cfg_bytes = cx.imgs[i].config_bytes.clone();
    let cfg_digest = cx.imgs[i].config_digest.clone();
    cx.plan
        .file(blob_path(&cfg_digest), 0o644, cfg_bytes.clone());
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": cfg_digest, "size": cfg_bytes.len()},
        "layers": layers,
    });
    for t in cx.tampers() {
        match t {
            Tamper::ConfigNull { image } if *image == i => m["config"] = Value::Null,
            Tamper::ConfigDigest { image, value } if *image == i => {
                m["config"]["digest"] = json!(value)
            }
            _ => {}
        }
    }
    cx.hook(Doc::Manifest { image: i }, &mut m);
    let b = to_bytes("manifest", &m)?;
    let d = sha256_digest(&b);
    let n = b.len() as u64;
    cx.plan.file(blob_path(&d), 0o644, b);
    Ok((d, n))
}

fn platform(arch: &Value, os: &Value) -> Value {
    json!({"architecture": arch, "os": os})
}

pub(super) fn oci_archive(cx: &mut Ctx<'_>) -> Result<(), BuildError> {
    let mut index = Vec::new();
    for i in 0..cx.imgs.len() {
        let layers = oci_layer_descriptors(cx, i)?;
        let (md, ms) = oci_manifest(cx, i, &layers)?;
        let arch = cx.imgs[i].config["architecture"].clone();
        let os = cx.imgs[i].config["os"].clone();
        let main = json!({"mediaType": MT_OCI_MANIFEST, "digest": md, "size": ms, "platform": platform(&arch, &os)});
        let mut platforms = vec![main.clone()];
        if cx.opts.oci_multi_platform {
            // Second platform: real digests, but neither manifest nor config
            // is stored (like a single-platform `--platform` export).
            let other = if arch == json!("arm64") {
                "amd64"
            } else {
                "arm64"
            };
            let mut ocfg = cx.imgs[i].config.clone();
            ocfg["architecture"] = json!(other);
            cx.hook(Doc::OtherPlatformConfig { image: i }, &mut ocfg);
            let ocfg = to_bytes("config", &ocfg)?;
            let mut om = json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                "config": {"mediaType": MT_OCI_CONFIG, "digest": sha256_digest(&ocfg), "size": ocfg.len()},
                "layers": layers});
            cx.hook(Doc::OtherPlatformManifest { image: i }, &mut om);
            let om = to_bytes("manifest", &om)?;
            platforms.push(
                json!({"mediaType": MT_OCI_MANIFEST, "digest": sha256_digest(&om), "size": om.len(),
                "platform": platform(&json!(other), &os)}),
            );

            // Attestation manifest, as buildx attaches (blobs present).
            let stmt = to_bytes(
                "attestation",
                &json!({
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": "https://spdx.dev/Document",
                "subject": [{"name": "_", "digest": {"sha256": hexpart(&md)}}],
                "predicate": {"spdxVersion": "SPDX-2.3"}}),
            )?;
            let sd = sha256_digest(&stmt);
            cx.plan.file(blob_path(&sd), 0o644, stmt.clone());
            let acfg = to_bytes(
                "attestation config",
                &json!({"architecture": "unknown", "os": "unknown",
                "config": {}, "rootfs": {"type": "layers", "diff_ids": [sd]}}),
            )?;
            let acd = sha256_digest(&acfg);
            cx.plan.file(blob_path(&acd), 0o644, acfg.clone());
            let mut am = json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                "config": {"mediaType": MT_OCI_CONFIG, "digest": acd, "size": acfg.len()},
                "layers": [{"mediaType": MT_IN_TOTO, "digest": sd, "size": stmt.len(),
                    "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}]});
            cx.hook(Doc::AttestationManifest { image: i }, &mut am);
            let am = to_bytes("attestation manifest", &am)?;
            let amd = sha256_digest(&am);
            cx.plan.file(blob_path(&amd), 0o644, am.clone());
            platforms.push(json!({"mediaType": MT_OCI_MANIFEST, "digest": amd, "size": am.len(),
                "platform": {"architecture": "unknown", "os": "unknown"},
                "annotations": {"vnd.docker.reference.digest": md, "vnd.docker.reference.type": "attestation-manifest"}}));
        }
        let tags: Vec<String> = cx.images[i].tags.iter().map(|t| normalize_tag(t)).collect();
        let with_ref = |d: &Value, t: Option<&String>| {
            let mut d = d.clone();
            if let Some(t) = t {
                d["annotations"] = json!({ ANN_REF_NAME: t });
            }
            d
        };
        let refs: Vec<Option<&String>> = if tags.is_empty() {
            vec![None]
        } else {
            tags.iter().map(Some).collect()
        };
        if cx.opts.oci_nested_index {
            let mut ii =
                json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": platforms});
            cx.hook(Doc::ImageIndex { image: i }, &mut ii);
            let ii = to_bytes("image index", &ii)?;
            let iid = sha256_digest(&ii);
            let desc = json!({"mediaType": MT_OCI_INDEX, "digest": iid, "size": ii.len()});
            cx.plan.file(blob_path(&iid), 0o644, ii);
            index.extend(refs.iter().map(|t| with_ref(&desc, *t)));
        } else if cx.opts.oci_multi_platform {
            for t in &refs {
                index.extend(platforms[..2].iter().map(|d| with_ref(d, *t)));
            }
            index.push(platforms[2].clone());
        } else {
            // Like podman/skopeo: no platform on a single-image index entry.
            let mut d = main.clone();
            d.as_object_mut().expect("object").remove("platform");
            index.extend(refs.iter().map(|t| with_ref(&d, *t)));
        }
    }
    let mut idx = json!({"schemaVersion": 2, "manifests": index});
    cx.hook(Doc::Index, &mut idx);
    let b = to_bytes("index.json", &idx)?;
    cx.plan.file("index.json", 0o644, b);
    cx.plan.file("oci-layout", 0o644, OCI_LAYOUT.to_vec());
    Ok(())
}

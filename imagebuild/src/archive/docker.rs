//! Docker <= 24 `docker save` (DockerLegacy) and podman/skopeo docker-archive
//! (DockerArchive): v1 layer directories, `manifest.json` and `repositories`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::blob::hexpart;
use super::config::to_bytes;
use super::{Ctx, Doc, Member};
use crate::{normalize_tag, split_tag, BuildError, Format, Tamper};

/// v1 layer ids: a chain over diff_ids, the top one also covering the config
/// (as in Docker, different images sharing base layers share those ids).
fn chain_ids(diff_ids: &[String], config_digest: &str) -> Vec<String> {
    let mut parent = String::new();
    let mut out = Vec::new();
    for (i, d) in diff_ids.iter().enumerate() {
        let mut s = format!("{parent} {d}");
        if i + 1 == diff_ids.len() {
            s.push(' ');
            s.push_str(config_digest);
        }
        parent = hex::encode(Sha256::digest(s.as_bytes()));
        out.push(parent.clone());
    }
    out
}

fn empty_moby_config() -> Value {
    json!({"Hostname": "", "Domainname": "", "User": "", "AttachStdin": false, "AttachStdout": false,
        "AttachStderr": false, "Tty": false, "OpenStdin": false, "StdinOnce": false, "Env": null, "Cmd": null,
        "Image": "", "Volumes": null, "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": null})
}

pub(super) fn docker_formats(cx: &mut Ctx<'_>) -> Result<(), BuildError> {
    let podman = cx.format == Format::DockerArchive;
    let fmode = if podman { 0o444 } else { 0o644 };
    let mut manifest = Vec::new();
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for i in 0..cx.imgs.len() {
        let spec = &cx.images[i];
        let diff_ids: Vec<String> = cx.imgs[i].blobs.iter().map(|b| b.diff_id.clone()).collect();
        let ids = chain_ids(&diff_ids, &cx.imgs[i].config_digest);
        let cfg_name = format!("{}.json", hexpart(&cx.imgs[i].config_digest));
        let mut layers = Vec::new();
        for (j, blob) in cx.imgs[i].blobs.clone().iter().enumerate() {
            let id = &ids[j];
            let mut v1 = if j + 1 == ids.len() {
                if podman {
                    json!({"container": null, "container_config": null, "docker_version": null,
                        "config": cx.imgs[i].config["config"].clone()})
                } else {
                    json!({"container_config": empty_moby_config(), "config": cx.imgs[i].config["config"].clone()})
                }
            } else {
                json!({"container_config": empty_moby_config()})
            };
            v1["id"] = json!(id);
            if j > 0 {
                v1["parent"] = json!(ids[j - 1]);
            }
            v1["created"] = json!(cx.opts.created);
            v1["os"] = cx.imgs[i].config["os"].clone();
            v1["architecture"] = cx.imgs[i].config["architecture"].clone();
            cx.hook(Doc::V1Json { image: i, layer: j }, &mut v1);
            let v1 = to_bytes("layer json", &v1)?;
            if podman {
                let name = if cx.wrong_blob(i, j) {
                    format!("{}.tar", hexpart(&Ctx::forged_digest(&blob.digest)))
                } else {
                    format!("{}.tar", hexpart(&blob.diff_id))
                };
                cx.plan.add(Member {
                    path: name.clone(),
                    mode: fmode,
                    body: blob.body.clone(),
                });
                cx.plan.layer_member.insert((i, j), name.clone());
                cx.plan
                    .symlink_member
                    .insert((i, j), format!("{id}/layer.tar"));
                layers.push((
                    format!("{id}/layer.tar"),
                    Member::symlink(format!("{id}/layer.tar"), format!("../{name}")),
                    v1,
                    name,
                ));
            } else {
                cx.plan.add(Member::dir(format!("{id}/")));
                cx.plan
                    .file(format!("{id}/VERSION"), fmode, b"1.0".to_vec());
                cx.plan.file(format!("{id}/json"), fmode, v1);
                let p = format!("{id}/layer.tar");
                cx.plan.add(Member {
                    path: p.clone(),
                    mode: fmode,
                    body: blob.body.clone(),
                });
                cx.plan.layer_member.insert((i, j), p.clone());
                cx.plan.symlink_member.insert((i, j), p.clone());
                layers.push((p.clone(), Member::dir(""), Vec::new(), p));
            }
        }
        let cfg = cx.imgs[i].config_bytes.clone();
        cx.plan.file(cfg_name.clone(), fmode, cfg);
        let mut layer_paths = Vec::new();
        for (link_path, link, v1, target) in layers {
            if podman {
                let dir = link_path.trim_end_matches("/layer.tar").to_string();
                cx.plan.add(link);
                cx.plan
                    .file(format!("{dir}/VERSION"), fmode, b"1.0".to_vec());
                cx.plan.file(format!("{dir}/json"), fmode, v1);
            }
            layer_paths.push(json!(target));
        }
        let tags: Vec<String> = spec.tags.iter().map(|t| normalize_tag(t)).collect();
        let mut entry = json!({
            "Config": cfg_name,
            "RepoTags": if tags.is_empty() { Value::Null } else { json!(tags) },
            "Layers": layer_paths,
        });
        let mut drops = Vec::new();
        for t in cx.opts.tamper.iter() {
            match t {
                Tamper::LayerPath {
                    image,
                    layer,
                    value,
                } if *image == i => entry["Layers"][*layer] = json!(value),
                Tamper::ConfigNull { image } if *image == i => entry["Config"] = Value::Null,
                Tamper::DropLayer { image, layer } if *image == i => drops.push(*layer),
                Tamper::ExtraLayer { image } if *image == i => {
                    let b = cx.extra_layer()?;
                    let p = if podman {
                        format!("{}.tar", hexpart(&b.diff_id))
                    } else {
                        let d = format!("{}/", hexpart(&Ctx::forged_digest(&b.diff_id)));
                        cx.plan.add(Member::dir(d.clone()));
                        format!("{d}layer.tar")
                    };
                    cx.plan.add(Member {
                        path: p.clone(),
                        mode: fmode,
                        body: b.body,
                    });
                    entry["Layers"]
                        .as_array_mut()
                        .expect("array")
                        .push(json!(p));
                }
                _ => {}
            }
        }
        drops.sort_unstable();
        for l in drops.into_iter().rev() {
            if let Some(a) = entry["Layers"].as_array_mut() {
                if l < a.len() {
                    a.remove(l);
                }
            }
        }
        manifest.push(entry);
        if let Some(top) = ids.last() {
            for t in &tags {
                let (r, tag) = split_tag(t);
                repos.entry(r).or_default().insert(tag, top.clone());
            }
        }
    }
    let mut manifest = Value::Array(manifest);
    cx.hook(Doc::DockerManifest, &mut manifest);
    let mut repos = json!(repos);
    cx.hook(Doc::Repositories, &mut repos);
    let m = to_bytes("manifest.json", &manifest)?;
    let r = to_bytes("repositories", &repos)?;
    cx.plan.file("manifest.json", fmode, m);
    cx.plan.file("repositories", fmode, r);
    Ok(())
}

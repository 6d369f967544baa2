//! Round-trip tests. The archives are re-read here with the `tar` crate and
//! serde_json only (not with rcrun's reader), so a bug in the reader cannot
//! hide a matching bug in the writer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tar::EntryType;

use super::*;

const FIXTURES: &str = "/work/shared/fixtures";

#[derive(Debug, Clone)]
struct Ent {
    kind: EntryType,
    link: Option<String>,
    data: Vec<u8>,
    mode: u32,
    uid: u64,
    pax: Vec<(String, Vec<u8>)>,
}

fn read_tar(b: &[u8]) -> Vec<(String, Ent)> {
    let mut a = tar::Archive::new(b);
    let mut out = Vec::new();
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let pax = match e.pax_extensions().expect("pax") {
            Some(x) => x
                .map(|r| r.expect("pax record"))
                .map(|r| (r.key().expect("key").to_string(), r.value_bytes().to_vec()))
                .collect(),
            None => vec![],
        };
        let kind = e.header().entry_type();
        let mode = e.header().mode().expect("mode");
        let uid = e.header().uid().expect("uid");
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("data");
        out.push((
            path,
            Ent {
                kind,
                link,
                data,
                mode,
                uid,
                pax,
            },
        ));
    }
    out
}

fn tar_map(b: &[u8]) -> BTreeMap<String, Ent> {
    read_tar(b).into_iter().collect()
}

fn json_of(m: &BTreeMap<String, Ent>, p: &str) -> Value {
    let e = m.get(p).unwrap_or_else(|| panic!("missing member {p}"));
    serde_json::from_slice(&e.data).unwrap_or_else(|err| panic!("{p}: {err}"))
}

/// Follows one symlink member, resolving relative to its directory.
fn resolve<'a>(m: &'a BTreeMap<String, Ent>, p: &str) -> &'a Ent {
    let e = m.get(p).unwrap_or_else(|| panic!("missing member {p}"));
    if e.kind != EntryType::Symlink {
        return e;
    }
    let t = e.link.as_deref().expect("link");
    let mut parts: Vec<&str> = p.split('/').collect();
    parts.pop();
    for c in t.split('/') {
        match c {
            ".." => {
                parts.pop().expect("symlink escapes the archive");
            }
            "." | "" => {}
            c => parts.push(c),
        }
    }
    let target = parts.join("/");
    m.get(&target)
        .unwrap_or_else(|| panic!("dangling symlink {p} -> {target}"))
}

fn decompress(media_type: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if media_type.ends_with("+gzip") {
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("gunzip");
    } else if media_type.ends_with("+zstd") {
        out = zstd::decode_all(data).expect("unzstd");
    } else {
        out = data.to_vec();
    }
    out
}

fn blob<'a>(m: &'a BTreeMap<String, Ent>, desc: &Value) -> &'a [u8] {
    let d = desc["digest"].as_str().expect("digest");
    let p = format!(
        "blobs/sha256/{}",
        d.strip_prefix("sha256:").expect("sha256")
    );
    let e = m.get(&p).unwrap_or_else(|| panic!("missing blob {p}"));
    assert_eq!(e.kind, EntryType::Regular, "{p}");
    assert_eq!(sha256_digest(&e.data), d, "blob {p} content digest");
    assert_eq!(
        e.data.len() as u64,
        desc["size"].as_u64().expect("size"),
        "blob {p} size"
    );
    &e.data
}

/// Checks an OCI manifest and returns (config, uncompressed layers).
fn check_oci_manifest(m: &BTreeMap<String, Ent>, desc: &Value) -> (Value, Vec<Vec<u8>>) {
    let man: Value = serde_json::from_slice(blob(m, desc)).expect("manifest json");
    assert_eq!(man["schemaVersion"], 2);
    assert_eq!(man["mediaType"], archive::MT_OCI_MANIFEST);
    assert_eq!(man["config"]["mediaType"], archive::MT_OCI_CONFIG);
    let cfg: Value = serde_json::from_slice(blob(m, &man["config"])).expect("config json");
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    let layers = man["layers"].as_array().expect("layers");
    assert_eq!(diff_ids.len(), layers.len());
    assert_eq!(cfg["rootfs"]["type"], "layers");
    let mut out = Vec::new();
    for (l, d) in layers.iter().zip(diff_ids) {
        let raw = decompress(l["mediaType"].as_str().expect("mt"), blob(m, l));
        assert_eq!(&Value::String(sha256_digest(&raw)), d, "diff_id");
        out.push(raw);
    }
    (cfg, out)
}

/// Checks a `manifest.json`-style archive; returns per image (tags, config, layers).
fn check_docker(m: &BTreeMap<String, Ent>) -> Vec<(Vec<String>, Value, Vec<Vec<u8>>)> {
    let man = json_of(m, "manifest.json");
    let mut out = Vec::new();
    for e in man.as_array().expect("array") {
        let cfg_path = e["Config"].as_str().expect("Config");
        let cfg_ent = resolve(m, cfg_path);
        let cfg: Value = serde_json::from_slice(&cfg_ent.data).expect("config");
        // Config file names are the config digest in every docker format.
        let hex = cfg_path
            .trim_start_matches("blobs/sha256/")
            .trim_end_matches(".json");
        assert_eq!(sha256_digest(&cfg_ent.data), format!("sha256:{hex}"));
        let diff_ids = cfg["rootfs"]["diff_ids"].as_array().expect("diff_ids");
        let paths = e["Layers"].as_array().expect("Layers");
        assert_eq!(diff_ids.len(), paths.len());
        let mut layers = Vec::new();
        for (p, d) in paths.iter().zip(diff_ids) {
            let data = &resolve(m, p.as_str().expect("path")).data;
            // Docker 25 may point at compressed blobs: sniff the magic.
            let data = match data.get(..4) {
                Some([0x1f, 0x8b, ..]) => decompress("+gzip", data),
                Some([0x28, 0xb5, 0x2f, 0xfd]) => decompress("+zstd", data),
                _ => data.clone(),
            };
            assert_eq!(&Value::String(sha256_digest(&data)), d, "layer {p}");
            layers.push(data);
        }
        let tags = e["RepoTags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        out.push((tags, cfg, layers));
    }
    out
}

/// Replaces 64-hex runs with `H` so member names can be compared as shapes.
fn shape(p: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in p.chars() {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
        } else {
            out.push_str(if run.len() == 64 { "H" } else { &run });
            run.clear();
            out.push(c);
        }
    }
    out.push_str(if run.len() == 64 { "H" } else { &run });
    out
}

fn shapes(m: &[(String, Ent)]) -> BTreeSet<(String, bool)> {
    m.iter()
        .map(|(p, e)| (shape(p), e.kind == EntryType::Symlink))
        .collect()
}

fn sample_layers() -> Vec<LayerSpec> {
    let long = format!("opt/{}/{}", "d".repeat(90), "f".repeat(60));
    let base = vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n"),
        Entry::dir("opt", 0o755),
        Entry::dir("opt/app", 0o755)
            .owner(1000, 1000)
            .mtime(1_700_000_000),
        Entry::file("opt/app/hello.txt", 0o644, "hello\n").xattr("user.note", b"x".to_vec()),
        Entry::hardlink("opt/app/hello.hardlink", "opt/app/hello.txt"),
        Entry::symlink("opt/app/hello.symlink", "hello.txt"),
        Entry::file("opt/app/suid", 0o4755, "suid\n"),
        Entry::file(long, 0o644, "long\n"),
        Entry::Fifo {
            path: "opt/fifo".into(),
            mode: 0o644,
        },
        Entry::CharDev {
            path: "opt/null".into(),
            major: 1,
            minor: 3,
            mode: 0o666,
        },
    ];
    let top = vec![
        Entry::whiteout("opt/app/hello.symlink"),
        Entry::opaque("etc"),
        Entry::file("etc/new", 0o600, "new\n"),
    ];
    vec![
        LayerSpec::entries(&base, "base").unwrap(),
        LayerSpec::entries(&top, "top").unwrap(),
    ]
}

fn sample_image(tag: &str) -> ImageSpec {
    ImageSpec {
        tags: vec![tag.to_string()],
        config: ConfigSpec {
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec!["echo hi".into()]),
            env: vec!["PATH=/bin".into(), "A=b".into()],
            working_dir: "/opt/app".into(),
            user: "1000:1000".into(),
            exposed_ports: vec!["8080/tcp".into()],
            labels: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        },
        layers: sample_layers(),
        history: vec![HistoryEntry::empty("/bin/sh -c #(nop) CMD [\"echo hi\"]")],
        ..Default::default()
    }
}

fn build(images: &[ImageSpec], f: Format, opts: &WriteOptions) -> Vec<u8> {
    let mut out = Vec::new();
    write_archive(&mut out, images, f, opts).expect("write_archive");
    out
}

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "rcrun-imagebuild-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn check_history(cfg: &Value) {
    let h = cfg["history"].as_array().unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[0]["created_by"], "base");
    assert_eq!(h[2]["empty_layer"], true);
    assert_eq!(
        h.iter().filter(|e| e["empty_layer"] != true).count(),
        cfg["rootfs"]["diff_ids"].as_array().unwrap().len()
    );
}

#[test]
fn docker_legacy_round_trip() {
    let img = sample_image("lab/test");
    let b = build(
        std::slice::from_ref(&img),
        Format::DockerLegacy,
        &WriteOptions::default(),
    );
    let m = tar_map(&b);
    let imgs = check_docker(&m);
    assert_eq!(imgs.len(), 1);
    let (tags, cfg, layers) = &imgs[0];
    assert_eq!(tags, &["lab/test:latest"]);
    assert_eq!(cfg["architecture"], host_arch());
    assert_eq!(cfg["os"], "linux");
    // docker save style: empty strings / nulls present.
    assert_eq!(cfg["config"]["WorkingDir"], "/opt/app");
    assert_eq!(cfg["config"]["User"], "1000:1000");
    assert_eq!(
        cfg["config"]["Entrypoint"],
        serde_json::json!(["/bin/sh", "-c"])
    );
    assert_eq!(
        cfg["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}})
    );
    assert_eq!(cfg["config"]["Labels"]["k"], "v");
    check_history(cfg);
    assert_eq!(
        layers[0],
        match &img.layers[0].source {
            LayerSource::Bytes(b) => b.clone(),
            _ => unreachable!(),
        }
    );
    // Layer members are regular files in <id>/, with VERSION and json.
    let man = json_of(&m, "manifest.json");
    let repos = json_of(&m, "repositories");
    let paths: Vec<&str> = man[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in &paths {
        assert_eq!(m[*p].kind, EntryType::Regular);
        let id = p.trim_end_matches("/layer.tar");
        assert_eq!(m[&format!("{id}/VERSION")].data, b"1.0");
        assert_eq!(json_of(&m, &format!("{id}/json"))["id"], id);
        assert_eq!(m[&format!("{id}/")].kind, EntryType::Directory);
    }
    let top = paths[1].trim_end_matches("/layer.tar");
    assert_eq!(repos["lab/test"]["latest"], top);
    assert_eq!(
        json_of(&m, &format!("{top}/json"))["parent"],
        paths[0].trim_end_matches("/layer.tar")
    );

    let empty = ImageSpec {
        tags: vec!["e".into()],
        layers: sample_layers(),
        ..Default::default()
    };
    let m = tar_map(&build(
        &[empty],
        Format::DockerLegacy,
        &WriteOptions::default(),
    ));
    let cfg = &check_docker(&m)[0].1;
    assert_eq!(cfg["config"]["WorkingDir"], "");
    assert_eq!(cfg["config"]["User"], "");
    assert_eq!(cfg["config"]["Cmd"], Value::Null);
}

#[test]
fn docker_archive_layers_are_symlinks() {
    let b = build(
        &[sample_image("localhost/lab/x:v1")],
        Format::DockerArchive,
        &WriteOptions::default(),
    );
    let list = read_tar(&b);
    let m: BTreeMap<_, _> = list.iter().cloned().collect();
    let imgs = check_docker(&m);
    let man = json_of(&m, "manifest.json");
    for (p, d) in man[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(imgs[0].1["rootfs"]["diff_ids"].as_array().unwrap())
    {
        // Layers name the top-level <diffid>.tar directly.
        assert_eq!(
            p.as_str().unwrap(),
            format!("{}.tar", d.as_str().unwrap().trim_start_matches("sha256:"))
        );
    }
    let links: Vec<_> = list
        .iter()
        .filter(|(p, _)| p.ends_with("/layer.tar"))
        .collect();
    assert_eq!(links.len(), 2);
    for (p, e) in links {
        assert_eq!(e.kind, EntryType::Symlink, "{p}");
        assert!(
            e.link.as_deref().unwrap().starts_with("../")
                && e.link.as_deref().unwrap().ends_with(".tar")
        );
        assert_eq!(resolve(&m, p).kind, EntryType::Regular);
    }
    assert!(list
        .iter()
        .all(|(_, e)| e.kind == EntryType::Symlink || e.mode == 0o444));
    // podman-style config: no empty WorkingDir etc.
    assert!(imgs[0].1["config"].get("Hostname").is_none());
    assert_eq!(
        json_of(&m, "repositories")["localhost/lab/x"]["v1"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
}

#[test]
fn docker25_round_trip_and_null_manifests() {
    for comp in [Compression::None, Compression::Gzip] {
        let opts = WriteOptions {
            compression: comp,
            ..Default::default()
        };
        let b = build(&[sample_image("busybox")], Format::Docker25, &opts);
        let m = tar_map(&b);
        assert_eq!(m["oci-layout"].data, archive::OCI_LAYOUT);
        let imgs = check_docker(&m); // manifest.json Layers -> blobs/sha256/<hex>
        let man = json_of(&m, "manifest.json");
        assert!(man[0]["Layers"][0]
            .as_str()
            .unwrap()
            .starts_with("blobs/sha256/"));
        assert!(man[0]["Config"]
            .as_str()
            .unwrap()
            .starts_with("blobs/sha256/"));
        if comp == Compression::None {
            assert_eq!(imgs[0].1["config"]["WorkingDir"], "/opt/app");
            assert_eq!(imgs[0].1["config"]["Hostname"], "");
        }
        let idx = json_of(&m, "index.json");
        assert_eq!(idx["mediaType"], archive::MT_OCI_INDEX);
        let d = &idx["manifests"][0];
        assert_eq!(
            d["annotations"]["org.opencontainers.image.ref.name"],
            "latest"
        );
        assert_eq!(
            d["annotations"]["io.containerd.image.name"],
            "docker.io/library/busybox:latest"
        );
        let (cfg, layers) = check_oci_manifest(&m, d);
        assert_eq!(cfg, imgs[0].1);
        assert_eq!(layers.len(), 2);
    }
    let opts = WriteOptions {
        docker25_null_manifests: true,
        ..Default::default()
    };
    let m = tar_map(&build(&[sample_image("busybox")], Format::Docker25, &opts));
    assert_eq!(json_of(&m, "index.json")["manifests"], Value::Null);
    assert_eq!(check_docker(&m).len(), 1);
}

#[test]
fn oci_round_trip_all_compressions() {
    for comp in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let opts = WriteOptions {
            compression: comp,
            ..Default::default()
        };
        let b = build(
            &[sample_image("localhost/lab/multi:latest")],
            Format::OciArchive,
            &opts,
        );
        let list = read_tar(&b);
        let m: BTreeMap<_, _> = list.iter().cloned().collect();
        // Path order, like the real oci-archive fixtures.
        let names: Vec<&String> = list.iter().map(|(p, _)| p).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let idx = json_of(&m, "index.json");
        assert_eq!(idx["schemaVersion"], 2);
        let d = &idx["manifests"][0];
        assert_eq!(
            d["annotations"]["org.opencontainers.image.ref.name"],
            "localhost/lab/multi:latest"
        );
        let (cfg, layers) = check_oci_manifest(&m, d);
        let man: Value = serde_json::from_slice(blob(&m, d)).unwrap();
        let want = match comp {
            Compression::None => archive::MT_LAYER_TAR,
            Compression::Gzip => archive::MT_LAYER_GZIP,
            Compression::Zstd => archive::MT_LAYER_ZSTD,
        };
        assert_eq!(man["layers"][0]["mediaType"], want);
        assert!(cfg["config"].get("Hostname").is_none()); // OCI style
        assert_eq!(cfg["config"]["WorkingDir"], "/opt/app");
        check_history(&cfg);
        // The layer content survived compression.
        let inner = tar_map(&layers[1]);
        assert!(inner.contains_key("etc/.wh..wh..opq"));
        assert!(inner.contains_key("opt/app/.wh.hello.symlink"));
    }
}

#[test]
fn multi_image_archives() {
    let a = sample_image("lab/a:1");
    let mut b = sample_image("lab/b:2");
    b.layers.truncate(1); // shares the base layer with a
    b.tags.push("lab/b:also".into());
    for f in [
        Format::DockerLegacy,
        Format::DockerArchive,
        Format::Docker25,
    ] {
        let arch = build(&[a.clone(), b.clone()], f, &WriteOptions::default());
        let list = read_tar(&arch);
        let m: BTreeMap<_, _> = list.iter().cloned().collect();
        assert_eq!(m.len(), list.len(), "{f:?}: duplicate member");
        let imgs = check_docker(&m);
        assert_eq!(imgs.len(), 2);
        assert_eq!(imgs[0].0, ["lab/a:1"]);
        assert_eq!(imgs[1].0, ["lab/b:2", "lab/b:also"]);
        assert_eq!(imgs[0].2[0], imgs[1].2[0]);
        let repos = json_of(&m, "repositories");
        assert!(repos["lab/b"]["also"].is_string() && repos["lab/a"]["1"].is_string());
    }
    let arch = build(&[a, b], Format::OciArchive, &WriteOptions::default());
    let m = tar_map(&arch);
    let idx = json_of(&m, "index.json");
    let ds = idx["manifests"].as_array().unwrap();
    let refs: Vec<&str> = ds
        .iter()
        .map(|d| {
            d["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(refs, ["lab/a:1", "lab/b:2", "lab/b:also"]);
    assert_ne!(ds[0]["digest"], ds[1]["digest"]);
    assert_eq!(ds[1]["digest"], ds[2]["digest"]);
    for d in ds {
        check_oci_manifest(&m, d);
    }
}

#[test]
fn oci_nested_multi_platform_index() {
    let opts = WriteOptions {
        oci_nested_index: true,
        oci_multi_platform: true,
        compression: Compression::Gzip,
        ..Default::default()
    };
    let m = tar_map(&build(
        &[sample_image("lab/mp:latest")],
        Format::OciArchive,
        &opts,
    ));
    let idx = json_of(&m, "index.json");
    let top = idx["manifests"].as_array().unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0]["mediaType"], archive::MT_OCI_INDEX);
    assert_eq!(
        top[0]["annotations"]["org.opencontainers.image.ref.name"],
        "lab/mp:latest"
    );
    let nested: Value = serde_json::from_slice(blob(&m, &top[0])).unwrap();
    let ds = nested["manifests"].as_array().unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds[0]["platform"]["architecture"], host_arch());
    let (cfg, _) = check_oci_manifest(&m, &ds[0]);
    assert_eq!(cfg["architecture"], host_arch());
    // Second platform: listed, but its manifest blob is not in the archive.
    assert_ne!(ds[1]["platform"]["architecture"], host_arch());
    let absent = format!(
        "blobs/sha256/{}",
        ds[1]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    assert!(!m.contains_key(&absent));
    // Attestation manifest: unknown/unknown, references the image manifest.
    assert_eq!(
        ds[2]["platform"],
        serde_json::json!({"architecture": "unknown", "os": "unknown"})
    );
    assert_eq!(
        ds[2]["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        ds[2]["annotations"]["vnd.docker.reference.digest"],
        ds[0]["digest"]
    );
    let att: Value = serde_json::from_slice(blob(&m, &ds[2])).unwrap();
    assert_eq!(att["layers"][0]["mediaType"], archive::MT_IN_TOTO);
    blob(&m, &att["layers"][0]);

    // Flat multi-platform: the three descriptors sit in index.json itself.
    let opts = WriteOptions {
        oci_multi_platform: true,
        ..Default::default()
    };
    let m = tar_map(&build(
        &[sample_image("lab/mp:latest")],
        Format::OciArchive,
        &opts,
    ));
    let ds = json_of(&m, "index.json")["manifests"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(ds.len(), 3);
    assert!(ds[2]["annotations"]
        .get("org.opencontainers.image.ref.name")
        .is_none());
}

#[test]
fn tampering() {
    let img = [sample_image("t")];
    let w = |f, t: Vec<Tamper>| {
        tar_map(&build(
            &img,
            f,
            &WriteOptions {
                tamper: t,
                ..Default::default()
            },
        ))
    };
    let oci_man = |m: &BTreeMap<String, Ent>| -> Value {
        let d = &json_of(m, "index.json")["manifests"][0];
        serde_json::from_slice(blob(m, d)).unwrap()
    };

    // Wrong diff_id: config is self-consistent (its digest matches) but lies.
    let m = w(
        Format::OciArchive,
        vec![Tamper::WrongDiffId { image: 0, layer: 1 }],
    );
    let man = oci_man(&m);
    let cfg: Value = serde_json::from_slice(blob(&m, &man["config"])).unwrap();
    let real = sha256_digest(blob(&m, &man["layers"][1]));
    assert_ne!(cfg["rootfs"]["diff_ids"][1].as_str().unwrap(), real);

    let m = w(
        Format::OciArchive,
        vec![Tamper::LayerDigest {
            image: 0,
            layer: 0,
            value: "sha256:../../etc/passwd".into(),
        }],
    );
    assert_eq!(
        oci_man(&m)["layers"][0]["digest"],
        "sha256:../../etc/passwd"
    );

    let m = w(
        Format::OciArchive,
        vec![Tamper::WrongBlobDigest { image: 0, layer: 0 }],
    );
    let l0 = &oci_man(&m)["layers"][0];
    let p = format!(
        "blobs/sha256/{}",
        l0["digest"].as_str().unwrap().trim_start_matches("sha256:")
    );
    assert_ne!(sha256_digest(&m[&p].data), l0["digest"].as_str().unwrap());

    let m = w(
        Format::OciArchive,
        vec![
            Tamper::LayerSize {
                image: 0,
                layer: 0,
                size: 7,
            },
            Tamper::ConfigNull { image: 0 },
        ],
    );
    assert_eq!(oci_man(&m)["layers"][0]["size"], 7);
    assert_eq!(oci_man(&m)["config"], Value::Null);

    let m = w(
        Format::OciArchive,
        vec![Tamper::BlobSymlink {
            image: 0,
            layer: 0,
            target: "/etc/passwd".into(),
        }],
    );
    let p = format!(
        "blobs/sha256/{}",
        oci_man(&m)["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    assert_eq!(m[&p].kind, EntryType::Symlink);
    assert_eq!(m[&p].link.as_deref(), Some("/etc/passwd"));

    let m = w(Format::OciArchive, vec![Tamper::ExtraLayer { image: 0 }]);
    let man = oci_man(&m);
    let cfg: Value = serde_json::from_slice(blob(&m, &man["config"])).unwrap();
    assert_eq!(man["layers"].as_array().unwrap().len(), 3);
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    blob(&m, &man["layers"][2]);

    let m = w(
        Format::DockerLegacy,
        vec![
            Tamper::DropLayer { image: 0, layer: 0 },
            Tamper::LayerPath {
                image: 0,
                layer: 1,
                value: "../escape/layer.tar".into(),
            },
        ],
    );
    assert_eq!(
        json_of(&m, "manifest.json")[0]["Layers"],
        serde_json::json!(["../escape/layer.tar"])
    );

    let m = w(
        Format::DockerLegacy,
        vec![
            Tamper::ConfigNull { image: 0 },
            Tamper::TruncateLayer {
                image: 0,
                layer: 0,
                len: 100,
            },
        ],
    );
    let man = json_of(&m, "manifest.json");
    assert_eq!(man[0]["Config"], Value::Null);
    assert_eq!(m[man[0]["Layers"][0].as_str().unwrap()].data.len(), 100);

    let m = w(
        Format::DockerArchive,
        vec![
            Tamper::BlobSymlink {
                image: 0,
                layer: 1,
                target: "../../../etc/shadow".into(),
            },
            Tamper::OmitLayerBlob { image: 0, layer: 0 },
        ],
    );
    let man = json_of(&m, "manifest.json");
    assert!(!m.contains_key(man[0]["Layers"][0].as_str().unwrap()));
    let link = m
        .iter()
        .filter(|(p, _)| p.ends_with("/layer.tar"))
        .find(|(_, e)| e.link.as_deref() == Some("../../../etc/shadow"));
    assert!(link.is_some());

    let m = w(
        Format::DockerArchive,
        vec![Tamper::WrongBlobDigest { image: 0, layer: 0 }],
    );
    let p = json_of(&m, "manifest.json")[0]["Layers"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        sha256_digest(&m[&p].data),
        format!("sha256:{}", p.trim_end_matches(".tar"))
    );

    let m = w(
        Format::Docker25,
        vec![
            Tamper::DiffId {
                image: 0,
                layer: 0,
                value: "sha256:../../etc/passwd".into(),
            },
            Tamper::ExtraMember(Member::bytes("../evil", 0o644, "x")),
        ],
    );
    assert!(m.contains_key("../evil"));
    let man = json_of(&m, "manifest.json");
    let cfg = json_of(&m, man[0]["Config"].as_str().unwrap());
    assert_eq!(cfg["rootfs"]["diff_ids"][0], "sha256:../../etc/passwd");

    let full = build(&img, Format::OciArchive, &WriteOptions::default());
    let cut = build(
        &img,
        Format::OciArchive,
        &WriteOptions {
            tamper: vec![Tamper::TruncateArchive { len: 3000 }],
            ..Default::default()
        },
    );
    assert_eq!(cut.len(), 3000);
    assert_eq!(&cut[..], &full[..3000]);

    // Hooks: edit any JSON before hashing; reorder members.
    let opts = WriteOptions {
        edit_json: Some(Box::new(|d, v| {
            if *d == (Doc::Config { image: 0 }) {
                v["config"]["User"] = serde_json::json!("nobody");
            }
        })),
        edit_members: Some(Box::new(|ms| ms.reverse())),
        ..Default::default()
    };
    let list = read_tar(&build(&img, Format::OciArchive, &opts));
    assert_eq!(list[0].0, "oci-layout");
    let m: BTreeMap<_, _> = list.into_iter().collect();
    let (cfg, _) = check_oci_manifest(&m, &json_of(&m, "index.json")["manifests"][0]);
    assert_eq!(cfg["config"]["User"], "nobody");
}

#[test]
fn hostile_entries_written_verbatim() {
    let long = format!("{}/x", "a".repeat(200));
    let mut raw = tar::Header::new_gnu();
    raw.as_old_mut().name[..6].copy_from_slice(b"../raw");
    raw.set_size(1);
    raw.set_mode(0o644);
    raw.set_uid(0);
    raw.set_gid(0);
    raw.set_mtime(0);
    raw.set_entry_type(EntryType::Regular);
    raw.set_cksum();
    let entries = vec![
        Entry::file("../x", 0o644, "up"),
        Entry::file("/abs", 0o644, "abs"),
        Entry::file("a/../../b", 0o644, "b"),
        Entry::symlink("link", "../../../../etc/passwd"),
        Entry::hardlink("hl", "/etc/shadow"),
        Entry::file(long.clone(), 0o644, "long"),
        Entry::file("p", 0o644, "v").with_pax(vec![("path".into(), b"../pax-escape".to_vec())]),
        Entry::Raw {
            header: raw,
            data: b"r".to_vec(),
        },
    ];
    for style in [LongNames::Auto, LongNames::Pax, LongNames::Gnu] {
        let b = write_entries(Vec::new(), &entries, style).unwrap();
        let m = tar_map(&b);
        for p in [
            "../x",
            "/abs",
            "a/../../b",
            "link",
            "hl",
            long.as_str(),
            "../pax-escape",
            "../raw",
        ] {
            assert!(
                m.contains_key(p),
                "{style:?}: {p} missing, have {:?}",
                m.keys().collect::<Vec<_>>()
            );
        }
        assert_eq!(m[long.as_str()].data, b"long");
        assert_eq!(m["link"].link.as_deref(), Some("../../../../etc/passwd"));
        assert_eq!(m["hl"].kind, EntryType::Link);
    }
    // xattrs as SCHILY.xattr PAX records; ustar prefix split for a <=255 name.
    let b = write_entries(
        Vec::new(),
        &[Entry::file(
            format!("{}/{}", "d".repeat(120), "f".repeat(50)),
            0o644,
            "x",
        )
        .xattr("security.capability", vec![1, 2])],
        LongNames::Auto,
    )
    .unwrap();
    let l = read_tar(&b);
    assert_eq!(l.len(), 1);
    assert!(l[0]
        .1
        .pax
        .iter()
        .any(|(k, v)| k == "SCHILY.xattr.security.capability" && v == &[1, 2]));
    assert!(
        !l[0].1.pax.iter().any(|(k, _)| k == "path"),
        "prefix split expected, not PAX path"
    );
}

#[test]
fn layer_from_dir_walks_deterministically() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let d = scratch("walk");
    let root = d.join("root");
    std::fs::create_dir_all(root.join("b/sub")).unwrap();
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::write(root.join("b/file"), "data").unwrap();
    std::fs::set_permissions(root.join("b/file"), std::fs::Permissions::from_mode(0o4750)).unwrap();
    std::fs::hard_link(root.join("b/file"), root.join("a/link")).unwrap();
    symlink("../b/file", root.join("a/sym")).unwrap();
    std::fs::write(root.join("b/sub/z"), vec![7u8; 300_000]).unwrap();
    let t1 = layer_from_dir(&root).unwrap();
    let t2 = layer_from_dir(&root).unwrap();
    assert_eq!(t1, t2);
    let l = read_tar(&t1);
    let names: Vec<&str> = l.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        ["a/", "a/link", "a/sym", "b/", "b/file", "b/sub/", "b/sub/z"]
    );
    let m: BTreeMap<_, _> = l.into_iter().collect();
    assert_eq!(m["a/link"].kind, EntryType::Regular); // first name in walk order
    assert_eq!(m["a/link"].mode, 0o4750);
    assert_eq!(m["b/file"].kind, EntryType::Link);
    assert_eq!(m["b/file"].link.as_deref(), Some("a/link"));
    assert_eq!(m["a/sym"].link.as_deref(), Some("../b/file"));
    assert_eq!(m["b/sub/z"].data.len(), 300_000);

    // Streaming to a file, and a subset of top-level names.
    let f = d.join("l.tar");
    layer_from_dir_to_file(&root, &f, Some(&["b".into()])).unwrap();
    let l = read_tar(&std::fs::read(&f).unwrap());
    assert!(l.iter().all(|(p, _)| p.starts_with("b/")));
    let parts = split_top_level(&root, 2).unwrap();
    assert_eq!(
        parts,
        vec![
            vec![std::ffi::OsString::from("a")],
            vec![std::ffi::OsString::from("b")]
        ]
    );
    assert_eq!(
        split_top_level(&root, 3).unwrap()[2],
        Vec::<std::ffi::OsString>::new()
    );

    // File-backed, compressed layer in a full archive.
    let img = ImageSpec {
        tags: vec!["f".into()],
        layers: vec![LayerSpec::file(&f, "file")],
        ..Default::default()
    };
    let opts = WriteOptions {
        compression: Compression::Zstd,
        temp_dir: Some(d.clone()),
        ..Default::default()
    };
    let m = tar_map(&build(&[img], Format::OciArchive, &opts));
    let (_, layers) = check_oci_manifest(&m, &json_of(&m, "index.json")["manifests"][0]);
    assert_eq!(layers[0], std::fs::read(&f).unwrap());
    // Temp blobs are cleaned up.
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn busybox_tree() {
    if !Path::new(BUSYBOX_PATH).exists() {
        eprintln!("skipping: no {BUSYBOX_PATH}");
        return;
    }
    let entries = busybox_entries(Path::new(BUSYBOX_PATH)).unwrap();
    let m = tar_map(&layer_tar(&entries).unwrap());
    assert_eq!(m["bin/sh"].link.as_deref(), Some("/bin/busybox"));
    assert!(!m.contains_key("bin/busybox") || m["bin/busybox"].kind == EntryType::Regular);
    assert_eq!(m["tmp/"].mode, 0o1777);
    assert_eq!(m["home/app/"].uid, 1000);
    let passwd = String::from_utf8(m["etc/passwd"].data.clone()).unwrap();
    assert!(passwd.contains("app:x:1000:1000:") && passwd.contains(":65534:"));
    assert!(String::from_utf8(m["etc/group"].data.clone())
        .unwrap()
        .contains("extra:x:2000:app"));

    let d = scratch("bb");
    busybox_rootfs(&d).unwrap();
    let out = std::process::Command::new(d.join("bin/busybox"))
        .arg("true")
        .status()
        .unwrap();
    assert!(out.success());
    assert_eq!(
        std::fs::read_link(d.join("bin/ls")).unwrap(),
        Path::new("/bin/busybox")
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(d.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    std::fs::remove_dir_all(&d).unwrap();

    // A dynamically linked binary is refused with a clear message.
    for dynbin in ["/bin/ls", "/usr/bin/env"] {
        if let Ok(b) = std::fs::read(dynbin) {
            let e = check_static_elf(Path::new(dynbin), &b)
                .unwrap_err()
                .to_string();
            assert!(e.contains("dynamically linked"), "{e}");
            break;
        }
    }
    let e = busybox_entries(Path::new("/nonexistent/busybox"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/busybox") && e.contains("busybox-static"),
        "{e}"
    );
}

#[test]
fn same_structure_as_real_fixtures() {
    let fx = Path::new(FIXTURES);
    if !fx.exists() {
        eprintln!("skipping: no {FIXTURES}");
        return;
    }
    let img = [sample_image("localhost/lab/busybox:latest")];
    let opts_gz = WriteOptions {
        compression: Compression::Gzip,
        ..Default::default()
    };
    let cases = [
        (
            "busybox.docker-save.tar",
            Format::DockerLegacy,
            &WriteOptions::default(),
        ),
        (
            "busybox.podman-docker-archive.tar",
            Format::DockerArchive,
            &WriteOptions::default(),
        ),
        ("busybox.oci-archive.tar", Format::OciArchive, &opts_gz),
        ("layered.oci-archive.tar", Format::OciArchive, &opts_gz),
    ];
    // Top-level config keys we must have (the real ones may have more, e.g. "created").
    for (file, f, opts) in cases {
        let real = read_tar(&std::fs::read(fx.join(file)).unwrap());
        let ours = read_tar(&build(&img, f, opts));
        assert_eq!(shapes(&real), shapes(&ours), "{file}");
        let rm: BTreeMap<_, _> = real.into_iter().collect();
        let om: BTreeMap<_, _> = ours.into_iter().collect();
        let (rc, oc) = if f == Format::OciArchive {
            let rd = &json_of(&rm, "index.json")["manifests"][0];
            let od = &json_of(&om, "index.json")["manifests"][0];
            let rk: BTreeSet<String> = rd.as_object().unwrap().keys().cloned().collect();
            let ok: BTreeSet<String> = od.as_object().unwrap().keys().cloned().collect();
            assert_eq!(rk, ok, "{file}: index descriptor keys");
            (check_oci_manifest(&rm, rd).0, check_oci_manifest(&om, od).0)
        } else {
            let rk: BTreeSet<String> = json_of(&rm, "manifest.json")[0]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            let ok: BTreeSet<String> = json_of(&om, "manifest.json")[0]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            assert_eq!(rk, ok, "{file}: manifest.json keys");
            (check_docker(&rm).remove(0).1, check_docker(&om).remove(0).1)
        };
        let keys = |v: &Value| {
            v.as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<BTreeSet<String>>()
        };
        assert_eq!(keys(&rc), keys(&oc), "{file}: config keys");
        assert_eq!(keys(&rc["rootfs"]), keys(&oc["rootfs"]));
    }
}

#[test]
fn umoci_accepts_oci_layout() {
    let Ok(st) = std::process::Command::new("umoci")
        .arg("--version")
        .output()
    else {
        eprintln!("skipping: no umoci");
        return;
    };
    assert!(st.status.success());
    let d = scratch("umoci");
    for (i, opts) in [
        WriteOptions {
            compression: Compression::Gzip,
            ..Default::default()
        },
        // (Debian's umoci predates zstd layers.)
        WriteOptions {
            compression: Compression::None,
            oci_nested_index: true,
            ..Default::default()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let arch = build(&[sample_image("tag")], Format::OciArchive, &opts);
        let layout = d.join(format!("layout{i}"));
        std::fs::create_dir_all(&layout).unwrap();
        tar::Archive::new(&arch[..]).unpack(&layout).unwrap();
        let bundle = d.join(format!("bundle{i}"));
        let out = std::process::Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:tag:latest", layout.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umoci (opts {i}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rootfs = bundle.join("rootfs");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("opt/app/hello.txt")).unwrap(),
            "hello\n"
        );
        assert!(!rootfs.join("opt/app/hello.symlink").exists()); // whited out
        assert!(!rootfs.join("etc/passwd").exists()); // opaque etc/
        assert!(rootfs.join("etc/new").exists());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

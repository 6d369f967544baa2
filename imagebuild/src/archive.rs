//! The four archive formats.
//!
//! Everything is first planned as a list of [`Member`]s (so tests can
//! reorder/drop/forge them through [`WriteOptions::edit_members`]) and then
//! written in one pass. Layer blobs that live on disk (or are compressed from
//! disk into a temp file) are streamed, never loaded whole.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::layer::{layer_tar, Entry};
use super::tarutil::{append_raw, LongNames, RawEntry};
use super::{
    host_arch, normalize_tag, sha256_digest, split_tag, BuildError, Compression, ConfigStyle,
    Format, ImageSpec, LayerSource, Tamper, WriteOptions,
};

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_IN_TOTO: &str = "application/vnd.in-toto+json";
pub const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion": "1.0.0"}"#;

/// Which JSON document an [`WriteOptions::edit_json`] call is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doc {
    /// The image config (all formats).
    Config {
        image: usize,
    },
    /// The OCI image manifest (Docker25, OciArchive).
    Manifest {
        image: usize,
    },
    /// The per-image index blob (OciArchive with `oci_nested_index`).
    ImageIndex {
        image: usize,
    },
    /// Config / manifest of the absent second platform (`oci_multi_platform`).
    OtherPlatformConfig {
        image: usize,
    },
    OtherPlatformManifest {
        image: usize,
    },
    /// The attestation manifest (`oci_multi_platform`).
    AttestationManifest {
        image: usize,
    },
    /// `index.json`.
    Index,
    /// `manifest.json` (Docker formats), the whole array.
    DockerManifest,
    /// `repositories` (Docker formats).
    Repositories,
    /// `<id>/json` (DockerLegacy, DockerArchive).
    V1Json {
        image: usize,
        layer: usize,
    },
}

/// One member of the output archive.
#[derive(Debug, Clone)]
pub struct Member {
    pub path: String,
    pub mode: u32,
    pub body: MemberBody,
}

#[derive(Debug, Clone)]
pub enum MemberBody {
    Dir,
    Bytes(Vec<u8>),
    /// The first `len` bytes of a file on disk (streamed).
    File {
        path: PathBuf,
        len: u64,
    },
    Symlink(String),
    Hardlink(String),
}

impl Member {
    pub fn bytes(path: impl Into<String>, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        Member {
            path: path.into(),
            mode,
            body: MemberBody::Bytes(data.into()),
        }
    }
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Member {
            path: path.into(),
            mode: 0o777,
            body: MemberBody::Symlink(target.into()),
        }
    }
    pub fn dir(path: impl Into<String>) -> Self {
        Member {
            path: path.into(),
            mode: 0o755,
            body: MemberBody::Dir,
        }
    }
}

/// Temp file removed on drop (compressed copies of on-disk layers).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn temp_path(dir: Option<&Path>) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!(
            "rcrun-imagebuild-{}-{}-{}.blob",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            nanos
        ))
}

/// Hashes and counts what passes through to `inner`.
struct HashWriter<W> {
    inner: W,
    h: Sha256,
    n: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.h.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies `r` through the compressor into `w`; returns (diff_id, raw length, w).
fn compress_stream<R: Read, W: Write>(
    mut r: R,
    w: W,
    comp: Compression,
) -> io::Result<(String, u64, W)> {
    enum Enc<W: Write> {
        Plain(W),
        Gz(flate2::write::GzEncoder<W>),
        Zs(zstd::stream::write::Encoder<'static, W>),
    }
    let mut enc = match comp {
        Compression::None => Enc::Plain(w),
        // GzEncoder writes mtime 0 in the gzip header: reproducible digests.
        Compression::Gzip => Enc::Gz(flate2::write::GzEncoder::new(
            w,
            flate2::Compression::default(),
        )),
        Compression::Zstd => Enc::Zs(zstd::stream::write::Encoder::new(w, 3)?),
    };
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        match &mut enc {
            Enc::Plain(w) => w.write_all(&buf[..k])?,
            Enc::Gz(w) => w.write_all(&buf[..k])?,
            Enc::Zs(w) => w.write_all(&buf[..k])?,
        }
    }
    let w = match enc {
        Enc::Plain(w) => w,
        Enc::Gz(w) => w.finish()?,
        Enc::Zs(w) => w.finish()?,
    };
    Ok((format!("sha256:{}", hex::encode(h.finalize())), n, w))
}

/// A prepared layer blob.
#[derive(Debug)]
struct Blob {
    diff_id: String,
    digest: String,
    size: u64,
    media_type: &'static str,
    body: MemberBody,
}

fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => MT_LAYER_TAR,
        Compression::Gzip => MT_LAYER_GZIP,
        Compression::Zstd => MT_LAYER_ZSTD,
    }
}

fn prepare_layer(
    src: &LayerSource,
    comp: Compression,
    temps: &mut Vec<TempFile>,
    tmpdir: Option<&Path>,
) -> Result<Blob, BuildError> {
    let mt = layer_media_type(comp);
    match src {
        LayerSource::Bytes(b) => {
            let diff_id = sha256_digest(b);
            if comp == Compression::None {
                return Ok(Blob {
                    digest: diff_id.clone(),
                    diff_id,
                    size: b.len() as u64,
                    media_type: mt,
                    body: MemberBody::Bytes(b.clone()),
                });
            }
            let (_, _, out) = compress_stream(&b[..], Vec::new(), comp)
                .map_err(|e| BuildError::stream("compressing layer", e))?;
            Ok(Blob {
                diff_id,
                digest: sha256_digest(&out),
                size: out.len() as u64,
                media_type: mt,
                body: MemberBody::Bytes(out),
            })
        }
        LayerSource::File(p) => {
            let f = fs::File::open(p).map_err(|e| BuildError::io("opening layer", p, e))?;
            if comp == Compression::None {
                let (diff_id, len) = super::sha256_reader(io::BufReader::new(f))
                    .map_err(|e| BuildError::io("hashing layer", p, e))?;
                return Ok(Blob {
                    digest: diff_id.clone(),
                    diff_id,
                    size: len,
                    media_type: mt,
                    body: MemberBody::File {
                        path: p.clone(),
                        len,
                    },
                });
            }
            let tmp = temp_path(tmpdir);
            let out = fs::File::create(&tmp)
                .map_err(|e| BuildError::io("creating temp blob", &tmp, e))?;
            temps.push(TempFile(tmp.clone()));
            let hw = HashWriter {
                inner: BufWriter::new(out),
                h: Sha256::new(),
                n: 0,
            };
            let (diff_id, _, mut hw) = compress_stream(f, hw, comp)
                .map_err(|e| BuildError::io("compressing layer", p, e))?;
            hw.flush()
                .map_err(|e| BuildError::io("writing temp blob", &tmp, e))?;
            let digest = format!("sha256:{}", hex::encode(hw.h.finalize()));
            Ok(Blob {
                diff_id,
                digest,
                size: hw.n,
                media_type: mt,
                body: MemberBody::File {
                    path: tmp,
                    len: hw.n,
                },
            })
        }
    }
}

fn hexpart(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn blob_path(digest: &str) -> String {
    // Deliberately no validation: forged digests become forged paths.
    match digest.split_once(':') {
        Some((alg, h)) => format!("blobs/{alg}/{h}"),
        None => format!("blobs/sha256/{digest}"),
    }
}

fn to_bytes(what: &str, v: &Value) -> Result<Vec<u8>, BuildError> {
    serde_json::to_vec(v).map_err(|e| BuildError::Json {
        what: what.to_string(),
        source: e,
    })
}

/// `config.config`, moby- or OCI-style.
fn runtime_config(spec: &ImageSpec, style: ConfigStyle) -> Value {
    let c = &spec.config;
    let strs = |v: &Option<Vec<String>>| v.as_ref().map(|v| json!(v)).unwrap_or(Value::Null);
    let set = |v: &Vec<String>| -> Value {
        let m: Map<String, Value> = v.iter().map(|k| (k.clone(), json!({}))).collect();
        Value::Object(m)
    };
    let labels: Map<String, Value> = c
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut m = Map::new();
    match style {
        ConfigStyle::Moby => {
            // The full moby container.Config, as `docker save` writes it:
            // empty strings and nulls rather than missing keys.
            m.insert("Hostname".into(), json!(""));
            m.insert("Domainname".into(), json!(""));
            m.insert("User".into(), json!(c.user));
            m.insert("AttachStdin".into(), json!(false));
            m.insert("AttachStdout".into(), json!(false));
            m.insert("AttachStderr".into(), json!(false));
            if !c.exposed_ports.is_empty() {
                m.insert("ExposedPorts".into(), set(&c.exposed_ports));
            }
            m.insert("Tty".into(), json!(false));
            m.insert("OpenStdin".into(), json!(false));
            m.insert("StdinOnce".into(), json!(false));
            m.insert(
                "Env".into(),
                if c.env.is_empty() {
                    Value::Null
                } else {
                    json!(c.env)
                },
            );
            m.insert("Cmd".into(), strs(&c.cmd));
            m.insert("Image".into(), json!(""));
            m.insert(
                "Volumes".into(),
                if c.volumes.is_empty() {
                    Value::Null
                } else {
                    set(&c.volumes)
                },
            );
            m.insert("WorkingDir".into(), json!(c.working_dir));
            m.insert("Entrypoint".into(), strs(&c.entrypoint));
            m.insert("OnBuild".into(), Value::Null);
            m.insert(
                "Labels".into(),
                if labels.is_empty() {
                    Value::Null
                } else {
                    Value::Object(labels)
                },
            );
        }
        ConfigStyle::Oci => {
            if !c.user.is_empty() {
                m.insert("User".into(), json!(c.user));
            }
            if !c.exposed_ports.is_empty() {
                m.insert("ExposedPorts".into(), set(&c.exposed_ports));
            }
            if !c.env.is_empty() {
                m.insert("Env".into(), json!(c.env));
            }
            if let Some(e) = &c.entrypoint {
                m.insert("Entrypoint".into(), json!(e));
            }
            if let Some(e) = &c.cmd {
                m.insert("Cmd".into(), json!(e));
            }
            if !c.volumes.is_empty() {
                m.insert("Volumes".into(), set(&c.volumes));
            }
            if !c.working_dir.is_empty() {
                m.insert("WorkingDir".into(), json!(c.working_dir));
            }
            if !labels.is_empty() {
                m.insert("Labels".into(), Value::Object(labels));
            }
        }
    }
    if let Some(s) = &c.stop_signal {
        m.insert("StopSignal".into(), json!(s));
    }
    for (k, v) in &c.extra {
        m.insert(k.clone(), v.clone());
    }
    Value::Object(m)
}

fn image_config(spec: &ImageSpec, diff_ids: &[String], style: ConfigStyle, created: &str) -> Value {
    let mut history: Vec<Value> = spec
        .layers
        .iter()
        .map(|l| json!({"created": created, "created_by": l.created_by}))
        .collect();
    for h in &spec.history {
        let mut e = json!({"created": created, "created_by": h.created_by});
        if let Some(c) = &h.comment {
            e["comment"] = json!(c);
        }
        if h.empty_layer {
            e["empty_layer"] = json!(true);
        }
        history.push(e);
    }
    json!({
        "created": created,
        "architecture": spec.architecture.clone().unwrap_or_else(|| host_arch().to_string()),
        "os": spec.os.clone().unwrap_or_else(|| "linux".to_string()),
        "config": runtime_config(spec, style),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    })
}

/// Per-image state shared by the formats.
struct Img {
    blobs: Vec<Rc<Blob>>,
    config: Value,
    config_bytes: Vec<u8>,
    config_digest: String,
}

/// Member list under construction (first writer of a path wins, which is how
/// shared layers are stored once).
#[derive(Default)]
struct Plan {
    members: Vec<Member>,
    seen: HashSet<String>,
    /// (image, layer) -> path of the member holding the layer bytes.
    layer_member: HashMap<(usize, usize), String>,
    /// (image, layer) -> path that `Tamper::BlobSymlink` replaces.
    symlink_member: HashMap<(usize, usize), String>,
}

impl Plan {
    fn add(&mut self, m: Member) {
        if self.seen.insert(m.path.clone()) {
            self.members.push(m);
        }
    }
    fn file(&mut self, path: impl Into<String>, mode: u32, data: Vec<u8>) {
        self.add(Member::bytes(path, mode, data));
    }
}

struct Ctx<'a> {
    opts: &'a WriteOptions,
    images: &'a [ImageSpec],
    imgs: Vec<Img>,
    plan: Plan,
    format: Format,
}

impl Ctx<'_> {
    fn hook(&self, doc: Doc, v: &mut Value) {
        if let Some(h) = &self.opts.edit_json {
            h(&doc, v);
        }
    }
    fn tampers(&self) -> impl Iterator<Item = &Tamper> {
        self.opts.tamper.iter()
    }
    /// The extra layer of `Tamper::ExtraLayer`: a real, small blob.
    fn extra_layer(&self) -> Result<Blob, BuildError> {
        let tar = layer_tar(&[Entry::file("extra-layer", 0o644, "not in the config\n")])?;
        let comp = if matches!(self.format, Format::DockerLegacy | Format::DockerArchive) {
            Compression::None
        } else {
            self.opts.compression
        };
        prepare_layer(&LayerSource::Bytes(tar), comp, &mut Vec::new(), None)
    }
    fn forged_digest(real: &str) -> String {
        sha256_digest(format!("forged:{real}").as_bytes())
    }
    fn wrong_blob(&self, image: usize, layer: usize) -> bool {
        self.tampers().any(|t| matches!(t, Tamper::WrongBlobDigest { image: i, layer: l } if *i == image && *l == layer))
    }
}

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

fn docker_formats(cx: &mut Ctx<'_>) -> Result<(), BuildError> {
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

/// Adds an image's layer blobs and returns their descriptors (tampers applied).
fn oci_layer_descriptors(cx: &mut Ctx<'_>, i: usize) -> Result<Vec<Value>, BuildError> {
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
fn oci_manifest(cx: &mut Ctx<'_>, i: usize, layers: &[Value]) -> Result<(String, u64), BuildError> {
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

fn docker25(cx: &mut Ctx<'_>) -> Result<(), BuildError> {
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

fn platform(arch: &Value, os: &Value) -> Value {
    json!({"architecture": arch, "os": os})
}

fn oci_archive(cx: &mut Ctx<'_>) -> Result<(), BuildError> {
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

/// Cuts the stream after `left` bytes while reporting success, so the writer
/// side finishes normally and the reader sees a truncated archive.
struct Limit<W> {
    inner: W,
    left: Option<u64>,
}

impl<W: Write> Write for Limit<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.left {
            None => self.inner.write(buf),
            Some(l) => {
                let n = (*l).min(buf.len() as u64) as usize;
                self.inner.write_all(&buf[..n])?;
                *l -= n as u64;
                Ok(buf.len())
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_members<W: Write>(
    out: W,
    members: &[Member],
    mtime: u64,
    limit: Option<u64>,
) -> Result<(), BuildError> {
    let mut b = tar::Builder::new(Limit {
        inner: out,
        left: limit,
    });
    for m in members {
        let mut r = RawEntry::new(m.path.as_bytes(), EntryType::Regular, m.mode);
        r.mtime = mtime;
        let res = match &m.body {
            MemberBody::Dir => {
                r.kind = EntryType::Directory;
                append_raw(&mut b, &r, LongNames::Auto, io::empty())
            }
            MemberBody::Bytes(d) => {
                r.size = d.len() as u64;
                append_raw(&mut b, &r, LongNames::Auto, &d[..])
            }
            MemberBody::File { path, len } => {
                r.size = *len;
                let f =
                    fs::File::open(path).map_err(|e| BuildError::io("opening blob", path, e))?;
                append_raw(
                    &mut b,
                    &r,
                    LongNames::Auto,
                    io::BufReader::new(f).take(*len),
                )
            }
            MemberBody::Symlink(t) | MemberBody::Hardlink(t) => {
                r.kind = if matches!(m.body, MemberBody::Symlink(_)) {
                    EntryType::Symlink
                } else {
                    EntryType::Link
                };
                r.link = Some(t.as_bytes());
                append_raw(&mut b, &r, LongNames::Auto, io::empty())
            }
        };
        res.map_err(|e| BuildError::io("writing archive member", &m.path, e))?;
    }
    let mut w = b
        .into_inner()
        .map_err(|e| BuildError::stream("finishing archive", e))?;
    w.flush()
        .map_err(|e| BuildError::stream("flushing archive", e))
}

/// Writes `images` as one archive in `format`.
pub fn write_archive<W: Write>(
    out: W,
    images: &[ImageSpec],
    format: Format,
    opts: &WriteOptions,
) -> Result<(), BuildError> {
    if images.is_empty() {
        return Err(BuildError::Spec("no images".into()));
    }
    let comp = match format {
        // Docker's own formats carry plain tar layers.
        Format::DockerLegacy | Format::DockerArchive => Compression::None,
        _ => opts.compression,
    };
    let style = opts.config_style.unwrap_or(match format {
        Format::DockerLegacy | Format::Docker25 => ConfigStyle::Moby,
        Format::DockerArchive | Format::OciArchive => ConfigStyle::Oci,
    });
    let mut temps: Vec<TempFile> = Vec::new();
    let mut cache: HashMap<String, Rc<Blob>> = HashMap::new();
    let mut imgs = Vec::new();
    for (i, spec) in images.iter().enumerate() {
        let mut blobs = Vec::new();
        for l in &spec.layers {
            // Identical layers (same bytes or same file) are compressed once.
            let key = match &l.source {
                LayerSource::Bytes(b) => sha256_digest(b),
                LayerSource::File(p) => format!("file:{}", p.display()),
            };
            let blob = match cache.get(&key) {
                Some(b) => b.clone(),
                None => {
                    let b = Rc::new(prepare_layer(
                        &l.source,
                        comp,
                        &mut temps,
                        opts.temp_dir.as_deref(),
                    )?);
                    cache.insert(key, b.clone());
                    b
                }
            };
            blobs.push(blob);
        }
        let diff_ids: Vec<String> = blobs.iter().map(|b| b.diff_id.clone()).collect();
        let mut config = image_config(spec, &diff_ids, style, &opts.created);
        for t in &opts.tamper {
            match t {
                Tamper::DiffId {
                    image,
                    layer,
                    value,
                } if *image == i => config["rootfs"]["diff_ids"][*layer] = json!(value),
                Tamper::WrongDiffId { image, layer } if *image == i => {
                    config["rootfs"]["diff_ids"][*layer] = json!(sha256_digest(
                        format!("wrong:{}", diff_ids[*layer]).as_bytes()
                    ))
                }
                _ => {}
            }
        }
        if let Some(h) = &opts.edit_json {
            h(&Doc::Config { image: i }, &mut config);
        }
        let config_bytes = to_bytes("config", &config)?;
        let config_digest = sha256_digest(&config_bytes);
        imgs.push(Img {
            blobs,
            config,
            config_bytes,
            config_digest,
        });
    }
    let mut cx = Ctx {
        opts,
        images,
        imgs,
        plan: Plan::default(),
        format,
    };
    match format {
        Format::DockerLegacy | Format::DockerArchive => docker_formats(&mut cx)?,
        Format::Docker25 | Format::OciArchive => {
            cx.plan.add(Member::dir("blobs/"));
            cx.plan.add(Member::dir("blobs/sha256/"));
            if format == Format::Docker25 {
                docker25(&mut cx)?
            } else {
                oci_archive(&mut cx)?
            }
            // Real tools write these archives in path order.
            cx.plan.members.sort_by(|a, b| a.path.cmp(&b.path));
        }
    }
    let mut plan = cx.plan;
    if opts.manifest_first {
        let meta = |p: &str| {
            matches!(
                p,
                "manifest.json" | "index.json" | "oci-layout" | "repositories"
            )
        };
        plan.members.sort_by_key(|m| !meta(&m.path)); // stable: keeps relative order
    }
    let mut limit = None;
    for t in &opts.tamper {
        match t {
            Tamper::BlobSymlink {
                image,
                layer,
                target,
            } => {
                if let Some(p) = plan.symlink_member.get(&(*image, *layer)) {
                    for m in plan.members.iter_mut().filter(|m| &m.path == p) {
                        (m.mode, m.body) = (0o777, MemberBody::Symlink(target.clone()));
                    }
                }
            }
            Tamper::TruncateLayer { image, layer, len } => {
                if let Some(p) = plan.layer_member.get(&(*image, *layer)) {
                    for m in plan.members.iter_mut().filter(|m| &m.path == p) {
                        match &mut m.body {
                            MemberBody::Bytes(d) => d.truncate(*len as usize),
                            MemberBody::File { len: l, .. } => *l = (*l).min(*len),
                            _ => {}
                        }
                    }
                }
            }
            Tamper::OmitLayerBlob { image, layer } => {
                if let Some(p) = plan.layer_member.get(&(*image, *layer)) {
                    plan.members.retain(|m| &m.path != p);
                }
            }
            Tamper::ExtraMember(m) => plan.members.push(m.clone()),
            Tamper::TruncateArchive { len } => limit = Some(*len),
            _ => {}
        }
    }
    if let Some(h) = &opts.edit_members {
        h(&mut plan.members);
    }
    let r = write_members(out, &plan.members, opts.mtime, limit);
    drop(temps);
    r
}

/// [`write_archive`] into a new file at `path`.
pub fn write_archive_to_file(
    path: &Path,
    images: &[ImageSpec],
    format: Format,
    opts: &WriteOptions,
) -> Result<(), BuildError> {
    let f = fs::File::create(path).map_err(|e| BuildError::io("creating archive", path, e))?;
    let mut w = BufWriter::new(f);
    write_archive(&mut w, images, format, opts)?;
    w.flush()
        .map_err(|e| BuildError::io("writing archive", path, e))
}

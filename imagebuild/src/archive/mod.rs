//! The four archive formats.
//!
//! Everything is first planned as a list of [`Member`]s (so tests can
//! reorder/drop/forge them through [`WriteOptions::edit_members`]) and then
//! written in one pass. Layer blobs that live on disk (or are compressed from
//! disk into a temp file) are streamed, never loaded whole.
//!
//! Here: the member types, the shared per-image state and the one writing pass
//! ([`write_archive`]). The formats plan their members in `docker` (DockerLegacy,
//! DockerArchive), `docker25` and `oci` (OciArchive, and the OCI manifests
//! Docker25 shares); `blob` prepares layer blobs and `config` the image config.

mod blob;
mod config;
mod docker;
mod docker25;
mod oci;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde_json::{json, Value};
use tar::EntryType;

use blob::{prepare_layer, Blob, TempFile};
use config::{image_config, to_bytes};
use docker::docker_formats;
use docker25::docker25;
use oci::oci_archive;

use crate::layer::{layer_tar, Entry};
use crate::tarutil::{append_raw, LongNames, RawEntry};
use crate::{
    sha256_digest, BuildError, Compression, ConfigStyle, Format, ImageSpec, LayerSource, Tamper,
    WriteOptions,
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

//! Image-archive *writer*: builds real `docker save` / `oci-archive` tarballs in
//! code, for tests, the demo image and benchmarks.
//!
//! A crate of its own, independent of rcrun on purpose (it uses nothing of
//! rcrun, and the runtime library does not ship it), so the reader side of
//! rcrun can be tested against archives it did not produce itself, and so
//! hostile archives can be forged precisely (see [`Tamper`] and the JSON /
//! member hooks in [`WriteOptions`]). Its users: the `rcrun-mkimage` binary,
//! rcrun's tests and benchmarks.
//!
//! Layout:
//! - [`layer`]: layer tarballs from [`Entry`] lists or from a directory tree.
//! - [`archive`]: the four archive formats ([`write_archive`]).
//! - [`busybox`]: a minimal root filesystem from the host's static busybox.
//! - [`tarutil`]: low-level tar header writing without path sanitising.

pub mod archive;
pub mod busybox;
pub mod layer;
pub mod tarutil;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

pub use archive::{write_archive, write_archive_to_file, Doc, Member, MemberBody};
pub use busybox::{busybox_entries, busybox_rootfs, check_static_elf, BUSYBOX_PATH};
pub use layer::{
    layer_from_dir, layer_from_dir_to_file, layer_tar, split_top_level, write_entries,
    write_layer_from_dir, Entry, LongNames,
};

/// Errors name the operation and, where there is one, the path involved, so a
/// failing test says what it was doing rather than just "No such file".
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op}: {source}")]
    Stream {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("serialising {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("busybox at {path}: {reason}")]
    Busybox { path: PathBuf, reason: String },
    #[error("invalid image spec: {0}")]
    Spec(String),
}

impl BuildError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        BuildError::Io {
            op,
            path: path.into(),
            source,
        }
    }
    pub(crate) fn stream(op: &'static str, source: io::Error) -> Self {
        BuildError::Stream { op, source }
    }
}

/// Archive layout to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Docker <= 24 `docker save`: `manifest.json`, `repositories`,
    /// `<id>/{VERSION,json,layer.tar}` (regular files), `<config-hex>.json`.
    DockerLegacy,
    /// podman/skopeo `docker-archive`: `<diffid-hex>.tar` files at top level,
    /// `<id>/layer.tar` are symlinks to `../<diffid-hex>.tar`.
    DockerArchive,
    /// Docker >= 25 `docker save`: an OCI layout (`oci-layout`, `index.json`,
    /// `blobs/sha256/*`) plus a `manifest.json` whose paths point into blobs.
    Docker25,
    /// `oci-archive` (podman/skopeo/buildx): OCI layout only.
    OciArchive,
}

/// Layer blob compression (OCI formats; Docker legacy/archive layers are
/// always plain tar, so it is ignored there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

/// How `Config.config` is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigStyle {
    /// moby/docker: every field present, empty strings and `null`s included
    /// (`"WorkingDir": ""`, `"User": ""`, `"Entrypoint": null`, ...).
    Moby,
    /// buildah/OCI: only set fields.
    Oci,
}

/// The runtime part of an image config (`config.config`).
#[derive(Debug, Clone, Default)]
pub struct ConfigSpec {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `K=V` strings, in order.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// e.g. `"80/tcp"`.
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    /// Anything else, merged last into `config.config` (may override).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Where a layer's *uncompressed* tar comes from.
#[derive(Debug, Clone)]
pub enum LayerSource {
    Bytes(Vec<u8>),
    /// Streamed from disk: large layers never have to fit in memory.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct LayerSpec {
    pub source: LayerSource,
    pub created_by: String,
}

impl LayerSpec {
    pub fn bytes(tar: Vec<u8>, created_by: impl Into<String>) -> Self {
        LayerSpec {
            source: LayerSource::Bytes(tar),
            created_by: created_by.into(),
        }
    }
    pub fn file(path: impl Into<PathBuf>, created_by: impl Into<String>) -> Self {
        LayerSpec {
            source: LayerSource::File(path.into()),
            created_by: created_by.into(),
        }
    }
    /// Builds the layer tar from entries (in memory).
    pub fn entries(entries: &[Entry], created_by: impl Into<String>) -> Result<Self, BuildError> {
        Ok(Self::bytes(layer_tar(entries)?, created_by))
    }
}

/// An extra `history` record appended after the per-layer ones (e.g. the
/// `ENV`/`CMD` steps of a Dockerfile, which have `empty_layer: true`).
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub created_by: String,
    pub empty_layer: bool,
    pub comment: Option<String>,
}

impl HistoryEntry {
    pub fn empty(created_by: impl Into<String>) -> Self {
        HistoryEntry {
            created_by: created_by.into(),
            empty_layer: true,
            comment: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// `name:tag` references; a missing `:tag` becomes `:latest`. May be empty
    /// (untagged image).
    pub tags: Vec<String>,
    pub config: ConfigSpec,
    pub layers: Vec<LayerSpec>,
    /// Extra history entries appended after the layer ones.
    pub history: Vec<HistoryEntry>,
    /// Defaults to the host architecture (`amd64`, `arm64`, ...).
    pub architecture: Option<String>,
    /// Defaults to `linux`.
    pub os: Option<String>,
}

/// Forgeries for hostile-archive tests. Indices are `(image, layer)` positions
/// in the `images` slice / `ImageSpec::layers`. JSON forgeries are applied
/// *before* the document is hashed, so the rest of the digest chain stays
/// consistent and only the forged property is wrong.
#[derive(Debug, Clone)]
pub enum Tamper {
    /// Replace `rootfs.diff_ids[layer]` in the config with `value` (any
    /// string: a wrong hash, `sha256:../../etc/passwd`, ...).
    DiffId {
        image: usize,
        layer: usize,
        value: String,
    },
    /// Replace `rootfs.diff_ids[layer]` with a well-formed but wrong digest.
    WrongDiffId { image: usize, layer: usize },
    /// Store the layer blob under a well-formed but wrong digest name and point
    /// the manifest at it: the name no longer matches the content. (Docker
    /// legacy/archive: the manifest's layer path is unchanged, only Docker25
    /// and OCI carry blob digests.)
    WrongBlobDigest { image: usize, layer: usize },
    /// Set the OCI/Docker25 layer descriptor digest to `value` verbatim (blob
    /// member untouched), e.g. `sha256:../../etc/passwd`.
    LayerDigest {
        image: usize,
        layer: usize,
        value: String,
    },
    /// Set the OCI/Docker25 config descriptor digest to `value` verbatim.
    ConfigDigest { image: usize, value: String },
    /// Set the OCI/Docker25 layer descriptor size.
    LayerSize {
        image: usize,
        layer: usize,
        size: i64,
    },
    /// Set `manifest.json` `Layers[layer]` (Docker formats) to `value`, e.g.
    /// `../escape/layer.tar`.
    LayerPath {
        image: usize,
        layer: usize,
        value: String,
    },
    /// `manifest.json` `Config` / OCI manifest `config` becomes `null`.
    ConfigNull { image: usize },
    /// The manifest lists one more layer (a real blob) than the config's
    /// diff_ids.
    ExtraLayer { image: usize },
    /// The manifest omits `layer` (config still lists its diff_id).
    DropLayer { image: usize, layer: usize },
    /// The layer's blob member (`layer.tar`, `<diffid>.tar` or
    /// `blobs/sha256/<hex>`) is replaced by a symlink to `target`.
    BlobSymlink {
        image: usize,
        layer: usize,
        target: String,
    },
    /// The layer's blob member only contains its first `len` bytes (the tar
    /// header size matches, so the archive itself stays well-formed).
    TruncateLayer {
        image: usize,
        layer: usize,
        len: u64,
    },
    /// The layer's blob member is not written at all.
    OmitLayerBlob { image: usize, layer: usize },
    /// The whole output stream stops after `len` bytes (a cut download).
    TruncateArchive { len: u64 },
    /// Append an arbitrary member at the end.
    ExtraMember(Member),
}

/// Callback editing a JSON document before it is serialised and hashed.
pub type JsonHook = Box<dyn Fn(&Doc, &mut serde_json::Value)>;
/// Callback editing the final member list (reorder, drop, add, rename...).
pub type MembersHook = Box<dyn Fn(&mut Vec<Member>)>;

pub struct WriteOptions {
    /// Layer blob compression for `OciArchive` and `Docker25`.
    pub compression: Compression,
    /// `created` timestamps in configs/history. Fixed by default so archives
    /// are byte-for-byte reproducible.
    pub created: String,
    /// mtime of archive members (not of layer contents).
    pub mtime: u64,
    /// Defaults: Moby for DockerLegacy/Docker25, Oci for DockerArchive/OciArchive.
    pub config_style: Option<ConfigStyle>,
    /// Docker25: write `index.json` with `"manifests": null`, like Docker
    /// 25.0.0-25.0.2 did.
    pub docker25_null_manifests: bool,
    /// OciArchive: `index.json` points to an image index blob which points to
    /// the manifest(s), like buildx/containerd exports.
    pub oci_nested_index: bool,
    /// OciArchive: the image index also lists an attestation manifest
    /// (platform unknown/unknown) and a second platform (arm64, or amd64 on an
    /// arm64 host) whose manifest/config blobs are absent from the archive.
    pub oci_multi_platform: bool,
    /// Write `manifest.json`/`index.json` before the blobs instead of last.
    pub manifest_first: bool,
    /// Where compressed copies of on-disk layers go (default: the system
    /// temp dir, which may be RAM-backed: point this at real disk for big
    /// layers).
    pub temp_dir: Option<PathBuf>,
    pub tamper: Vec<Tamper>,
    pub edit_json: Option<JsonHook>,
    pub edit_members: Option<MembersHook>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compression: Compression::None,
            created: "1970-01-01T00:00:00Z".to_string(),
            mtime: 0,
            config_style: None,
            docker25_null_manifests: false,
            oci_nested_index: false,
            oci_multi_platform: false,
            manifest_first: false,
            temp_dir: None,
            tamper: Vec::new(),
            edit_json: None,
            edit_members: None,
        }
    }
}

impl std::fmt::Debug for WriteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOptions")
            .field("compression", &self.compression)
            .field("created", &self.created)
            .field("tamper", &self.tamper)
            .field("edit_json", &self.edit_json.is_some())
            .field("edit_members", &self.edit_members.is_some())
            .finish_non_exhaustive()
    }
}

/// OCI architecture name of the host (`GOARCH` spelling).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// `sha256:<hex>` of a byte slice.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `sha256:<hex>` and length of a stream.
pub fn sha256_reader(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), n))
}

/// Normalises a reference the way `docker save` records it: a missing tag
/// becomes `:latest` (a `:` before the last `/` is a registry port).
pub fn normalize_tag(tag: &str) -> String {
    let last = tag.rsplit('/').next().unwrap_or(tag);
    if last.contains(':') || last.contains('@') {
        tag.to_string()
    } else {
        format!("{tag}:latest")
    }
}

/// Splits `repo:tag` (after [`normalize_tag`]).
pub fn split_tag(tag: &str) -> (String, String) {
    let t = normalize_tag(tag);
    let slash = t.rfind('/').map(|i| i + 1).unwrap_or(0);
    match t[slash..].rfind(':') {
        Some(i) => (t[..slash + i].to_string(), t[slash + i + 1..].to_string()),
        None => (t, String::new()),
    }
}

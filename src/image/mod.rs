//! Stage 1, **image**: read an image archive, pick one image, and describe its config and layers.
//!
//! Four real-world layouts are recognised by their contents, never by the file name:
//!
//! | format | recognised by |
//! |---|---|
//! | legacy `docker save` (Docker ≤ 24) | `manifest.json`, `<id>/layer.tar` regular files |
//! | podman/skopeo `docker-archive` | `manifest.json`, layers are symlinks or `<diffid>.tar` |
//! | Docker ≥ 25 `docker save` | `oci-layout` + `index.json` **and** `manifest.json` |
//! | `oci-archive` | `oci-layout` + `index.json` (nested indexes, several platforms) |
//!
//! Nothing is trusted: member paths are resolved inside the archive, digests are parsed strictly,
//! and every layer is verified (blob digest and size, then the uncompressed diff_id read to the very
//! end of the stream) while it is being extracted.

pub mod archive;
pub mod cache;
pub mod compression;
pub mod digest;
mod formats;
pub mod layer;
pub mod platform;
pub mod reference;

pub use archive::Archive;
pub use digest::Digest;
pub use layer::{LayerStream, LayerVerified};

use oci_spec::image::ImageConfiguration;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot open image archive {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{archive}: not a tar archive ({detail})")]
    NotTar { archive: String, detail: String },
    #[error("{archive}: not an image archive: it has neither manifest.json (docker save) nor index.json + oci-layout (OCI)")]
    NotImage { archive: String },
    #[error("{archive}: member {member} is missing from the archive")]
    MissingMember { archive: String, member: String },
    #[error("{archive}: member {member} points outside the archive ({target})")]
    MemberEscapes {
        archive: String,
        member: String,
        target: String,
    },
    #[error("{archive}: {member}: {detail}")]
    Malformed {
        archive: String,
        member: String,
        detail: String,
    },
    #[error("{archive}: {member}: invalid JSON: {source}")]
    Json {
        archive: String,
        member: String,
        source: serde_json::Error,
    },
    #[error("{archive}: {member}: invalid digest {value:?} (expected sha256:<64 lowercase hex>)")]
    BadDigest {
        archive: String,
        member: String,
        value: String,
    },
    #[error("{archive} holds {count} images; choose one with --ref: {choices}")]
    Ambiguous {
        archive: String,
        count: usize,
        choices: String,
    },
    #[error("{archive}: {which} is an OCI artifact ({kind}), not a container image")]
    Artifact {
        archive: String,
        which: String,
        kind: String,
    },
    #[error("{archive} holds only OCI artifacts, no container image: {artifacts}")]
    OnlyArtifacts { archive: String, artifacts: String },
    #[error(
        "{archive}: the image is {image}, this host {host}: its programs cannot run here; {hint}"
    )]
    ForeignPlatform {
        archive: String,
        image: String,
        host: String,
        hint: String,
    },
    #[error("{0}")]
    BadPlatform(String),
    #[error("--ref {wanted}: invalid reference: {why}")]
    BadRef { wanted: String, why: String },
    #[error("{archive}: no image matches --ref {wanted}; available: {choices}")]
    NoSuchRef {
        archive: String,
        wanted: String,
        choices: String,
    },
    #[error("{archive}: no image for the platform {wanted} (available: {available}); choose one with --platform")]
    NoPlatform {
        archive: String,
        wanted: String,
        available: String,
    },
    #[error("{archive}: {manifest} lists {layers} layers but the config {config} lists {diff_ids} diff_ids (rootfs.diff_ids)")]
    LayerCount {
        archive: String,
        manifest: String,
        config: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error(
        "{archive}: layer {index} ({member}): {what} mismatch: expected {expected}, got {actual}"
    )]
    Mismatch {
        archive: String,
        index: usize,
        member: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{archive}: cannot read {member}: {source}")]
    Read {
        archive: String,
        member: String,
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Which layout the archive uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Format {
    #[serde(rename = "docker-save (legacy)")]
    DockerLegacy,
    #[serde(rename = "docker-archive (layer symlinks)")]
    DockerArchive,
    #[serde(rename = "docker-save (Docker 25+ OCI layout)")]
    DockerOci,
    #[serde(rename = "oci-archive")]
    OciArchive,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// How to choose one image from an archive holding several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Index(usize),
    Name(String),
}

impl ImageRef {
    pub fn parse(s: &str) -> ImageRef {
        match s.strip_prefix('@').and_then(|n| n.parse().ok()) {
            Some(n) => ImageRef::Index(n),
            None => ImageRef::Name(s.to_string()),
        }
    }
}

/// One layer of the selected image, as the archive describes it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerSource {
    /// Archive member holding the layer (after manifest indirection).
    pub member: String,
    /// Uncompressed content digest from the config's `rootfs.diff_ids`: the store key.
    pub diff_id: Digest,
    /// Digest and size the manifest promises for the blob as stored (OCI descriptors, or a
    /// `blobs/sha256/<hex>` path), checked while reading.
    pub blob: Option<(Digest, Option<u64>)>,
    pub media_type: Option<String>,
    /// Bytes of the member in the archive (compressed size).
    pub stored_size: u64,
    /// The history line (`created_by`) that produced this layer, if the config has one.
    pub created_by: Option<String>,
}

/// The selected image: everything later stages need, and nothing they would have to re-read.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Image {
    pub archive: String,
    pub format: Format,
    /// Position of this image in the archive (for `--ref @N`).
    pub index: usize,
    pub tags: Vec<String>,
    /// sha256 of the config blob: the image ID docker prints.
    pub id: Digest,
    /// The image config, less `rootfs.diff_ids` and `history`: those are in `layers`.
    pub config: ImageConfiguration,
    pub layers: Vec<LayerSource>,
    /// What rcrun accepted but a user should know (printed as `rcrun: warning:` on every run,
    /// the cached ones too).
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl Image {
    /// The container's process defaults, with docker's empty-string conventions normalised.
    pub fn entrypoint(&self) -> Vec<String> {
        self.config
            .config()
            .as_ref()
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default()
    }
    pub fn cmd(&self) -> Vec<String> {
        self.config
            .config()
            .as_ref()
            .and_then(|c| c.cmd().clone())
            .unwrap_or_default()
    }
    pub fn env(&self) -> Vec<String> {
        self.config
            .config()
            .as_ref()
            .and_then(|c| c.env().clone())
            .unwrap_or_default()
    }
    pub fn working_dir(&self) -> Option<String> {
        self.config
            .config()
            .as_ref()
            .and_then(|c| c.working_dir().clone())
            .filter(|w| !w.is_empty())
    }
    pub fn user(&self) -> Option<String> {
        self.config
            .config()
            .as_ref()
            .and_then(|c| c.user().clone())
            .filter(|u| !u.is_empty())
    }
    /// A short name for messages: the first tag, else the short id.
    pub fn name(&self) -> String {
        self.tags
            .first()
            .cloned()
            .unwrap_or_else(|| self.id.short().to_string())
    }
}

/// The host's platform in OCI terms (`GOARCH` names).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Reads the archive's manifests and returns the image chosen by `wanted` (or the only one),
/// with the manifest of a multi-platform index picked for `platform`.
pub fn select_for(
    archive: &Archive,
    wanted: Option<&ImageRef>,
    platform: &platform::Platform,
) -> Result<Image, ImageError> {
    let (format, candidates) = formats::candidates(archive)?;
    let name_of = |i: usize| {
        let c = &candidates[i];
        if c.tags.is_empty() {
            format!("@{i} <untagged>")
        } else {
            format!("@{i} {}", c.tags.join(", "))
        }
    };
    let images: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].artifact.is_none())
        .collect();
    let artifacts: Vec<String> = (0..candidates.len())
        .filter_map(|i| {
            Some(format!(
                "{} ({})",
                name_of(i),
                candidates[i].artifact.as_ref()?
            ))
        })
        .collect();
    // Images first; artifacts listed apart, since they cannot be run.
    let describe = || {
        let mut s = images
            .iter()
            .map(|&i| name_of(i))
            .collect::<Vec<_>>()
            .join("; ");
        if !artifacts.is_empty() {
            s.push_str(&format!(
                "{}OCI artifacts, not images: {}",
                if s.is_empty() { "" } else { "; " },
                artifacts.join("; ")
            ));
        }
        s
    };
    let index = match wanted {
        None if images.len() == 1 => images[0],
        None if images.is_empty() => {
            return Err(ImageError::OnlyArtifacts {
                archive: archive.display().to_string(),
                artifacts: artifacts.join("; "),
            })
        }
        None => {
            return Err(ImageError::Ambiguous {
                archive: archive.display().to_string(),
                count: images.len(),
                choices: describe(),
            })
        }
        Some(ImageRef::Index(i)) if *i < candidates.len() => *i,
        Some(ImageRef::Index(i)) => {
            return Err(ImageError::NoSuchRef {
                archive: archive.display().to_string(),
                wanted: format!("@{i}"),
                choices: describe(),
            })
        }
        Some(ImageRef::Name(name)) => {
            let hits: Vec<usize> = match reference::bare_id(name) {
                Some(id) => (0..candidates.len())
                    .filter(|&i| candidates[i].digests().iter().any(|d| d.starts_with(&id)))
                    .collect(),
                None => {
                    let wanted =
                        reference::Reference::parse(name).map_err(|why| ImageError::BadRef {
                            wanted: name.clone(),
                            why,
                        })?;
                    let digests: Vec<Vec<String>> =
                        candidates.iter().map(|c| c.digests()).collect();
                    (0..candidates.len())
                        .filter(|&i| {
                            candidates[i]
                                .tags
                                .iter()
                                .any(|t| wanted.matches(t, &digests[i]))
                        })
                        .collect()
                }
            };
            // A name shared by an image and an artifact means the image.
            let hits: Vec<usize> = if hits.iter().any(|&i| candidates[i].artifact.is_none()) {
                hits.into_iter()
                    .filter(|&i| candidates[i].artifact.is_none())
                    .collect()
            } else {
                hits
            };
            match hits.as_slice() {
                [] => {
                    return Err(ImageError::NoSuchRef {
                        archive: archive.display().to_string(),
                        wanted: name.clone(),
                        choices: describe(),
                    })
                }
                [one] => *one,
                [first, rest @ ..] => {
                    // containers/image takes the first entry of a name that an index lists
                    // twice; so does rcrun, and says so.
                    let others: Vec<String> = rest.iter().map(|i| format!("@{i}")).collect();
                    let mut image =
                        formats::load(archive, format, *first, &candidates[*first], platform)?;
                    image.warnings.push(format!(
                        "--ref {name} matches {} images of {} (@{first} and {}): using @{first}, the first, as containers/image does; --ref @N chooses another",
                        hits.len(),
                        archive.display(),
                        others.join(", ")
                    ));
                    return Ok(image);
                }
            }
        }
    };
    if let Some(kind) = &candidates[index].artifact {
        return Err(ImageError::Artifact {
            archive: archive.display().to_string(),
            which: name_of(index),
            kind: kind.clone(),
        });
    }
    formats::load(archive, format, index, &candidates[index], platform)
}

/// How many entries the archive lists, and the positions of its container images among them
/// (its OCI artifacts left out), for `inspect`.
pub fn image_positions(archive: &Archive) -> Result<(usize, Vec<usize>), ImageError> {
    let (_, candidates) = formats::candidates(archive)?;
    let images = (0..candidates.len())
        .filter(|&i| candidates[i].artifact.is_none())
        .collect();
    Ok((candidates.len(), images))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_refs() {
        assert_eq!(ImageRef::parse("@2"), ImageRef::Index(2));
        assert_eq!(
            ImageRef::parse("busybox:1"),
            ImageRef::Name("busybox:1".into())
        );
    }
}

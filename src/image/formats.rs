//! The manifest layouts: which images an archive holds, and how to load one of them.

use super::archive::{normalize_member, Archive};
use super::{Digest, Format, Image, ImageError, LayerSource};
use oci_spec::image::ImageConfiguration;
use serde::Deserialize;
use std::collections::HashMap;

/// One image the archive offers, before its config is read.
pub struct Candidate {
    pub tags: Vec<String>,
    source: Source,
    /// `Some(type)` for an OCI artifact (a Helm chart, an SBOM, a signature): a manifest whose
    /// `artifactType` is set or whose config is not an image config. Not a container image.
    pub artifact: Option<String>,
}

impl Candidate {
    /// The digests a reference may name this image by: the manifest's (an OCI index entry) or
    /// the image ID, the config's digest, where the config's file name carries it.
    pub fn digests(&self) -> Vec<String> {
        match &self.source {
            Source::Docker { config, .. } => normalize_member(config)
                .and_then(|c| digest_in_name(&c))
                .map(|d| d.to_string())
                .into_iter()
                .collect(),
            Source::Oci(desc) => vec![desc.digest.clone()],
        }
    }
}

enum Source {
    /// A `manifest.json` entry (docker save, docker-archive, Docker 25+).
    Docker { config: String, layers: Vec<String> },
    /// A top-level `index.json` descriptor (manifest or nested index).
    Oci(Descriptor),
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Option<Vec<String>>,
}

#[derive(Deserialize, Clone, Debug)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

#[derive(Deserialize, Clone, Debug)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// Both an OCI index and an OCI manifest; `manifests` may be `null` (Docker 25.0.0–25.0.2).
#[derive(Deserialize)]
struct OciDoc {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn json<T: for<'de> Deserialize<'de>>(
    archive: &Archive,
    member: &str,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
        archive: archive.display().to_string(),
        member: member.to_string(),
        source,
    })
}

fn malformed(archive: &Archive, member: &str, detail: impl Into<String>) -> ImageError {
    ImageError::Malformed {
        archive: archive.display().to_string(),
        member: member.to_string(),
        detail: detail.into(),
    }
}

pub fn candidates(archive: &Archive) -> Result<(Format, Vec<Candidate>), ImageError> {
    let oci = archive.has("index.json") && archive.has("oci-layout");
    let docker = archive.has("manifest.json");
    if docker {
        let bytes = archive.read_small("manifest.json")?;
        let entries: Option<Vec<DockerEntry>> = json(archive, "manifest.json", &bytes)?;
        let entries = entries.ok_or_else(|| {
            malformed(
                archive,
                "manifest.json",
                "is null, expected a list of images",
            )
        })?;
        if entries.is_empty() {
            return Err(malformed(archive, "manifest.json", "lists no images"));
        }
        let mut out = Vec::new();
        let mut symlinked = false;
        for e in entries {
            let layers = e.layers.unwrap_or_default();
            symlinked |= layers
                .iter()
                .any(|l| archive.is_symlink(l) || !l.ends_with("/layer.tar"));
            out.push(Candidate {
                tags: e.repo_tags.unwrap_or_default(),
                source: Source::Docker {
                    config: e.config,
                    layers,
                },
                artifact: None,
            });
        }
        let format = if oci {
            Format::DockerOci
        } else if symlinked {
            Format::DockerArchive
        } else {
            Format::DockerLegacy
        };
        return Ok((format, out));
    }
    if oci {
        let bytes = archive.read_small("index.json")?;
        let index: OciDoc = json(archive, "index.json", &bytes)?;
        let manifests = index.manifests.unwrap_or_default();
        let out: Vec<Candidate> = manifests
            .into_iter()
            .filter(|d| !is_attestation(d))
            .map(|d| {
                let annotations = d.annotations.clone().unwrap_or_default();
                let tags = [REF_NAME, CONTAINERD_NAME]
                    .iter()
                    .filter_map(|k| annotations.get(*k).cloned())
                    .fold(Vec::new(), |mut acc, t| {
                        if !acc.contains(&t) {
                            acc.push(t);
                        }
                        acc
                    });
                Candidate {
                    tags,
                    source: Source::Oci(d),
                    artifact: None,
                }
            })
            .collect();
        let mut out = out;
        for c in &mut out {
            if let Source::Oci(d) = &c.source {
                c.artifact = artifact_of(archive, d)?;
            }
        }
        if out.is_empty() {
            return Err(malformed(archive, "index.json", "lists no image manifests"));
        }
        return Ok((Format::OciArchive, out));
    }
    Err(ImageError::NotImage {
        archive: archive.display().to_string(),
    })
}

/// The config media types of container images (OCI image spec, Docker's image manifest v2.2).
const IMAGE_CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// What an index entry is when it is not a container image: its `artifactType`, or its config's
/// media type when that is not an image config (OCI image spec 1.1, "Guidelines for Artifact
/// Usage"). Indexes (multi-platform images) and manifests without a typed config are images.
fn artifact_of(archive: &Archive, d: &Descriptor) -> Result<Option<String>, ImageError> {
    if let Some(t) = &d.artifact_type {
        return Ok(Some(t.clone()));
    }
    if is_index(d) {
        return Ok(None);
    }
    let (member, bytes) = read_verified(archive, "index.json", d)?;
    let manifest: OciDoc = json(archive, &member, &bytes)?;
    Ok(manifest_artifact(&manifest))
}

fn manifest_artifact(manifest: &OciDoc) -> Option<String> {
    if let Some(t) = &manifest.artifact_type {
        return Some(t.clone());
    }
    let config_type = manifest.config.as_ref()?.media_type.as_deref()?;
    (!IMAGE_CONFIG_TYPES.contains(&config_type)).then(|| config_type.to_string())
}

/// Attestation manifests (buildkit provenance/SBOM) ride along in multi-platform indexes with
/// platform `unknown/unknown`; they are not images.
fn is_attestation(d: &Descriptor) -> bool {
    let by_annotation = d
        .annotations
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .is_some_and(|t| t == "attestation-manifest");
    let by_platform = d
        .platform
        .as_ref()
        .is_some_and(|p| p.os == "unknown" || p.architecture == "unknown");
    by_annotation || by_platform
}

fn is_index(d: &Descriptor) -> bool {
    matches!(
        d.media_type.as_deref(),
        Some("application/vnd.oci.image.index.v1+json")
            | Some("application/vnd.docker.distribution.manifest.list.v2+json")
    )
}

/// The archive member of a blob, from a digest that must be strictly valid.
fn blob_member(
    archive: &Archive,
    referrer: &str,
    digest: &str,
) -> Result<(String, Digest), ImageError> {
    let d = Digest::parse(digest).ok_or_else(|| ImageError::BadDigest {
        archive: archive.display().to_string(),
        member: referrer.to_string(),
        value: digest.to_string(),
    })?;
    Ok((format!("blobs/sha256/{}", d.hex()), d))
}

/// Reads a small blob and checks it against its descriptor's digest and size.
fn read_verified(
    archive: &Archive,
    referrer: &str,
    desc: &Descriptor,
) -> Result<(String, Vec<u8>), ImageError> {
    let (member, digest) = blob_member(archive, referrer, &desc.digest)?;
    let bytes = archive.read_small(&member)?;
    check_blob(archive, &member, &digest, desc.size, &bytes)?;
    Ok((member, bytes))
}

fn check_blob(
    archive: &Archive,
    member: &str,
    digest: &Digest,
    size: Option<u64>,
    bytes: &[u8],
) -> Result<(), ImageError> {
    if let Some(size) = size {
        if size != bytes.len() as u64 {
            return Err(malformed(
                archive,
                member,
                format!(
                    "size mismatch: descriptor says {size} bytes, blob has {}",
                    bytes.len()
                ),
            ));
        }
    }
    let actual = Digest::of_bytes(bytes);
    if &actual != digest {
        return Err(malformed(
            archive,
            member,
            format!("digest mismatch: expected {digest}, content is {actual}"),
        ));
    }
    Ok(())
}

/// Loads candidate `index`; `platform` picks the manifest of a multi-platform index.
pub fn load(
    archive: &Archive,
    format: Format,
    index: usize,
    cand: &Candidate,
    platform: &super::platform::Platform,
) -> Result<Image, ImageError> {
    match &cand.source {
        Source::Docker { config, layers } => {
            load_docker(archive, format, index, cand, config, layers)
        }
        Source::Oci(desc) => load_oci(archive, index, cand, desc, platform),
    }
}

fn load_docker(
    archive: &Archive,
    format: Format,
    index: usize,
    cand: &Candidate,
    config_member: &str,
    layer_members: &[String],
) -> Result<Image, ImageError> {
    let config_norm = manifest_reference(archive, config_member)?;
    let bytes = archive.read_small(&config_norm)?;
    let id = Digest::of_bytes(&bytes);
    // Docker names the config after its own digest (`<hex>.json`, or `blobs/sha256/<hex>`). In a
    // Docker 25 save that name is a content address (an OCI blob) and the content must keep its
    // promise. In the legacy layout nobody checks it: `docker load`, go-containerregistry and
    // skopeo take a config edited after the save (the image ID is computed from the content,
    // and every layer is still verified against the config's diff_ids), so rcrun does too, and
    // says which digest the content has.
    let mut warnings = Vec::new();
    if let Some(promised) = digest_in_name(&config_norm) {
        if format == Format::DockerOci || config_norm.starts_with("blobs/") || promised == id {
            check_blob(archive, &config_norm, &promised, None, &bytes)?;
        } else {
            warnings.push(format!(
                "{}: the config {config_norm} is named after {promised} but its content is {id} (edited after the save?); accepted as docker load accepts it: in this layout the name is not a checked address, and every layer is still verified against the config's diff_ids",
                archive.display()
            ));
        }
    }
    let config = parse_config(archive, &config_norm, &bytes)?;
    let mut sources = Vec::new();
    for member in layer_members {
        let norm = manifest_reference(archive, member)?;
        let blob = norm
            .strip_prefix("blobs/sha256/")
            .map(|hex| {
                Digest::from_hex(hex).ok_or_else(|| ImageError::BadDigest {
                    archive: archive.display().to_string(),
                    member: "manifest.json".into(),
                    value: member.clone(),
                })
            })
            .transpose()?;
        let stored_size = archive.member_size(&norm)?;
        sources.push((norm, blob.map(|b| (b, None)), None, stored_size));
    }
    let mut image = finish(
        archive,
        format,
        index,
        cand,
        id,
        config,
        "manifest.json",
        &config_norm,
        sources,
    )?;
    image.warnings = warnings;
    Ok(image)
}

/// A `Config` or `Layers` path from `manifest.json`, as an archive member name. Paths are
/// relative to the archive root: one climbing out with `..` or starting with `/` is refused by
/// name rather than looked up (an absolute path would otherwise be silently re-read as relative,
/// and fail later as a confusing "missing member").
fn manifest_reference(archive: &Archive, reference: &str) -> Result<String, ImageError> {
    let escapes = || ImageError::MemberEscapes {
        archive: archive.display().to_string(),
        member: "manifest.json".into(),
        target: reference.to_string(),
    };
    if reference.starts_with('/') {
        return Err(escapes());
    }
    normalize_member(reference).ok_or_else(escapes)
}

fn digest_in_name(member: &str) -> Option<Digest> {
    let file = member.rsplit('/').next()?;
    let hex = file.strip_suffix(".json").unwrap_or(file);
    Digest::from_hex(hex)
}

fn parse_config(
    archive: &Archive,
    member: &str,
    bytes: &[u8],
) -> Result<ImageConfiguration, ImageError> {
    let v: serde_json::Value = json(archive, member, bytes)?;
    if !v.is_object() {
        return Err(malformed(
            archive,
            member,
            "image config is not a JSON object",
        ));
    }
    serde_json::from_value(v).map_err(|source| ImageError::Json {
        archive: archive.display().to_string(),
        member: member.to_string(),
        source,
    })
}

fn load_oci(
    archive: &Archive,
    index: usize,
    cand: &Candidate,
    top: &Descriptor,
    wanted: &super::platform::Platform,
) -> Result<Image, ImageError> {
    let mut desc = top.clone();
    let mut referrer = "index.json".to_string();
    // Follow nested indexes down to this platform's manifest (bounded: a cycle cannot recurse).
    for _ in 0..8 {
        if !is_index(&desc) {
            break;
        }
        let (member, bytes) = read_verified(archive, &referrer, &desc)?;
        let nested: OciDoc = json(archive, &member, &bytes)?;
        let children: Vec<Descriptor> = nested
            .manifests
            .unwrap_or_default()
            .into_iter()
            .filter(|d| !is_attestation(d))
            .collect();
        let pick = children
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| wanted.accepts(&p.os, &p.architecture, p.variant.as_deref()))
            })
            .or_else(|| children.iter().find(|d| d.platform.is_none()))
            .cloned();
        desc = pick.ok_or_else(|| ImageError::NoPlatform {
            archive: archive.display().to_string(),
            wanted: wanted.to_string(),
            available: children
                .iter()
                .filter_map(|d| {
                    d.platform.as_ref().map(|p| match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                })
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        referrer = member;
    }
    if is_index(&desc) {
        return Err(malformed(
            archive,
            &referrer,
            "indexes nested more than 8 deep",
        ));
    }
    let (manifest_member, bytes) = read_verified(archive, &referrer, &desc)?;
    let manifest: OciDoc = json(archive, &manifest_member, &bytes)?;
    if manifest
        .media_type
        .as_deref()
        .is_some_and(|m| m.contains("index") || m.contains("manifest.list"))
    {
        return Err(malformed(
            archive,
            &manifest_member,
            "expected an image manifest, found an index",
        ));
    }
    if let Some(kind) = manifest_artifact(&manifest) {
        return Err(ImageError::Artifact {
            archive: archive.display().to_string(),
            which: format!("@{index}"),
            kind,
        });
    }
    let config_desc = manifest
        .config
        .ok_or_else(|| malformed(archive, &manifest_member, "manifest has no config"))?;
    let (config_member, config_bytes) = read_verified(archive, &manifest_member, &config_desc)?;
    let id = Digest::of_bytes(&config_bytes);
    let config = parse_config(archive, &config_member, &config_bytes)?;
    let mut sources = Vec::new();
    for layer in manifest.layers.unwrap_or_default() {
        let (member, digest) = blob_member(archive, &manifest_member, &layer.digest)?;
        let stored_size = archive.member_size(&member)?;
        if let Some(size) = layer.size {
            if size != stored_size {
                return Err(malformed(
                    archive,
                    &member,
                    format!("size mismatch: manifest says {size} bytes, blob has {stored_size}"),
                ));
            }
        }
        sources.push((
            member,
            Some((digest, layer.size)),
            layer.media_type,
            stored_size,
        ));
    }
    finish(
        archive,
        Format::OciArchive,
        index,
        cand,
        id,
        config,
        &manifest_member,
        &config_member,
        sources,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    archive: &Archive,
    format: Format,
    index: usize,
    cand: &Candidate,
    id: Digest,
    config: ImageConfiguration,
    manifest_member: &str,
    config_member: &str,
    sources: Vec<(String, Option<(Digest, Option<u64>)>, Option<String>, u64)>,
) -> Result<Image, ImageError> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != sources.len() {
        return Err(ImageError::LayerCount {
            archive: archive.display().to_string(),
            manifest: manifest_member.to_string(),
            config: config_member.to_string(),
            layers: sources.len(),
            diff_ids: diff_ids.len(),
        });
    }
    // History entries marked empty_layer (ENV, CMD, ...) made no layer; the rest map 1:1.
    let created_by: Vec<Option<String>> = config
        .history()
        .as_ref()
        .map(|h| {
            h.iter()
                .filter(|e| !e.empty_layer().unwrap_or(false))
                .map(|e| e.created_by().clone())
                .collect()
        })
        .unwrap_or_default();
    let mut layers = Vec::new();
    for (i, (member, blob, media_type, stored_size)) in sources.into_iter().enumerate() {
        let diff_id = Digest::parse(&diff_ids[i]).ok_or_else(|| ImageError::BadDigest {
            archive: archive.display().to_string(),
            member: config_member.to_string(),
            value: diff_ids[i].clone(),
        })?;
        layers.push(LayerSource {
            member,
            diff_id,
            blob,
            media_type,
            stored_size,
            created_by: created_by.get(i).cloned().flatten(),
        });
    }
    // Both lists now live in `layers` (diff_id, created_by), and nothing reads them from the
    // config again. Dropped, so the image cache entry of a 200-layer image is a third smaller
    // and parsed that much faster on every warm start.
    let mut config = config;
    config.rootfs_mut().diff_ids_mut().clear();
    config.set_history(None);
    Ok(Image {
        archive: archive.display().to_string(),
        format,
        index,
        tags: cand.tags.clone(),
        id,
        config,
        layers,
        warnings: Vec::new(),
    })
}

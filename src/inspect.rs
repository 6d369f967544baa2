//! `rcrun inspect`: what someone untarring the archive by hand would dig out of manifest.json,
//! the config and each layer tar — at a glance, or as one JSON document.

use crate::image::{Archive, Image, ImageError, LayerStream};
use crate::layers_view::human_bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;

#[derive(Debug, Serialize)]
pub struct Report {
    pub archive: String,
    pub format: String,
    pub images_in_archive: usize,
    pub index: usize,
    pub tags: Vec<String>,
    pub id: String,
    pub platform: String,
    pub created: Option<String>,
    pub config: ConfigReport,
    pub layers: Vec<LayerReport>,
}

#[derive(Debug, Serialize)]
pub struct ConfigReport {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct LayerReport {
    pub index: usize,
    pub member: String,
    pub diff_id: String,
    pub compression: String,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<crate::layers_view::LayerChanges>,
}

/// Reads every layer (verifying it) and counts what it holds.
pub fn build(
    archive: &Archive,
    image: &Image,
    images_in_archive: usize,
    with_changes: bool,
) -> Result<Report, ImageError> {
    let cfg = image.config.config().as_ref();
    let mut layers = Vec::new();
    let mut lower_paths = std::collections::HashSet::new();
    for (i, l) in image.layers.iter().enumerate() {
        let stream = LayerStream::open(archive, l, i)?;
        let compression = format!("{:?}", stream.compression()).to_lowercase();
        let mut tar = tar::Archive::new(stream);
        let mut entries = 0u64;
        let mut whiteouts = 0u64;
        let mut opaque = 0u64;
        let mut changes = with_changes.then(crate::layers_view::LayerChanges::default);
        let read_err = |source: std::io::Error| ImageError::Read {
            archive: archive.display().to_string(),
            member: l.member.clone(),
            source,
        };
        for entry in tar.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            entries += 1;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            if base == ".wh..wh..opq" {
                opaque += 1;
            } else if base.starts_with(".wh.") && !base.starts_with(".wh..wh.") {
                whiteouts += 1;
            }
            if let Some(c) = changes.as_mut() {
                c.record(&path, entry.header().entry_type(), entry.size());
            }
            // Skip the data; the digest still sees it.
            std::io::copy(&mut entry.by_ref().take(u64::MAX), &mut std::io::sink())
                .map_err(read_err)?;
        }
        let verified = tar.into_inner().finish()?;
        if let Some(c) = changes.as_mut() {
            c.resolve(&mut lower_paths);
        }
        layers.push(LayerReport {
            index: i + 1,
            member: l.member.clone(),
            diff_id: l.diff_id.to_string(),
            compression,
            compressed_size: verified.stored_size,
            uncompressed_size: verified.uncompressed_size,
            entries,
            whiteouts,
            opaque_dirs: opaque,
            created_by: l.created_by.clone(),
            changes,
        });
    }
    let platform = format!(
        "{}/{}",
        serde_json::to_value(image.config.os())
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        serde_json::to_value(image.config.architecture())
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    );
    Ok(Report {
        archive: archive.display().to_string(),
        format: match archive.compression() {
            crate::image::compression::ArchiveCompression::None => image.format.to_string(),
            c => format!(
                "{}, the whole archive {}-compressed",
                image.format,
                c.name()
            ),
        },
        images_in_archive,
        index: image.index,
        tags: image.tags.clone(),
        id: image.id.to_string(),
        platform,
        created: image.config.created().clone(),
        config: ConfigReport {
            entrypoint: image.entrypoint(),
            cmd: image.cmd(),
            env: image.env(),
            working_dir: image.working_dir(),
            user: image.user(),
            exposed_ports: cfg
                .and_then(|c| c.exposed_ports().clone())
                .unwrap_or_default(),
            labels: cfg
                .and_then(|c| c.labels().clone())
                .map(|m| m.into_iter().collect())
                .unwrap_or_default(),
        },
        layers,
    })
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        serde_json::to_string(v).unwrap_or_default()
    }
}

pub fn print_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "Archive:     {}", r.archive);
    let _ = writeln!(o, "Format:      {}", r.format);
    let tags = if r.tags.is_empty() {
        "<untagged>".to_string()
    } else {
        r.tags.join(", ")
    };
    let _ = writeln!(
        o,
        "Image:       @{} {}   ({} image(s) in archive)",
        r.index, tags, r.images_in_archive
    );
    let _ = writeln!(o, "ID:          {}", r.id);
    let _ = writeln!(o, "Platform:    {}", r.platform);
    if let Some(c) = &r.created {
        let _ = writeln!(o, "Created:     {c}");
    }
    let c = &r.config;
    let _ = writeln!(o, "Config:");
    let _ = writeln!(o, "  Entrypoint:   {}", list(&c.entrypoint));
    let _ = writeln!(o, "  Cmd:          {}", list(&c.cmd));
    if c.env.is_empty() {
        let _ = writeln!(o, "  Env:          -");
    } else {
        for (i, e) in c.env.iter().enumerate() {
            let _ = writeln!(
                o,
                "  {}{e}",
                if i == 0 {
                    "Env:          "
                } else {
                    "              "
                }
            );
        }
    }
    let _ = writeln!(
        o,
        "  WorkingDir:   {}",
        c.working_dir.as_deref().unwrap_or("-")
    );
    let _ = writeln!(o, "  User:         {}", c.user.as_deref().unwrap_or("-"));
    let _ = writeln!(
        o,
        "  ExposedPorts: {}",
        if c.exposed_ports.is_empty() {
            "-".to_string()
        } else {
            c.exposed_ports.join(" ")
        }
    );
    if c.labels.is_empty() {
        let _ = writeln!(o, "  Labels:       -");
    } else {
        for (i, (k, v)) in c.labels.iter().enumerate() {
            let _ = writeln!(
                o,
                "  {}{k}={v}",
                if i == 0 {
                    "Labels:       "
                } else {
                    "              "
                }
            );
        }
    }
    let _ = writeln!(o, "Layers (bottom to top):");
    let _ = writeln!(
        o,
        "  {:>3}  {:<19}  {:>5}  {:>10}  {:>12}  {:>7}  {:>9}  created by",
        "#", "diff_id", "comp", "stored", "uncompressed", "entries", "whiteouts"
    );
    for l in &r.layers {
        let created = l.created_by.as_deref().unwrap_or("-");
        let created: String = created.chars().take(70).collect();
        let _ = writeln!(
            o,
            "  {:>3}  {:<19}  {:>5}  {:>10}  {:>12}  {:>7}  {:>9}  {}",
            l.index,
            &l.diff_id[..19],
            l.compression,
            human_bytes(l.compressed_size),
            human_bytes(l.uncompressed_size),
            l.entries,
            l.whiteouts + l.opaque_dirs,
            created
        );
        if let Some(ch) = &l.changes {
            o.push_str(&ch.render());
        }
    }
    o
}

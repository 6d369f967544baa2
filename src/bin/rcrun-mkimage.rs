//! rcrun-mkimage: builds image archives (demo image, benchmarks, tests).
//!
//!   rcrun-mkimage --busybox -o busybox.tar
//!   rcrun-mkimage --rootfs DIR --layers 3 --format oci --compression zstd -o img.tar
//!   rcrun-mkimage --busybox --many-layers 500 -o many.tar

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use rcrun_imagebuild::{
    busybox_entries, layer_from_dir_to_file, layer_tar, split_top_level, write_archive_to_file,
    BuildError, Compression, ConfigSpec, Entry, Format, ImageSpec, LayerSpec, WriteOptions,
    BUSYBOX_PATH,
};

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// Docker <= 24 `docker save`.
    Docker,
    /// podman/skopeo docker-archive (layer.tar symlinks).
    DockerArchive,
    /// Docker >= 25 `docker save` (OCI layout + manifest.json).
    Docker25,
    /// oci-archive.
    Oci,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    None,
    Gzip,
    Zstd,
}

#[derive(Parser)]
#[command(
    name = "rcrun-mkimage",
    about = "Build a docker-save / oci-archive image tarball"
)]
struct Args {
    /// Root filesystem directory to pack.
    #[arg(long, conflicts_with = "busybox", required_unless_present = "busybox")]
    rootfs: Option<PathBuf>,
    /// Use a minimal rootfs made from the host's static /bin/busybox.
    #[arg(long)]
    busybox: bool,
    /// Split the tree into N layers by top-level entries (sorted, contiguous).
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Image with N layers in total: the rootfs as one layer, then N-1 small
    /// layers each adding /layers/<i> (scale tests).
    #[arg(long, conflicts_with = "layers")]
    many_layers: Option<usize>,
    /// Image reference (repeatable). Default busybox:latest / rcrun/image:latest.
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[arg(long, value_enum, default_value = "docker")]
    format: FormatArg,
    /// Layer compression (docker25 and oci only).
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
    /// JSON array, e.g. '["/bin/sh","-c"]'.
    #[arg(long)]
    entrypoint: Option<String>,
    /// JSON array, e.g. '["echo","hi"]'. Default for --busybox: ["/bin/sh"].
    #[arg(long)]
    cmd: Option<String>,
    /// K=V (repeatable). PATH defaults to the usual list.
    #[arg(long = "env")]
    env: Vec<String>,
    #[arg(long)]
    workdir: Option<String>,
    #[arg(long)]
    user: Option<String>,
    /// K=V (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// e.g. 8080/tcp (repeatable).
    #[arg(long = "expose")]
    expose: Vec<String>,
    /// OCI: index.json -> image index -> manifest.
    #[arg(long)]
    nested_index: bool,
    /// OCI: add an attestation manifest and an absent second platform.
    #[arg(long)]
    multi_platform: bool,
    /// Output archive.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn json_array(flag: &str, s: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(s)
        .map_err(|e| format!("--{flag} must be a JSON array of strings ({e}): {s}"))
}

/// Top-level component of an entry path (busybox entries are all Dir/File/Symlink).
fn top(e: &Entry) -> String {
    let p = match e {
        Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => {
            path.as_str()
        }
        _ => "",
    };
    p.split('/').next().unwrap_or("").to_string()
}

/// Splits entries (already in path order) into `n` layers by top-level name,
/// with the same contiguous near-equal split as `split_top_level`.
fn split_entries(entries: Vec<Entry>, n: usize) -> Vec<Vec<Entry>> {
    let mut groups: Vec<(String, Vec<Entry>)> = Vec::new();
    for e in entries {
        let t = top(&e);
        match groups.last_mut() {
            Some((name, v)) if *name == t => v.push(e),
            _ => groups.push((t, vec![e])),
        }
    }
    let n = n.max(1);
    let (q, r) = (groups.len() / n, groups.len() % n);
    let mut it = groups.into_iter();
    (0..n)
        .map(|i| {
            it.by_ref()
                .take(q + usize::from(i < r))
                .flat_map(|(_, v)| v)
                .collect()
        })
        .collect()
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(a: Args) -> Result<(), String> {
    let err = |e: BuildError| e.to_string();
    let nlayers = if a.many_layers.is_some() {
        1
    } else {
        a.layers.max(1)
    };
    // Layer files go next to the output (not /tmp, which may be RAM-backed).
    let out_dir = a
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = TempDir(out_dir.join(format!(".rcrun-mkimage-{}", std::process::id())));
    fs::create_dir_all(&tmp.0).map_err(|e| format!("creating {}: {e}", tmp.0.display()))?;

    let mut layers = Vec::new();
    if a.busybox {
        let entries = busybox_entries(Path::new(BUSYBOX_PATH)).map_err(err)?;
        for (i, part) in split_entries(entries, nlayers).into_iter().enumerate() {
            let tar = layer_tar(&part).map_err(err)?;
            layers.push(LayerSpec::bytes(
                tar,
                format!("rcrun-mkimage busybox part {}", i + 1),
            ));
        }
    } else {
        let root = a
            .rootfs
            .as_ref()
            .expect("clap enforces --rootfs or --busybox");
        let parts: Vec<Option<Vec<OsString>>> = if nlayers == 1 {
            vec![None]
        } else {
            split_top_level(root, nlayers)
                .map_err(err)?
                .into_iter()
                .map(Some)
                .collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let p = tmp.0.join(format!("layer{i}.tar"));
            layer_from_dir_to_file(root, &p, part.as_deref()).map_err(err)?;
            layers.push(LayerSpec::file(
                p,
                format!("rcrun-mkimage {} part {}", root.display(), i + 1),
            ));
        }
    }
    if let Some(n) = a.many_layers {
        for i in 1..n.max(1) {
            let tar = layer_tar(&[
                Entry::dir("layers", 0o755),
                Entry::file(format!("layers/{i}"), 0o644, format!("{i}\n")),
            ])
            .map_err(err)?;
            layers.push(LayerSpec::bytes(
                tar,
                format!("/bin/sh -c echo {i} > /layers/{i}"),
            ));
        }
    }

    let mut env = a.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cmd = match &a.cmd {
        Some(c) => Some(json_array("cmd", c)?),
        None if a.busybox && a.entrypoint.is_none() => Some(vec!["/bin/sh".to_string()]),
        None => None,
    };
    let kv = |v: &[String], flag: &str| -> Result<_, String> {
        v.iter()
            .map(|s| {
                s.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or(format!("--{flag} wants K=V: {s}"))
            })
            .collect()
    };
    let config = ConfigSpec {
        entrypoint: a
            .entrypoint
            .as_deref()
            .map(|e| json_array("entrypoint", e))
            .transpose()?,
        cmd,
        env,
        working_dir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        exposed_ports: a.expose.clone(),
        labels: kv(&a.labels, "label")?,
        ..Default::default()
    };
    let tags = if !a.tags.is_empty() {
        a.tags.clone()
    } else if a.busybox {
        vec!["busybox:latest".to_string()]
    } else {
        vec!["rcrun/image:latest".to_string()]
    };
    let image = ImageSpec {
        tags,
        config,
        layers,
        ..Default::default()
    };
    let format = match a.format {
        FormatArg::Docker => Format::DockerLegacy,
        FormatArg::DockerArchive => Format::DockerArchive,
        FormatArg::Docker25 => Format::Docker25,
        FormatArg::Oci => Format::OciArchive,
    };
    let opts = WriteOptions {
        compression: match a.compression {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
        },
        oci_nested_index: a.nested_index,
        oci_multi_platform: a.multi_platform,
        temp_dir: Some(tmp.0.clone()),
        ..Default::default()
    };
    write_archive_to_file(&a.output, &[image], format, &opts).map_err(err)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcrun-mkimage: {e}");
            ExitCode::FAILURE
        }
    }
}

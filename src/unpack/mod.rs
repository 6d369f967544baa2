//! Stage 2, **unpack**: every layer of the image extracted once into its own store directory.
//!
//! Install protocol per layer (crash- and race-safe):
//! 1. present in `layers/<owners>/<hex>`? done (a complete layer is only ever created by rename);
//! 2. take `locks/<owners>-<hex>.lock` (blocking: a concurrent rcrun extracting the same layer
//!    finishes first, and we then find it present);
//! 3. extract into `tmp/<owners>-<hex>.<pid>.<nonce>/fs`, read the stream to its end and verify
//!    the blob digest/size and the diff_id; write `layer.json`;
//! 4. `syncfs` once, then `rename(2)` into place — atomic on one file system;
//! 5. on any error the temp dir is removed; a killed process leaves a temp dir whose lock is free,
//!    which the next rcrun removes ([`Store::reclaim_tmp`]).
//!
//! Layers are independent directories, so missing layers are extracted in parallel.

pub mod extract;
pub mod flatten;
pub mod store;

pub use extract::{ExtractError, LayerStats};
pub use store::{OwnerMode, Store, StoreError};

use crate::image::{Archive, Digest, Image, ImageError, LayerStream, LayerVerified};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{archive}: layer {index} ({member}): {source}")]
    Extract {
        archive: String,
        index: usize,
        member: String,
        source: ExtractError,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unpack target {0} exists and is not empty (it must be empty or absent)")]
    TargetNotEmpty(PathBuf),
    #[error("flattening layer {layer} into {path}: {source}")]
    Flatten {
        layer: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the store holds for one layer of the image.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerInfo {
    pub diff_id: String,
    pub compression: String,
    pub uncompressed_size: u64,
    pub stored_size: u64,
    pub stats: LayerStats,
}

/// One layer ready for mounting.
#[derive(Debug, Clone)]
pub struct ReadyLayer {
    pub diff_id: Digest,
    /// `layers/<owners>/<hex>/fs`: the overlay lower dir.
    pub dir: PathBuf,
    /// False when this run extracted it, true when it was already in the store.
    pub found: bool,
    pub took: Duration,
    /// Present when this run extracted it.
    pub info: Option<LayerInfo>,
}

/// Paths of the image's layers in the store, bottom first, if all are present (the warm path:
/// no archive read beyond the manifests).
pub fn present_layers(store: &Store, mode: &OwnerMode, image: &Image) -> Option<Vec<ReadyLayer>> {
    image
        .layers
        .iter()
        .map(|l| {
            let path = store.layer_path(mode, &l.diff_id);
            path.is_dir().then(|| ReadyLayer {
                diff_id: l.diff_id.clone(),
                dir: path.join("fs"),
                found: true,
                took: Duration::ZERO,
                info: None,
            })
        })
        .collect()
}

/// Reads `layer.json` of a stored layer.
pub fn stored_info(store: &Store, mode: &OwnerMode, diff_id: &Digest) -> Option<LayerInfo> {
    let bytes = std::fs::read(store.layer_path(mode, diff_id).join("layer.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Makes sure every layer of `image` is in the store; extracts the missing ones (in parallel).
pub fn ensure_layers(
    store: &Store,
    archive: &Archive,
    image: &Image,
    mode: &OwnerMode,
    progress: bool,
) -> Result<Vec<ReadyLayer>, UnpackError> {
    let n = image.layers.len();
    let mut ready: Vec<Option<ReadyLayer>> = vec![None; n];
    // Unique missing diff_ids (an image may repeat a layer, e.g. an empty one).
    let mut todo: Vec<usize> = Vec::new();
    for (i, l) in image.layers.iter().enumerate() {
        let path = store.layer_path(mode, &l.diff_id);
        if path.is_dir() {
            ready[i] = Some(ReadyLayer {
                diff_id: l.diff_id.clone(),
                dir: path.join("fs"),
                found: true,
                took: Duration::ZERO,
                info: None,
            });
        } else if !todo.iter().any(|&j| image.layers[j].diff_id == l.diff_id) {
            todo.push(i);
        }
    }
    if !todo.is_empty() {
        std::fs::create_dir_all(store.layers_dir(mode)).map_err(|source| UnpackError::Io {
            op: "create",
            path: store.layers_dir(mode),
            source,
        })?;
        let bar = progress_bar(progress, image, &todo);
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<(usize, Result<ReadyLayer, UnpackError>)>> = Mutex::new(Vec::new());
        let workers = std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(2)
            .min(todo.len())
            .max(1);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = todo.get(k) else { break };
                    let r = install_layer(store, archive, image, i, mode);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Some(b) = &bar {
                        b.inc(image.layers[i].stored_size);
                        b.set_message(format!("layer {}/{}", k + 1, todo.len()));
                    }
                    results
                        .lock()
                        .expect("no panics while holding")
                        .push((i, r));
                });
            }
        });
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let mut results = results.into_inner().expect("threads joined");
        results.sort_by_key(|(i, _)| *i);
        for (i, r) in results {
            ready[i] = Some(r?);
        }
        // Fill repeats of a layer extracted above.
        for i in 0..n {
            if ready[i].is_none() {
                let l = &image.layers[i];
                let path = store.layer_path(mode, &l.diff_id);
                ready[i] = Some(ReadyLayer {
                    diff_id: l.diff_id.clone(),
                    dir: path.join("fs"),
                    found: true,
                    took: Duration::ZERO,
                    info: None,
                });
            }
        }
    }
    Ok(ready
        .into_iter()
        .map(|r| r.expect("every layer resolved"))
        .collect())
}

fn progress_bar(enabled: bool, image: &Image, todo: &[usize]) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = todo.iter().map(|&i| image.layers[i].stored_size).sum();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:12} [{bar:30}] {bytes}/{total_bytes} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("layer 0/{}", todo.len()));
    Some(bar)
}

/// Extracts, verifies and installs layer `i` (steps 2–5 of the module docs).
fn install_layer(
    store: &Store,
    archive: &Archive,
    image: &Image,
    i: usize,
    mode: &OwnerMode,
) -> Result<ReadyLayer, UnpackError> {
    let started = Instant::now();
    let layer = &image.layers[i];
    let final_path = store.layer_path(mode, &layer.diff_id);
    let lock_path = store.lock_path(mode, &layer.diff_id);
    let io = |op: &'static str, path: &PathBuf| {
        let path = path.clone();
        move |source| UnpackError::Io { op, path, source }
    };
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("open lock", &lock_path))?;
    store::try_lock(&lock, true).map_err(io("lock", &lock_path))?;
    if final_path.is_dir() {
        // Someone else installed it while we waited for the lock.
        return Ok(ReadyLayer {
            diff_id: layer.diff_id.clone(),
            dir: final_path.join("fs"),
            found: true,
            took: started.elapsed(),
            info: None,
        });
    }
    let nonce = started.elapsed().subsec_nanos() ^ (std::process::id() << 8);
    let tmp = store.tmp_dir().join(format!(
        "{}-{}.{}.{:x}",
        mode.tag(),
        layer.diff_id.hex(),
        std::process::id(),
        nonce
    ));
    let result = extract_into(archive, image, i, mode, &tmp);
    let result = result.and_then(|info| {
        let json = serde_json::to_vec_pretty(&info).expect("serializable");
        std::fs::write(tmp.join("layer.json"), json)
            .map_err(io("write", &tmp.join("layer.json")))?;
        if let Ok(dir) = std::fs::File::open(&tmp) {
            use std::os::fd::AsFd;
            let _ = crate::sys::fs::syncfs(dir.as_fd());
        }
        std::fs::rename(&tmp, &final_path).map_err(io("rename into place", &final_path))?;
        Ok(info)
    });
    match result {
        Ok(info) => Ok(ReadyLayer {
            diff_id: layer.diff_id.clone(),
            dir: final_path.join("fs"),
            found: false,
            took: started.elapsed(),
            info: Some(info),
        }),
        Err(e) => {
            let _ = crate::sys::fs::remove_tree(&tmp);
            Err(e)
        }
    }
}

fn extract_into(
    archive: &Archive,
    image: &Image,
    i: usize,
    mode: &OwnerMode,
    tmp: &PathBuf,
) -> Result<LayerInfo, UnpackError> {
    use std::os::unix::fs::DirBuilderExt;
    let layer = &image.layers[i];
    let fs_dir = tmp.join("fs");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(tmp)
        .map_err(|source| UnpackError::Io {
            op: "create",
            path: tmp.clone(),
            source,
        })?;
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&fs_dir)
        .map_err(|source| UnpackError::Io {
            op: "create",
            path: fs_dir.clone(),
            source,
        })?;
    let root = std::fs::File::open(&fs_dir).map_err(|source| UnpackError::Io {
        op: "open",
        path: fs_dir.clone(),
        source,
    })?;
    let stream = LayerStream::open(archive, layer, i)?;
    let ctx = |source: ExtractError| UnpackError::Extract {
        archive: archive.display().to_string(),
        index: i + 1,
        member: layer.member.clone(),
        source,
    };
    use std::os::fd::AsFd;
    let (stats, stream) = extract::extract(stream, root.as_fd(), mode.policy()).map_err(ctx)?;
    let verified: LayerVerified = stream.finish()?;
    Ok(LayerInfo {
        diff_id: verified.diff_id.to_string(),
        compression: format!("{:?}", verified.compression).to_lowercase(),
        uncompressed_size: verified.uncompressed_size,
        stored_size: verified.stored_size,
        stats,
    })
}

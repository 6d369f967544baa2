//! Stage 2, **unpack**: every layer of the image extracted once into its own store directory.
//!
//! Install protocol per layer (crash- and race-safe):
//! 1. present in `layers/<owners>/<hex>`? done (a complete layer is only ever created by rename);
//! 2. take `locks/<owners>-<hex>.lock` (blocking: a concurrent rcrun extracting the same layer
//!    finishes first, and we then find it present);
//! 3. extract into `tmp/<owners>-<hex>.<pid>.<nonce>/fs`, read the stream to its end and verify
//!    the blob digest/size and the diff_id; write `layer.json`;
//! 4. write the marker `unsynced/<owners>-<hex>` (holding this boot's id), then `rename(2)` into
//!    place — atomic on one file system; the layer is usable at once. The marker lives outside the
//!    layer dir so that an installed layer dir never changes again;
//! 5. on any error the temp dir is removed; a killed process leaves a temp dir whose lock is free,
//!    which the next rcrun removes ([`Store::reclaim_tmp`]);
//! 6. durability off the critical path: a detached background process calls `syncfs` once and then
//!    removes the `unsynced` markers. A layer still marked `unsynced` is trusted only during the
//!    boot that wrote it (until then the page cache is authoritative); after a reboot (perhaps a
//!    crash before writeback, which could leave empty files behind a completed rename) it is
//!    extracted again. Measured on the 300 MB image: a synchronous `syncfs` was ~1.1 s of a 2.4 s
//!    cold start, i.e. as long as the extraction itself.
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
    // One directory listing of unsynced/ (usually empty) instead of a failed open per layer, and
    // stat relative to an fd of the layers dir: a 200-layer image spent 2.5 ms here otherwise.
    let unsynced: Option<std::collections::HashSet<std::ffi::OsString>> =
        std::fs::read_dir(store.root().join(UNSYNCED))
            .ok()
            .map(|d| d.flatten().map(|e| e.file_name()).collect());
    let layers_dir = store.layers_dir(mode);
    let dir_fd = nix::fcntl::open(
        &layers_dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let listed = list_when_cheaper(&layers_dir, &dir_fd, image.layers.len());
    let tag = mode.tag();
    let usable = |path: &std::path::Path, hex: &str| -> bool {
        let Some(unsynced) = &unsynced else {
            return layer_usable(path);
        };
        let is_dir = match &listed {
            Some(dirs) => dirs.contains(std::ffi::OsStr::new(hex)),
            None => nix::sys::stat::fstatat(&dir_fd, hex, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR),
        };
        let marked = !unsynced.is_empty()
            && unsynced.contains(std::ffi::OsStr::new(&format!("{tag}-{hex}")));
        // A marker: the layer may not be on disk yet; the slow path reads and checks it.
        is_dir && (!marked || layer_usable(path))
    };
    image
        .layers
        .iter()
        .map(|l| {
            // store.layer_path, without building the layers dir again for each layer.
            let path = layers_dir.join(l.diff_id.hex());
            usable(&path, l.diff_id.hex()).then(|| ReadyLayer {
                diff_id: l.diff_id.clone(),
                dir: path.join("fs"),
                found: true,
                took: Duration::ZERO,
                info: None,
            })
        })
        .collect()
}

/// Bytes an ext4 directory spends on one entry with a 64-hex-digit name (8 bytes of header, the
/// name rounded up to 4): `st_size / DIRENT_BYTES` estimates how many names a listing returns.
const DIRENT_BYTES: u64 = 72;

/// The subdirectories of the layers dir, when one listing costs less than a lookup per layer:
/// the image has many layers and the store not many more. A 200-layer image then takes one or
/// two getdents64 calls instead of 200 fstatat (~2.7 µs each on the machines of DESIGN.md),
/// while a one-layer run in a store of thousands of layers still looks up its one. `None`:
/// look each layer up. The choice only changes the cost: both answer "is `<hex>` a directory".
fn list_when_cheaper(
    layers_dir: &std::path::Path,
    dir_fd: &std::os::fd::OwnedFd,
    layers: usize,
) -> Option<std::collections::HashSet<std::ffi::OsString>> {
    let size = nix::sys::stat::fstat(dir_fd).ok()?.st_size as u64;
    if layers < 16 || size / DIRENT_BYTES > 4 * layers as u64 {
        return None;
    }
    // DirEntry::file_type comes from d_type, with an lstat only where a file system leaves
    // it unknown.
    let entries = std::fs::read_dir(layers_dir).ok()?;
    Some(
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name())
            .collect(),
    )
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
        if layer_usable(&path) {
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
        // Each layer is an unrelated tree: with tmp/ marked as a top directory, ext4 places each
        // extraction dir in a block group of its own choosing instead of next to tmp/. Where the
        // previous layers were just deleted (`rcrun gc`, a removed store), that skips ext4's
        // slow path: without a journal it refuses inodes freed in the last 5-35 s one at a time
        // (ext4/ialloc.c, recently_deleted). Cold 300 MB run after removing the store here:
        // 1.42-1.63 s without, 0.82-0.87 s with. Only a hint; other file systems ignore it.
        if let Err(e) = crate::sys::fs::mark_top_dir(&store.tmp_dir()) {
            tracing::debug!(error = %e, "could not mark the store's tmp/ as a top directory");
        }
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
        let installed: Vec<PathBuf> = results
            .iter()
            .filter_map(|(i, r)| match r {
                Ok(l) if !l.found => Some(store.layer_path(mode, &image.layers[*i].diff_id)),
                _ => None,
            })
            .collect();
        // Write the new layers' data back to disk without making anyone wait for it (step 6).
        if store.durable() {
            sync_in_background(&installed);
        }
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
    if final_path.is_dir() && !layer_usable(&final_path) {
        // Written during an earlier boot and never confirmed on disk: it may hold empty files.
        // Move it aside (we hold its lock) and extract it again.
        let stale = store.tmp_dir().join(format!(
            "{}-{}.{}.stale",
            mode.tag(),
            layer.diff_id.hex(),
            std::process::id()
        ));
        std::fs::rename(&final_path, &stale).map_err(io("move stale layer aside", &final_path))?;
        let _ = crate::sys::fs::remove_tree(&stale);
    }
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
        let marker = marker_path(&final_path).expect("a layer path has a store root");
        if let Some(dir) = marker.parent() {
            std::fs::create_dir_all(dir).map_err(io("create", &dir.to_path_buf()))?;
        }
        std::fs::write(&marker, boot_id().unwrap_or_default()).map_err(io("write", &marker))?;
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
    let ctx = |source: ExtractError| UnpackError::Extract {
        archive: archive.display().to_string(),
        index: i + 1,
        member: layer.member.clone(),
        source,
    };
    use std::os::fd::AsFd;
    // Two threads per layer: this one parses the tar and writes files while the producer reads
    // the member, decompresses and hashes (both digests) a few MiB ahead.
    let cancel = AtomicBool::new(false);
    let (consumed, produced) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(READ_AHEAD);
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let cancel = &cancel;
        let producer = s.spawn(move || produce(archive, layer, i, tx, recycle_rx, cancel));
        let reader = ChunkReader {
            rx,
            recycle: recycle_tx,
            chunk: Vec::new(),
            pos: 0,
        };
        let consumed = extract::extract(reader, root.as_fd(), mode.policy()).map(|(st, _)| st);
        // The reader is dropped: a producer still sending finds the channel closed and reads the
        // rest of the stream for the digests on its own (or stops, when we failed).
        if consumed.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        let produced = producer.join().expect("layer reader thread panicked");
        (consumed, produced)
    });
    // A read or digest failure explains a tar error better than the tar error itself.
    let (stats, verified): (LayerStats, LayerVerified) = match (consumed, produced) {
        (Ok(stats), Ok(v)) => (stats, v),
        (_, Err(e)) => return Err(e.into()),
        (Err(e), Ok(_)) => return Err(ctx(e)),
    };
    Ok(LayerInfo {
        diff_id: verified.diff_id.to_string(),
        compression: format!("{:?}", verified.compression).to_lowercase(),
        uncompressed_size: verified.uncompressed_size,
        stored_size: verified.stored_size,
        stats,
    })
}

/// Directory of the store holding one marker per layer whose data may not be on disk yet; each
/// holds the id of the boot that wrote it (module docs, step 6).
pub const UNSYNCED: &str = "unsynced";

/// `<root>/layers/<owners>/<hex>` → `<root>/unsynced/<owners>-<hex>`.
fn marker_path(layer: &std::path::Path) -> Option<PathBuf> {
    let hex = layer.file_name()?.to_str()?;
    let owners_dir = layer.parent()?;
    let owners = owners_dir.file_name()?.to_str()?;
    let root = owners_dir.parent()?.parent()?;
    Some(root.join(UNSYNCED).join(format!("{owners}-{hex}")))
}

fn boot_id() -> Option<&'static str> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// A complete layer dir that is either known to be on disk or was written during this boot.
fn layer_usable(path: &std::path::Path) -> bool {
    if !path.is_dir() {
        return false;
    }
    let Some(marker) = marker_path(path) else {
        return false;
    };
    match std::fs::read(marker) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Ok(id) => matches!(boot_id(), Some(b) if b.as_bytes() == id.trim_ascii()),
        Err(_) => false,
    }
}

/// Forks a detached process that calls `syncfs` on the store's file system and then removes the
/// `unsynced` marker of each of `layers`. The caller does not wait: the container starts while the
/// kernel writes the layers back. The grandchild is reparented to init, so no waiter of ours
/// (the container's parent) ever sees it; it holds no fd of ours but stdio redirected to
/// /dev/null, so no pipe reader waits for it either.
fn sync_in_background(layers: &[PathBuf]) {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let Some(first) = layers.first() else { return };
    let Ok(dir) = std::fs::File::open(first) else {
        return;
    };
    let Ok(devnull) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    // Each marker with its inode: a marker replaced meanwhile (the store deleted and the layer
    // extracted again by a later run) belongs to data this sync may not cover, and stays.
    let markers: Vec<(CString, u64, u64)> = layers
        .iter()
        .filter_map(|l| {
            use std::os::unix::fs::MetadataExt;
            let path = marker_path(l)?;
            let md = std::fs::symlink_metadata(&path).ok()?;
            Some((
                CString::new(path.as_os_str().as_bytes()).ok()?,
                md.dev(),
                md.ino(),
            ))
        })
        .collect();
    let (dir_fd, null_fd) = (dir.as_raw_fd(), devnull.as_raw_fd());
    // SAFETY: fork in a process whose worker threads have been joined; the children only make
    // async-signal-safe system calls on data prepared above, then `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; every call is a raw system call.
        unsafe {
            libc::setsid();
            if libc::fork() != 0 {
                libc::_exit(0);
            }
            libc::dup2(null_fd, 0);
            libc::dup2(null_fd, 1);
            libc::dup2(null_fd, 2);
            libc::dup2(dir_fd, 3);
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            if libc::syncfs(3) == 0 {
                for (path, dev, ino) in &markers {
                    let mut st: libc::stat = std::mem::zeroed();
                    if libc::lstat(path.as_ptr(), &mut st) == 0
                        && st.st_dev == *dev
                        && st.st_ino == *ino
                    {
                        libc::unlink(path.as_ptr());
                    }
                }
                // Make the removals durable too (not required for safety: a surviving marker
                // only costs a re-extraction after a reboot).
                libc::syncfs(3);
            }
            libc::_exit(0);
        }
    }
    if pid > 0 {
        // The intermediate child exits at once.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    }
}

/// Chunks in flight between a layer's reader thread and its extracting thread.
const READ_AHEAD: usize = 4;
/// Size of one chunk: large enough that the channel costs nothing per byte.
const CHUNK: usize = 1 << 20;

/// The reader thread of one layer: opens the member, decompresses and hashes it, and sends the
/// uncompressed tar stream in chunks. When the extractor stops reading (the tar ended, or it
/// failed: `cancel`) it reads on to the very end for the digests, every time: which error a broken
/// layer reports must not depend on how far this thread had got when the extractor gave up (a
/// digest mismatch explains a tar error, so it wins; see `extract_layer`).
fn produce(
    archive: &Archive,
    layer: &crate::image::LayerSource,
    i: usize,
    tx: std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>,
    recycled: std::sync::mpsc::Receiver<Vec<u8>>,
    cancel: &AtomicBool,
) -> Result<LayerVerified, ImageError> {
    use std::io::Read;
    let mut stream = match LayerStream::open(archive, layer, i) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(std::io::Error::other(e.to_string())));
            return Err(e);
        }
    };
    loop {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let mut buf = recycled.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut n = 0;
        while n < CHUNK {
            match stream.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                    return Err(ImageError::Read {
                        archive: archive.display().to_string(),
                        member: layer.member.clone(),
                        source: e,
                    });
                }
            }
        }
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if tx.send(Ok(buf)).is_err() {
            break; // the extractor is done with the tar stream
        }
    }
    drop(tx);
    stream.finish()
}

/// The extracting side of [`produce`]: a `Read` over the received chunks; returns used chunks
/// for reuse, so a layer allocates at most `READ_AHEAD + 2` of them.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    recycle: std::sync::mpsc::Sender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let used = std::mem::replace(&mut self.chunk, next);
                    if used.capacity() > 0 {
                        let _ = self.recycle.send(used);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests_present;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn unsynced_layer_is_trusted_only_during_its_boot() {
        let root = std::env::temp_dir().join(format!("rcrun-usable-{}", std::process::id()));
        let dir = root.join("layers/user/abc");
        assert!(!layer_usable(&dir), "absent");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(layer_usable(&dir), "no marker: synced");
        let marker = root.join(UNSYNCED).join("user-abc");
        assert_eq!(marker_path(&dir).unwrap(), marker);
        std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
        std::fs::write(&marker, boot_id().unwrap_or_default()).unwrap();
        assert_eq!(layer_usable(&dir), boot_id().is_some(), "written this boot");
        std::fs::write(&marker, "another-boot").unwrap();
        assert!(!layer_usable(&dir), "written before a reboot");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn chunk_reader_returns_chunks_in_order_then_eof_or_error() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let (recycle, recycled) = std::sync::mpsc::channel();
        tx.send(Ok(b"hello ".to_vec())).unwrap();
        tx.send(Ok(b"world".to_vec())).unwrap();
        drop(tx);
        let mut r = ChunkReader {
            rx,
            recycle,
            chunk: Vec::new(),
            pos: 0,
        };
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
        assert_eq!(
            recycled.try_iter().count(),
            1,
            "the first chunk came back for reuse"
        );

        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(Err(std::io::Error::other("truncated"))).unwrap();
        let mut r = ChunkReader {
            rx,
            recycle: std::sync::mpsc::channel().0,
            chunk: Vec::new(),
            pos: 0,
        };
        assert!(r.read(&mut [0u8; 4]).is_err());
    }
}

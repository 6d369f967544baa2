//! The warm path: an archive already read once is not read again. The selected [`Image`] (config,
//! layer list, digests) is cached under the store's `cache/images/`, keyed by the archive file's
//! identity — device, inode, size, mtime and ctime (any write or rename onto it changes one of
//! them) — and the `--ref` asked for. A hit costs one `stat` and one small read instead of
//! indexing the tar and parsing its manifests; layers are still verified whenever they are
//! extracted, so a stale entry can never install unverified content.

use super::Image;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn entry_path(cache_dir: &Path, archive: &Path, reference: Option<&str>) -> Option<PathBuf> {
    if archive == Path::new("-") {
        return None; // stdin has no identity to key on
    }
    let m = std::fs::metadata(archive).ok()?;
    let key = format!(
        "{}:{}:{}:{}.{}:{}.{}:{}:{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        reference.unwrap_or(""),
        env!("CARGO_PKG_VERSION")
    );
    Some(cache_dir.join("images").join(format!(
        "{}.json",
        super::Digest::of_bytes(key.as_bytes()).hex()
    )))
}

/// The cached image for this archive and reference, if the file is unchanged.
pub fn load(cache_dir: &Path, archive: &Path, reference: Option<&str>) -> Option<Image> {
    let bytes = std::fs::read(entry_path(cache_dir, archive, reference)?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Remembers the image (best effort: a cache that cannot be written only costs speed).
pub fn save(cache_dir: &Path, archive: &Path, reference: Option<&str>, image: &Image) {
    let Some(path) = entry_path(cache_dir, archive, reference) else {
        return;
    };
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let Ok(json) = serde_json::to_vec(image) else {
        return;
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, json).is_ok() && std::fs::rename(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

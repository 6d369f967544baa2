//! The warm path: an archive already read once is not read again. The selected [`Image`] (config,
//! layer list, digests) is cached under the store's `cache/images/`, keyed by the archive file's
//! identity — device, inode, size, mtime and ctime — and the `--ref` asked for.
//!
//! The key alone is not trusted: mtime can be set back (`touch -r`) and ctime only moves at the
//! kernel's clock tick, so a file rewritten in place within one tick keeps every stat field. The
//! entry therefore also records where in the archive the JSON documents the selection read lie
//! (manifest, index, config: a few KiB) and their sha256; a hit re-reads those bytes and compares.
//! A rewritten archive with another image differs there — its config holds the diff_ids. Layers
//! need no check: they are verified whenever they are extracted, and the store holds only
//! layers that match the diff_ids of the config the digest vouches for.
//!
//! The entry also remembers which of the image's layers hold the /etc, /etc/passwd and
//! /etc/group a container sees ([`EtcSources`]). Finding them takes a lookup in every layer; a
//! stored layer never changes, so the answer holds for every later run of the same image.

use super::archive::DocumentRead;
use super::{Archive, Image};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What is stored per archive.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    /// Each JSON document read while selecting the image, with the sha256 of its bytes then.
    documents: Vec<DocumentRead>,
    image: Image,
    /// Added by the first run that had the layers in the store ([`remember_etc`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etc: Option<EtcSources>,
}

/// Which layers, as indices into the image's layers top first, hold what a container sees at
/// /etc: the topmost layer with any `etc` entry, and the layers whose regular files are its
/// /etc/passwd and /etc/group (overlay rules: whiteouts and opaque directories hide lower ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EtcSources {
    pub etc_layer: Option<usize>,
    pub passwd: Option<usize>,
    pub group: Option<usize>,
}

impl EtcSources {
    /// Whether these indices can describe an image of `layers` layers: each in range, and the
    /// files at or below the /etc entry that decides (an entry read back from disk is checked
    /// before it is used).
    pub fn fits(&self, layers: usize) -> bool {
        let file_ok = |f: Option<usize>| match (self.etc_layer, f) {
            (_, None) => true,
            (Some(etc), Some(i)) => etc <= i && i < layers,
            (None, Some(_)) => false,
        };
        self.etc_layer.is_none_or(|i| i < layers) && file_ok(self.passwd) && file_ok(self.group)
    }
}

/// Total bytes a hit may re-read for the documents of an uncompressed archive (each is at most
/// 16 MiB, see `Archive::read_small`). A compressed archive is checked whole (its documents lie
/// in a stream with no random access), which costs one sha256 of the file: far less than the
/// decompressing pass it saves.
const MAX_CHECKED: u64 = 64 << 20;

fn entry_path(cache_dir: &Path, m: &std::fs::Metadata, reference: Option<&str>) -> PathBuf {
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
    cache_dir.join("images").join(format!(
        "{}.json",
        super::Digest::of_bytes(key.as_bytes()).hex()
    ))
}

/// Whether `file` still holds each document's bytes where they were read.
fn documents_unchanged(file: &std::fs::File, documents: &[DocumentRead]) -> bool {
    let whole_file =
        |d: &DocumentRead| d.offset == 0 && file.metadata().is_ok_and(|m| m.len() == d.len);
    let checked: u64 = documents.iter().map(|d| d.len).sum();
    let within_limit = checked <= MAX_CHECKED || matches!(documents, [d] if whole_file(d));
    if documents.is_empty() || !within_limit {
        return false;
    }
    documents
        .iter()
        .all(|d| range_sha256(file, d.offset, d.len).is_some_and(|h| h == d.sha256))
}

/// The sha256 of `len` bytes at `offset`, or `None` if the file holds fewer.
fn range_sha256(file: &std::fs::File, offset: u64, len: u64) -> Option<String> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let read = super::archive::hash_range(file, &mut hasher, offset, len).ok()?;
    (read == len).then(|| hex::encode(hasher.finalize()))
}

/// A cache hit: the image, and where its /etc files are if a run has looked already.
pub struct Cached {
    pub image: Image,
    pub etc: Option<EtcSources>,
}

/// The cached image for this archive and reference, if the file is unchanged: same identity and
/// the same bytes where its manifest and config are.
pub fn load(cache_dir: &Path, archive: &Path, reference: Option<&str>) -> Option<Cached> {
    if archive == Path::new("-") {
        return None; // stdin has no identity to key on
    }
    let file = std::fs::File::open(archive).ok()?;
    let m = file.metadata().ok()?;
    let bytes = std::fs::read(entry_path(cache_dir, &m, reference)).ok()?;
    let entry: Entry = serde_json::from_slice(&bytes).ok()?;
    let etc = entry.etc.filter(|e| e.fits(entry.image.layers.len()));
    documents_unchanged(&file, &entry.documents).then_some(Cached {
        image: entry.image,
        etc,
    })
}

/// Adds `etc` to the entry of `archive` (best effort, like [`save`]), if that entry still holds
/// `image`: same config digest, same layers. An archive replaced meanwhile has another identity,
/// so its entry is not found.
pub fn remember_etc(
    cache_dir: &Path,
    archive: &Path,
    reference: Option<&str>,
    image: &Image,
    etc: EtcSources,
) {
    if archive == Path::new("-") {
        return;
    }
    let Ok(m) = std::fs::metadata(archive) else {
        return;
    };
    let entry_file = entry_path(cache_dir, &m, reference);
    let Some(mut entry) = std::fs::read(&entry_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
    else {
        return;
    };
    let same_layers = entry.image.layers.len() == image.layers.len()
        && (entry.image.layers.iter())
            .zip(&image.layers)
            .all(|(a, b)| a.diff_id == b.diff_id);
    if entry.image.id != image.id || !same_layers || !etc.fits(image.layers.len()) {
        return;
    }
    entry.etc = Some(etc);
    write_entry(&entry_file, &entry);
}

/// Writes `entry` whole under a temporary name, then renames it into place: a reader sees the
/// old entry or the new one, never a part.
fn write_entry(entry_file: &Path, entry: &Entry) {
    let Ok(json) = serde_json::to_vec(entry) else {
        return;
    };
    let tmp = entry_file.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, json).is_ok() && std::fs::rename(&tmp, entry_file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Remembers the image selected from `archive` and where its /etc files are in its layers (best
/// effort: a cache that cannot be written only costs speed). Keyed by the file's identity when the archive was opened, and vouched for by the
/// digests of the bytes that were actually read: a file changed while it was being read then
/// never matches.
pub fn save(
    cache_dir: &Path,
    reference: Option<&str>,
    archive: &Archive,
    image: &Image,
    etc: EtcSources,
) {
    let Some(opened_as) = archive.opened_as() else {
        return;
    };
    let entry_file = entry_path(cache_dir, opened_as, reference);
    let Some(dir) = entry_file.parent() else {
        return;
    };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let entry = Entry {
        documents: archive.documents_read(),
        image: image.clone(),
        etc: Some(etc).filter(|e| e.fits(image.layers.len())),
    };
    if entry.documents.is_empty() {
        return;
    }
    write_entry(&entry_file, &entry);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcrun_imagebuild::{
        write_archive_to_file, ConfigSpec, Entry as Layered, Format, ImageSpec, LayerSpec,
        WriteOptions,
    };
    use std::os::unix::fs::FileExt;

    /// Indices read back from an entry are used only when they can describe the image: in range,
    /// and the files at or below the /etc entry that decides.
    #[test]
    fn remembered_etc_sources_are_checked_against_the_layer_count() {
        let at = |etc_layer, passwd, group| EtcSources {
            etc_layer,
            passwd,
            group,
        };
        assert!(at(None, None, None).fits(0));
        assert!(at(Some(1), Some(1), Some(2)).fits(3));
        assert!(!at(Some(3), None, None).fits(3), "etc layer out of range");
        assert!(
            !at(Some(0), Some(3), None).fits(3),
            "passwd layer out of range"
        );
        assert!(
            !at(Some(1), None, Some(0)).fits(3),
            "group above the /etc entry"
        );
        assert!(
            !at(None, Some(0), None).fits(3),
            "a file without an /etc entry"
        );
    }

    fn image_with_marker(path: &Path, marker: &str) {
        let spec = ImageSpec {
            tags: vec!["cache:test".into()],
            config: ConfigSpec {
                env: vec!["PATH=/bin".into()],
                ..Default::default()
            },
            layers: vec![
                LayerSpec::entries(&[Layered::file("marker", 0o644, marker)], "m").unwrap(),
            ],
            ..Default::default()
        };
        write_archive_to_file(
            path,
            &[spec],
            Format::DockerLegacy,
            &WriteOptions::default(),
        )
        .unwrap();
    }

    /// An archive rewritten in place with another image of the same size, its stat put back as
    /// far as a user can (mtime) and its ctime made to match too (as a rewrite within one clock
    /// tick would leave it): the cache entry must not be used.
    #[test]
    fn rewritten_archive_is_not_served_from_the_cache() {
        rewritten_archive_check(false);
    }

    /// The same for a gzip-compressed archive, which is vouched for by the whole file's sha256.
    #[test]
    fn rewritten_compressed_archive_is_not_served_from_the_cache() {
        rewritten_archive_check(true);
    }

    fn gzip_in_place(path: &Path) {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&std::fs::read(path).unwrap()).unwrap();
        std::fs::write(path, e.finish().unwrap()).unwrap();
    }

    fn rewritten_archive_check(gzip: bool) {
        let dir = std::env::temp_dir().join(format!("rcrun-cache-{}-{gzip}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.tar"), dir.join("b.tar"));
        image_with_marker(&a, "AAAA");
        image_with_marker(&b, "BBBB");
        assert_eq!(
            std::fs::metadata(&a).unwrap().len(),
            std::fs::metadata(&b).unwrap().len()
        );
        if gzip {
            gzip_in_place(&a);
            gzip_in_place(&b);
        }
        let cache = dir.join("cache");
        let archive = Archive::open(&a, &dir).unwrap();
        assert_eq!(
            archive.compression() != crate::image::compression::ArchiveCompression::None,
            gzip
        );
        let host = crate::image::platform::Platform::host();
        let image = crate::image::select_for(&archive, None, &host).unwrap();
        let out_of_range = EtcSources {
            etc_layer: Some(1),
            passwd: None,
            group: None,
        };
        save(&cache, None, &archive, &image, out_of_range);
        drop(archive);
        let hit = load(&cache, &a, None).expect("unchanged archive: a hit");
        assert_eq!(hit.image.id, image.id);
        assert_eq!(
            hit.etc, None,
            "indices beyond the image's one layer are not kept"
        );
        let etc = EtcSources {
            etc_layer: Some(0),
            passwd: Some(0),
            group: None,
        };
        remember_etc(&cache, &a, None, &image, etc);
        assert_eq!(load(&cache, &a, None).unwrap().etc, Some(etc));

        // Rewrite in place (same inode), then key the old entry under the new stat, as if the
        // kernel's ctime had not moved.
        let before = std::fs::metadata(&a).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .unwrap()
            .write_all_at(&std::fs::read(&b).unwrap(), 0)
            .unwrap();
        let after = std::fs::metadata(&a).unwrap();
        assert_eq!(before.ino(), after.ino());
        std::fs::rename(
            entry_path(&cache, &before, None),
            entry_path(&cache, &after, None),
        )
        .unwrap();
        assert!(
            load(&cache, &a, None).is_none(),
            "the cache served the old image for a rewritten archive"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Random access to the members of an image archive (the outer tar).
//!
//! The outer tar is indexed once (name → offset and size); members are then read with `pread`,
//! so several layers can be streamed in parallel from one file without extracting the archive.
//! Symlinked members (podman's `<id>/layer.tar -> ../<diffid>.tar`) are followed inside the archive's
//! own name space only: a link that leaves the archive, loops, or points nowhere is an error.
//!
//! A compressed archive (gzip, zstd, xz, bzip2: [`ArchiveCompression`]) is indexed by one pass
//! over its decompressed stream, which keeps the small JSON members in memory; a layer is then
//! read by a pass of its own (decompress, skip to the member, stream it). The warm-start check
//! of such an archive is the sha256 of the whole file, taken of the bytes that pass read.

use super::compression::{self, ArchiveCompression};
use super::ImageError;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
enum MemberKind {
    File { offset: u64, size: u64 },
    Symlink(String),
    Dir,
    Other,
}

/// An indexed image archive.
pub struct Archive {
    file: File,
    /// How the archive is named in messages (the path, or `-` for stdin).
    display: String,
    members: HashMap<String, MemberKind>,
    /// For `-`: the spooled copy of stdin, removed on drop.
    spool: Option<PathBuf>,
    file_size: u64,
    /// The file's identity when it was opened (before anything was read from it).
    opened_as: Option<std::fs::Metadata>,
    /// The JSON documents read so far (manifests, indexes, configs): where they lie and the
    /// sha256 of the bytes that were read — what the image cache re-checks on a warm start.
    documents_read: std::sync::Mutex<Vec<DocumentRead>>,
    compression: ArchiveCompression,
    /// Compressed archives: the members that look like JSON documents (at most [`KEEP_EACH`]
    /// bytes each), decompressed during indexing.
    kept: HashMap<String, Vec<u8>>,
    /// Compressed archives: the whole file as one document (offset 0, every byte, its sha256).
    whole_file: Option<DocumentRead>,
}

/// Compressed archives: a member up to this size that starts like JSON is kept from the index
/// pass (manifests and configs are a few KiB; a layer is never JSON) ...
const KEEP_EACH: u64 = 4 << 20;
/// ... as long as all kept members stay under this.
const KEEP_TOTAL: usize = 64 << 20;

/// One JSON document as it was read: (offset, length) in the archive and the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DocumentRead {
    pub offset: u64,
    pub len: u64,
    pub sha256: String,
}

impl Drop for Archive {
    fn drop(&mut self) {
        if let Some(p) = &self.spool {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Normalises a member name or a reference to one: strips `./` and leading `/`, resolves `.` and
/// `..` lexically, and refuses names that climb above the archive root.
pub fn normalize_member(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for comp in name.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

impl Archive {
    /// Opens and indexes `path`; `-` reads the archive from stdin, spooled to `spool_dir` first
    /// because layers are read by offset (and in parallel).
    pub fn open(path: &Path, spool_dir: &Path) -> Result<Archive, ImageError> {
        let display = path.display().to_string();
        let (file, spool) = if path == Path::new("-") {
            std::fs::create_dir_all(spool_dir).map_err(|source| ImageError::Io {
                op: "create spool dir",
                path: spool_dir.to_path_buf(),
                source,
            })?;
            let spool = spool_dir.join(format!("stdin-{}.tar", std::process::id()));
            let mut out = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&spool)
                .map_err(|source| ImageError::Io {
                    op: "create stdin spool",
                    path: spool.clone(),
                    source,
                })?;
            let copied = io::copy(&mut io::stdin().lock(), &mut out);
            if let Err(source) = copied {
                let _ = std::fs::remove_file(&spool);
                return Err(ImageError::Io {
                    op: "read archive from stdin",
                    path: spool,
                    source,
                });
            }
            (out, Some(spool))
        } else {
            let f = File::open(path).map_err(|source| ImageError::Open {
                path: path.to_path_buf(),
                source,
            })?;
            (f, None)
        };
        let opened_as = file.metadata().ok();
        let file_size = opened_as.as_ref().map(|m| m.len()).unwrap_or(0);
        let mut archive = Archive {
            file,
            display,
            members: HashMap::new(),
            opened_as: spool.is_none().then_some(opened_as).flatten(),
            spool,
            file_size,
            documents_read: std::sync::Mutex::new(Vec::new()),
            compression: ArchiveCompression::None,
            kept: HashMap::new(),
            whole_file: None,
        };
        archive.index()?;
        Ok(archive)
    }

    /// Every JSON document read so far, with the digest of the bytes read; for a compressed
    /// archive the whole file, whose every byte the index pass read.
    pub fn documents_read(&self) -> Vec<DocumentRead> {
        if let Some(whole) = &self.whole_file {
            return vec![whole.clone()];
        }
        self.documents_read
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// The file's stat as it was when opened (None for stdin).
    pub fn opened_as(&self) -> Option<&std::fs::Metadata> {
        self.opened_as.as_ref()
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    pub fn compression(&self) -> ArchiveCompression {
        self.compression
    }

    fn index(&mut self) -> Result<(), ImageError> {
        if self.file_size == 0 {
            return Err(ImageError::NotTar {
                archive: self.display.clone(),
                detail: "the file is empty".into(),
            });
        }
        let mut head = [0u8; 512];
        let head_len = read_head(&self.file, &mut head).map_err(|source| ImageError::Read {
            archive: self.display.clone(),
            member: "(the archive's first bytes)".into(),
            source,
        })?;
        let head = &head[..head_len];
        self.compression = ArchiveCompression::detect(head);
        if self.compression == ArchiveCompression::None && !looks_like_tar(head) {
            return Err(ImageError::NotTar {
                archive: self.display.clone(),
                detail: format!(
                    "nor one compressed with gzip, zstd, xz or bzip2: it starts with {}",
                    hex_preview(head)
                ),
            });
        }
        let members = match self.compression {
            ArchiveCompression::None => self.index_plain()?,
            _ => self.index_compressed()?,
        };
        if members.is_empty() {
            return Err(self.not_tar("no members (an empty tar archive)".into()));
        }
        self.members = members;
        Ok(())
    }

    fn not_tar(&self, detail: String) -> ImageError {
        let detail = match self.compression {
            ArchiveCompression::None => detail,
            c => format!("{}-compressed: {detail}", c.name()),
        };
        ImageError::NotTar {
            archive: self.display.clone(),
            detail: crate::printable(&detail),
        }
    }

    fn index_plain(&self) -> Result<HashMap<String, MemberKind>, ImageError> {
        let reader = PositionedReader {
            file: &self.file,
            pos: 0,
        };
        let mut tar = tar::Archive::new(reader);
        // Seeking past member data means indexing reads only the 512-byte headers, not the
        // layers: a warm start of a 300 MB image must not read 300 MB.
        let entries = tar
            .entries_with_seek()
            .map_err(|e| self.not_tar(e.to_string()))?;
        let mut members = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.not_tar(e.to_string()))?;
            let Some((name, kind)) = member_of(&entry) else {
                continue;
            };
            if let MemberKind::File { offset, size } = kind {
                if offset.saturating_add(size) > self.file_size {
                    return Err(self.not_tar(format!(
                        "truncated: member {name} needs {size} bytes at offset {offset}, the file has {}",
                        self.file_size
                    )));
                }
            }
            members.insert(name, kind);
        }
        Ok(members)
    }

    /// One pass over the decompressed stream: every header, the small JSON members kept, the
    /// stream checked to its end (gzip's CRC, xz's check), every byte of the file hashed.
    fn index_compressed(&mut self) -> Result<HashMap<String, MemberKind>, ImageError> {
        let state = std::sync::Mutex::new(HashState {
            hasher: Sha256::new(),
            pos: 0,
        });
        let raw = HashingFile {
            file: &self.file,
            state: &state,
        };
        let decoder = self
            .compression
            .decoder(raw)
            .map_err(|e| self.not_tar(e.to_string()))?;
        let mut tar = tar::Archive::new(decoder);
        let mut members = HashMap::new();
        let mut kept: HashMap<String, Vec<u8>> = HashMap::new();
        let mut kept_total = 0usize;
        {
            let entries = tar.entries().map_err(|e| self.not_tar(e.to_string()))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| self.not_tar(e.to_string()))?;
                let Some((name, kind)) = member_of(&entry) else {
                    continue;
                };
                if let MemberKind::File { size, .. } = kind {
                    if size <= KEEP_EACH && kept_total + size as usize <= KEEP_TOTAL {
                        let mut data = Vec::with_capacity(size as usize);
                        entry
                            .read_to_end(&mut data)
                            .map_err(|e| self.not_tar(format!("member {name}: {e}")))?;
                        let first = data.iter().find(|b| !b.is_ascii_whitespace());
                        if matches!(first, Some(b'{') | Some(b'[')) {
                            kept_total += data.len();
                            kept.insert(name.clone(), data);
                        }
                    }
                }
                members.insert(name, kind);
            }
        }
        // The tar reader stops at the end-of-archive blocks: read on to the end of the stream, so
        // a corrupt or truncated tail is found now, not by a layer pass.
        let mut rest = tar.into_inner();
        io::copy(&mut rest, &mut io::sink())
            .map_err(|e| self.not_tar(format!("after the last member: {e}")))?;
        drop(rest);
        let mut st = state.into_inner().unwrap_or_else(|e| e.into_inner());
        let rest = self.file_size.saturating_sub(st.pos);
        st.pos += hash_range(&self.file, &mut st.hasher, st.pos, rest)
            .map_err(|e| self.not_tar(e.to_string()))?;
        self.whole_file = Some(DocumentRead {
            offset: 0,
            len: st.pos,
            sha256: hex::encode(st.hasher.finalize()),
        });
        self.kept = kept;
        Ok(members)
    }

    pub fn has(&self, name: &str) -> bool {
        normalize_member(name).is_some_and(|n| self.members.contains_key(&n))
    }

    pub fn is_symlink(&self, name: &str) -> bool {
        normalize_member(name)
            .is_some_and(|n| matches!(self.members.get(&n), Some(MemberKind::Symlink(_))))
    }

    /// Follows symlinks inside the archive (at most 16 hops) to a regular file member.
    fn resolve(&self, name: &str) -> Result<(u64, u64), ImageError> {
        self.resolve_named(name)
            .map(|(_, offset, size)| (offset, size))
    }

    /// [`resolve`](Self::resolve), with the regular member's own name.
    fn resolve_named(&self, name: &str) -> Result<(String, u64, u64), ImageError> {
        let escapes = |target: &str| ImageError::MemberEscapes {
            archive: self.display.clone(),
            member: name.to_string(),
            target: target.to_string(),
        };
        let mut current = normalize_member(name).ok_or_else(|| escapes(name))?;
        for _ in 0..16 {
            match self.members.get(&current) {
                Some(MemberKind::File { offset, size }) => return Ok((current, *offset, *size)),
                Some(MemberKind::Symlink(target)) => {
                    if target.starts_with('/') {
                        return Err(escapes(target));
                    }
                    let dir = current.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    current = normalize_member(&format!("{dir}/{target}"))
                        .ok_or_else(|| escapes(target))?;
                }
                Some(MemberKind::Dir) | Some(MemberKind::Other) => {
                    return Err(ImageError::Malformed {
                        archive: self.display.clone(),
                        member: name.to_string(),
                        detail: "not a regular file".into(),
                    })
                }
                None => {
                    return Err(ImageError::MissingMember {
                        archive: self.display.clone(),
                        member: name.to_string(),
                    })
                }
            }
        }
        Err(ImageError::Malformed {
            archive: self.display.clone(),
            member: name.to_string(),
            detail: "symlink loop (more than 16 links)".into(),
        })
    }

    pub fn member_size(&self, name: &str) -> Result<u64, ImageError> {
        self.resolve(name).map(|(_, size)| size)
    }

    /// Opens a member for streaming.
    pub fn open_member(&self, name: &str) -> Result<MemberReader<'_>, ImageError> {
        let (resolved, offset, size) = self.resolve_named(name)?;
        if self.compression == ArchiveCompression::None {
            return Ok(MemberReader::Plain {
                file: &self.file,
                pos: offset,
                end: offset + size,
            });
        }
        if let Some(data) = self.kept.get(&resolved) {
            return Ok(MemberReader::Kept(data));
        }
        let read_err = |source| ImageError::Read {
            archive: self.display.clone(),
            member: name.to_string(),
            source,
        };
        let raw = PositionedReader {
            file: &self.file,
            pos: 0,
        };
        let mut stream = self.compression.decoder(raw).map_err(read_err)?;
        compression::skip(&mut *stream, offset).map_err(read_err)?;
        Ok(MemberReader::Stream { stream, left: size })
    }

    /// Reads a small JSON member whole (manifests, configs); anything above 16 MiB is refused
    /// rather than loaded, since no real manifest or config comes near that.
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        const LIMIT: u64 = 16 << 20;
        let (resolved, offset, size) = self.resolve_named(name)?;
        if size > LIMIT {
            return Err(ImageError::Malformed {
                archive: self.display.clone(),
                member: name.to_string(),
                detail: format!("{size} bytes is too large for a JSON document (limit 16 MiB)"),
            });
        }
        if let Some(data) = self.kept.get(&resolved) {
            return Ok(data.clone());
        }
        let mut buf = Vec::with_capacity(size as usize);
        self.open_member(name)?
            .read_to_end(&mut buf)
            .map_err(|source| ImageError::Read {
                archive: self.display.clone(),
                member: name.to_string(),
                source,
            })?;
        // A compressed archive is vouched for whole (`whole_file`); offsets in its decompressed
        // stream say nothing about the file.
        if self.compression == ArchiveCompression::None {
            if let Ok(mut read) = self.documents_read.lock() {
                if !read.iter().any(|d| d.offset == offset) {
                    read.push(DocumentRead {
                        offset,
                        len: size,
                        sha256: super::Digest::of_bytes(&buf).hex().to_string(),
                    });
                }
            }
        }
        Ok(buf)
    }
}

/// The name and kind of a tar entry, or `None` for a name climbing out of the archive: such a
/// member is never referenced legitimately, so it is simply not indexed and a manifest pointing
/// at it fails as "missing".
fn member_of<R: Read>(entry: &tar::Entry<'_, R>) -> Option<(String, MemberKind)> {
    let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let name = normalize_member(&raw)?;
    let kind = match entry.header().entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => MemberKind::File {
            offset: entry.raw_file_position(),
            size: entry.size(),
        },
        tar::EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            MemberKind::Symlink(target.unwrap_or_default())
        }
        tar::EntryType::Directory => MemberKind::Dir,
        _ => MemberKind::Other,
    };
    Some((name, kind))
}

/// Feeds up to `len` bytes of `file` from `offset` into `hasher`, streamed; returns how many
/// there were (fewer at the end of the file).
pub(crate) fn hash_range(
    file: &File,
    hasher: &mut Sha256,
    offset: u64,
    len: u64,
) -> io::Result<u64> {
    let mut buf = vec![0u8; (1usize << 20).min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        let n = file.read_at(&mut buf[..want], offset + done)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(done)
}

/// Up to `buf.len()` bytes from the start of the file.
fn read_head(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            got => n += got,
        }
    }
    Ok(n)
}

/// Whether a block starts a tar: zeros (the end marker; a tar of nothing is only them and is
/// refused later as empty, with that reason), or a header whose checksum is right (the tar
/// crate's own check: set it afresh on a copy and compare).
fn looks_like_tar(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    if head[..512].iter().all(|&b| b == 0) {
        return true;
    }
    let header = tar::Header::from_byte_slice(&head[..512]);
    let mut recomputed = header.clone();
    recomputed.set_cksum();
    matches!((header.cksum(), recomputed.cksum()), (Ok(a), Ok(b)) if a == b)
}

/// The first bytes as hex, for a message about a file that is not what it should be.
fn hex_preview(head: &[u8]) -> String {
    if head.is_empty() {
        return "nothing".into();
    }
    let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("the bytes {}", shown.join(" "))
}

/// Where the index pass of a compressed archive is in the file, and the hash of what it read.
struct HashState {
    hasher: Sha256,
    pos: u64,
}

/// The file from its start, hashing every byte handed to the decompressor.
struct HashingFile<'a> {
    file: &'a File,
    state: &'a std::sync::Mutex<HashState>,
}

impl Read for HashingFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.file.read_at(buf, st.pos)?;
        st.hasher.update(&buf[..n]);
        st.pos += n as u64;
        Ok(n)
    }
}

/// A sequential reader over the whole archive file, used only to build the index.
struct PositionedReader<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for PositionedReader<'_> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let base = match to {
            io::SeekFrom::Start(n) => {
                self.pos = n;
                return Ok(n);
            }
            io::SeekFrom::Current(d) => (self.pos, d),
            io::SeekFrom::End(d) => (self.file.metadata()?.len(), d),
        };
        self.pos = base
            .0
            .checked_add_signed(base.1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

/// A reader over one member's bytes; independent of other readers on the same archive.
pub enum MemberReader<'a> {
    /// An uncompressed archive: `pread` from `pos` up to `end`.
    Plain { file: &'a File, pos: u64, end: u64 },
    /// A compressed archive's member kept from the index pass.
    Kept(&'a [u8]),
    /// A compressed archive's member: a decompressing pass already at the member's first byte.
    Stream {
        stream: Box<dyn Read + Send + 'a>,
        left: u64,
    },
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "archive truncated inside this member",
    )
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            MemberReader::Plain { file, pos, end } => {
                let left = (*end - *pos) as usize;
                if left == 0 {
                    return Ok(0);
                }
                let want = buf.len().min(left);
                let n = file.read_at(&mut buf[..want], *pos)?;
                if n == 0 {
                    return Err(truncated());
                }
                *pos += n as u64;
                Ok(n)
            }
            MemberReader::Kept(data) => data.read(buf),
            MemberReader::Stream { stream, left } => {
                if *left == 0 {
                    return Ok(0);
                }
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = stream.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(truncated());
                }
                *left -= n as u64;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_member;

    #[test]
    fn normalizes_member_names() {
        assert_eq!(
            normalize_member("./manifest.json").unwrap(),
            "manifest.json"
        );
        assert_eq!(
            normalize_member("/blobs/sha256/x").unwrap(),
            "blobs/sha256/x"
        );
        assert_eq!(normalize_member("abc/../def.tar").unwrap(), "def.tar");
        assert!(normalize_member("../x").is_none());
        assert!(normalize_member("a/../../x").is_none());
    }
}

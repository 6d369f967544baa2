//! Random access to the members of an image archive (the outer tar).
//!
//! The outer tar is indexed once (name → offset and size); members are then read with `pread`,
//! so several layers can be streamed in parallel from one file without extracting the archive.
//! Symlinked members (podman's `<id>/layer.tar -> ../<diffid>.tar`) are followed inside the archive's
//! own name space only: a link that leaves the archive, loops, or points nowhere is an error.

use super::ImageError;
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
}

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
        };
        archive.index()?;
        Ok(archive)
    }

    /// Every JSON document read so far, with the digest of the bytes read.
    pub fn documents_read(&self) -> Vec<DocumentRead> {
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

    fn index(&mut self) -> Result<(), ImageError> {
        if self.file_size == 0 {
            return Err(ImageError::NotTar {
                archive: self.display.clone(),
                detail: "the file is empty".into(),
            });
        }
        let reader = PositionedReader {
            file: &self.file,
            pos: 0,
        };
        let mut tar = tar::Archive::new(reader);
        let not_tar = |detail: String| ImageError::NotTar {
            archive: self.display.clone(),
            detail,
        };
        // Seeking past member data means indexing reads only the 512-byte headers, not the
        // layers: a warm start of a 300 MB image must not read 300 MB.
        let entries = tar
            .entries_with_seek()
            .map_err(|e| not_tar(e.to_string()))?;
        let mut members = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| not_tar(e.to_string()))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(name) = normalize_member(&raw) else {
                // A member name climbing out of the archive is never referenced legitimately;
                // it is simply not indexed, so a manifest pointing at it fails as "missing".
                continue;
            };
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
            if let MemberKind::File { offset, size } = kind {
                if offset.saturating_add(size) > self.file_size {
                    return Err(not_tar(format!(
                        "truncated: member {name} needs {size} bytes at offset {offset}, the file has {}",
                        self.file_size
                    )));
                }
            }
            members.insert(name, kind);
        }
        if members.is_empty() {
            return Err(not_tar("no members (an empty tar archive)".into()));
        }
        self.members = members;
        Ok(())
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
        let escapes = |target: &str| ImageError::MemberEscapes {
            archive: self.display.clone(),
            member: name.to_string(),
            target: target.to_string(),
        };
        let mut current = normalize_member(name).ok_or_else(|| escapes(name))?;
        for _ in 0..16 {
            match self.members.get(&current) {
                Some(MemberKind::File { offset, size }) => return Ok((*offset, *size)),
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
        let (offset, size) = self.resolve(name)?;
        Ok(MemberReader {
            file: &self.file,
            pos: offset,
            end: offset + size,
        })
    }

    /// Reads a small JSON member whole (manifests, configs); anything above 16 MiB is refused
    /// rather than loaded, since no real manifest or config comes near that.
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        const LIMIT: u64 = 16 << 20;
        let (offset, size) = self.resolve(name)?;
        if size > LIMIT {
            return Err(ImageError::Malformed {
                archive: self.display.clone(),
                member: name.to_string(),
                detail: format!("{size} bytes is too large for a JSON document (limit 16 MiB)"),
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        self.open_member(name)?
            .read_to_end(&mut buf)
            .map_err(|source| ImageError::Read {
                archive: self.display.clone(),
                member: name.to_string(),
                source,
            })?;
        if let Ok(mut read) = self.documents_read.lock() {
            if !read.iter().any(|d| d.offset == offset) {
                read.push(DocumentRead {
                    offset,
                    len: size,
                    sha256: super::Digest::of_bytes(&buf).hex().to_string(),
                });
            }
        }
        Ok(buf)
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
pub struct MemberReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = (self.end - self.pos) as usize;
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(left);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive truncated inside this member",
            ));
        }
        self.pos += n as u64;
        Ok(n)
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

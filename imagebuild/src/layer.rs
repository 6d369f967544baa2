//! Layer tarballs: from an in-code [`Entry`] list or from a directory tree.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::EntryType;

pub use super::tarutil::LongNames;
use super::tarutil::{append_pax, append_raw, RawEntry};
use super::BuildError;

/// One layer member. Paths are written verbatim (no sanitising): `../x`,
/// `/abs` and `a/../../b` are all allowed, which hostile tests need.
// `Raw` carries a whole 512-byte header; entries are few, so not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Entry {
    /// Written with a trailing `/` like docker/Go do.
    Dir {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        xattrs: Vec<(String, Vec<u8>)>,
    },
    File {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        data: Vec<u8>,
        /// Written as `SCHILY.xattr.<name>` PAX records.
        xattrs: Vec<(String, Vec<u8>)>,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// `target` is the archive path of an earlier member.
    Hardlink {
        path: String,
        target: String,
    },
    CharDev {
        path: String,
        major: u32,
        minor: u32,
        mode: u32,
    },
    BlockDev {
        path: String,
        major: u32,
        minor: u32,
        mode: u32,
    },
    Fifo {
        path: String,
        mode: u32,
    },
    /// Deletes `path` from lower layers: writes `dir/.wh.<name>`.
    Whiteout {
        path: String,
    },
    /// Hides everything below `dir` from lower layers: `dir/.wh..wh..opq`.
    Opaque {
        dir: String,
    },
    /// Arbitrary PAX records (`path`, `size`, `uid`, `SCHILY.xattr.*`,
    /// anything) in an `x` header right before `entry`.
    Pax {
        records: Vec<(String, Vec<u8>)>,
        entry: Box<Entry>,
    },
    /// Header written exactly as given (checksum included: call
    /// `set_cksum()` unless a bad checksum is the point), then `data`.
    Raw {
        header: tar::Header,
        data: Vec<u8>,
    },
}

impl Entry {
    pub fn dir(path: impl Into<String>, mode: u32) -> Self {
        Entry::Dir {
            path: path.into(),
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: vec![],
        }
    }
    pub fn file(path: impl Into<String>, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        Entry::File {
            path: path.into(),
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            data: data.into(),
            xattrs: vec![],
        }
    }
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Entry::Symlink {
            path: path.into(),
            target: target.into(),
        }
    }
    pub fn hardlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Entry::Hardlink {
            path: path.into(),
            target: target.into(),
        }
    }
    pub fn whiteout(path: impl Into<String>) -> Self {
        Entry::Whiteout { path: path.into() }
    }
    pub fn opaque(dir: impl Into<String>) -> Self {
        Entry::Opaque { dir: dir.into() }
    }
    /// Sets uid/gid (Dir and File only; others are root-owned).
    pub fn owner(mut self, u: u64, g: u64) -> Self {
        if let Entry::Dir { uid, gid, .. } | Entry::File { uid, gid, .. } = &mut self {
            *uid = u;
            *gid = g;
        }
        self
    }
    /// Sets the mtime (Dir and File only).
    pub fn mtime(mut self, t: u64) -> Self {
        if let Entry::Dir { mtime, .. } | Entry::File { mtime, .. } = &mut self {
            *mtime = t;
        }
        self
    }
    /// Adds an extended attribute (Dir and File only).
    pub fn xattr(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        if let Entry::Dir { xattrs, .. } | Entry::File { xattrs, .. } = &mut self {
            xattrs.push((name.into(), value.into()));
        }
        self
    }
    /// Wraps the entry with extra PAX records.
    pub fn with_pax(self, records: Vec<(String, Vec<u8>)>) -> Self {
        Entry::Pax {
            records,
            entry: Box::new(self),
        }
    }
}

fn xattr_records(x: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    x.iter()
        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
        .collect()
}

/// Inserts `prefix` before the last path component (`a/b` -> `a/.wh.b`).
fn in_same_dir(path: &str, prefix: &str) -> String {
    let p = path.trim_end_matches('/');
    match p.rfind('/') {
        Some(i) => format!("{}/{}{}", &p[..i], prefix, &p[i + 1..]),
        None => format!("{prefix}{p}"),
    }
}

fn write_one<W: Write>(
    b: &mut tar::Builder<W>,
    e: &Entry,
    long: LongNames,
    extra_pax: &[(String, Vec<u8>)],
) -> io::Result<()> {
    let mut pax: Vec<(String, Vec<u8>)> = extra_pax.to_vec();
    match e {
        Entry::Dir {
            path,
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        } => {
            let p = if path.is_empty() || path.ends_with('/') {
                path.clone()
            } else {
                format!("{path}/")
            };
            pax.extend(xattr_records(xattrs));
            let mut r = RawEntry::new(p.as_bytes(), EntryType::Directory, *mode);
            (r.uid, r.gid, r.mtime, r.pax) = (*uid, *gid, *mtime, &pax);
            append_raw(b, &r, long, io::empty())
        }
        Entry::File {
            path,
            mode,
            uid,
            gid,
            mtime,
            data,
            xattrs,
        } => {
            pax.extend(xattr_records(xattrs));
            let mut r = RawEntry::new(path.as_bytes(), EntryType::Regular, *mode);
            (r.uid, r.gid, r.mtime, r.size, r.pax) = (*uid, *gid, *mtime, data.len() as u64, &pax);
            append_raw(b, &r, long, &data[..])
        }
        Entry::Symlink { path, target } => {
            let mut r = RawEntry::new(path.as_bytes(), EntryType::Symlink, 0o777);
            (r.link, r.pax) = (Some(target.as_bytes()), &pax);
            append_raw(b, &r, long, io::empty())
        }
        Entry::Hardlink { path, target } => {
            let mut r = RawEntry::new(path.as_bytes(), EntryType::Link, 0o644);
            (r.link, r.pax) = (Some(target.as_bytes()), &pax);
            append_raw(b, &r, long, io::empty())
        }
        Entry::CharDev {
            path,
            major,
            minor,
            mode,
        }
        | Entry::BlockDev {
            path,
            major,
            minor,
            mode,
        } => {
            let kind = if matches!(e, Entry::CharDev { .. }) {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let mut r = RawEntry::new(path.as_bytes(), kind, *mode);
            (r.dev_major, r.dev_minor, r.pax) = (*major, *minor, &pax);
            append_raw(b, &r, long, io::empty())
        }
        Entry::Fifo { path, mode } => {
            let mut r = RawEntry::new(path.as_bytes(), EntryType::Fifo, *mode);
            r.pax = &pax;
            append_raw(b, &r, long, io::empty())
        }
        Entry::Whiteout { path } => {
            // Docker writes whiteouts as empty mode-0 regular files.
            let p = in_same_dir(path, ".wh.");
            let mut r = RawEntry::new(p.as_bytes(), EntryType::Regular, 0);
            r.pax = &pax;
            append_raw(b, &r, long, io::empty())
        }
        Entry::Opaque { dir } => {
            let d = dir.trim_end_matches('/');
            let p = if d.is_empty() {
                ".wh..wh..opq".to_string()
            } else {
                format!("{d}/.wh..wh..opq")
            };
            let mut r = RawEntry::new(p.as_bytes(), EntryType::Regular, 0o755);
            r.pax = &pax;
            append_raw(b, &r, long, io::empty())
        }
        Entry::Pax { records, entry } => {
            pax.extend(records.iter().cloned());
            if let Entry::Raw { .. } = **entry {
                // A raw header gets its own PAX header: nothing to merge into.
                append_pax(b, b"raw", &pax)?;
                write_one(b, entry, long, &[])
            } else {
                write_one(b, entry, long, &pax)
            }
        }
        Entry::Raw { header, data } => {
            if !pax.is_empty() {
                append_pax(b, b"raw", &pax)?;
            }
            b.append(header, &data[..])
        }
    }
}

/// Writes entries as a complete layer tar (with end-of-archive blocks).
pub fn write_entries<W: Write>(out: W, entries: &[Entry], long: LongNames) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    for e in entries {
        write_one(&mut b, e, long, &[])?;
    }
    b.into_inner()
}

/// A layer tar in memory from entries (Go-style long names).
pub fn layer_tar(entries: &[Entry]) -> Result<Vec<u8>, BuildError> {
    write_entries(Vec::new(), entries, LongNames::Auto)
        .map_err(|e| BuildError::stream("writing layer tar", e))
}

/// glibc's `major()` / `minor()` encoding of `st_rdev`.
fn dev_major_minor(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

struct Walker<W: Write> {
    b: tar::Builder<W>,
    /// (dev, ino) -> archive path of the first occurrence, so later names of
    /// the same inode become hardlinks (as docker does) instead of copies.
    inodes: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> Walker<W> {
    fn walk(&mut self, rel: &[u8], abs: &Path) -> Result<(), BuildError> {
        let mut names: Vec<OsString> = fs::read_dir(abs)
            .map_err(|e| BuildError::io("reading directory", abs, e))?
            .map(|d| d.map(|d| d.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| BuildError::io("reading directory", abs, e))?;
        // Byte order, so the same tree always gives the same tar (and digest).
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            self.entry(rel, &abs.join(&n), n.as_bytes())?;
        }
        Ok(())
    }

    fn entry(&mut self, rel: &[u8], abs: &Path, name: &[u8]) -> Result<(), BuildError> {
        let mut path = rel.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        let md = fs::symlink_metadata(abs).map_err(|e| BuildError::io("stat", abs, e))?;
        let ft = md.file_type();
        let mut r = RawEntry::new(&path, EntryType::Regular, md.mode() & 0o7777);
        (r.uid, r.gid, r.mtime) = (md.uid() as u64, md.gid() as u64, md.mtime().max(0) as u64);
        let werr = |e| BuildError::io("writing layer entry for", abs, e);
        if ft.is_dir() {
            let mut p = path.clone();
            p.push(b'/');
            let mut r = r.clone();
            (r.path, r.kind) = (&p, EntryType::Directory);
            append_raw(&mut self.b, &r, LongNames::Auto, io::empty()).map_err(werr)?;
            return self.walk(&path, abs);
        }
        if ft.is_symlink() {
            let t = fs::read_link(abs).map_err(|e| BuildError::io("readlink", abs, e))?;
            (r.kind, r.link) = (EntryType::Symlink, Some(t.as_os_str().as_bytes()));
            return append_raw(&mut self.b, &r, LongNames::Auto, io::empty()).map_err(werr);
        }
        if ft.is_socket() {
            return Ok(()); // tar cannot represent sockets; docker skips them too
        }
        if md.nlink() > 1 {
            if let Some(first) = self.inodes.get(&(md.dev(), md.ino())) {
                let first = first.clone();
                (r.kind, r.link) = (EntryType::Link, Some(first.as_slice()));
                return append_raw(&mut self.b, &r, LongNames::Auto, io::empty()).map_err(werr);
            }
            self.inodes.insert((md.dev(), md.ino()), path.clone());
        }
        if ft.is_file() {
            r.size = md.len();
            // Streamed from disk: big files never sit in memory.
            let f = fs::File::open(abs).map_err(|e| BuildError::io("opening", abs, e))?;
            return append_raw(
                &mut self.b,
                &r,
                LongNames::Auto,
                io::Read::take(f, md.len()),
            )
            .map_err(werr);
        }
        if ft.is_char_device() || ft.is_block_device() {
            r.kind = if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            (r.dev_major, r.dev_minor) = dev_major_minor(md.rdev());
        } else if ft.is_fifo() {
            r.kind = EntryType::Fifo;
        }
        append_raw(&mut self.b, &r, LongNames::Auto, io::empty()).map_err(werr)
    }
}

/// Streams a layer tar of `dir` into `out` (root entry itself not included,
/// paths relative without `./`, sorted by bytes, hardlinks kept as links,
/// modes/uid/gid/mtime from `lstat`; extended attributes are not captured).
/// With `only`, just those top-level names (and everything below them).
pub fn write_layer_from_dir<W: Write>(
    dir: &Path,
    out: W,
    only: Option<&[OsString]>,
) -> Result<W, BuildError> {
    let mut w = Walker {
        b: tar::Builder::new(out),
        inodes: HashMap::new(),
    };
    match only {
        None => w.walk(b"", dir)?,
        Some(names) => {
            let mut names = names.to_vec();
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for n in names {
                w.entry(b"", &dir.join(&n), n.as_bytes())?;
            }
        }
    }
    w.b.into_inner()
        .map_err(|e| BuildError::stream("finishing layer tar", e))
}

/// A layer tar of `dir` in memory (small trees; use
/// [`layer_from_dir_to_file`] for big ones).
pub fn layer_from_dir(dir: &Path) -> Result<Vec<u8>, BuildError> {
    write_layer_from_dir(dir, Vec::new(), None)
}

/// A layer tar of `dir` (or of the top-level names in `only`) written to
/// `dest`, streaming: memory use does not grow with the layer size.
pub fn layer_from_dir_to_file(
    dir: &Path,
    dest: &Path,
    only: Option<&[OsString]>,
) -> Result<(), BuildError> {
    let f = fs::File::create(dest).map_err(|e| BuildError::io("creating layer file", dest, e))?;
    let w = write_layer_from_dir(dir, io::BufWriter::new(f), only)?;
    let f = w
        .into_inner()
        .map_err(|e| BuildError::io("writing layer file", dest, e.into_error()))?;
    f.sync_all().ok();
    Ok(())
}

/// Deterministically splits the sorted top-level names of `dir` into `n`
/// contiguous groups of near-equal count (some empty if `n` exceeds the count).
pub fn split_top_level(dir: &Path, n: usize) -> Result<Vec<Vec<OsString>>, BuildError> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .map_err(|e| BuildError::io("reading directory", dir, e))?
        .map(|d| d.map(|d| d.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| BuildError::io("reading directory", dir, e))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let n = n.max(1);
    let (q, r) = (names.len() / n, names.len() % n);
    let mut it = names.into_iter();
    Ok((0..n)
        .map(|i| it.by_ref().take(q + usize::from(i < r)).collect())
        .collect())
}

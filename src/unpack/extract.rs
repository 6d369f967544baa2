//! Safe extraction of one layer tar into one layer directory.
//!
//! The archive is hostile until proven otherwise. The rules:
//! - a member path is split into components; `..` anywhere is refused, a leading `/` or `./` is
//!   dropped (paths are relative to the layer root);
//! - the parent directory is opened beneath the layer dir fd with `RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS` (see [`crate::sys::fs`]): writing *through* a symlink is refused, even one
//!   that points inside the layer, because its meaning depends on the layers below;
//! - leaves are created with `*at` calls on that parent fd, files with `O_CREAT|O_EXCL|O_NOFOLLOW`;
//! - a hardlink's target must be a non-directory already extracted in this same layer;
//! - OCI whiteouts become overlayfs whiteouts (char device 0/0), `.wh..wh..opq` becomes the
//!   `user.overlay.opaque=y` xattr (read by overlayfs mounted with `userxattr`, which rcrun uses as
//!   root and rootless alike, so one layer format serves both);
//! - layer-supplied `trusted.*`, `user.overlay.*`, `security.*` (except `security.capability`) and
//!   `system.*` xattrs are dropped: a layer must not forge whiteouts, redirects or labels.
//! - directory modes are applied after all members (a `0555` dir must not block its own children).

mod apply;

use nix::errno::Errno;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Name of the xattr marking an opaque directory (overlayfs with `userxattr`).
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// What to do with the owners recorded in the tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// Real root: set every owner, failure is an error.
    Preserve,
    /// Inside a user namespace with a subordinate-id map: set owners, ignore ids outside the map.
    BestEffort,
    /// Rootless with a single-id map: everything belongs to the invoking user.
    Skip,
    /// Real root preparing layers for a container in a user namespace (`--userns`): image id N
    /// is stored as `base + N` (the id it has on the host through the map `0 base count`); ids
    /// outside the range are left to root, i.e. unmapped (shown as nobody).
    Shift {
        uid_base: u32,
        gid_base: u32,
        count: u32,
    },
}

impl Owners {
    /// The host ids to give a file the image says belongs to `uid:gid`; None = leave as is.
    fn host_ids(self, uid: u64, gid: u64) -> Option<(u32, u32)> {
        match self {
            Owners::Skip => None,
            Owners::Preserve | Owners::BestEffort => Some((uid as u32, gid as u32)),
            Owners::Shift {
                uid_base,
                gid_base,
                count,
            } => (uid < count as u64 && gid < count as u64)
                .then(|| (uid_base + uid as u32, gid_base + gid as u32)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub owners: Owners,
    /// Create device nodes (only real root can); otherwise they are skipped and counted.
    pub devices: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    pub skipped_devices: u64,
    pub dropped_xattrs: u64,
    pub file_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    #[error("entry {entry:?}: {op}: {source}")]
    Sys {
        entry: String,
        op: &'static str,
        source: Errno,
    },
    #[error("entry {entry:?}: writing file data: {source}")]
    Write { entry: String, source: io::Error },
    #[error("reading the layer tar: {0}")]
    Tar(io::Error),
}

struct DeferredDir {
    path: PathBuf,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Extractor<'a> {
    root: BorrowedFd<'a>,
    policy: Policy,
    stats: LayerStats,
    /// The last parent directory opened; tar members mostly arrive grouped by directory.
    parent_cache: Option<(PathBuf, OwnedFd)>,
    dirs: Vec<DeferredDir>,
    dir_index: HashMap<PathBuf, usize>,
    buf: Vec<u8>,
}

/// Splits a member path into a safe relative path. `None` for the layer root itself.
pub fn sanitize(raw: &[u8]) -> Result<Option<PathBuf>, String> {
    if raw.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    let mut out = PathBuf::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path contains '..'".into()),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn entry_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Extracts the tar stream into the directory `root`. Returns the statistics and the stream, so
/// the caller can read it to its end for verification.
pub fn extract<R: Read>(
    stream: R,
    root: BorrowedFd<'_>,
    policy: Policy,
) -> Result<(LayerStats, R), ExtractError> {
    // The guard sits between the layer stream and the tar reader: see [`guard`] for why.
    let mut archive = tar::Archive::new(guard::ExtensionGuard::new(stream));
    let mut ex = Extractor {
        root,
        policy,
        stats: LayerStats::default(),
        parent_cache: None,
        dirs: Vec::new(),
        dir_index: HashMap::new(),
        buf: vec![0u8; 1 << 20],
    };
    {
        let entries = archive.entries().map_err(ExtractError::Tar)?;
        for entry in entries {
            let mut entry = entry.map_err(ExtractError::Tar)?;
            ex.stats.entries += 1;
            ex.entry(&mut entry)?;
        }
    }
    ex.apply_dirs()?;
    Ok((ex.stats, archive.into_inner().into_inner()))
}

/// A bound on tar *extension* headers, enforced before the `tar` crate sees them.
///
/// Why: the `tar` crate reads a PAX (`x`) header or a GNU long name/link (`L`/`K`) member whole
/// into a `Vec` before it yields the entry they describe (`EntryFields::read_all`), however large
/// the header says it is. A layer is usually compressed, so a 10 MB gzip layer can declare a
/// 4 GiB PAX header made of zeros and make us allocate 4 GiB. Real extension headers hold a path,
/// a link target, a few times and some xattrs: a few hundred bytes, at most tens of KiB with
/// large `security.*` values. We refuse anything above [`EXTENSION_LIMIT`].
///
/// How: a reader wrapper that follows the tar structure as the bytes stream past, mirroring the
/// tar crate's own bookkeeping (tar 0.4.46 `EntriesFields::next_entry`): 512-byte headers; entry
/// data rounded up to 512; a PAX `size` record overriding the size of the next non-extension
/// entry; GNU sparse extension blocks; an all-zero block ends the archive (after which bytes pass
/// through unexamined, for the digest). Anything it cannot parse (bad checksum, size overflow) the
/// tar reader will refuse on its own, so the guard simply stops looking. It only ever *refuses*;
/// it never changes a byte.
pub mod guard {
    use std::io::{self, Read};

    /// Largest accepted `x`, `g`, `L` or `K` member (1 MiB).
    pub const EXTENSION_LIMIT: u64 = 1 << 20;
    const BLOCK: u64 = 512;

    /// The error a too-large extension header produces (inside an `io::Error` of kind
    /// `InvalidData`, which the tar reader passes through unchanged).
    #[derive(Debug, thiserror::Error)]
    #[error("tar member header at byte {offset} of the layer: a {kind} declares {size} bytes, more than the {limit} bytes allowed for an extension header (refused before reading it: the tar reader would hold it in memory whole)")]
    pub struct ExtensionTooLarge {
        pub offset: u64,
        pub kind: &'static str,
        pub size: u64,
        pub limit: u64,
    }

    enum State {
        /// Collecting the 512 bytes of a header.
        Header { buf: Box<[u8; 512]>, fill: usize },
        /// GNU sparse extension blocks; `data` follows them.
        SparseExt {
            buf: Box<[u8; 512]>,
            fill: usize,
            data: u64,
        },
        /// Entry data (padded to 512). `keep` bytes of it are collected for a PAX header.
        Data {
            left: u64,
            keep: u64,
            collect: Option<Vec<u8>>,
        },
        /// End of archive reached, or a header the tar reader will refuse: stop looking.
        Done,
    }

    pub struct ExtensionGuard<R> {
        inner: R,
        pos: u64,
        header_pos: u64,
        state: State,
        /// The data of the last PAX `x` header, which describes the next entry.
        pending_pax: Option<Vec<u8>>,
    }

    fn pad(size: u64) -> Option<u64> {
        size.checked_add(BLOCK - 1).map(|s| s & !(BLOCK - 1))
    }

    fn new_header() -> State {
        State::Header {
            buf: Box::new([0u8; 512]),
            fill: 0,
        }
    }

    impl<R: Read> ExtensionGuard<R> {
        pub fn new(inner: R) -> Self {
            ExtensionGuard {
                inner,
                pos: 0,
                header_pos: 0,
                state: new_header(),
                pending_pax: None,
            }
        }

        pub fn into_inner(self) -> R {
            self.inner
        }

        /// Follows the tar structure over `bytes`, which are about to be handed to the reader.
        fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ExtensionTooLarge> {
            while !bytes.is_empty() {
                match &mut self.state {
                    State::Done => return Ok(()),
                    State::Header { buf, fill } | State::SparseExt { buf, fill, .. } => {
                        let n = (512 - *fill).min(bytes.len());
                        buf[*fill..*fill + n].copy_from_slice(&bytes[..n]);
                        *fill += n;
                        bytes = &bytes[n..];
                        self.pos += n as u64;
                        if *fill == 512 {
                            let block = std::mem::replace(buf, Box::new([0u8; 512]));
                            if matches!(self.state, State::Header { .. }) {
                                self.header(&block)?;
                            } else {
                                self.sparse_ext(&block);
                            }
                        }
                    }
                    State::Data {
                        left,
                        keep,
                        collect,
                    } => {
                        let n = (*left).min(bytes.len() as u64) as usize;
                        if let Some(c) = collect {
                            let k = (*keep).min(n as u64) as usize;
                            c.extend_from_slice(&bytes[..k]);
                            *keep -= k as u64;
                        }
                        *left -= n as u64;
                        bytes = &bytes[n..];
                        self.pos += n as u64;
                        if *left == 0 {
                            if let Some(c) = collect.take() {
                                self.pending_pax = Some(c);
                            }
                            self.header_pos = self.pos;
                            self.state = new_header();
                        }
                    }
                }
            }
            Ok(())
        }

        fn header(&mut self, block: &[u8; 512]) -> Result<(), ExtensionTooLarge> {
            if block.iter().all(|&b| b == 0) {
                self.state = State::Done;
                return Ok(());
            }
            let header = tar::Header::from_byte_slice(block);
            let sum = block[..148]
                .iter()
                .chain(&block[156..])
                .fold(0u32, |a, &b| a + b as u32)
                + 8 * 32;
            let Ok(mut size) = header.entry_size() else {
                self.state = State::Done;
                return Ok(());
            };
            if header.cksum().ok() != Some(sum) {
                self.state = State::Done;
                return Ok(());
            }
            let kind = match block[156] {
                b'x' => Some("PAX extended header ('x')"),
                b'g' => Some("PAX global header ('g')"),
                b'L' => Some("GNU long name ('L')"),
                b'K' => Some("GNU long link name ('K')"),
                _ => None,
            };
            if let Some(kind) = kind {
                if size > EXTENSION_LIMIT {
                    return Err(ExtensionTooLarge {
                        offset: self.header_pos,
                        kind,
                        size,
                        limit: EXTENSION_LIMIT,
                    });
                }
            }
            let recognized = header.as_ustar().is_some() || header.as_gnu().is_some();
            // The tar reader consumes recognised `x`/`L`/`K` headers itself; every other header
            // (including `g`) is an entry it returns, which ends the PAX records' scope.
            let consumed = recognized && matches!(block[156], b'x' | b'L' | b'K');
            let mut collect = None;
            if consumed {
                if block[156] == b'x' {
                    collect = Some(Vec::with_capacity(size as usize));
                }
            } else {
                let pending = self.pending_pax.take();
                if kind.is_none() {
                    if let Some(s) = pending.as_deref().and_then(pax_size) {
                        size = s;
                    }
                }
            }
            let Some(padded) = pad(size) else {
                self.state = State::Done;
                return Ok(());
            };
            let sparse_ext = !consumed
                && header.entry_type().is_gnu_sparse()
                && header.as_gnu().is_some_and(|g| g.is_extended());
            self.state = if sparse_ext {
                State::SparseExt {
                    buf: Box::new([0u8; 512]),
                    fill: 0,
                    data: padded,
                }
            } else {
                State::Data {
                    left: padded,
                    keep: size,
                    collect,
                }
            };
            if padded == 0 && !sparse_ext {
                // An empty entry: straight on to the next header.
                if let State::Data { collect, .. } = &mut self.state {
                    if let Some(c) = collect.take() {
                        self.pending_pax = Some(c);
                    }
                }
                self.header_pos = self.pos;
                self.state = new_header();
            }
            Ok(())
        }

        fn sparse_ext(&mut self, block: &[u8; 512]) {
            let State::SparseExt { data, .. } = self.state else {
                return;
            };
            // Byte 504 of a GNU sparse extension block: another block follows.
            if block[504] == 0 {
                self.state = State::Data {
                    left: data,
                    keep: 0,
                    collect: None,
                };
                if data == 0 {
                    self.header_pos = self.pos;
                    self.state = new_header();
                }
            }
        }
    }

    /// The PAX `size` record, parsed exactly as the tar crate does (first `size` record wins,
    /// a malformed record list or value means no override).
    fn pax_size(data: &[u8]) -> Option<u64> {
        for ext in tar::PaxExtensions::new(data) {
            let ext = ext.ok()?;
            if ext.key() != Ok("size") {
                continue;
            }
            return ext.value().ok()?.parse().ok();
        }
        None
    }

    impl<R: Read> Read for ExtensionGuard<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.feed(&buf[..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            Ok(n)
        }
    }
}

/// Layer-supplied xattrs that are safe to apply.
pub fn xattr_allowed(name: &str) -> bool {
    if name.starts_with("user.overlay.")
        || name.starts_with("trusted.")
        || name.starts_with("system.")
    {
        return false;
    }
    if name.starts_with("security.") {
        return name == "security.capability";
    }
    name.starts_with("user.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_paths() {
        assert_eq!(
            sanitize(b"./etc/passwd").unwrap().unwrap(),
            PathBuf::from("etc/passwd")
        );
        assert_eq!(
            sanitize(b"/abs/x").unwrap().unwrap(),
            PathBuf::from("abs/x")
        );
        assert_eq!(sanitize(b"./").unwrap(), None);
        assert!(sanitize(b"../x").is_err());
        assert!(sanitize(b"a/../../x").is_err());
        assert!(sanitize(b"a/..").is_err());
    }

    #[test]
    fn filters_xattrs() {
        assert!(xattr_allowed("user.mime_type"));
        assert!(xattr_allowed("security.capability"));
        assert!(!xattr_allowed("user.overlay.opaque"));
        assert!(!xattr_allowed("trusted.overlay.opaque"));
        assert!(!xattr_allowed("trusted.foo"));
        assert!(!xattr_allowed("security.selinux"));
        assert!(!xattr_allowed("system.posix_acl_access"));
    }
}

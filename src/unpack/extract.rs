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

use crate::sys::fs as sysfs;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

impl Extractor<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let raw = entry.path_bytes().into_owned();
        let name_for_errors = entry_name(&raw);
        let bad = |reason: String| ExtractError::Entry {
            entry: name_for_errors.clone(),
            reason,
        };
        let Some(rel) = sanitize(&raw).map_err(bad)? else {
            // The layer root itself ("./"): only a directory makes sense there, and the layer dir
            // already exists. Anything else (a symlink named ".") would replace the root.
            if entry.header().entry_type().is_dir() {
                return Ok(());
            }
            return Err(bad("names the layer root but is not a directory".into()));
        };
        let file_name = rel
            .file_name()
            .expect("sanitized path has a last component")
            .to_owned();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let name_bytes = file_name.as_bytes();

        if let Some(target) = name_bytes.strip_prefix(b".wh.") {
            return self.whiteout(&name_for_errors, &parent, target);
        }

        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| bad(format!("bad mode field: {e}")))?
            & 0o7777;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        let xattrs = self.xattrs(entry)?;
        let parent_fd = self.take_parent(&name_for_errors, &parent)?;
        let result = self.member(
            entry,
            parent_fd.as_fd(),
            &rel,
            &name_for_errors,
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        );
        self.put_parent(parent, parent_fd);
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn member<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: BorrowedFd<'_>,
        rel: &Path,
        name_for_errors: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        xattrs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), ExtractError> {
        let bad = |reason: String| ExtractError::Entry {
            entry: name_for_errors.to_string(),
            reason,
        };
        let kind = entry.header().entry_type();
        let file_name = rel
            .file_name()
            .expect("sanitized path has a last component")
            .to_owned();
        let name = Path::new(&file_name);
        let sys = |op: &'static str| {
            let e = name_for_errors.to_string();
            move |source: Errno| ExtractError::Sys {
                entry: e,
                op,
                source,
            }
        };

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match sysfs::lstat_at(dir, name).map_err(sys("stat"))? {
                    Some(st) if sysfs::is_dir(&st) => {}
                    Some(_) => {
                        self.remove(dir, name)
                            .map_err(sys("replace existing entry"))?;
                        sysfs::mkdir_at(dir, name, 0o700).map_err(sys("mkdir"))?;
                    }
                    None => sysfs::mkdir_at(dir, name, 0o700).map_err(sys("mkdir"))?,
                }
                self.stats.dirs += 1;
                let d = DeferredDir {
                    path: rel.to_path_buf(),
                    mode,
                    uid,
                    gid,
                    mtime,
                    xattrs,
                };
                match self.dir_index.get(rel) {
                    Some(&i) => self.dirs[i] = d,
                    None => {
                        self.dir_index.insert(rel.to_path_buf(), self.dirs.len());
                        self.dirs.push(d);
                    }
                }
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                // Create first and replace only on EEXIST (what tar does): most members are new,
                // and a stat before every create costs a syscall per file for nothing.
                let create = || {
                    openat(
                        dir,
                        name,
                        OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )
                };
                let fd = match create() {
                    Err(Errno::EEXIST) => {
                        self.remove(dir, name)
                            .map_err(sys("replace existing entry"))?;
                        create()
                    }
                    other => other,
                }
                .map_err(sys("create file"))?;
                let mut file = std::fs::File::from(fd);
                loop {
                    let n = match entry.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(ExtractError::Tar(e)),
                    };
                    file.write_all(&self.buf[..n])
                        .map_err(|source| ExtractError::Write {
                            entry: name_for_errors.to_string(),
                            source,
                        })?;
                    self.stats.file_bytes += n as u64;
                }
                self.finish_fd(
                    file.as_fd(),
                    name_for_errors,
                    mode,
                    uid,
                    gid,
                    mtime,
                    &xattrs,
                )?;
                self.stats.files += 1;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("symlink without a target".into()))?
                    .into_owned();
                if target.is_empty() || target.contains(&0) {
                    return Err(bad("symlink target is empty or contains NUL".into()));
                }
                self.remove_existing(dir, name)
                    .map_err(sys("replace existing entry"))?;
                nix::unistd::symlinkat(OsStr::from_bytes(&target), dir, name)
                    .map_err(sys("symlink"))?;
                self.chown_at(dir, name, uid, gid)
                    .map_err(sys("chown symlink"))?;
                let t = TimeSpec::new(mtime as i64, 0);
                nix::sys::stat::utimensat(
                    dir,
                    name,
                    &t,
                    &t,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .map_err(sys("set symlink times"))?;
                self.stats.symlinks += 1;
            }
            T::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("hardlink without a target".into()))?
                    .into_owned();
                let target = sanitize(&target_raw)
                    .map_err(|r| {
                        bad(format!(
                            "hardlink target {:?}: {r}",
                            entry_name(&target_raw)
                        ))
                    })?
                    .ok_or_else(|| bad("hardlink to the layer root".into()))?;
                let tparent = target.parent().map(Path::to_path_buf).unwrap_or_default();
                let tname = target.file_name().expect("sanitized").to_owned();
                let not_here = || {
                    bad(format!(
                        "hardlink target {:?} is not a file extracted earlier in this layer",
                        target.display()
                    ))
                };
                let tdir = match sysfs::open_dir_beneath(self.root, &tparent) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP)
                    | Err(Errno::EXDEV) => return Err(not_here()),
                    Err(e) => return Err(sys("open hardlink target dir")(e)),
                };
                let tstat = sysfs::lstat_at(tdir.as_fd(), Path::new(&tname))
                    .map_err(sys("stat hardlink target"))?;
                let tstat = match tstat {
                    Some(st) if !sysfs::is_dir(&st) => st,
                    _ => return Err(not_here()),
                };
                if let Some(existing) = sysfs::lstat_at(dir, name).map_err(sys("stat"))? {
                    if existing.st_ino == tstat.st_ino && existing.st_dev == tstat.st_dev {
                        return Ok(());
                    }
                    self.remove(dir, name)
                        .map_err(sys("replace existing entry"))?;
                }
                nix::unistd::linkat(tdir.as_fd(), Path::new(&tname), dir, name, AtFlags::empty())
                    .map_err(sys("hardlink"))?;
                self.stats.hardlinks += 1;
            }
            T::Char | T::Block | T::Fifo => {
                let kind_flag = match kind {
                    T::Char => SFlag::S_IFCHR,
                    T::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                if kind != T::Fifo && !self.policy.devices {
                    self.stats.skipped_devices += 1;
                    return Ok(());
                }
                let major = entry.header().device_major().ok().flatten().unwrap_or(0) as u64;
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0) as u64;
                self.remove_existing(dir, name)
                    .map_err(sys("replace existing entry"))?;
                sysfs::mknod_at(dir, name, kind_flag, 0o600, major, minor).map_err(sys("mknod"))?;
                self.chown_at(dir, name, uid, gid).map_err(sys("chown"))?;
                // fchmodat on a node we just created: it is not a symlink, so following is moot.
                nix::sys::stat::fchmodat(
                    dir,
                    name,
                    Mode::from_bits_truncate(mode),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
                .map_err(sys("chmod"))?;
                let t = TimeSpec::new(mtime as i64, 0);
                nix::sys::stat::utimensat(
                    dir,
                    name,
                    &t,
                    &t,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .map_err(sys("set times"))?;
            }
            _ => {
                tracing::debug!(entry = %name_for_errors, ?kind, "skipping tar entry of unsupported type");
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, entry: &str, parent: &Path, target: &[u8]) -> Result<(), ExtractError> {
        let bad = |reason: &str| ExtractError::Entry {
            entry: entry.to_string(),
            reason: reason.to_string(),
        };
        let sys = |op: &'static str| {
            move |source: Errno| ExtractError::Sys {
                entry: entry.to_string(),
                op,
                source,
            }
        };
        if target == b".wh..opq" {
            let dir = self.take_parent(entry, parent)?;
            let r = sysfs::fsetxattr(dir.as_fd(), OPAQUE_XATTR, b"y")
                .map_err(sys("mark directory opaque"));
            self.put_parent(parent.to_path_buf(), dir);
            r?;
            self.stats.opaque_dirs += 1;
            return Ok(());
        }
        if target.starts_with(b".wh.") {
            // Other `.wh..wh.*` names are AUFS bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`).
            return Ok(());
        }
        match target {
            b"" => return Err(bad("whiteout with an empty name ('.wh.')")),
            b"." | b".." => return Err(bad("whiteout of '.' or '..'")),
            _ => {}
        }
        let dir = self.take_parent(entry, parent)?;
        let name = Path::new(OsStr::from_bytes(target));
        // OCI image spec: a whiteout hides only lower layers; an entry of the same name in this
        // layer wins whatever the order (a later entry replaces the whiteout node).
        let r = match sysfs::lstat_at(dir.as_fd(), name).map_err(sys("stat")) {
            Ok(Some(_)) => Ok(false),
            Ok(None) => sysfs::mknod_whiteout(dir.as_fd(), name)
                .map(|_| true)
                .map_err(sys("create whiteout (mknod 0/0)")),
            Err(e) => Err(e),
        };
        self.put_parent(parent.to_path_buf(), dir);
        if r? {
            self.stats.whiteouts += 1;
        }
        Ok(())
    }

    /// Opens (creating as needed) the parent directory of an entry, beneath the layer root.
    /// The fd is taken out of the one-entry cache; [`Self::put_parent`] returns it. Since the cache
    /// only ever holds the parent of the entry being processed, removing a child of it (replacing
    /// an entry) cannot leave a stale fd behind.
    fn take_parent(&mut self, entry: &str, parent: &Path) -> Result<OwnedFd, ExtractError> {
        if let Some((p, fd)) = self.parent_cache.take() {
            if p == parent {
                return Ok(fd);
            }
        }
        let refuse = |what: String| ExtractError::Entry {
            entry: entry.to_string(),
            reason: format!("{what}; refusing to write through it"),
        };
        match sysfs::open_dir_beneath(self.root, parent) {
            Ok(fd) => Ok(fd),
            Err(Errno::ENOENT) => self.create_parents(entry, parent),
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => Err(refuse(format!(
                "a component of {:?} is a symlink or not a directory",
                parent.display()
            ))),
            Err(Errno::EXDEV) => Err(refuse(format!(
                "{:?} crosses a mount point",
                parent.display()
            ))),
            Err(source) => Err(ExtractError::Sys {
                entry: entry.to_string(),
                op: "open parent directory",
                source,
            }),
        }
    }

    fn put_parent(&mut self, parent: PathBuf, fd: OwnedFd) {
        self.parent_cache = Some((parent, fd));
    }

    /// Creates missing parent directories one component at a time (mode 0755, like tar does for
    /// directories the archive does not list), never following a symlink.
    fn create_parents(&mut self, entry: &str, parent: &Path) -> Result<OwnedFd, ExtractError> {
        let mut cur = sysfs::open_dir_beneath(self.root, Path::new("")).map_err(|source| {
            ExtractError::Sys {
                entry: entry.to_string(),
                op: "open layer root",
                source,
            }
        })?;
        for comp in parent.components() {
            let name = Path::new(comp.as_os_str());
            cur = match sysfs::open_child_dir(cur.as_fd(), name) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match sysfs::mkdir_at(cur.as_fd(), name, 0o755) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(source) => return Err(ExtractError::Sys { entry: entry.to_string(), op: "mkdir parent", source }),
                    }
                    sysfs::open_child_dir(cur.as_fd(), name)
                        .map_err(|source| ExtractError::Sys { entry: entry.to_string(), op: "open parent", source })?
                }
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                    return Err(ExtractError::Entry {
                        entry: entry.to_string(),
                        reason: format!("parent component {:?} is a symlink or not a directory; refusing to write through it", comp.as_os_str()),
                    })
                }
                Err(source) => return Err(ExtractError::Sys { entry: entry.to_string(), op: "open parent", source }),
            };
        }
        Ok(cur)
    }

    /// Removes whatever is at `name` unless it is absent.
    fn remove_existing(&mut self, dir: BorrowedFd<'_>, name: &Path) -> nix::Result<()> {
        if sysfs::lstat_at(dir, name)?.is_some() {
            self.remove(dir, name)?;
        }
        Ok(())
    }

    /// Removes `name` (recursively for directories) below `dir`, never following symlinks.
    fn remove(&mut self, dir: BorrowedFd<'_>, name: &Path) -> nix::Result<()> {
        use nix::unistd::{unlinkat, UnlinkatFlags};
        let Some(st) = sysfs::lstat_at(dir, name)? else {
            return Ok(());
        };
        if sysfs::is_dir(&st) {
            remove_dir_contents(dir, name)?;
            unlinkat(dir, name, UnlinkatFlags::RemoveDir)
        } else {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
        }
    }

    fn chown_at(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &Path,
        uid: u64,
        gid: u64,
    ) -> nix::Result<()> {
        let Some((uid, gid)) = self.policy.owners.host_ids(uid, gid) else {
            return Ok(());
        };
        let r = nix::unistd::fchownat(
            dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        self.owner_result(r)
    }

    fn owner_result(&self, r: nix::Result<()>) -> nix::Result<()> {
        match (r, self.policy.owners) {
            // In a user namespace, ids outside the map cannot be set (EINVAL): they stay owned by
            // the namespace's root, which is what podman's ignore_chown_errors does.
            (Err(Errno::EINVAL) | Err(Errno::EPERM), Owners::BestEffort) => Ok(()),
            (r, _) => r,
        }
    }

    /// Owner, xattrs, mode, times — in that order: chown clears setuid bits and file
    /// capabilities (chown(2)), so they are set after it.
    #[allow(clippy::too_many_arguments)]
    fn finish_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        entry: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), ExtractError> {
        let sys = |op: &'static str| {
            move |source: Errno| ExtractError::Sys {
                entry: entry.to_string(),
                op,
                source,
            }
        };
        if let Some((uid, gid)) = self.policy.owners.host_ids(uid, gid) {
            let r = nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
            self.owner_result(r).map_err(sys("chown"))?;
        }
        for (k, v) in xattrs {
            match sysfs::fsetxattr(fd, k, v) {
                Ok(()) => {}
                // security.capability needs privilege over the file; other unsupported xattrs
                // (file systems without user xattrs) are not worth failing a layer for.
                Err(e) => {
                    tracing::debug!(entry, xattr = %k, error = %e, "xattr not applied");
                    self.stats.dropped_xattrs += 1;
                }
            }
        }
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode)).map_err(sys("chmod"))?;
        let t = TimeSpec::new(mtime as i64, 0);
        nix::sys::stat::futimens(fd, &t, &t).map_err(sys("set times"))?;
        Ok(())
    }

    /// The xattrs a member carries (PAX `SCHILY.xattr.*`), minus the ones a layer must not set.
    fn xattrs<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<Vec<(String, Vec<u8>)>, ExtractError> {
        let mut out = Vec::new();
        let Ok(Some(exts)) = entry.pax_extensions() else {
            return Ok(out);
        };
        for ext in exts {
            let Ok(ext) = ext else { continue };
            let Ok(key) = ext.key() else { continue };
            let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
                continue;
            };
            if xattr_allowed(name) {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            } else {
                tracing::debug!(xattr = name, "dropping layer-supplied xattr");
                self.stats.dropped_xattrs += 1;
            }
        }
        Ok(out)
    }

    fn apply_dirs(&mut self) -> Result<(), ExtractError> {
        self.parent_cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        // Children before parents, so a read-only parent is made read-only last.
        for d in dirs.iter().rev() {
            let entry = d.path.display().to_string();
            let fd = match sysfs::open_dir_beneath(self.root, &d.path) {
                Ok(fd) => fd,
                // Replaced or removed by a later member: nothing to apply.
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => continue,
                Err(source) => {
                    return Err(ExtractError::Sys {
                        entry,
                        op: "reopen directory",
                        source,
                    })
                }
            };
            self.finish_fd(fd.as_fd(), &entry, d.mode, d.uid, d.gid, d.mtime, &d.xattrs)?;
        }
        Ok(())
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

fn remove_dir_contents(parent: BorrowedFd<'_>, name: &Path) -> nix::Result<()> {
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let fd = sysfs::open_child_dir(parent, name)?;
    // Make sure we may delete inside it (a 0555 directory from this same layer).
    let _ = nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(0o700));
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let names: Vec<(std::ffi::OsString, bool)> = d
        .iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_bytes() != b"." && e.file_name().to_bytes() != b"..")
        .map(|e| {
            let n = OsStr::from_bytes(e.file_name().to_bytes()).to_owned();
            let is_dir = matches!(e.file_type(), Some(nix::dir::Type::Directory));
            (n, is_dir)
        })
        .collect();
    let dfd = d.as_fd();
    for (n, is_dir) in names {
        let p = Path::new(&n);
        if is_dir {
            remove_dir_contents(dfd, p)?;
            unlinkat(dfd, p, UnlinkatFlags::RemoveDir)?;
        } else {
            unlinkat(dfd, p, UnlinkatFlags::NoRemoveDir)?;
        }
    }
    Ok(())
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

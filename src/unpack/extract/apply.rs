//! Applying one tar entry to the layer directory: every path resolved beneath the layer's root
//! (files, directories, links, devices, whiteouts), then owners, modes, times and the xattrs
//! that are safe to keep; directories' own metadata deferred until their contents are written.

use super::{
    entry_name, sanitize, xattr_allowed, DeferredDir, ExtractError, Extractor, Owners, OPAQUE_XATTR,
};
use crate::sys::fs as sysfs;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

impl Extractor<'_> {
    pub(super) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), ExtractError> {
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
    pub(super) fn member<R: Read>(
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

    pub(super) fn whiteout(
        &mut self,
        entry: &str,
        parent: &Path,
        target: &[u8],
    ) -> Result<(), ExtractError> {
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
    pub(super) fn take_parent(
        &mut self,
        entry: &str,
        parent: &Path,
    ) -> Result<OwnedFd, ExtractError> {
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

    pub(super) fn put_parent(&mut self, parent: PathBuf, fd: OwnedFd) {
        self.parent_cache = Some((parent, fd));
    }

    /// Creates missing parent directories one component at a time (mode 0755, like tar does for
    /// directories the archive does not list), never following a symlink.
    pub(super) fn create_parents(
        &mut self,
        entry: &str,
        parent: &Path,
    ) -> Result<OwnedFd, ExtractError> {
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
    pub(super) fn remove_existing(&mut self, dir: BorrowedFd<'_>, name: &Path) -> nix::Result<()> {
        if sysfs::lstat_at(dir, name)?.is_some() {
            self.remove(dir, name)?;
        }
        Ok(())
    }

    /// Removes `name` (recursively for directories) below `dir`, never following symlinks.
    pub(super) fn remove(&mut self, dir: BorrowedFd<'_>, name: &Path) -> nix::Result<()> {
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

    pub(super) fn chown_at(
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

    pub(super) fn owner_result(&self, r: nix::Result<()>) -> nix::Result<()> {
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
    pub(super) fn finish_fd(
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
    pub(super) fn xattrs<R: Read>(
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

    pub(super) fn apply_dirs(&mut self) -> Result<(), ExtractError> {
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

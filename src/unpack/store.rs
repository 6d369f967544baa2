//! The content-addressed layer store.
//!
//! ```text
//! <root>/                      mode 0700: a world-readable store would expose setuid binaries
//!   layers/<owners>/<hex>/     one directory per layer, keyed by diff_id
//!       fs/                    the layer's files: an overlayfs lower dir
//!       layer.json             what extraction found (entries, whiteouts, skipped devices, ...)
//!   locks/<owners>-<hex>.lock  flock(2) held while a layer is being extracted
//!   tmp/                       extractions in progress, renamed into layers/ when verified
//!   run/                       scratch mount point, used only inside containers' mount namespaces
//!   cache/                     compiled seccomp programs, the image cache (`cache/images/`)
//!   unsynced/<owners>-<hex>    layers renamed into place whose data a background syncfs has not
//!                              confirmed yet (trusted only during the boot that wrote them)
//! ```
//!
//! **Why diff_id, not chain id.** A chain id names a layer *together with everything below it*;
//! it is the right key when a layer directory is a snapshot of the whole stack (docker's older
//! graph drivers). Here each directory holds only that layer's own changes, with whiteouts kept
//! as overlay whiteouts, and overlayfs combines them at mount time. The same diff_id therefore
//! means the same directory whatever sits below it, so diff_id shares more and is verifiable on
//! its own.
//!
//! **Why `<owners>`.** The same layer extracted by root (owners preserved), by a plain user with a
//! single-id map (everything owned by the user) or inside a user namespace with subordinate ids
//! (owners shifted into the subordinate range) gives different inodes; each gets its own tree.

use super::extract::Policy;
use crate::image::Digest;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("layer store {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("layer store {path} is not writable by uid {uid}: use --root DIR (or RCRUN_ROOT) to choose a store you own")]
    NotWritable { path: PathBuf, uid: u32 },
}

/// How file owners end up in the store (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerMode {
    /// Real root: owners and device nodes as in the image.
    Root,
    /// A plain user without subordinate ids: every file owned by the user.
    User,
    /// Inside a user namespace mapping container ids 1.. onto subordinate ids starting at `uid`/`gid`.
    Subid { uid: u32, gid: u32, count: u32 },
    /// Real root with `--userns`: container ids 0.. map to host ids starting at `uid`/`gid`.
    Shifted { uid: u32, gid: u32, count: u32 },
}

impl OwnerMode {
    pub fn tag(&self) -> String {
        match self {
            OwnerMode::Root => "root".into(),
            OwnerMode::User => "user".into(),
            OwnerMode::Subid { uid, gid, count } => format!("subid-{uid}-{gid}-{count}"),
            OwnerMode::Shifted { uid, gid, count } => format!("shift-{uid}-{gid}-{count}"),
        }
    }

    pub fn policy(&self) -> Policy {
        use super::extract::Owners;
        match self {
            OwnerMode::Root => Policy {
                owners: Owners::Preserve,
                devices: true,
            },
            OwnerMode::User => Policy {
                owners: Owners::Skip,
                devices: false,
            },
            OwnerMode::Subid { .. } => Policy {
                owners: Owners::BestEffort,
                devices: false,
            },
            // Device nodes would be useless: a user namespace cannot open them (nodev).
            OwnerMode::Shifted { uid, gid, count } => Policy {
                owners: Owners::Shift {
                    uid_base: *uid,
                    gid_base: *gid,
                    count: *count,
                },
                devices: false,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Layers installed here are synced to disk in the background (and marked unsynced until
    /// then); false for a scratch store whose layers are moved out at once (`rcrun unpack`).
    durable: bool,
}

/// The default store: `/var/lib/rcrun` for real root, else `$XDG_DATA_HOME/rcrun`
/// (or `~/.local/share/rcrun`).
pub fn default_root(real_root: bool) -> PathBuf {
    if real_root {
        return PathBuf::from("/var/lib/rcrun");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("rcrun");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/share/rcrun")
}

impl Store {
    /// Opens (creating, mode 0700) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { op, path, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io("create", root))?;
        let meta = fs::metadata(root).map_err(io("stat", root))?;
        // An existing store that others can read would expose setuid binaries (CVE-2021-41103).
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(root, fs::Permissions::from_mode(0o700))
                .map_err(io("chmod 0700", root))?;
        }
        if nix::unistd::access(
            root,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .is_err()
        {
            return Err(StoreError::NotWritable {
                path: root.to_path_buf(),
                uid: nix::unistd::geteuid().as_raw(),
            });
        }
        for sub in ["layers", "locks", "tmp", "run", "cache", "unsynced"] {
            let p = root.join(sub);
            match fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(StoreError::NotWritable {
                        path: root.to_path_buf(),
                        uid: nix::unistd::geteuid().as_raw(),
                    })
                }
                Err(source) => {
                    return Err(StoreError::Io {
                        op: "create",
                        path: p,
                        source,
                    })
                }
            }
        }
        Ok(Store {
            root: root.to_path_buf(),
            durable: true,
        })
    }

    /// A store made only to extract into and move out of (`rcrun unpack` builds DIR from one
    /// inside DIR): no background sync of what it installs.
    pub fn open_scratch(root: &Path) -> Result<Store, StoreError> {
        let mut store = Store::open(root)?;
        store.durable = false;
        Ok(store)
    }

    pub fn durable(&self) -> bool {
        self.durable
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn layers_dir(&self, mode: &OwnerMode) -> PathBuf {
        self.root.join("layers").join(mode.tag())
    }
    /// The directory of a complete layer (its `fs/` is the overlay lower dir).
    pub fn layer_path(&self, mode: &OwnerMode, diff_id: &Digest) -> PathBuf {
        self.layers_dir(mode).join(diff_id.hex())
    }
    pub fn lock_path(&self, mode: &OwnerMode, diff_id: &Digest) -> PathBuf {
        self.root
            .join("locks")
            .join(format!("{}-{}.lock", mode.tag(), diff_id.hex()))
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Removes what killed runs left in `tmp/`: an extraction dir whose layer lock nobody holds,
    /// or a stdin spool whose process is gone. Returns what was removed.
    pub fn reclaim_tmp(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(rd) = fs::read_dir(self.tmp_dir()) else {
            return removed;
        };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `stdin-<pid>.tar` (an image read from stdin) and `net-<pid>-<container pid>` (a
            // network helper's API socket) belong to the rcrun process `<pid>`.
            let owner = name
                .strip_prefix("stdin-")
                .and_then(|r| r.strip_suffix(".tar"))
                .or_else(|| name.strip_prefix("net-").and_then(|r| r.split('-').next()));
            let stale = match owner {
                Some(pid) => pid.parse::<i32>().map(|p| !pid_alive(p)).unwrap_or(true),
                None => {
                    // `<owners-tag>-<hex>.<pid>.<nonce>`: the extractor holds `<owners-tag>-<hex>.lock`.
                    let key = name.split('.').next().unwrap_or_default();
                    match fs::File::open(self.root.join("locks").join(format!("{key}.lock"))) {
                        Ok(f) => try_lock(&f, false).unwrap_or(false),
                        Err(_) => true,
                    }
                }
            };
            if stale && crate::sys::fs::remove_tree(&entry.path()).is_ok() {
                removed.push(entry.path());
            }
        }
        removed
    }
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// flock(2) on an open file; `blocking=false` returns Ok(false) when someone else holds it.
pub fn try_lock(f: &fs::File, blocking: bool) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let op = if blocking {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a valid open fd borrowed from `f`; no memory is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

//! A minimal root filesystem from the host's static busybox.
//!
//! The tree is described once as [`Entry`]s ([`busybox_entries`]) so a layer
//! with exact ownership (1000:1000 home) can be built without root, and
//! [`busybox_rootfs`] materialises the same entries on disk.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::layer::Entry;
use super::BuildError;

/// Debian's `busybox-static` installs here.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app:/home/app:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

pub const GROUP: &str = "root:x:0:\n\
app:x:1000:\n\
extra:x:2000:app\n\
nogroup:x:65534:\n";

/// Fails unless `bytes` is an ELF executable without a `PT_INTERP` program
/// header: a dynamically linked busybox would need the host's libc inside
/// the container and fail with a confusing "not found".
pub fn check_static_elf(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let bad = |reason: &str| BuildError::Busybox {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err(bad("not an ELF executable"));
    }
    let is64 = match bytes[4] {
        1 => false,
        2 => true,
        _ => return Err(bad("unknown ELF class")),
    };
    let le = bytes[5] == 1;
    let rd = |off: usize, n: usize| -> Option<u64> {
        let s = bytes.get(off..off + n)?;
        let mut v = 0u64;
        for i in 0..n {
            let b = if le { s[n - 1 - i] } else { s[i] };
            v = (v << 8) | b as u64;
        }
        Some(v)
    };
    let trunc = || bad("truncated ELF header");
    let (phoff, phentsize, phnum) = if is64 {
        (
            rd(0x20, 8).ok_or_else(trunc)?,
            rd(0x36, 2).ok_or_else(trunc)?,
            rd(0x38, 2).ok_or_else(trunc)?,
        )
    } else {
        (
            rd(0x1c, 4).ok_or_else(trunc)?,
            rd(0x2a, 2).ok_or_else(trunc)?,
            rd(0x2c, 2).ok_or_else(trunc)?,
        )
    };
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let ptype = rd(off as usize, 4).ok_or_else(trunc)?;
        if ptype == 3 {
            return Err(bad(
                "dynamically linked (has PT_INTERP); install busybox-static",
            ));
        }
    }
    Ok(())
}

fn applets(busybox: &Path) -> Result<Vec<String>, BuildError> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| BuildError::io("running --list of", busybox, e))?;
    if !out.status.success() {
        return Err(BuildError::Busybox {
            path: busybox.into(),
            reason: format!("`--list` failed: {}", out.status),
        });
    }
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "busybox" && !l.contains('/'))
        .map(String::from)
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// The busybox root filesystem as layer entries, from the static busybox at
/// `busybox` (usually [`BUSYBOX_PATH`]): `/bin/busybox` plus one symlink per
/// applet, `/etc/{passwd,group}` (root, app 1000:1000, nobody 65534, group
/// `extra` 2000 with member app), `/tmp` 1777, `/root` 0700, `/home/app`
/// owned 1000:1000, empty `/proc /dev /sys`.
pub fn busybox_entries(busybox: &Path) -> Result<Vec<Entry>, BuildError> {
    let bin = fs::read(busybox).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            BuildError::Busybox {
                path: busybox.into(),
                reason: "not found; apt-get install busybox-static".into(),
            }
        } else {
            BuildError::io("reading", busybox, e)
        }
    })?;
    check_static_elf(busybox, &bin)?;
    let list = applets(busybox)?;
    let mut e = vec![
        Entry::dir("bin", 0o755),
        Entry::file("bin/busybox", 0o755, bin),
    ];
    // Absolute targets, as in the real busybox images.
    e.extend(
        list.iter()
            .map(|a| Entry::symlink(format!("bin/{a}"), "/bin/busybox")),
    );
    e.extend([
        Entry::dir("dev", 0o755),
        Entry::dir("etc", 0o755),
        Entry::file("etc/group", 0o644, GROUP),
        Entry::file("etc/passwd", 0o644, PASSWD),
        Entry::dir("home", 0o755),
        Entry::dir("home/app", 0o755).owner(1000, 1000),
        Entry::dir("proc", 0o755),
        Entry::dir("root", 0o700),
        Entry::dir("sys", 0o755),
        Entry::dir("tmp", 0o1777),
    ]);
    Ok(e)
}

fn chown_if_root(p: &Path, uid: u64, gid: u64) -> Result<(), BuildError> {
    match std::os::unix::fs::lchown(p, Some(uid as u32), Some(gid as u32)) {
        Ok(()) => Ok(()),
        // Unprivileged: the tree keeps the caller's ids. Use busybox_entries
        // to build a layer with exact ownership without root.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(BuildError::io("chown", p, e)),
    }
}

/// Creates the busybox root filesystem (see [`busybox_entries`]) under `dir`
/// (created if missing) from [`BUSYBOX_PATH`].
pub fn busybox_rootfs(dir: &Path) -> Result<(), BuildError> {
    let entries = busybox_entries(Path::new(BUSYBOX_PATH))?;
    fs::create_dir_all(dir).map_err(|e| BuildError::io("creating", dir, e))?;
    for ent in &entries {
        match ent {
            Entry::Dir {
                path,
                mode,
                uid,
                gid,
                ..
            } => {
                let p: PathBuf = dir.join(path);
                fs::create_dir_all(&p).map_err(|e| BuildError::io("creating directory", &p, e))?;
                chown_if_root(&p, *uid, *gid)?;
                // After chown (which may clear set-id bits) and explicitly,
                // because create_dir_all applies the umask.
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
                    .map_err(|e| BuildError::io("chmod", &p, e))?;
            }
            Entry::File {
                path,
                mode,
                uid,
                gid,
                data,
                ..
            } => {
                let p = dir.join(path);
                fs::write(&p, data).map_err(|e| BuildError::io("writing", &p, e))?;
                chown_if_root(&p, *uid, *gid)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
                    .map_err(|e| BuildError::io("chmod", &p, e))?;
            }
            Entry::Symlink { path, target } => {
                let p = dir.join(path);
                // Re-running over an existing tree replaces the links.
                if fs::symlink_metadata(&p).is_ok() {
                    fs::remove_file(&p).map_err(|e| BuildError::io("replacing", &p, e))?;
                }
                symlink(target, &p).map_err(|e| BuildError::io("symlink", &p, e))?;
            }
            _ => unreachable!("busybox_entries only makes dirs, files and symlinks"),
        }
    }
    Ok(())
}

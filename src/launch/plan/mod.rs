//! The startup plan: plain data computed before any namespace exists, so it can be printed
//! (`--explain`) and unit-tested without privileges. The child executes it step by step.

pub mod compile;
pub use compile::{compile, CompileError, Compiled, Extras, HostFacts, ImageLayers, SeccompSource};

pub use super::user::{resolve_user, ResolvedUser, Table};
use crate::host::Privilege;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One line of a uid_map/gid_map (user_namespaces(7)): `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMapping {
    /// Real root without --userns: no user namespace at all.
    None,
    /// Written by rcrun itself into /proc/PID/{setgroups,uid_map,gid_map}: only our own id can be
    /// mapped, and setgroups must be denied first for an unprivileged gid_map write.
    Single { uid: IdRange, gid: IdRange },
    /// Real root with `--userns`: container ids 0..count map to host ids from `uid.outside`
    /// (written directly: root may map any range). The namespace is entered *after* the root file
    /// system is built, so rcrun mounts as real root from its 0700 store and the container's
    /// root never needs access to it; the container then owns no mount, pid or network
    /// namespace (they belong to the initial user namespace), as with docker's userns-remap.
    Privileged { uid: IdRange, gid: IdRange },
    /// Written by the setuid helpers newuidmap/newgidmap, which check /etc/subuid and /etc/subgid.
    Helpers {
        uids: Vec<IdRange>,
        gids: Vec<IdRange>,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
    /// A user namespace rcrun is already in: `rcrun exec` entered the running container's
    /// (setns), or rcrun runs as root of one (rootless podman, `unshare -Ur`) and the spec asks
    /// for none. Nothing is made and no map written. `setgroups`: what /proc/PID/setgroups
    /// allows there.
    Entered { setgroups: bool },
}

impl IdMapping {
    pub fn for_privilege(p: &Privilege) -> IdMapping {
        match p {
            Privilege::Root => IdMapping::None,
            Privilege::FakeRoot => IdMapping::own_ids(0, 0),
            Privilege::Rootless {
                uid,
                gid,
                subids: None,
            } => IdMapping::own_ids(*uid, *gid),
            Privilege::Rootless {
                uid,
                gid,
                subids: Some(s),
            } => IdMapping::Helpers {
                uids: vec![
                    IdRange {
                        inside: 0,
                        outside: *uid,
                        count: 1,
                    },
                    IdRange {
                        inside: 1,
                        outside: s.uid_start,
                        count: s.count,
                    },
                ],
                gids: vec![
                    IdRange {
                        inside: 0,
                        outside: *gid,
                        count: 1,
                    },
                    IdRange {
                        inside: 1,
                        outside: s.gid_start,
                        count: s.count,
                    },
                ],
                newuidmap: s.newuidmap.clone(),
                newgidmap: s.newgidmap.clone(),
            },
        }
    }

    /// Container root = `uid`/`gid` outside, nothing else mapped.
    fn own_ids(uid: u32, gid: u32) -> IdMapping {
        IdMapping::Single {
            uid: IdRange {
                inside: 0,
                outside: uid,
                count: 1,
            },
            gid: IdRange {
                inside: 0,
                outside: gid,
                count: 1,
            },
        }
    }

    /// Container root = the caller, nothing else mapped (the rootless default without subids).
    pub fn single_for(p: &Privilege) -> IdMapping {
        match p {
            Privilege::Rootless { uid, gid, .. } => IdMapping::own_ids(*uid, *gid),
            other => IdMapping::for_privilege(other),
        }
    }

    /// Whether rcrun makes a user namespace (and writes its maps).
    pub fn user_namespace(&self) -> bool {
        !matches!(self, IdMapping::None | IdMapping::Entered { .. })
    }

    /// Whether the container's process ends up in a user namespace other than the initial one
    /// (one rcrun makes, or one it already runs in): no mknod, no cgroup v1 mount.
    pub fn in_user_namespace(&self) -> bool {
        !matches!(self, IdMapping::None)
    }

    /// Whether the user namespace is entered late, after the mounts (see `Privileged`).
    pub fn enters_late(&self) -> bool {
        matches!(self, IdMapping::Privileged { .. })
    }

    /// `--userns` as root: the first /etc/subuid and /etc/subgid range of `root`, else
    /// 100000+65536 (the range useradd hands out first).
    pub fn for_root_userns(subuid: Option<(u32, u32)>, subgid: Option<(u32, u32)>) -> IdMapping {
        let (us, uc) = subuid.unwrap_or((100000, 65536));
        let (gs, gc) = subgid.unwrap_or((100000, 65536));
        let count = uc.min(gc);
        IdMapping::Privileged {
            uid: IdRange {
                inside: 0,
                outside: us,
                count,
            },
            gid: IdRange {
                inside: 0,
                outside: gs,
                count,
            },
        }
    }

    /// Whether `uid` exists inside the container.
    pub fn maps_uid(&self, uid: u32) -> bool {
        match self {
            IdMapping::None | IdMapping::Entered { .. } => true,
            IdMapping::Single { uid: r, .. } | IdMapping::Privileged { uid: r, .. } => {
                uid >= r.inside && uid - r.inside < r.count
            }
            IdMapping::Helpers { uids, .. } => uids
                .iter()
                .any(|r| uid >= r.inside && uid - r.inside < r.count),
        }
    }

    /// setgroups(2) is only possible when gid_map was written by a privileged helper.
    pub fn setgroups_allowed(&self) -> bool {
        match self {
            IdMapping::Single { .. } => false,
            IdMapping::Entered { setgroups } => *setgroups,
            _ => true,
        }
    }
}

pub fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// The process to start: Entrypoint + Cmd, as docker composes them.
pub fn compose_argv(
    entrypoint: &[String],
    cmd: &[String],
    entrypoint_override: Option<&str>,
    args: &[String],
) -> Vec<String> {
    let mut argv: Vec<String> = match entrypoint_override {
        Some("") => Vec::new(),
        Some(e) => vec![e.to_string()],
        None => entrypoint.to_vec(),
    };
    // An --entrypoint override drops the image's Cmd too (docker semantics), unless args are given.
    if !args.is_empty() {
        argv.extend(args.iter().cloned());
    } else if entrypoint_override.is_none() {
        argv.extend(cmd.iter().cloned());
    }
    argv
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("no command: the image has no Entrypoint or Cmd; give one after the image")]
    NoCommand,
    #[error("--env-file {path}: line {line}: {reason}")]
    EnvFile {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("-e {0:?}: empty variable name")]
    BadEnv(String),
    #[error("user {spec:?}: {reason}")]
    User { spec: String, reason: String },
    #[error("--volume {spec:?}: {reason}")]
    Volume { spec: String, reason: String },
    #[error("--device {spec:?}: {reason}")]
    Device { spec: String, reason: String },
    #[error("{flag} {path:?}: must be an absolute path inside the container")]
    NotAbsolute { flag: &'static str, path: String },
}

/// Image Env, then `--env-file` lines, then `-e` flags; later wins, order of first appearance kept.
pub fn merge_env(
    image_env: &[String],
    env_files: &[(PathBuf, String)],
    flags: &[String],
    caller: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, PlanError> {
    // An index by name: an image config is untrusted and may carry 100 000 entries, which a
    // linear search per entry would turn into 10^10 comparisons.
    let mut out: Vec<(String, String)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut set = |k: &str, v: String| match index.get(k) {
        Some(&i) => out[i].1 = v,
        None => {
            index.insert(k.to_string(), out.len());
            out.push((k.to_string(), v));
        }
    };
    for e in image_env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(k, v.to_string());
    }
    let apply = |item: &str, set: &mut dyn FnMut(&str, String)| -> Result<(), String> {
        match item.split_once('=') {
            Some(("", _)) => Err("empty variable name".into()),
            Some((k, v)) => {
                set(k, v.to_string());
                Ok(())
            }
            // `-e K`: take K from rcrun's environment, or leave it out when unset (docker does).
            None if item.is_empty() => Err("empty variable name".into()),
            None => {
                if let Some(v) = caller(item) {
                    set(item, v);
                }
                Ok(())
            }
        }
    };
    for (path, content) in env_files {
        for (i, line) in content.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            apply(line, &mut set).map_err(|reason| PlanError::EnvFile {
                path: path.clone(),
                line: i + 1,
                reason,
            })?;
        }
    }
    for f in flags {
        apply(f, &mut set).map_err(|_| PlanError::BadEnv(f.clone()))?;
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    Ok(out.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// Index (top first) of the topmost layer with any entry named `name` at its root: a directory,
/// a whiteout, anything. Layers above it say nothing about `name` or what is below it, so a
/// search under `name` can start there (one lookup per layer instead of one per file and layer).
pub fn topmost_with(layers_top_first: &[PathBuf], name: &str) -> Option<usize> {
    layers_top_first
        .iter()
        .position(|l| std::fs::symlink_metadata(l.join(name)).is_ok())
}

/// Finds a file in the stacked layer dirs (top first) the way overlayfs would: the index of the
/// topmost layer holding the path as a regular file (not a symlink, whiteout or directory); a
/// whiteout, or an opaque directory on the way, hides lower layers.
pub fn find_layer_of(layers_top_first: &[PathBuf], rel: &str) -> Option<usize> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    for (index, layer) in layers_top_first.iter().enumerate() {
        let mut hidden_below = false;
        let mut p = layer.clone();
        for (i, c) in comps.iter().enumerate() {
            p.push(c);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => return None,
                Ok(m) if i + 1 == comps.len() => return m.is_file().then_some(index),
                Ok(m) if m.is_dir() => {
                    if is_opaque(&p) {
                        hidden_below = true;
                    }
                }
                // A symlinked /etc and the like: not resolved here (it would be resolved in the
                // container root); treat the file as absent.
                Ok(_) => return None,
                Err(_) => break,
            }
        }
        if hidden_below {
            return None;
        }
    }
    None
}

fn is_opaque(dir: &Path) -> bool {
    use std::os::fd::AsFd;
    std::fs::File::open(dir)
        .ok()
        .and_then(|f| {
            crate::sys::fs::fgetxattr(f.as_fd(), crate::unpack::extract::OPAQUE_XATTR)
                .ok()
                .flatten()
        })
        .is_some_and(|v| v == b"y")
}

/// `-v SRC:DST[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

pub fn parse_volume(spec: &str) -> Result<Volume, PlanError> {
    let err = |reason: &str| PlanError::Volume {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        [_, _, o] => return Err(err(&format!("unknown option {o:?} (use ro or rw)"))),
        _ => return Err(err("expected SRC:DST or SRC:DST:ro")),
    };
    if !src.starts_with('/') {
        return Err(err("SRC must be an absolute host path"));
    }
    if !dst.starts_with('/') {
        return Err(err("DST must be an absolute path inside the container"));
    }
    let source = std::fs::canonicalize(src).map_err(|e| err(&format!("SRC: {e}")))?;
    Ok(Volume {
        source,
        target: dst.to_string(),
        read_only: ro,
    })
}

/// `--device HOST[:CTR][:PERMS]`: a host device node given to the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMapping {
    /// The host node (symlinks resolved).
    pub host: PathBuf,
    /// Its path inside the container.
    pub container: String,
    pub block: bool,
    pub major: u32,
    pub minor: u32,
    /// Permission bits of the host node, given to the node made inside.
    pub mode: u32,
    /// What the device policy allows on it.
    pub access: crate::cgroup::devices::Access,
}

impl DeviceMapping {
    /// The allow rule the device policy gets for it.
    pub fn rule(&self) -> crate::cgroup::devices::DeviceRule {
        use crate::cgroup::devices::{DeviceKind, DeviceRule};
        DeviceRule::allow(
            if self.block {
                DeviceKind::Block
            } else {
                DeviceKind::Char
            },
            Some(self.major),
            Some(self.minor),
            self.access,
        )
    }
}

/// Parses `--device` as docker does: `HOST`, `HOST:CTR`, `HOST:PERMS` (when the second part is
/// made of r, w, m) or `HOST:CTR:PERMS`. HOST must be a character or block device.
pub fn parse_device(spec: &str) -> Result<DeviceMapping, PlanError> {
    use crate::cgroup::devices::Access;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let err = |reason: String| PlanError::Device {
        spec: spec.to_string(),
        reason,
    };
    let looks_like_perms = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if looks_like_perms(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(err("expected HOST[:CTR][:PERMS]".into())),
    };
    if !host.starts_with('/') {
        return Err(err("HOST must be an absolute path of a device node".into()));
    }
    if !container.starts_with('/') || container == "/" {
        return Err(err(
            "CTR must be an absolute path inside the container".into()
        ));
    }
    let access = Access::parse(perms).map_err(|e| err(e.to_string()))?;
    let resolved = std::fs::canonicalize(host).map_err(|e| err(format!("HOST: {e}")))?;
    let m = std::fs::metadata(&resolved).map_err(|e| err(format!("HOST: {e}")))?;
    let ft = m.file_type();
    if !ft.is_char_device() && !ft.is_block_device() {
        return Err(err(format!(
            "{} is not a character or block device",
            resolved.display()
        )));
    }
    let rdev = m.rdev();
    Ok(DeviceMapping {
        host: resolved,
        container: container.to_string(),
        block: ft.is_block_device(),
        major: nix::sys::stat::major(rdev) as u32,
        minor: nix::sys::stat::minor(rdev) as u32,
        mode: m.permissions().mode() & 0o7777,
        access,
    })
}

/// Overlay mount options (defined with the overlay mount in `sys::mount`), for narration.
pub use crate::sys::mount::overlay_options;

#[cfg(test)]
mod tests {
    use super::*;

    /// [`find_layer_of`] as the file's path, for the assertions below.
    fn find_in_layers(layers_top_first: &[PathBuf], rel: &str) -> Option<PathBuf> {
        find_layer_of(layers_top_first, rel).map(|i| layers_top_first[i].join(rel))
    }

    /// Three layers (top first): one without /etc, one whose /etc holds group only, a base with
    /// passwd and group. The topmost /etc entry is found once; lookups from there see through to
    /// the base for passwd and stop at a whiteout.
    #[test]
    fn etc_lookups_start_at_the_topmost_layer_with_etc() {
        let root = std::env::temp_dir().join(format!("rcrun-plan-etc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let layer = |n: &str| root.join(n);
        for (l, files) in [
            ("top", vec![]),
            ("mid", vec!["etc/group"]),
            ("base", vec!["etc/passwd", "etc/group"]),
        ] {
            std::fs::create_dir_all(layer(l)).unwrap();
            for f in files {
                std::fs::create_dir_all(layer(l).join("etc")).unwrap();
                std::fs::write(layer(l).join(f), l).unwrap();
            }
        }
        let layers = vec![layer("top"), layer("mid"), layer("base")];
        assert_eq!(topmost_with(&layers, "etc"), Some(1));
        let below = &layers[1..];
        assert_eq!(
            find_in_layers(below, "etc/group"),
            Some(layer("mid").join("etc/group"))
        );
        assert_eq!(
            find_in_layers(below, "etc/passwd"),
            Some(layer("base").join("etc/passwd"))
        );
        assert_eq!(find_layer_of(below, "etc/passwd"), Some(1));
        assert_eq!(find_layer_of(&layers, "etc/shadow"), None);
        assert_eq!(topmost_with(&layers[..1], "etc"), None);
        // A whiteout of /etc in the top layer: it is the topmost entry, and hides the rest.
        nix::sys::stat::mknod(
            &layer("top").join("etc"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .map_or_else(
            |e| eprintln!("SKIP: whiteout part of the /etc lookup test: mknod: {e} (needs root)"),
            |()| {
                assert_eq!(topmost_with(&layers, "etc"), Some(0));
                assert_eq!(find_in_layers(&layers, "etc/passwd"), None);
            },
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn composes_argv_like_docker() {
        let ep = vec!["/bin/sh".to_string(), "-c".to_string()];
        let cmd = vec!["echo hi".to_string()];
        assert_eq!(
            compose_argv(&ep, &cmd, None, &[]),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            compose_argv(&ep, &cmd, None, &["date".into()]),
            ["/bin/sh", "-c", "date"]
        );
        assert_eq!(
            compose_argv(&ep, &cmd, Some("/bin/echo"), &[]),
            ["/bin/echo"]
        );
        assert_eq!(compose_argv(&ep, &cmd, Some(""), &["ls".into()]), ["ls"]);
        assert_eq!(compose_argv(&[], &cmd, None, &[]), ["echo hi"]);
    }

    #[test]
    fn merges_env_in_order() {
        let image = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let files = vec![(PathBuf::from("f"), "# c\nB=2\n\nA=3\n".to_string())];
        let caller = |k: &str| (k == "HOME_X").then(|| "h".to_string());
        let env = merge_env(
            &image,
            &files,
            &["A=4".into(), "HOME_X".into(), "UNSET".into()],
            &caller,
        )
        .unwrap();
        assert_eq!(env, ["PATH=/bin", "A=4", "B=2", "HOME_X=h"]);
        let env = merge_env(&[], &[], &[], &caller).unwrap();
        assert_eq!(env, [format!("PATH={DEFAULT_PATH}")]);
        assert!(merge_env(&[], &[], &["=x".into()], &caller).is_err());
        let bad = vec![(PathBuf::from("f"), "=x\n".to_string())];
        assert!(matches!(
            merge_env(&[], &bad, &[], &caller),
            Err(PlanError::EnvFile { line: 1, .. })
        ));
    }

    #[test]
    fn id_maps_per_privilege() {
        let m = IdMapping::for_privilege(&Privilege::Rootless {
            uid: 1000,
            gid: 1000,
            subids: None,
        });
        assert!(m.user_namespace() && !m.setgroups_allowed());
        assert!(m.maps_uid(0) && !m.maps_uid(1000));
        if let IdMapping::Single { uid, .. } = &m {
            assert_eq!(map_text(&[*uid]), "0 1000 1\n");
        }
        assert!(!IdMapping::for_privilege(&Privilege::Root).user_namespace());
        let fake = IdMapping::for_privilege(&Privilege::FakeRoot);
        assert_eq!(
            fake,
            IdMapping::Single {
                uid: IdRange {
                    inside: 0,
                    outside: 0,
                    count: 1
                },
                gid: IdRange {
                    inside: 0,
                    outside: 0,
                    count: 1
                }
            }
        );
    }

    #[test]
    fn parses_volumes() {
        let v = parse_volume("/tmp:/data:ro").unwrap();
        assert!(v.read_only && v.target == "/data");
        assert!(parse_volume("tmp:/data").is_err());
        assert!(parse_volume("/tmp:data").is_err());
        assert!(parse_volume("/tmp:/data:rx").is_err());
    }

    #[test]
    fn parses_devices_like_docker() {
        let d = parse_device("/dev/null").unwrap();
        assert_eq!(
            (
                d.container.as_str(),
                d.block,
                d.major,
                d.minor,
                d.access.as_text().as_str()
            ),
            ("/dev/null", false, 1, 3, "rwm")
        );
        let d = parse_device("/dev/zero:/dev/z").unwrap();
        assert_eq!((d.container.as_str(), d.minor), ("/dev/z", 5));
        let d = parse_device("/dev/zero:r").unwrap();
        assert_eq!(
            (d.container.as_str(), d.access.as_text().as_str()),
            ("/dev/zero", "r")
        );
        let d = parse_device("/dev/zero:/dev/z:mw").unwrap();
        assert_eq!(d.access.as_text(), "wm");
        assert_eq!(d.rule().v1_line(), "c 1:5 wm");
        for bad in [
            "dev/null",
            "/dev/null:rel",
            "/dev/null:/dev/n:rx",
            "/etc/passwd",
            "/nonexistent",
            "/dev/null:/a:r:x",
            "/dev/null:/",
        ] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--device {bad:?}")), "{e}");
        }
    }

    #[test]
    fn overlay_options_order() {
        let o = overlay_options(&["3".into(), "2".into(), "1".into()], "u", "w");
        assert_eq!(
            o,
            "lowerdir=3:2:1,upperdir=u,workdir=w,userxattr,index=off,metacopy=off"
        );
    }
}

//! Who is running rcrun: real root, a plain user, or "fake root" inside a user namespace
//! (`unshare -Ur`, how CI systems often run it). Detected at run time from the uid map.

use crate::unpack::OwnerMode;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privilege {
    /// uid 0 in the initial user namespace.
    Root,
    /// A plain user; `subids` when /etc/subuid and /etc/subgid grant a range and
    /// newuidmap/newgidmap are installed.
    Rootless {
        uid: u32,
        gid: u32,
        subids: Option<SubIds>,
    },
    /// uid 0 inside a user namespace that maps only part of the id space (e.g. `unshare -Ur`):
    /// no real privilege over the host, so rcrun behaves as rootless.
    FakeRoot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIds {
    pub uid_start: u32,
    pub gid_start: u32,
    /// Length of the smaller of the two ranges.
    pub count: u32,
    pub newuidmap: PathBuf,
    pub newgidmap: PathBuf,
}

impl Privilege {
    /// Who runs this process. Detected once (it reads /proc/self/uid_map and /etc/sub[ug]id) and
    /// remembered: it cannot change while rcrun runs.
    pub fn detect() -> Privilege {
        static DETECTED: std::sync::OnceLock<Privilege> = std::sync::OnceLock::new();
        DETECTED.get_or_init(Privilege::detect_now).clone()
    }

    fn detect_now() -> Privilege {
        let euid = nix::unistd::geteuid().as_raw();
        if euid == 0 {
            return match std::fs::read_to_string("/proc/self/uid_map") {
                Ok(map) if is_full_map(&map) => Privilege::Root,
                _ => Privilege::FakeRoot,
            };
        }
        let gid = nix::unistd::getegid().as_raw();
        let subids = if std::env::var_os("RCRUN_NO_SUBIDS").is_some() {
            None
        } else {
            find_subids(euid, gid)
        };
        Privilege::Rootless {
            uid: euid,
            gid,
            subids,
        }
    }

    pub fn is_real_root(&self) -> bool {
        matches!(self, Privilege::Root)
    }

    /// How layers are stored for containers (see [`OwnerMode`]).
    pub fn owner_mode(&self) -> OwnerMode {
        match self {
            Privilege::Root => OwnerMode::Root,
            Privilege::Rootless {
                subids: Some(s), ..
            } => OwnerMode::Subid {
                uid: s.uid_start,
                gid: s.gid_start,
                count: s.count,
            },
            _ => OwnerMode::User,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Privilege::Root => "root".into(),
            Privilege::Rootless {
                uid,
                subids: Some(s),
                ..
            } => {
                format!(
                    "rootless (uid {uid}, subordinate ids {}+{})",
                    s.uid_start, s.count
                )
            }
            Privilege::Rootless { uid, .. } => format!("rootless (uid {uid}, single-id map)"),
            Privilege::FakeRoot => "fake root (uid 0 inside a user namespace)".into(),
        }
    }
}

/// `0 0 4294967295`: the initial user namespace's identity map.
pub fn is_full_map(map: &str) -> bool {
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// Parses `/etc/subuid`-style content: the first range for `name` or `id`.
pub fn parse_subid(content: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    for line in content.lines() {
        let mut f = line.trim().split(':');
        let (Some(who), Some(start), Some(count)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if Some(who) == name || who == id.to_string() {
            if let (Ok(s), Ok(c)) = (start.parse(), count.parse()) {
                if c > 0 {
                    return Some((s, c));
                }
            }
        }
    }
    None
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn find_subids(uid: u32, gid: u32) -> Option<SubIds> {
    // The files first: without them there is no name to look up (NSS: nscd's socket,
    // nsswitch.conf, /etc/passwd), and the group's name only when the user has no subgid line.
    let subuid = std::fs::read_to_string("/etc/subuid").ok()?;
    let subgid = std::fs::read_to_string("/etc/subgid").ok()?;
    if subuid.trim().is_empty() || subgid.trim().is_empty() {
        return None;
    }
    let name = user_name(uid);
    let (us, uc) = parse_subid(&subuid, name.as_deref(), uid)?;
    // subgid is keyed by user name too (shadow's newgidmap checks the user's entry).
    let (gs, gc) = parse_subid(&subgid, name.as_deref(), uid).or_else(|| {
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()
            .flatten()
            .map(|g| g.name);
        parse_subid(&subgid, group.as_deref(), gid)
    })?;
    Some(SubIds {
        uid_start: us,
        gid_start: gs,
        count: uc.min(gc),
        newuidmap: find_in_path("newuidmap")?,
        newgidmap: find_in_path("newgidmap")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_full_map() {
        assert!(is_full_map("         0          0 4294967295\n"));
        assert!(!is_full_map("         0       1000          1\n"));
    }

    #[test]
    fn parses_subid_files() {
        let f = "alice:100000:65536\nbob:165536:65536\n1002:231072:1000\n";
        assert_eq!(parse_subid(f, Some("bob"), 1001), Some((165536, 65536)));
        assert_eq!(parse_subid(f, Some("carol"), 1002), Some((231072, 1000)));
        assert_eq!(parse_subid(f, Some("dave"), 1003), None);
    }
}

/// Whether setgroups(2) is allowed in the user namespace rcrun runs in: /proc/self/setgroups
/// says "deny" when its gid_map was written without privilege (`unshare -Ur`), "allow" when a
/// helper wrote it (rootless podman's newgidmap) or in the initial namespace.
pub fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true)
}

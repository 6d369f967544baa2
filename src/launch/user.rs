//! Who the container's process runs as: `-u` / the config's `User`, resolved against the image's
//! `/etc/passwd` and `/etc/group` the way docker does (moby/sys/user), but read as a stream: an
//! image controls those files, so a 1 GB passwd must cost time, not memory, and a line of a
//! million colons must not become a million-element vector.

use super::plan::PlanError;
use std::io::BufRead;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// uid/gid `(uid_t)-1`: setresuid(2)/setresgid(2) read it as "leave this id unchanged", so a
/// `User` of 4294967295 would silently keep the process root. Never a valid id (user_namespaces(7)
/// refuses it in maps too).
pub const INVALID_ID: u32 = u32::MAX;

/// Longest passwd/group line considered (moby/sys/user reads with a 64 KiB bufio.Scanner too);
/// longer lines are skipped as malformed.
const MAX_LINE: usize = 64 * 1024;

/// A user resolved against the image's /etc/passwd and /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
    pub name: Option<String>,
}

/// An /etc/passwd or /etc/group of the image: absent, in memory (tests), or a file in a layer.
#[derive(Debug, Clone)]
pub enum Table<'a> {
    Absent,
    Text(&'a str),
    File(PathBuf),
}

impl Table<'_> {
    fn is_absent(&self) -> bool {
        matches!(self, Table::Absent)
    }

    /// Calls `f` with the colon-separated fields of each line that has at least `min_fields`,
    /// until it returns true ("found"). A file is read line by line, so memory stays bounded by
    /// [`MAX_LINE`] whatever its size.
    fn find<T>(&self, min_fields: usize, mut f: impl FnMut(&[&str]) -> Option<T>) -> Option<T> {
        let mut visit = |line: &str| {
            let fields: Vec<&str> = line.trim_end_matches(['\n', '\r']).split(':').collect();
            (fields.len() >= min_fields).then(|| f(&fields)).flatten()
        };
        match self {
            Table::Absent => None,
            Table::Text(t) => t.lines().find_map(visit),
            Table::File(p) => {
                // A layer's regular file, as found by the lookup (or remembered from it): never
                // a symlink followed on the host side.
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(p)
                    .ok()?;
                let mut r = std::io::BufReader::new(file);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    // Bounded read: at most MAX_LINE+1 bytes of a line are kept.
                    let n = std::io::Read::take(&mut r, MAX_LINE as u64 + 1)
                        .read_until(b'\n', &mut buf)
                        .ok()?;
                    if n == 0 {
                        return None;
                    }
                    if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
                        // Skip the rest of an over-long line.
                        if skip_line(&mut r).is_err() {
                            return None;
                        }
                        continue;
                    }
                    if let Ok(line) = std::str::from_utf8(&buf) {
                        if let Some(v) = visit(line) {
                            return Some(v);
                        }
                    }
                }
            }
        }
    }
}

fn skip_line(r: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                r.consume(n);
            }
        }
    }
}

/// A numeric id, refusing `(uid_t)-1` (see [`INVALID_ID`]).
fn parse_id(s: &str) -> Option<Result<u32, String>> {
    let n: u32 = s.parse().ok()?;
    Some(if n == INVALID_ID {
        Err(format!(
            "{n} is not a usable id: (uid_t)-1 means \"unchanged\" to setresuid(2)"
        ))
    } else {
        Ok(n)
    })
}

/// Resolves `-u` / the config's User: `""` (root), `uid`, `uid:gid`, `name`, `name:group`,
/// `uid:group`, `name:gid`. Numeric ids need not exist in passwd (docker allows it).
pub fn resolve_user(
    spec: &str,
    passwd: &Table<'_>,
    group: &Table<'_>,
) -> Result<ResolvedUser, PlanError> {
    let err = |reason: String| PlanError::User {
        spec: spec.to_string(),
        reason,
    };
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    struct Entry {
        name: String,
        uid: Option<u32>,
        gid: Option<u32>,
        home: String,
    }
    let entry_of = |f: &[&str]| Entry {
        name: f[0].to_string(),
        uid: f[2].parse().ok(),
        gid: f[3].parse().ok(),
        home: f[5].to_string(),
    };
    let numeric_uid = parse_id(u).transpose().map_err(err)?;
    let entry = match numeric_uid {
        Some(uid) => passwd.find(7, |f| (f[2].parse() == Ok(uid)).then(|| entry_of(f))),
        None => Some(
            passwd
                .find(7, |f| (f[0] == u).then(|| entry_of(f)))
                .ok_or_else(|| {
                    err(format!(
                        "no user named {u:?} in the image's /etc/passwd{}",
                        if passwd.is_absent() {
                            " (the image has no /etc/passwd)"
                        } else {
                            ""
                        }
                    ))
                })?,
        ),
    };
    let uid = match numeric_uid {
        Some(n) => n,
        None => entry
            .as_ref()
            .and_then(|e| e.uid)
            .filter(|&n| n != INVALID_ID)
            .ok_or_else(|| err(format!("bad uid for {u:?} in /etc/passwd")))?,
    };
    let name = entry.as_ref().map(|e| e.name.clone());
    let gid = match g {
        Some(g) if !g.is_empty() => match parse_id(g).transpose().map_err(err)? {
            Some(n) => n,
            None => group
                .find(4, |f| {
                    (f[0] == g).then(|| f[2].parse::<u32>().ok()).flatten()
                })
                .filter(|&n| n != INVALID_ID)
                .ok_or_else(|| err(format!("no group named {g:?} in the image's /etc/group")))?,
        },
        _ => match entry.as_ref().and_then(|e| e.gid) {
            Some(INVALID_ID) => {
                return Err(err(format!(
                    "the primary group of {u:?} in /etc/passwd is {INVALID_ID}, not a usable id"
                )))
            }
            Some(n) => n,
            None => 0,
        },
    };
    // Supplementary groups: every group listing the user by name (when a group was not forced).
    let mut groups = vec![gid];
    if let (None, Some(n)) = (g, &name) {
        group.find(4, |f| {
            if f[3].split(',').any(|m| m == n) {
                if let Some(Ok(id)) = parse_id(f[2]) {
                    if !groups.contains(&id) {
                        groups.push(id);
                    }
                }
            }
            // A user in thousands of groups is as far as the kernel goes (NGROUPS_MAX 65536).
            (groups.len() >= 65536).then_some(())
        });
    }
    let home = entry
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\n";

    fn resolve(spec: &str) -> Result<ResolvedUser, PlanError> {
        resolve_user(spec, &Table::Text(PASSWD), &Table::Text(GROUP))
    }

    #[test]
    fn resolves_users() {
        let r = resolve("").unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let r = resolve("app").unwrap();
        assert_eq!(
            (r.uid, r.gid, r.groups.clone(), r.home.as_str()),
            (1000, 1000, vec![1000, 2000], "/home/app")
        );
        let r = resolve("1000:extra").unwrap();
        assert_eq!((r.uid, r.gid, r.groups.clone()), (1000, 2000, vec![2000]));
        let r = resolve("4242").unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (4242, 0, "/"));
        assert!(resolve("ghost").is_err());
        assert!(resolve("app:ghosts").is_err());
    }

    /// (uid_t)-1 is "unchanged" to setresuid: accepting it would keep the process root.
    #[test]
    fn refuses_minus_one_ids() {
        for spec in [
            "4294967295",
            "0:4294967295",
            "1000:4294967295",
            "4294967295:0",
        ] {
            let e = resolve(spec).unwrap_err().to_string();
            assert!(
                e.contains("4294967295") && e.contains("not a usable id"),
                "{spec}: {e}"
            );
        }
        // Too large for a uid at all: not a number, so a name, which does not exist.
        assert!(resolve("99999999999").is_err());
        let passwd = "evil:x:4294967295:4294967295::/:/bin/sh\nhalf:x:5:4294967295::/:/bin/sh\n";
        let t = Table::Text(passwd);
        assert!(resolve_user("evil", &t, &Table::Absent).is_err());
        assert!(resolve_user("half", &t, &Table::Absent).is_err());
        let group = "bad:x:4294967295:\nmine:x:7:half\n";
        assert!(resolve_user("5:bad", &t, &Table::Text(group)).is_err());
        // A listed supplementary group of -1 is skipped, not used.
        let group = "bad:x:4294967295:half\nmine:x:7:half\n";
        let r = resolve_user("half:7", &t, &Table::Text(group)).unwrap();
        assert_eq!(r.groups, vec![7]);
    }

    /// A passwd file is streamed: a huge one with the user at the end resolves, an over-long
    /// line is skipped, and nothing holds the whole file.
    #[test]
    fn streams_huge_and_hostile_files() {
        let dir = std::env::temp_dir().join(format!("rcrun-user-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            f.write_all(&vec![b':'; 3 * MAX_LINE]).unwrap();
            f.write_all(b"\n").unwrap();
            for i in 0..200_000u32 {
                writeln!(f, "u{i}:x:{}:100::/home/u{i}:/bin/sh", 10_000 + i).unwrap();
            }
            writeln!(f, "last:x:4242:4343::/home/last:/bin/sh").unwrap();
        }
        let t = Table::File(path.clone());
        let r = resolve_user("last", &t, &Table::Absent).unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (4242, 4343, "/home/last"));
        let r = resolve_user("10007", &t, &Table::Absent).unwrap();
        assert_eq!(r.name.as_deref(), Some("u7"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A table named by a path whose last component is a symlink (a layer's `etc/passwd ->
    /// /etc/shadow`, or a remembered lookup edited to point at one) is not read through it: the
    /// host file stays unread and the table counts as empty.
    #[test]
    fn a_symlinked_table_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("rcrun-user-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let host = dir.join("host-passwd");
        std::fs::write(&host, "secret:x:4242:4242::/home/secret:/bin/sh\n").unwrap();
        let link = dir.join("passwd");
        std::os::unix::fs::symlink(&host, &link).unwrap();
        assert!(resolve_user("secret", &Table::File(host), &Table::Absent).is_ok());
        assert!(
            resolve_user("secret", &Table::File(link), &Table::Absent).is_err(),
            "the user was read through a symlink"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Namespaces by path and the root's propagation, as an OCI bundle asks for them:
//! `linux.namespaces[].path` joins (setns) a namespace another process holds, a type left out is
//! shared with rcrun, and `linux.rootfsPropagation` sets the container's "/". Joins need real
//! root (rootless they are refused by name); the propagation is checked in every mode.

mod common;
use common::oci::*;
use common::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The inode that names a namespace (`/proc/PID/ns/KIND` is a link to `KIND:[INODE]`).
fn ns_of(pid: u32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|l| l.display().to_string())
        .unwrap_or_default()
}

/// A process in new uts and ipc namespaces (`unshare --uts --ipc --fork sleep`), the way the
/// validation suite makes one; killed when dropped.
struct Holder(Child, u32);

impl Holder {
    fn start() -> Holder {
        let child = Command::new("unshare")
            .args(["--uts", "--ipc", "--fork", "sleep", "300"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        // The sleeping grandchild: the namespaces are its (unshare itself may not be in them
        // yet when we look).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
                .unwrap_or_default();
            if let Some(pid) = kids.split_whitespace().next().and_then(|p| p.parse().ok()) {
                if ns_of(pid, "uts") != ns_of(std::process::id(), "uts") {
                    return Holder(child, pid);
                }
            }
            assert!(Instant::now() < deadline, "unshare's child never showed up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.1 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn set_namespaces(c: &Case, f: impl FnOnce(&mut Vec<serde_json::Value>)) {
    edit_config(&c.bundle, |d| {
        let ns = d["linux"]["namespaces"].as_array_mut().unwrap();
        f(ns);
    });
}

fn with_path(ns: &mut [serde_json::Value], kind: &str, path: &str) {
    for n in ns.iter_mut() {
        if n["type"] == kind {
            n["path"] = path.into();
        }
    }
}

#[test]
fn joins_by_path_as_root() {
    if !is_root() {
        skip("joining namespaces by path: needs real root (rcrun refuses it rootless)");
        return;
    }
    let holder = Holder::start();
    let c = Case::new(
        "nsjoin",
        Mode::Root,
        "root",
        serde_json::json!(["sh", "-c", "hostname; exec sleep 300"]),
    );
    let mut failures = Vec::new();
    // Joined: the container's uts and ipc are the holder's; the rest are new, and the hostname
    // it sets lands in the joined namespace.
    set_namespaces(&c, |ns| {
        with_path(ns, "uts", &format!("/proc/{}/ns/uts", holder.1));
        with_path(ns, "ipc", &format!("/proc/{}/ns/ipc", holder.1));
    });
    let r = (|| {
        let (code, out) = c.create("joined", &[]);
        if code != Some(0) {
            return Err(format!("create: {code:?}: {out}"));
        }
        let pid = c.status("joined")?.1 as u32;
        for kind in ["uts", "ipc"] {
            if ns_of(pid, kind) != ns_of(holder.1, kind) {
                return Err(format!(
                    "{kind}: {} is not the holder's {}",
                    ns_of(pid, kind),
                    ns_of(holder.1, kind)
                ));
            }
        }
        for kind in ["pid", "mnt", "net"] {
            if ns_of(pid, kind) == ns_of(std::process::id(), kind) {
                return Err(format!("{kind}: the container shares the host's"));
            }
        }
        expect_ok(&c.rcrun(&["delete", "--force", "joined"]), "delete")?;
        c.assert_gone("joined", &[])
    })();
    check(&mut failures, "join uts+ipc", r);

    // Refused before anything starts, with what is wrong: a path of another kind, the host's
    // own mount namespace (pivot_root there would move the host's root), a missing file.
    for (what, kind, path, needle) in [
        (
            "wrong kind",
            "uts",
            format!("/proc/{}/ns/ipc", holder.1),
            "CLONE_NEWIPC",
        ),
        (
            "host mount ns",
            "mount",
            format!("/proc/{}/ns/mnt", std::process::id()),
            "rcrun's own mount namespace",
        ),
        (
            "missing",
            "ipc",
            "/proc/does-not-exist/ns/ipc".to_string(),
            "does-not-exist",
        ),
    ] {
        let c = Case::new("nsbad", Mode::Root, "root", serde_json::json!(["true"]));
        set_namespaces(&c, |ns| with_path(ns, kind, &path));
        let id = "bad";
        let (code, out) = c.create(id, &[]);
        let r = if code == Some(1) && out.contains(needle) {
            c.assert_gone(id, &[])
        } else {
            Err(format!(
                "{what}: wanted exit 1 and {needle:?}, got {code:?}: {out}"
            ))
        };
        check(&mut failures, what, r);
        c.cleanup();
    }
    c.cleanup();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unlisted_namespaces_are_shared_and_joins_rootless_refused() {
    let mut failures = Vec::new();
    for (mode, name) in bundle_modes("oci namespaces") {
        let c = Case::new(
            "nsshare",
            mode,
            name,
            serde_json::json!(["sh", "-c", "exec sleep 300"]),
        );
        let r = (|| {
            if mode == Mode::Root {
                // No ipc and no uts entry: rcrun's own (and no hostname, which would rename
                // the host's).
                set_namespaces(&c, |ns| {
                    ns.retain(|n| n["type"] != "ipc" && n["type"] != "uts")
                });
                edit_config(&c.bundle, |d| d["hostname"] = "".into());
                let (code, out) = c.create("shared", &[]);
                if code != Some(0) {
                    return Err(format!("create: {code:?}: {out}"));
                }
                let pid = c.status("shared")?.1 as u32;
                for kind in ["ipc", "uts"] {
                    if ns_of(pid, kind) != ns_of(std::process::id(), kind) {
                        return Err(format!("{kind}: not inherited"));
                    }
                }
                if ns_of(pid, "mnt") == ns_of(std::process::id(), "mnt") {
                    return Err("mnt: rcrun must always make its own".into());
                }
                expect_ok(&c.rcrun(&["delete", "--force", "shared"]), "delete")?;
                c.assert_gone("shared", &[])
            } else {
                set_namespaces(&c, |ns| with_path(ns, "ipc", "/proc/1/ns/ipc"));
                let (code, out) = c.create("refused", &[]);
                if code == Some(1) && out.contains("without real root") {
                    c.assert_gone("refused", &[])
                } else {
                    Err(format!(
                        "rootless join: wanted a refusal, got {code:?}: {out}"
                    ))
                }
            }
        })();
        check(&mut failures, name, r);
        c.cleanup();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `/proc/self/mountinfo` marks the root's propagation in its optional fields: `shared:N`,
/// `master:N` (a slave), `unbindable`, or nothing (private). The root's line is the one whose
/// mount point (field 5) is "/".
#[test]
fn rootfs_propagation_in_every_mode() {
    let mut failures = Vec::new();
    for (mode, name) in bundle_modes("oci rootfsPropagation") {
        for (value, want) in [("shared", "shared:"), ("unbindable", "unbindable")] {
            let c = Case::new(
                "prop",
                mode,
                name,
                serde_json::json!(["awk", "$5 == \"/\"", "/proc/self/mountinfo"]),
            );
            edit_config(&c.bundle, |d| {
                d["linux"]["rootfsPropagation"] = value.into()
            });
            let o = c.rcrun(&[
                "run",
                "-b",
                c.bundle.to_str().unwrap(),
                &format!("p-{value}"),
            ]);
            let out = String::from_utf8_lossy(&o.stdout).to_string();
            let r = if o.status.success() && out.lines().any(|l| l.contains(want)) {
                Ok(())
            } else {
                Err(format!(
                    "{value}: wanted {want:?} on the root's line: {}",
                    text(&o)
                ))
            };
            check(&mut failures, name, r);
            c.cleanup();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An OCI `cgroup` mount at /sys/fs/cgroup (podman and containerd add one): as root the
/// container sees its own cgroups there (its memory limit), read-only; rootless on cgroup v1 the
/// host's tree is bound read-only (the kernel refuses cgroup v1 mounts in a user namespace).
#[test]
fn cgroup_mount_shows_the_containers_own_cgroups() {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let script = if v2 {
        "cat /sys/fs/cgroup/memory.max; touch /sys/fs/cgroup/x 2>/dev/null || echo read-only"
    } else {
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; touch /sys/fs/cgroup/x 2>/dev/null || echo read-only"
    };
    each_mode(
        "cgmount",
        serde_json::json!(["sh", "-c", script]),
        None,
        |c| {
            edit_config(&c.bundle, |d| {
                let mounts = d["mounts"].as_array_mut().unwrap();
                mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
                mounts.push(serde_json::json!({
                    "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                    "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
                }));
                if c.mode == Mode::Root {
                    d["linux"]["resources"]["memory"] = serde_json::json!({"limit": 33554432});
                }
            });
            let o = c.rcrun(&[
                "run",
                "-b",
                c.bundle.to_str().unwrap(),
                &format!("cgm-{}", c.name),
            ]);
            let out = String::from_utf8_lossy(&o.stdout).to_string();
            if !o.status.success() || !out.contains("read-only") {
                return Err(format!("run with a cgroup mount: {}", text(&o)));
            }
            if c.mode == Mode::Root && !out.contains("33554432") {
                return Err(format!(
                    "the container's memory limit is not what its /sys/fs/cgroup shows: {out}"
                ));
            }
            Ok(())
        },
    );
}

/// Root of a user namespace rcrun runs in (rootless podman runs its runtime in its own;
/// `unshare -Ur` here): a spec without a user namespace shares that one, as runc does.
#[test]
fn a_spec_without_a_user_namespace_shares_the_one_rcrun_runs_in() {
    if !bundle_modes("oci shared userns")
        .iter()
        .any(|(m, _)| *m == Mode::Unshare)
    {
        return;
    }
    let c = Case::new(
        "shareduserns",
        Mode::Unshare,
        "unshare",
        serde_json::json!(["sh", "-c", "id -u; ls /dev/null; exit 4"]),
    );
    edit_config(&c.bundle, |d| {
        let ns = d["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "user");
        let linux = d["linux"].as_object_mut().unwrap();
        linux.remove("uidMappings");
        linux.remove("gidMappings");
    });
    let o = c.rcrun(&["run", "-b", c.bundle.to_str().unwrap(), "shared-userns"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let r = if o.status.code() == Some(4) && out.contains("0\n") && out.contains("/dev/null") {
        Ok(())
    } else {
        Err(format!(
            "run -b without a user namespace under unshare -Ur: {}",
            text(&o)
        ))
    };
    c.cleanup();
    r.unwrap();
}

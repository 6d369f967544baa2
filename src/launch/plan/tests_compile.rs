//! The compiler on OCI bundles' specs: runc's starter spec as root and rootless, refusals by
//! name, the device policy.

use super::{compile, CompileError, Compiled, Extras, HostFacts};
use crate::host::Privilege;
use crate::launch::mounts::Mnt;
use crate::launch::plan::IdMapping;
use crate::spec::starter;
use std::path::{Path, PathBuf};

/// A bundle dir with an empty rootfs (compile checks that root.path is a directory).
fn bundle(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rcrun-bundle-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(d.join("rootfs")).unwrap();
    d
}

fn spec_json(rootless: Option<(u32, u32)>) -> serde_json::Value {
    serde_json::to_value(starter(rootless)).unwrap()
}

fn plan(v: serde_json::Value, p: &Privilege, b: &Path) -> Result<Compiled, CompileError> {
    let spec: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
    compile(
        &spec,
        &Extras::default(),
        &HostFacts {
            privilege: p,
            bundle: b,
            id: "c1",
            scratch: Path::new("/store/run"),
        },
    )
}

#[test]
fn starter_spec_as_root() {
    let b = bundle("root");
    let bp = plan(spec_json(None), &Privilege::Root, &b).unwrap();
    let p = &bp.plan;
    assert_eq!(p.rootfs_dir.as_deref(), Some(b.join("rootfs").as_path()));
    assert!(p.read_only, "runc's example root is read-only");
    assert_eq!(p.argv, vec!["sh"]);
    assert_eq!(p.mapping, IdMapping::None);
    assert!(p.new_netns);
    assert_eq!(p.hostname, "rcrun");
    assert_eq!(p.rlimits.len(), 1, "RLIMIT_NOFILE 1024");
    // The spec's mounts, then the default devices made with mknod, masks, read-only paths.
    assert!(p
        .mounts
        .iter()
        .any(|m| m.target == "/proc" && m.what == Mnt::Proc));
    assert!(p.mounts.iter().any(|m| m.target == "/dev/null"
        && matches!(
            m.what,
            Mnt::Device {
                major: 1,
                minor: 3,
                ..
            }
        )));
    assert!(p
        .mounts
        .iter()
        .any(|m| m.target == "/proc/kcore" && m.what == Mnt::Mask));
    assert!(p
        .mounts
        .iter()
        .any(|m| m.target == "/proc/sys" && m.what == Mnt::ReadOnly));
    let tmpfs_dev = p.mounts.iter().find(|m| m.target == "/dev").unwrap();
    match &tmpfs_dev.what {
        Mnt::Tmpfs { data, flags, .. } => {
            assert_eq!(data, "mode=755,size=65536k");
            assert_ne!(flags & nix::mount::MsFlags::MS_NOSUID.bits(), 0);
        }
        other => panic!("/dev is {other:?}"),
    }
    // As root the device policy is always set.
    assert!(bp.limits.devices.as_ref().is_some_and(|r| !r.is_empty()));
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn rootless_maps_and_binds() {
    let b = bundle("rootless");
    let me = Privilege::Rootless {
        uid: 1000,
        gid: 1000,
        subids: None,
    };
    let bp = plan(spec_json(Some((1000, 1000))), &me, &b).unwrap();
    assert!(matches!(bp.plan.mapping, IdMapping::Single { .. }));
    assert!(bp.limits.devices.is_none(), "no device cgroup rootless");
    assert!(bp
        .plan
        .mounts
        .iter()
        .any(|m| m.target == "/dev/null" && matches!(m.what, Mnt::Bind { .. })));
    // Someone else's ids without helpers: refused with the reason.
    let e = plan(spec_json(Some((0, 0))), &me, &b)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("newuidmap"), "{e}");
    // Rootless without a user namespace: refused.
    let e = plan(spec_json(None), &me, &b).err().unwrap().to_string();
    assert!(e.contains("user namespace"), "{e}");
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn what_rcrun_cannot_do_is_refused_by_name() {
    let b = bundle("refuse");
    // Hooks compile; the first three make the child stop before pivot_root for them.
    let mut v = spec_json(None);
    v["hooks"] = serde_json::json!({"poststop": [{"path": "/bin/true"}]});
    assert!(
        !plan(v.clone(), &Privilege::Root, &b)
            .unwrap()
            .plan
            .hooks_point
    );
    v["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/true"}]});
    assert!(plan(v, &Privilege::Root, &b).unwrap().plan.hooks_point);
    let mut v = spec_json(None);
    v["mounts"].as_array_mut().unwrap().push(
        serde_json::json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}),
    );
    // A cgroup mount is the container's own cgroups (child::cgroupfs); an unknown type is not.
    assert!(plan(v.clone(), &Privilege::Root, &b).is_ok());
    v["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"destination": "/x", "type": "nfs", "source": "server:/x"}));
    assert!(plan(v, &Privilege::Root, &b)
        .err()
        .unwrap()
        .to_string()
        .contains("\"nfs\""));
    // Root of a user namespace rcrun runs in (rootless podman, unshare -Ur): a spec without
    // one shares it; a plain user still needs one.
    let p = plan(spec_json(None), &Privilege::FakeRoot, &b)
        .unwrap()
        .plan;
    assert!(matches!(p.mapping, IdMapping::Entered { .. }));
    assert!(!p
        .clone_flags()
        .contains(nix::sched::CloneFlags::CLONE_NEWUSER));
    assert!(p.mapping.in_user_namespace());
    let mut v = spec_json(None);
    v["root"]["path"] = "no-such-dir".into();
    assert!(plan(v, &Privilege::Root, &b)
        .err()
        .unwrap()
        .to_string()
        .contains("no-such-dir"));
    // Inheritable and ambient capabilities are the spec's to ask for (runc honours them too).
    let mut v = spec_json(None);
    v["process"]["capabilities"]["inheritable"] = serde_json::json!(["CAP_KILL"]);
    v["process"]["capabilities"]["ambient"] = serde_json::json!(["CAP_KILL"]);
    let caps = plan(v, &Privilege::Root, &b).unwrap().plan.caps;
    assert!(caps.ambient.contains(&::caps::Capability::CAP_KILL));
    assert!(caps.inheritable.contains(&::caps::Capability::CAP_KILL));
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn spec_device_rules_keep_the_default_devices() {
    let b = bundle("devices");
    let mut v = spec_json(None);
    v["linux"]["resources"] = serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]});
    let rules = plan(v, &Privilege::Root, &b)
        .unwrap()
        .limits
        .devices
        .unwrap();
    assert!(!rules[0].allow);
    let null = crate::cgroup::devices::decide(
        &rules,
        crate::cgroup::devices::DeviceKind::Char,
        1,
        3,
        crate::cgroup::devices::Access::RWM,
    );
    let kmsg = crate::cgroup::devices::decide(
        &rules,
        crate::cgroup::devices::DeviceKind::Char,
        1,
        11,
        crate::cgroup::devices::Access::RWM,
    );
    assert!(null && !kmsg, "null allowed, kmsg denied");
    let mut v = spec_json(None);
    v["linux"]["resources"] = serde_json::json!({"devices": [{"allow": true, "access": "rwm"}]});
    let rules = plan(v, &Privilege::Root, &b)
        .unwrap()
        .limits
        .devices
        .unwrap();
    assert!(
        crate::cgroup::devices::decide(
            &rules,
            crate::cgroup::devices::DeviceKind::Char,
            1,
            11,
            crate::cgroup::devices::Access::RWM
        ),
        "allow-all stays allow-all"
    );
    let _ = std::fs::remove_dir_all(&b);
}

/// `linux.sysctl`: only keys of the container's own namespaces, in a name nothing escapes with.
#[test]
fn sysctls_of_the_containers_namespaces_only() {
    let b = bundle("sysctl");
    let with = |k: &str, netns: bool| {
        let mut v = spec_json(None);
        v["linux"]["sysctl"] = serde_json::json!({ k: "1" });
        if !netns {
            let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "network");
        }
        plan(v, &Privilege::Root, &b)
    };
    let p = with("kernel.shmmni", true).unwrap().plan;
    assert_eq!(
        p.sysctls,
        vec![("kernel.shmmni".to_string(), "1".to_string())]
    );
    assert!(with("net.ipv4.ip_forward", true).is_ok());
    for (key, netns, why) in [
        ("net.ipv4.ip_forward", false, "not in a namespace"),
        ("kernel.panic", true, "not in a namespace"),
        ("vm.swappiness", true, "not in a namespace"),
        ("net/../../kernel/panic", true, "not a sysctl name"),
        ("", true, "not a sysctl name"),
    ] {
        let e = with(key, netns).err().unwrap().to_string();
        assert!(e.contains(why), "{key}: {e}");
    }
    let _ = std::fs::remove_dir_all(&b);
}

/// Propagation options become a second step on the new mount (not tmpfs data); a `p` device is
/// a fifo; the spec's own device nodes are allowed by the device policy unless its rules name
/// them.
#[test]
fn propagation_fifos_and_the_specs_own_devices() {
    let b = bundle("propagation");
    let mut v = spec_json(None);
    v["mounts"].as_array_mut().unwrap().push(serde_json::json!(
        {"destination": "/tmp/s", "type": "tmpfs", "source": "tmpfs", "options": ["shared"]}));
    v["linux"]["devices"] = serde_json::json!([
        {"path": "/dev/test1", "type": "c", "major": 10, "minor": 666, "fileMode": 432},
        {"path": "/dev/test3", "type": "p", "major": 0, "minor": 0, "fileMode": 432}
    ]);
    let c = plan(v, &Privilege::Root, &b).unwrap();
    let m = &c.plan.mounts;
    let at = |t: &str| m.iter().position(|s| s.target == t).unwrap();
    match &m[at("/tmp/s")].what {
        Mnt::Tmpfs { data, .. } => assert!(!data.contains("shared"), "{data}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m[at("/tmp/s") + 1].what,
        Mnt::Propagation {
            flags: nix::mount::MsFlags::MS_SHARED.bits()
        }
    );
    assert_eq!(m[at("/dev/test3")].what, Mnt::Fifo { mode: 0o660 });
    let rules = c.limits.devices.unwrap();
    assert!(crate::cgroup::devices::decide(
        &rules,
        crate::cgroup::devices::DeviceKind::Char,
        10,
        666,
        crate::cgroup::devices::Access::RWM
    ));
    let _ = std::fs::remove_dir_all(&b);
}

/// `process.oomScoreAdj` reaches the plan.
#[test]
fn oom_score_adj_reaches_the_plan() {
    let b = bundle("oom");
    let mut v = spec_json(None);
    v["process"]["oomScoreAdj"] = serde_json::json!(500);
    assert_eq!(
        plan(v, &Privilege::Root, &b).unwrap().plan.oom_score_adj,
        Some(500)
    );
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn namespaces_listed_joined_and_inherited() {
    use crate::launch::NsKind;
    let b = bundle("ns");
    // The starter lists pid, network, ipc, uts, mount, cgroup: all new.
    let p = plan(spec_json(None), &Privilege::Root, &b).unwrap().plan;
    assert!(p.inherit.is_empty() && p.joins.is_empty());
    assert!(p.makes(NsKind::Pid) && p.makes(NsKind::Cgroup) && p.new_netns);
    // A path joins; the joins come in join order, the mount namespace last.
    let mut v = spec_json(None);
    for ns in v["linux"]["namespaces"].as_array_mut().unwrap() {
        let t = ns["type"].as_str().unwrap().to_string();
        if t == "mount" || t == "ipc" || t == "network" {
            ns["path"] = format!("/proc/4242/ns/{t}").into();
        }
    }
    let p = plan(v, &Privilege::Root, &b).unwrap().plan;
    let kinds: Vec<NsKind> = p.joins.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, [NsKind::Ipc, NsKind::Net, NsKind::Mount]);
    assert!(!p.new_netns, "a joined network namespace is not made");
    assert!(!p
        .clone_flags()
        .contains(nix::sched::CloneFlags::CLONE_NEWIPC));
    // Unlisted: shared with rcrun (the runtime spec's rule), but a hostname then needs uts.
    let mut v = spec_json(None);
    v["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}]);
    v["hostname"] = "".into();
    let p = plan(v.clone(), &Privilege::Root, &b).unwrap().plan;
    assert_eq!(
        p.inherit,
        [NsKind::Pid, NsKind::Uts, NsKind::Ipc, NsKind::Cgroup]
    );
    assert!(p.clone_flags() == nix::sched::CloneFlags::CLONE_NEWNS);
    v["hostname"] = "box".into();
    let e = plan(v, &Privilege::Root, &b).err().unwrap().to_string();
    assert!(e.contains("uts"), "{e}");
    // Refused by name: a type twice, a user namespace path, a relative path, joins rootless.
    let mut v = spec_json(None);
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "pid"}));
    let e = plan(v, &Privilege::Root, &b).err().unwrap().to_string();
    assert!(e.contains("twice"), "{e}");
    let mut v = spec_json(None);
    v["linux"]["namespaces"][0]["path"] = "proc/1/ns/pid".into();
    let e = plan(v, &Privilege::Root, &b).err().unwrap().to_string();
    assert!(e.contains("not absolute"), "{e}");
    let me = Privilege::Rootless {
        uid: 1000,
        gid: 1000,
        subids: None,
    };
    let mut v = spec_json(Some((1000, 1000)));
    v["linux"]["namespaces"][0]["path"] = "/proc/1/ns/pid".into();
    let e = plan(v, &me, &b).err().unwrap().to_string();
    assert!(e.contains("without real root"), "{e}");
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn rootfs_propagation_is_checked_and_kept() {
    let b = bundle("prop");
    let mut v = spec_json(None);
    v["linux"]["rootfsPropagation"] = "shared".into();
    let p = plan(v.clone(), &Privilege::Root, &b).unwrap().plan;
    assert_eq!(
        p.root_propagation,
        Some(nix::mount::MsFlags::MS_SHARED.bits())
    );
    v["linux"]["rootfsPropagation"] = "sideways".into();
    let e = plan(v, &Privilege::Root, &b).err().unwrap().to_string();
    assert!(e.contains("rootfsPropagation"), "{e}");
    let _ = std::fs::remove_dir_all(&b);
}

/// runc's starter spec as root with one more mount appended (destination, type, source, options).
fn starter_with_mount(
    destination: &str,
    typ: &str,
    source: &str,
    option: &str,
) -> serde_json::Value {
    let mut v = spec_json(None);
    v["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": destination, "type": typ, "source": source, "options": [option]
    }));
    v
}

/// Where each target first appears in the plan's mount steps.
fn position(p: &crate::launch::StartupPlan, target: &str) -> usize {
    p.mounts
        .iter()
        .position(|m| m.target == target)
        .unwrap_or_else(|| panic!("no step for {target}"))
}

#[test]
fn steps_under_sys_come_last_while_the_network_namespace_is_made() {
    // runc's starter spec (rcrun's, without the cgroup mount): its mounts end with /sys.
    let b = bundle("syslast");
    let v = starter_with_mount("/sys/kernel/debug", "tmpfs", "tmpfs", "nosuid");
    let p = plan(v, &Privilege::Root, &b).unwrap().plan;
    assert!(p.new_netns);
    let sys = position(&p, "/sys");
    for before in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/null",
        "/proc/kcore",
        "/proc/sys",
    ] {
        assert!(
            position(&p, before) < sys,
            "{before} after /sys: {:?}",
            p.mounts
        );
    }
    // The spec's order kept under /sys, the masks there after /sys itself.
    assert!(sys < position(&p, "/sys/kernel/debug"));
    assert!(sys < position(&p, "/sys/firmware"));
    assert!(p.mounts[sys..].iter().all(|m| m.target.starts_with("/sys")));
}

#[test]
fn a_spec_mount_after_sys_elsewhere_keeps_the_order_and_host_network_too() {
    let b = bundle("sysorder");
    let v = starter_with_mount("/data", "bind", "/tmp", "rbind");
    let p = plan(v, &Privilege::Root, &b).unwrap().plan;
    assert!(position(&p, "/sys") < position(&p, "/data"));
    assert!(
        position(&p, "/data") < position(&p, "/proc/kcore"),
        "masks after every spec mount"
    );
    assert!(position(&p, "/sys") < position(&p, "/proc/kcore"));
    // "/sysroot" is not under /sys (whole path components).
    let v = starter_with_mount("/sysroot", "tmpfs", "tmpfs", "nosuid");
    let p = plan(v, &Privilege::Root, &b).unwrap().plan;
    assert!(position(&p, "/sys") < position(&p, "/sysroot"));
    assert!(position(&p, "/sysroot") < position(&p, "/proc/kcore"));

    // No network namespace of its own (none to wait for): the spec's order, then the masks.
    let mut v = spec_json(None);
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    let p = plan(v, &Privilege::Root, &b).unwrap().plan;
    assert!(!p.new_netns);
    assert!(position(&p, "/sys") < position(&p, "/dev/null"));
    assert!(position(&p, "/sys") < position(&p, "/proc/kcore"));
}

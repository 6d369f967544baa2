//! Plan → OCI Spec, without privileges: the typed Spec must parse, and each part of the plan
//! must land where the runtime spec puts it.

use super::*;
use crate::cgroup::devices::oci_default_rules;
use crate::launch::mounts::{plan_mounts, MountInputs};
use crate::launch::plan::{IdMapping, IdRange, Volume};
use crate::launch::user::ResolvedUser;
use std::path::PathBuf;

fn plan(mapping: IdMapping, new_netns: bool) -> StartupPlan {
    let volumes = vec![Volume {
        source: PathBuf::from("/srv/data"),
        target: "/data".into(),
        read_only: true,
    }];
    let tmpfs = vec!["/scratch".to_string()];
    let mounts = plan_mounts(&MountInputs {
        can_mknod: !mapping.user_namespace(),
        mounts_as_host_root: !mapping.user_namespace(),
        new_netns,
        privileged: false,
        hostname: "box",
        resolv_conf: "nameserver 10.0.0.1\n".into(),
        volumes: &volumes,
        tmpfs: &tmpfs,
        devices: &[],
    });
    StartupPlan {
        id: "abc".into(),
        mapping,
        new_netns,
        scratch: PathBuf::from("/store/run"),
        lowers_top_first: vec![
            PathBuf::from("/store/layers/root/b/fs"),
            PathBuf::from("/store/layers/root/a/fs"),
        ],
        rootfs_dir: None,
        rlimits: vec![],
        etc_layer: Some(1),
        mounts,
        devices: vec![],
        read_only: true,
        hostname: "box".into(),
        argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
        env: vec!["PATH=/bin".into(), "HOME=/root".into()],
        cwd: "/work".into(),
        user: ResolvedUser {
            uid: 1000,
            gid: 100,
            groups: vec![100, 27],
            home: "/home/u".into(),
            name: Some("u".into()),
        },
        no_new_privs: true,
        caps: crate::security::plan_caps(&[], &["NET_RAW".into()], false, true).unwrap(),
        seccomp: None,
        tty: false,
        interactive: false,
        init: false,
        cgroup: Default::default(),
        die_with_rcrun: true,
    }
}

fn limits() -> Limits {
    Limits {
        memory: Some(64 << 20),
        memory_swap: Some(-1),
        pids: Some(20),
        cpus: Some(1.5),
        cpu_shares: Some(512),
        cpuset_cpus: Some("0-1".into()),
        devices: Some(oci_default_rules()),
    }
}

#[test]
fn root_plan_becomes_a_valid_spec() {
    let p = plan(IdMapping::None, true);
    let spec = from_plan(&p, &limits(), None).expect("a valid OCI Spec");
    let process = spec.process().as_ref().unwrap();
    assert_eq!(process.args().as_ref().unwrap(), &p.argv);
    assert_eq!(process.cwd(), &PathBuf::from("/work"));
    assert_eq!(process.user().uid(), 1000);
    assert_eq!(
        process.user().additional_gids().as_ref().unwrap(),
        &vec![100, 27]
    );
    assert_eq!(process.no_new_privileges(), Some(true));
    let bounding = process
        .capabilities()
        .as_ref()
        .unwrap()
        .bounding()
        .as_ref()
        .unwrap();
    assert!(bounding.contains(&oci_spec::runtime::Capability::Mknod));
    assert!(
        !bounding.contains(&oci_spec::runtime::Capability::NetRaw),
        "--cap-drop NET_RAW"
    );
    assert_eq!(spec.hostname().as_deref(), Some("box"));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));

    let linux = spec.linux().as_ref().unwrap();
    let ns: Vec<_> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    use oci_spec::runtime::LinuxNamespaceType as N;
    assert_eq!(
        ns,
        vec![N::Pid, N::Mount, N::Uts, N::Ipc, N::Cgroup, N::Network]
    );
    assert!(
        linux.uid_mappings().is_none(),
        "real root: no user namespace, no maps"
    );
    let r = linux.resources().as_ref().unwrap();
    assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
    assert_eq!(r.memory().as_ref().unwrap().swap(), Some(-1));
    assert_eq!(r.pids().as_ref().unwrap().limit(), 20);
    let cpu = r.cpu().as_ref().unwrap();
    assert_eq!(
        (cpu.quota(), cpu.period(), cpu.shares()),
        (Some(150_000), Some(100_000), Some(512))
    );
    let rules = r.devices().as_ref().unwrap();
    assert_eq!(rules.len(), oci_default_rules().len());
    assert!(!rules[0].allow() && rules[0].typ() == Some(oci_spec::runtime::LinuxDeviceType::A));
    // Real root makes its /dev nodes with mknod: they are linux.devices, not mounts.
    let devs: Vec<_> = linux
        .devices()
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| (d.path().display().to_string(), d.major(), d.minor()))
        .collect();
    assert!(devs.contains(&("/dev/null".into(), 1, 3)));
    assert!(linux
        .masked_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/kcore".to_string()));
    assert!(linux
        .readonly_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/sys".to_string()));

    let mounts = spec.mounts().as_ref().unwrap();
    let find = |d: &str| {
        mounts
            .iter()
            .find(|m| m.destination() == &PathBuf::from(d))
            .unwrap_or_else(|| panic!("no mount {d}"))
    };
    assert_eq!(find("/proc").typ().as_deref(), Some("proc"));
    assert!(find("/sys")
        .options()
        .as_ref()
        .unwrap()
        .contains(&"ro".to_string()));
    let data = find("/data");
    assert_eq!(data.source().as_ref().unwrap(), &PathBuf::from("/srv/data"));
    assert_eq!(
        data.options().as_ref().unwrap(),
        &vec!["rbind".to_string(), "ro".to_string()]
    );
    assert_eq!(find("/scratch").typ().as_deref(), Some("tmpfs"));
    assert!(
        mounts
            .iter()
            .all(|m| m.destination() != &PathBuf::from("/dev/null")),
        "nodes are not mounts as root"
    );

    let ann = spec.annotations().as_ref().unwrap();
    assert_eq!(
        ann["org.rcrun.rootfs.lowerdir"],
        "/store/layers/root/b/fs:/store/layers/root/a/fs"
    );
    assert!(ann["org.rcrun.dev.symlinks"].contains("/dev/fd -> /proc/self/fd"));
}

#[test]
fn rootless_plan_has_a_user_namespace_and_its_maps() {
    let mapping = IdMapping::Helpers {
        uids: vec![
            IdRange {
                inside: 0,
                outside: 1000,
                count: 1,
            },
            IdRange {
                inside: 1,
                outside: 100_000,
                count: 65536,
            },
        ],
        gids: vec![IdRange {
            inside: 0,
            outside: 1000,
            count: 1,
        }],
        newuidmap: "/usr/bin/newuidmap".into(),
        newgidmap: "/usr/bin/newgidmap".into(),
    };
    let mut l = limits();
    l = Limits { devices: None, ..l };
    let p = plan(mapping, false);
    let spec = from_plan(&p, &l, None).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let ns: Vec<_> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    use oci_spec::runtime::LinuxNamespaceType as N;
    assert!(ns.contains(&N::User));
    assert!(!ns.contains(&N::Network), "--network host");
    let uids: Vec<_> = linux
        .uid_mappings()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.container_id(), m.host_id(), m.size()))
        .collect();
    assert_eq!(uids, vec![(0, 1000, 1), (1, 100_000, 65536)]);
    assert!(
        linux.resources().as_ref().unwrap().devices().is_none(),
        "no device cgroup rootless"
    );
    // In a user namespace the nodes are binds of the host's.
    let mounts = spec.mounts().as_ref().unwrap();
    let null = mounts
        .iter()
        .find(|m| m.destination() == &PathBuf::from("/dev/null"))
        .expect("/dev/null bind");
    assert_eq!(null.typ().as_deref(), Some("bind"));
    assert!(spec.annotations().as_ref().unwrap()["org.rcrun.idmaps"].contains("newuidmap"));
}

#[test]
fn docker_profile_becomes_oci_seccomp() {
    let name = "built-in";
    let profile =
        crate::security::seccomp::parse_profile(name, crate::security::DEFAULT_PROFILE.as_bytes())
            .unwrap();
    let p = plan(IdMapping::None, true);
    let entries = crate::security::seccomp::applicable_entries(
        name,
        &profile,
        &p.caps.bounding,
        seccompiler::TargetArch::x86_64,
    )
    .unwrap();
    let all: usize = profile.syscalls.iter().flatten().count();
    assert!(
        entries.len() < all,
        "includes/excludes were evaluated ({} of {all})",
        entries.len()
    );
    let input = SeccompInput {
        name,
        profile: &profile,
        entries,
    };
    let spec = from_plan(&p, &Limits::default(), Some(&input)).unwrap();
    let sc = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
    use oci_spec::runtime::{Arch, LinuxSeccompAction as A};
    assert_eq!(sc.default_action(), A::ScmpActErrno);
    assert_eq!(sc.default_errno_ret(), Some(1));
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            sc.architectures().as_ref().unwrap(),
            &vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
    }
    let names: Vec<&String> = sc
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .flat_map(|s| s.names())
        .collect();
    assert!(names.iter().any(|n| *n == "read"));
    // CAP_SYS_ADMIN is not in the set: the entry that allows mount for it is not there.
    assert!(
        !names.iter().any(|n| *n == "mount"),
        "mount allowed without CAP_SYS_ADMIN"
    );
}

#[test]
fn actions_with_an_errno_are_split() {
    assert_eq!(
        split_action("SCMP_ACT_ERRNO(38)", None),
        ("SCMP_ACT_ERRNO".into(), Some(38))
    );
    assert_eq!(
        split_action("SCMP_ACT_ERRNO", Some(1)),
        ("SCMP_ACT_ERRNO".into(), Some(1))
    );
    assert_eq!(
        split_action("SCMP_ACT_ALLOW", None),
        ("SCMP_ACT_ALLOW".into(), None)
    );
}

mod bundle_plans {
    use super::super::bundle::plan_from_spec;
    use super::super::{starter, SpecError};
    use crate::host::Privilege;
    use crate::launch::mounts::Mnt;
    use crate::launch::plan::IdMapping;
    use std::path::{Path, PathBuf};

    /// A bundle dir with an empty rootfs (plan_from_spec checks that root.path is a directory).
    fn bundle(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rcrun-bundle-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(d.join("rootfs")).unwrap();
        d
    }

    fn spec_json(rootless: Option<(u32, u32)>) -> serde_json::Value {
        serde_json::to_value(starter(rootless)).unwrap()
    }

    fn plan(
        v: serde_json::Value,
        p: &Privilege,
        b: &Path,
    ) -> Result<super::super::bundle::BundlePlan, SpecError> {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
        plan_from_spec(&spec, b, p, "c1", Path::new("/store/run"))
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
            Mnt::Tmpfs { data, flags } => {
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
        let mut v = spec_json(None);
        v["hooks"] = serde_json::json!({"prestart": [{"path": "/bin/true"}]});
        assert!(plan(v, &Privilege::Root, &b)
            .err()
            .unwrap()
            .to_string()
            .contains("hooks"));
        let mut v = spec_json(None);
        v["linux"]["namespaces"][0]["path"] = "/proc/1/ns/pid".into();
        assert!(plan(v, &Privilege::Root, &b)
            .err()
            .unwrap()
            .to_string()
            .contains("joining a namespace"));
        let mut v = spec_json(None);
        v["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}));
        assert!(plan(v, &Privilege::Root, &b)
            .err()
            .unwrap()
            .to_string()
            .contains("\"cgroup\""));
        let mut v = spec_json(None);
        v["root"]["path"] = "no-such-dir".into();
        assert!(plan(v, &Privilege::Root, &b)
            .err()
            .unwrap()
            .to_string()
            .contains("no-such-dir"));
        let mut v = spec_json(None);
        v["process"]["capabilities"]["ambient"] = serde_json::json!(["CAP_KILL"]);
        assert!(plan(v, &Privilege::Root, &b)
            .err()
            .unwrap()
            .to_string()
            .contains("ambient"));
        let _ = std::fs::remove_dir_all(&b);
    }

    #[test]
    fn spec_device_rules_keep_the_default_devices() {
        let b = bundle("devices");
        let mut v = spec_json(None);
        v["linux"]["resources"] =
            serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]});
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
        v["linux"]["resources"] =
            serde_json::json!({"devices": [{"allow": true, "access": "rwm"}]});
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
}

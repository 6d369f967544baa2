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

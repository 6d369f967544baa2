//! Image run → OCI Spec, without privileges: the typed Spec must parse, and each decision of the
//! run must land where the runtime spec puts it.

use super::*;
use crate::cgroup::devices::oci_default_rules;
use crate::cgroup::Limits;
use crate::launch::plan::{IdMapping, IdRange, Volume};
use crate::launch::user::ResolvedUser;
use image::{image_spec, ImageRun};
use std::path::PathBuf;

fn run(mapping: IdMapping, new_netns: bool) -> ImageRun {
    ImageRun {
        id: "abc".into(),
        mapping,
        new_netns,
        privileged: false,
        scratch: PathBuf::from("/store/run"),
        lowers_top_first: vec![
            PathBuf::from("/store/layers/root/b/fs"),
            PathBuf::from("/store/layers/root/a/fs"),
        ],
        etc_layer: Some(1),
        read_only: true,
        hostname: "box".into(),
        resolv_conf: "nameserver 10.0.0.1\n".into(),
        extra_hosts: vec![],
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
        tty: false,
        interactive: false,
        init: false,
        volumes: vec![Volume {
            source: PathBuf::from("/srv/data"),
            target: "/data".into(),
            read_only: true,
        }],
        tmpfs: vec!["/scratch".to_string()],
        devices: vec![],
        seccomp: None,
        rlimits: vec![],
    }
}

/// The Spec a run compiles, or with `seccomp` the one `--print-spec` prints (parsed back: what is
/// printed is a valid OCI document).
fn spec_of(
    r: &ImageRun,
    l: &Limits,
    seccomp: Option<&SeccompInput<'_>>,
) -> oci_spec::runtime::Spec {
    match seccomp {
        None => image_spec(r, l).expect("a valid OCI Spec").0,
        Some(s) => serde_json::from_value(image::document(r, l, Some(s)).unwrap()).unwrap(),
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
        ..Default::default()
    }
}

#[test]
fn root_run_becomes_a_valid_spec() {
    let p = run(IdMapping::None, true);
    let spec = spec_of(&p, &limits(), None);
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
fn rootless_run_has_a_user_namespace_and_its_maps() {
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
    let p = run(mapping, false);
    let spec = spec_of(&p, &l, None);
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
    let p = run(IdMapping::None, true);
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
    let spec = spec_of(&p, &Limits::default(), Some(&input));
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

/// An image run's Spec through the one compiler: the mount table the child executes.
mod compiled {
    use super::*;
    use crate::host::Privilege;
    use crate::launch::mounts::{Mnt, MountStep};
    use crate::launch::plan::{compile, DeviceMapping, HostFacts};
    use crate::launch::StartupPlan;

    fn compiled(r: &ImageRun, privilege: &Privilege) -> StartupPlan {
        let (spec, extras) = image_spec(r, &Limits::default()).unwrap();
        compile(
            &spec,
            &extras,
            &HostFacts {
                privilege,
                bundle: std::path::Path::new("/"),
                id: &r.id,
                scratch: &r.scratch,
            },
        )
        .expect("an image run's spec compiles")
        .plan
    }

    fn rootless() -> Privilege {
        Privilege::Rootless {
            uid: 1000,
            gid: 1000,
            subids: None,
        }
    }

    fn own_ids() -> IdMapping {
        IdMapping::for_privilege(&rootless())
    }

    /// Rootless with only our own id mapped: the command runs as the container's root.
    fn run_rootless(new_netns: bool) -> ImageRun {
        let mut r = run(own_ids(), new_netns);
        r.user = ResolvedUser {
            uid: 0,
            gid: 0,
            groups: vec![],
            home: "/root".into(),
            name: Some("root".into()),
        };
        r
    }

    #[test]
    fn ulimits_reach_the_plan() {
        let mut r = run(IdMapping::None, true);
        r.rlimits = vec![crate::spec::ulimit::parse_ulimit("nofile=100:200").unwrap()];
        let plan = compiled(&r, &Privilege::Root);
        assert_eq!(plan.rlimits.len(), 1);
        let l = &plan.rlimits[0];
        assert_eq!(
            (l.resource, l.soft, l.hard),
            (nix::sys::resource::Resource::RLIMIT_NOFILE, 100, 200)
        );
    }

    fn mounts(p: &StartupPlan) -> &[MountStep] {
        &p.mounts
    }

    #[test]
    fn rootless_binds_devices_and_root_creates_them() {
        let rootless_plan = compiled(&run_rootless(true), &rootless());
        assert!(mounts(&rootless_plan)
            .iter()
            .any(|m| m.target == "/dev/null" && matches!(m.what, Mnt::Bind { .. })));
        let root = compiled(&run(IdMapping::None, true), &Privilege::Root);
        assert!(mounts(&root).iter().any(|m| m.target == "/dev/null"
            && m.what
                == Mnt::Device {
                    block: false,
                    major: 1,
                    minor: 3,
                    mode: 0o666
                }));
    }

    #[test]
    fn proc_first_masks_after_proc_and_sys() {
        let p = compiled(&run_rootless(true), &rootless());
        let m = mounts(&p);
        assert_eq!(m[0].what, Mnt::Proc);
        let pos = |t: &str| m.iter().position(|s| s.target == t).unwrap();
        assert!(pos("/proc/kcore") > pos("/proc") && pos("/sys/firmware") > pos("/sys"));
        assert!(m
            .iter()
            .any(|s| s.target == "/proc/sysrq-trigger" && s.what == Mnt::ReadOnly));
        // As runc and crun: after every mount, so no volume or tmpfs can cover a masked path.
        assert!(pos("/proc/kcore") > pos("/data") && pos("/proc/kcore") > pos("/scratch"));
    }

    /// With the host's network, real root still mounts a fresh sysfs (no host submounts such as
    /// /sys/fs/cgroup/*); only a user namespace binds the host's /sys.
    #[test]
    fn host_network_as_root_mounts_fresh_sysfs() {
        let p = compiled(&run(IdMapping::None, false), &Privilege::Root);
        assert!(mounts(&p)
            .iter()
            .any(|s| s.target == "/sys" && s.what == Mnt::Sysfs));
    }

    #[test]
    fn privileged_has_no_masks_and_host_net_binds_sys() {
        let mut r = run_rootless(false);
        r.privileged = true;
        let p = compiled(&r, &rootless());
        assert!(!mounts(&p).iter().any(|s| s.what == Mnt::Mask));
        assert!(mounts(&p).iter().any(|s| s.target == "/sys"
            && matches!(
                s.what,
                Mnt::Bind {
                    read_only: true,
                    ..
                }
            )));
    }

    /// What OCI cannot say reaches the plan through Extras: the layers, the /etc files' contents,
    /// -i and --init; the rest through the Spec.
    #[test]
    fn an_image_run_compiles_to_its_decisions() {
        let mut r = run(IdMapping::None, true);
        r.interactive = true;
        r.init = true;
        r.seccomp = Some(("built-in".into(), b"{}".to_vec()));
        let p = compiled(&r, &Privilege::Root);
        assert_eq!(p.lowers_top_first, r.lowers_top_first);
        assert_eq!(p.etc_layer, Some(1));
        assert_eq!(p.rootfs_dir, None);
        assert_eq!(
            (p.argv.clone(), p.env.clone(), p.cwd.clone()),
            (r.argv.clone(), r.env.clone(), r.cwd.clone())
        );
        assert_eq!(
            (p.user.uid, p.user.gid, p.user.groups.clone()),
            (1000, 100, vec![100, 27])
        );
        assert_eq!(p.caps, r.caps);
        assert_eq!((p.hostname.as_str(), p.read_only), ("box", true));
        assert!(p.interactive && !p.tty && p.init && p.no_new_privs);
        let hostname = mounts(&p)
            .iter()
            .find(|m| m.target == "/etc/hostname")
            .unwrap();
        assert_eq!(
            hostname.what,
            Mnt::HostFile {
                contents: "box\n".into()
            }
        );
        let resolv = mounts(&p)
            .iter()
            .find(|m| m.target == "/etc/resolv.conf")
            .unwrap();
        assert_eq!(
            resolv.what,
            Mnt::HostFile {
                contents: "nameserver 10.0.0.1\n".into()
            }
        );
        let dev = mounts(&p).iter().find(|m| m.target == "/dev").unwrap();
        assert_eq!(
            dev.what,
            Mnt::Tmpfs {
                data: "mode=755,size=65536k".into(),
                flags: (nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_STRICTATIME)
                    .bits(),
                source: "tmpfs".into(),
            }
        );
    }

    /// `--device`: real root makes the node at the container path; in a user namespace the
    /// host's node (its own path) is bound there.
    #[test]
    fn devices_are_nodes_as_root_and_binds_of_the_host_node_rootless() {
        let sda = DeviceMapping {
            host: PathBuf::from("/dev/sda"),
            container: "/dev/xvda".into(),
            block: true,
            major: 8,
            minor: 0,
            mode: 0o660,
            access: crate::cgroup::devices::Access::RWM,
        };
        let mut r = run(IdMapping::None, true);
        r.devices = vec![sda.clone()];
        let root = compiled(&r, &Privilege::Root);
        assert!(mounts(&root).iter().any(|m| m.target == "/dev/xvda"
            && m.what
                == Mnt::Device {
                    block: true,
                    major: 8,
                    minor: 0,
                    mode: 0o660
                }));
        let mut r = run_rootless(true);
        r.devices = vec![sda];
        let rootless_plan = compiled(&r, &rootless());
        assert!(mounts(&rootless_plan)
            .iter()
            .any(|m| m.target == "/dev/xvda"
                && m.what
                    == Mnt::Bind {
                        source: PathBuf::from("/dev/sda"),
                        recursive: false,
                        read_only: false
                    }));
    }
}

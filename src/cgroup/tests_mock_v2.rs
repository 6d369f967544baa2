//! Unit tests against mock cgroup v2 trees (see tests_mock.rs for the v1 ones and the helpers):
//! controllers enabled on the way down as root, rootless delegation through systemd's user
//! slice.

use super::tests_mock::{clear_procs, get, put, v2_tree, Tmp};
use super::*;

#[test]
fn v2_root_enables_controllers_and_writes_limits() {
    let t = Tmp::new("v2root");
    let fs = v2_tree(&t, "/init.scope");
    let root = fs.root.clone();
    // A kernel with swap accounting shows memory.swap.max in non-root cgroups.
    put(&root.join("rcrun/memory.swap.max"), "max");
    put(&root.join("rcrun/cgroup.subtree_control"), "");
    let l = Limits {
        memory: Some(64 << 20),
        memory_swap: Some(96 << 20),
        pids: Some(-1),
        cpus: Some(0.5),
        cpu_shares: Some(1024),
        cpuset_cpus: Some("0-1".into()),
        devices: None,
        ..Default::default()
    };
    let mut cg = Cgroup::create(&fs, "c1", &l).unwrap().unwrap();
    let d = root.join("rcrun/c1");
    assert_eq!(cg.paths(), vec![d.as_path()]);
    assert_eq!(
        get(&root.join("cgroup.subtree_control")),
        "+memory +pids +cpu +cpuset"
    );
    assert_eq!(
        get(&root.join("rcrun/cgroup.subtree_control")),
        "+memory +pids +cpu +cpuset"
    );
    assert_eq!(get(&d.join("memory.max")), "67108864");
    assert_eq!(get(&d.join("memory.swap.max")), "33554432"); // swap alone = 96m - 64m
    assert_eq!(get(&d.join("pids.max")), "max");
    assert_eq!(get(&d.join("cpu.max")), "50000 100000");
    assert_eq!(get(&d.join("cpu.weight")), "100");
    assert_eq!(get(&d.join("cpuset.cpus")), "0-1");
    let files: Vec<String> = cg
        .writes()
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        [
            "cgroup.subtree_control",
            "cgroup.subtree_control",
            "memory.max",
            "memory.swap.max",
            "pids.max",
            "cpu.max",
            "cpu.weight",
            "cpuset.cpus"
        ]
    );
    cg.add_process(4242).unwrap();
    assert_eq!(get(&d.join("cgroup.procs")), "4242");

    // OOM and stats files.
    assert!(!cg.oom_killed());
    put(
        &d.join("memory.events"),
        "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
    );
    assert!(cg.oom_killed());
    put(&d.join("memory.peak"), "67100000\n");
    put(
        &d.join("cpu.stat"),
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
    );
    put(&d.join("pids.current"), "3\n");
    put(&d.join("pids.peak"), "7\n");
    assert_eq!(
        cg.stats(),
        Stats {
            peak_memory_bytes: Some(67_100_000),
            cpu_time: Some(Duration::from_micros(1_500_000)),
            pids_current: Some(3),
            pids_peak: Some(7),
        }
    );
    clear_procs(&root);
    cg.remove().unwrap();
    assert!(!d.exists());
}

#[test]
fn v2_root_skips_already_enabled_and_missing_optional() {
    let t = Tmp::new("v2en");
    let fs = v2_tree(&t, "/");
    put(&fs.root.join("cgroup.controllers"), "cpu memory");
    put(&fs.root.join("cgroup.subtree_control"), "cpu memory");
    let cg = Cgroup::create(
        &fs,
        "c",
        &Limits {
            memory: Some(1 << 30),
            ..Default::default()
        },
    )
    .unwrap()
    .unwrap();
    // Root already had both; rcrun/ needed them.
    let w: Vec<_> = cg
        .writes()
        .iter()
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    assert_eq!(
        w[0],
        (
            fs.root.join("rcrun/cgroup.subtree_control"),
            "+memory +cpu".into()
        )
    );
    // Implicit swap default silently skipped: no memory.swap.max here.
    assert_eq!(w.len(), 2);
    let e = Cgroup::create(
        &fs,
        "d",
        &Limits {
            pids: Some(3),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            CgroupError::MissingController {
                controller: Controller::Pids,
                ..
            }
        ),
        "{e}"
    );
    let e = Cgroup::create(
        &fs,
        "e",
        &Limits {
            memory: Some(1 << 20),
            memory_swap: Some(2 << 20),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, CgroupError::SwapUnsupported { .. }), "{e}");
}

pub(super) const SCOPE: &str =
    "/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope";
pub(super) const USER_SVC: &str = "/user.slice/user-1000.slice/user@1000.service";

/// A systemd-like v2 tree: user@1000.service delegated to uid 1000 with
/// `controllers` available below it, our process in `SCOPE`.
pub(super) fn v2_user_tree(t: &Tmp, controllers: &str, owned_from: &str) -> CgroupFs {
    let fs = v2_tree(t, SCOPE);
    let root = fs.root.clone();
    let mut p = root.clone();
    for part in SCOPE.trim_start_matches('/').split('/') {
        p = p.join(part);
        put(&p.join("cgroup.controllers"), controllers);
        put(&p.join("cgroup.subtree_control"), "");
        put(&p.join("cgroup.procs"), "");
    }
    put(
        &root
            .join(SCOPE.trim_start_matches('/'))
            .join("cgroup.procs"),
        "4242\n4243\n",
    );
    let owned = root.join(owned_from.trim_start_matches('/'));
    fs.with_uid(1000)
        .with_writable_check(move |p| p.starts_with(&owned))
}

#[test]
fn v2_rootless_delegated_scope_moves_self_to_leaf() {
    let t = Tmp::new("v2scope");
    let fs = v2_user_tree(&t, "memory pids", USER_SVC);
    let scope = fs.root.join(SCOPE.trim_start_matches('/'));
    let l = Limits {
        memory: Some(64 << 20),
        pids: Some(20),
        ..Default::default()
    };
    let cg = Cgroup::create(&fs, "c", &l).unwrap().unwrap();
    assert_eq!(cg.paths(), vec![scope.join("rcrun/c").as_path()]);
    // Processes moved to the leaf before enabling controllers (no internal processes).
    let leaf = scope.join(RUNTIME_LEAF);
    let w = cg.writes();
    assert_eq!(w[0], (leaf.join("cgroup.procs"), "4242".into()));
    assert_eq!(w[1], (leaf.join("cgroup.procs"), "4243".into()));
    assert_eq!(
        w[2],
        (scope.join("cgroup.subtree_control"), "+memory +pids".into())
    );
    assert_eq!(
        w[3],
        (
            scope.join("rcrun/cgroup.subtree_control"),
            "+memory +pids".into()
        )
    );
    assert_eq!(get(&scope.join("rcrun/c/memory.max")), "67108864");
    assert_eq!(get(&scope.join("rcrun/c/pids.max")), "20");
}

#[test]
fn v2_rootless_cpu_not_delegated() {
    let t = Tmp::new("v2nocpu");
    let fs = v2_user_tree(&t, "memory pids", USER_SVC);
    let e = Cgroup::create(
        &fs,
        "c",
        &Limits {
            cpus: Some(1.0),
            ..Default::default()
        },
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            CgroupError::NoDelegation {
                version: Version::V2,
                uid: 1000,
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("cpu controller"), "{msg}");
    assert!(
        msg.contains("systemd-run --user --scope -p Delegate=yes"),
        "{msg}"
    );
    assert!(msg.contains("Delegate=cpu cpuset io memory pids"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    println!("v2 NoDelegation message: {msg}");
}

#[test]
fn v2_rootless_uses_parent_without_processes() {
    let t = Tmp::new("v2parent");
    // Only user@1000.service's own directory (not its children) is writable
    // and holds no processes: the container goes there, nothing is moved.
    let fs = v2_user_tree(&t, "memory pids cpu", USER_SVC);
    let svc = fs.root.join(USER_SVC.trim_start_matches('/'));
    let svc2 = svc.clone();
    let fs = fs.with_writable_check(move |p| {
        p == svc2 || p.parent() == Some(svc2.as_path()) || p.starts_with(svc2.join("rcrun"))
    });
    let cg = Cgroup::create(
        &fs,
        "c",
        &Limits {
            cpus: Some(2.0),
            ..Default::default()
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(cg.paths(), vec![svc.join("rcrun/c").as_path()]);
    assert!(!cg
        .writes()
        .iter()
        .any(|(p, _)| p.to_string_lossy().contains(RUNTIME_LEAF)));
    assert_eq!(get(&svc.join("rcrun/c/cpu.max")), "200000 100000");
}

#[test]
fn v2_rootless_not_delegated() {
    let t = Tmp::new("v2none");
    let fs = v2_user_tree(&t, "memory pids", "/nothing-is-mine");
    assert!(Cgroup::create(&fs, "c", &Limits::default())
        .unwrap()
        .is_none());
    let e = Cgroup::create(
        &fs,
        "c",
        &Limits {
            memory: Some(1 << 30),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("nor any parent of it is writable"),
        "{e}"
    );
    // No entry in /proc/self/cgroup at all.
    put(&t.0.join("proc/self/cgroup"), "");
    assert!(Cgroup::create(&fs, "c", &Limits::default())
        .unwrap()
        .is_none());
    assert!(Cgroup::create(
        &fs,
        "c",
        &Limits {
            pids: Some(1),
            ..Default::default()
        }
    )
    .is_err());
}

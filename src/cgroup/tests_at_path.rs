//! `Cgroup::create_at` (an OCI `linux.cgroupsPath`) against the mock trees of `tests_mock`.

use super::tests_mock::{clear_procs, get, put, v1_tree, v2_tree, Tmp};
use super::*;

fn oci_limits(json: &str) -> Limits {
    from_spec(&serde_json::from_str(json).unwrap()).unwrap()
}

#[test]
fn v1_absolute_path_is_below_each_mount_with_the_exact_writes() {
    let t = Tmp::new("at-v1abs");
    let fs = v1_tree(&t);
    let root = fs.root.clone();
    let l = oci_limits(
        r#"{"memory":{"limit":50593792,"reservation":50593792,"swap":50593792,"swappiness":50,"disableOOMKiller":true},
            "cpu":{"shares":2048,"quota":200000,"period":500000,"realtimePeriod":1000000,"realtimeRuntime":950000,"cpus":"0","mems":"0"},
            "pids":{"limit":17}}"#,
    );
    let cg = Cgroup::create_at(&fs, "c1", "/cgrouptest", &l, false)
        .unwrap()
        .unwrap();
    let dir = |c: &str| root.join(c).join("cgrouptest");
    for c in ["memory", "pids", "cpu", "cpuset"] {
        assert!(
            cg.paths().contains(&dir(c).as_path()),
            "{c}: {:?}",
            cg.paths()
        );
    }
    for (c, file, want) in [
        ("memory", "memory.limit_in_bytes", "50593792"),
        ("memory", "memory.soft_limit_in_bytes", "50593792"),
        ("memory", "memory.memsw.limit_in_bytes", "50593792"),
        ("memory", "memory.oom_control", "1"),
        ("cpu", "cpu.shares", "2048"),
        ("cpu", "cpu.cfs_period_us", "500000"),
        ("cpu", "cpu.cfs_quota_us", "200000"),
        ("cpu", "cpu.rt_period_us", "1000000"),
        ("cpu", "cpu.rt_runtime_us", "950000"),
        ("cpuset", "cpuset.cpus", "0"),
        ("cpuset", "cpuset.mems", "0"),
        ("pids", "pids.max", "17"),
    ] {
        assert_eq!(get(&dir(c).join(file)), want, "{c}/{file}");
    }
    // Kernel memory was not asked for: not written. Swappiness is optional (v2 has none) and
    // skipped where the kernel shows no file, as in this mock's fresh directory.
    assert!(!dir("memory").join("memory.kmem.limit_in_bytes").exists());
    assert!(!dir("memory").join("memory.swappiness").exists());
    // The cgroup goes with `remove`, the hierarchies stay.
    let removable = cg.removable();
    assert!(removable.contains(&dir("memory")));
    clear_procs(&root);
    cg.remove().unwrap();
    assert!(!dir("memory").exists() && !dir("cpu").exists());
    assert!(root.join("memory/cgroup.procs").exists());
}

#[test]
fn v1_relative_path_is_below_rcruns_own_cgroup_and_parents_go_too() {
    let t = Tmp::new("at-v1rel");
    let fs = v1_tree(&t);
    let root = fs.root.clone();
    // v1_tree's /proc/self/cgroup: memory at /user.slice/app, pids at /user.slice.
    std::fs::create_dir_all(root.join("memory/user.slice/app")).unwrap();
    std::fs::create_dir_all(root.join("pids/user.slice")).unwrap();
    let cg = Cgroup::create_at(
        &fs,
        "c1",
        "testdir/cgrouptest/container",
        &Limits::default(),
        false,
    )
    .unwrap()
    .unwrap();
    let mem = root.join("memory/user.slice/app/testdir/cgrouptest/container");
    let pids = root.join("pids/user.slice/testdir/cgrouptest/container");
    assert!(mem.is_dir() && pids.is_dir());
    let removable = cg.removable();
    assert_eq!(removable.first(), Some(&mem), "{removable:?}");
    assert!(removable.contains(&root.join("memory/user.slice/app/testdir")));
    // The directories above that existed before are not rcrun's to remove.
    assert!(!removable.contains(&root.join("memory/user.slice/app")));
    clear_procs(&root);
    cg.remove().unwrap();
    assert!(!root.join("memory/user.slice/app/testdir").exists());
    assert!(!root.join("pids/user.slice/testdir").exists());
}

#[test]
fn an_existing_leaf_is_joined_and_left_in_place() {
    let t = Tmp::new("at-existing");
    let fs = v1_tree(&t);
    let root = fs.root.clone();
    std::fs::create_dir_all(root.join("memory/kubepods/pod1")).unwrap();
    put(&root.join("memory/kubepods/pod1/cgroup.procs"), "");
    let cg = Cgroup::create_at(&fs, "c1", "/kubepods/pod1", &Limits::default(), false)
        .unwrap()
        .unwrap();
    assert!(!cg.removable().contains(&root.join("memory/kubepods/pod1")));
    cg.remove().unwrap();
    assert!(root.join("memory/kubepods/pod1").is_dir());
    // The state's view of it: adopting with what `removable` said keeps it too.
    let again = Cgroup::create_at(&fs, "c1", "/kubepods/pod1", &Limits::default(), false)
        .unwrap()
        .unwrap();
    let paths: Vec<PathBuf> = again.paths().iter().map(|p| p.to_path_buf()).collect();
    let removable = again.removable();
    again.keep();
    Cgroup::adopt(Version::V1, "c1", paths, Some(removable))
        .remove()
        .unwrap();
    assert!(root.join("memory/kubepods/pod1").is_dir());
}

#[test]
fn paths_leaving_the_hierarchy_are_refused() {
    let t = Tmp::new("at-bad");
    let fs = v1_tree(&t);
    for bad in ["/../../etc", "a/../../b", "/"] {
        let e = Cgroup::create_at(&fs, "c1", bad, &Limits::default(), false).unwrap_err();
        assert!(matches!(e, CgroupError::BadPath { .. }), "{bad}: {e}");
    }
}

#[test]
fn v2_absolute_path_enables_controllers_down_the_chain() {
    let t = Tmp::new("at-v2");
    let fs = v2_tree(&t, "/init.scope");
    let root = fs.root.clone();
    let l = oci_limits(
        r#"{"memory":{"limit":50593792},"pids":{"limit":9},"unified":{"memory.high":"40000000"}}"#,
    );
    let cg = Cgroup::create_at(&fs, "c1", "/default/c1", &l, false)
        .unwrap()
        .unwrap();
    let leaf = root.join("default/c1");
    assert_eq!(cg.paths(), vec![leaf.as_path()]);
    assert!(get(&root.join("cgroup.subtree_control")).contains("+memory"));
    assert!(get(&root.join("default/cgroup.subtree_control")).contains("+pids"));
    assert_eq!(get(&leaf.join("memory.max")), "50593792");
    assert_eq!(get(&leaf.join("memory.high")), "40000000");
    assert_eq!(get(&leaf.join("pids.max")), "9");
    assert_eq!(cg.removable(), vec![leaf.clone(), root.join("default")]);
}

#[test]
fn a_knob_the_version_lacks_fails_before_anything_is_made() {
    let t = Tmp::new("at-v2-v1only");
    let fs = v2_tree(&t, "/init.scope");
    let l = oci_limits(r#"{"network":{"classID":1}}"#);
    let e = Cgroup::create_at(&fs, "c1", "/x", &l, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("linux.resources.network.classID"), "{e}");
    assert!(!fs.root.join("x").exists());
}

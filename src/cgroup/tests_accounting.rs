//! `Limits::without_accounting`: an image run without `--stats` joins on cgroup v1 only the
//! hierarchies something is enforced in (the device policy, a limit), not the counting ones.

use super::tests_mock::{v1_tree, Tmp};
use super::*;

fn root_run(without_accounting: bool) -> Limits {
    Limits {
        devices: Some(devices::oci_default_rules()),
        without_accounting,
        ..Default::default()
    }
}

#[test]
fn v1_image_run_without_stats_joins_only_the_devices_hierarchy() {
    let t = Tmp::new("v1noacct");
    let fs = v1_tree(&t);
    put_devices(&fs);
    let cg = Cgroup::create(&fs, "c", &root_run(true)).unwrap().unwrap();
    assert_eq!(cg.paths(), vec![fs.root.join("devices/rcrun/c")]);
    assert!(!fs.root.join("memory/rcrun/c").exists());
    // With the counters asked for (--stats, an engine's container): memory, pids, cpuacct too.
    let cg = Cgroup::create(&fs, "d", &root_run(false)).unwrap().unwrap();
    assert_eq!(cg.paths().len(), 4);
    // A limit brings its own hierarchy back.
    let limited = Limits {
        memory: Some(64 << 20),
        ..root_run(true)
    };
    let cg = Cgroup::create(&fs, "e", &limited).unwrap().unwrap();
    let mut paths = cg.paths();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            fs.root.join("devices/rcrun/e"),
            fs.root.join("memory/rcrun/e")
        ]
    );
}

#[test]
fn v2_is_one_directory_either_way() {
    let a = Limits {
        without_accounting: true,
        ..Default::default()
    };
    assert_eq!(a.wanted(Version::V2), Limits::default().wanted(Version::V2));
}

fn put_devices(fs: &CgroupFs) {
    super::tests_mock::put(&fs.root.join("devices/cgroup.procs"), "");
}

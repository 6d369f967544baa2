//! The start path's sweep (`gc_stale_beside`): a hierarchy whose rcrun/ directory holds only the
//! run's own cgroup is not listed; any other directory beside it is swept as before.

use super::tests_mock::{put, v1_tree, Tmp};
use super::*;
use std::path::Path;
use std::time::Duration;

/// Whether the file system under `dir` counts a directory's links as 2 + subdirectories (ext4,
/// tmpfs, kernfs do; some do not, and then the sweep lists every directory).
fn counts_directory_links(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = dir.join("link-count-probe");
    std::fs::create_dir_all(probe.join("sub")).unwrap();
    let counted = std::fs::metadata(&probe).unwrap().nlink() == 3;
    std::fs::remove_dir_all(&probe).unwrap();
    counted
}

/// An empty container cgroup under `group` named after rcrun `pid`, which the fake /proc of
/// [`v1_tree`] does not have: a killed run's leftover, as far as the sweep can tell.
fn empty_cgroup_of_a_dead_owner(group: &Path, id: &str, pid: u32) -> std::path::PathBuf {
    let dir = group.join(owned_name(id, Some(Owner { pid, start: 1 })));
    put(&dir.join("cgroup.procs"), "");
    dir
}

#[test]
fn the_sweep_lists_a_hierarchy_only_when_more_than_the_runs_own_cgroup_is_there() {
    let t = Tmp::new("gc-beside");
    let fs = v1_tree(&t);
    let group = fs.root.join("pids/rcrun");
    // Our "own" cgroup is named after a dead owner: were the directory listed, the sweep would
    // remove it, so its survival shows the listing was skipped.
    let own = empty_cgroup_of_a_dead_owner(&group, "aaaaaaaaaaaa", 4343);
    if counts_directory_links(&t.0) {
        let removed = gc_stale_beside(&fs, None, Duration::ZERO, &[own.as_path()]);
        assert!(removed.is_empty(), "{removed:?}");
        assert!(
            own.is_dir(),
            "a hierarchy with only our own cgroup is not listed"
        );
    } else {
        eprintln!(
            "SKIP (part): {} does not count directory links; the sweep lists every hierarchy there",
            t.0.display()
        );
    }
    // A leftover beside it: the hierarchy is listed, and every empty cgroup of a dead owner
    // there goes (our stand-in too, being named after one).
    let leftover = empty_cgroup_of_a_dead_owner(&group, "bbbbbbbbbbbb", 4344);
    let mut removed = gc_stale_beside(&fs, None, Duration::ZERO, &[own.as_path()]);
    removed.sort();
    assert_eq!(removed, vec![own.clone(), leftover.clone()]);
    // Without `own` (rcrun gc, or a run without a cgroup), a lone leftover is found too.
    put(&leftover.join("cgroup.procs"), "");
    let removed = gc_stale_older_than(&fs, None, Duration::ZERO);
    assert_eq!(removed, vec![leftover]);
}

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

#[test]
fn the_sweep_lists_a_hierarchy_only_when_more_than_the_runs_own_cgroup_is_there() {
    let t = Tmp::new("gc-beside");
    let fs = v1_tree(&t);
    let group = fs.root.join("pids/rcrun");
    // Our "own" cgroup is named after a dead owner: were the directory listed, the sweep would
    // remove it, so its survival shows the listing was skipped.
    let own = group.join(owned_name(
        "aaaaaaaaaaaa",
        Some(Owner {
            pid: 4343,
            start: 1,
        }),
    ));
    put(&own.join("cgroup.procs"), "");
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
    let leftover = group.join(owned_name(
        "bbbbbbbbbbbb",
        Some(Owner {
            pid: 4344,
            start: 1,
        }),
    ));
    put(&leftover.join("cgroup.procs"), "");
    let mut removed = gc_stale_beside(&fs, None, Duration::ZERO, &[own.as_path()]);
    removed.sort();
    assert_eq!(removed, vec![own.clone(), leftover.clone()]);
    // Without `own` (rcrun gc, or a run without a cgroup), a lone leftover is found too.
    put(&leftover.join("cgroup.procs"), "");
    let removed = gc_stale_older_than(&fs, None, Duration::ZERO);
    assert_eq!(removed, vec![leftover]);
}

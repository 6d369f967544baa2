//! The cgroup of a run: Docker's limit flags, their narration, and the sweep of cgroups that
//! killed runs left (the launcher places the child in the cgroup: `StartupPlan.cgroup`).

use crate::cli::RunArgs;
use crate::launch::explain::Explain;
use anyhow::{Context, Result};

/// As root: removes cgroups of killed runs (rcrun got SIGKILL before removing its own): empty
/// ones whose owning rcrun (named in the cgroup's name) is gone. Called between spawn and start,
/// while the child builds its root, rather than on the way to clone. Unowned ones (older rcrun
/// versions) only after 30 s, as they may belong to runs starting right now.
pub(super) fn sweep_stale(fs: &crate::cgroup::CgroupFs, own: &crate::cgroup::Cgroup, ex: &Explain) {
    let t = std::time::Instant::now();
    let removed =
        crate::cgroup::gc_stale_beside(fs, None, std::time::Duration::from_secs(30), &own.paths());
    for p in &removed {
        tracing::info!(path = %p.display(), "removed stale cgroup of a killed run");
    }
    // Not counted in the closing per-stage shares: it overlaps the child's steps.
    ex.detail(
        "cgroup",
        &format!(
            "sweep cgroups of killed runs (empty, owner gone) under rcrun/ — in rcrun, while the child mounts (overlaps it: not in the shares): {} removed",
            removed.len()
        ),
        t.elapsed(),
    );
}

/// Resource limits from the flags (sizes and counts validated here, before anything starts).
pub(super) fn limits(a: &RunArgs) -> Result<crate::cgroup::Limits> {
    use crate::cgroup::{parse_cpus, parse_cpuset, parse_size};
    let swap = match a.memory_swap.as_deref() {
        None => None,
        Some("-1") => Some(-1),
        Some(s) => Some(parse_size(s).with_context(|| format!("--memory-swap {s}"))? as i64),
    };
    Ok(crate::cgroup::Limits {
        memory: a
            .memory
            .as_deref()
            .map(|s| parse_size(s).with_context(|| format!("--memory {s}")))
            .transpose()?,
        memory_swap: swap,
        pids: a.pids_limit,
        cpus: a
            .cpus
            .as_deref()
            .map(|s| parse_cpus(s).with_context(|| format!("--cpus {s}")))
            .transpose()?,
        cpu_shares: a.cpu_shares,
        cpuset_cpus: a
            .cpuset_cpus
            .as_deref()
            .map(|s| parse_cpuset(s).with_context(|| format!("--cpuset-cpus {s}")))
            .transpose()?,
        // Set by `device_policy` once the plan says who runs the container.
        devices: None,
        cpu_period: None,
        settings: Vec::new(),
        freezer: false,
        // The spec does not carry it: cmd_run sets it on the compiled limits at launch.
        without_accounting: false,
    })
}

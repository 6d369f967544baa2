//! The cgroup of a run: Docker's limit flags, their narration, and the sweep of cgroups that
//! killed runs left (the launcher places the child in the cgroup: `StartupPlan.cgroup`).

use crate::cli::RunArgs;
use crate::launch::explain::Explain;
use anyhow::{Context, Result};

/// As root: removes cgroups of killed runs (rcrun got SIGKILL before removing its own): empty
/// ones whose owning rcrun (named in the cgroup's name) is gone. Called between spawn and start,
/// while the child builds its root, rather than on the way to clone. Unowned ones (older rcrun
/// versions) only after 30 s, as they may belong to runs starting right now.
pub(super) fn sweep_stale(fs: &crate::cgroup::CgroupFs, ex: &Explain) {
    let t = std::time::Instant::now();
    let removed = crate::cgroup::gc_stale_older_than(fs, None, std::time::Duration::from_secs(30));
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

pub(super) fn describe_limits(l: &crate::cgroup::Limits) -> String {
    use crate::cgroup::format_size;
    let mut v = Vec::new();
    if let Some(m) = l.memory {
        v.push(format!("memory {}", format_size(m)));
    }
    match l.memory_swap {
        Some(-1) => v.push("memory+swap unlimited".into()),
        Some(s) => v.push(format!("memory+swap {}", format_size(s as u64))),
        None => {}
    }
    if let Some(p) = l.pids {
        v.push(format!("pids {p}"));
    }
    if let Some(c) = l.cpus {
        v.push(format!("cpus {c}"));
    }
    if let Some(s) = l.cpu_shares {
        v.push(format!("cpu-shares {s}"));
    }
    if let Some(c) = &l.cpuset_cpus {
        v.push(format!("cpuset {c}"));
    }
    if v.is_empty() {
        "no limits: accounting only".into()
    } else {
        v.join(", ")
    }
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
    })
}

/// The container's cgroup with its limits written (narrated), or None rootless when there is
/// nothing to enforce or read (no limits, no `--stats`): no probing for a delegated subtree on
/// the start path then. Shared by `rcrun run` and the OCI `create`.
pub(crate) fn make_cgroup(
    ctx: &crate::Ctx,
    ex: &Explain,
    cg_fs: &crate::cgroup::CgroupFs,
    id: &str,
    limits: &crate::cgroup::Limits,
    stats: bool,
) -> Result<Option<crate::cgroup::Cgroup>> {
    if !ctx.privilege.is_real_root() && limits.is_empty() && !stats {
        return Ok(None);
    }
    let cgroup = ex.timed(
        "cgroup",
        &format!(
            "create cgroup for container {id} ({})",
            describe_limits(limits)
        ),
        || {
            crate::cgroup::Cgroup::create(
                cg_fs,
                &crate::cgroup::owned_name(id, crate::cgroup::Owner::current()),
                limits,
            )
        },
    )?;
    if let Some(cg) = &cgroup {
        for (path, value) in cg.writes() {
            ex.step(
                "cgroup",
                &format!("write {value:?} to {}", path.display()),
                std::time::Duration::ZERO,
            );
        }
    }
    Ok(cgroup)
}

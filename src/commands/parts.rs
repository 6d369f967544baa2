//! Start-up parts both ways into a container share, `rcrun run` and the OCI `create`: the
//! cgroup with its limits, and the seccomp filter from the cache.

use crate::launch::explain::Explain;
use crate::launch::StartupPlan;
use anyhow::Result;

/// The container's cgroup with its limits written (narrated), or None rootless when there is
/// nothing to enforce or read (no limits, no `--stats`): no probing for a delegated subtree on
/// the start path then. Shared by `rcrun run` and the OCI `create`.
pub(crate) fn make_cgroup(
    ctx: &crate::Ctx,
    ex: &Explain,
    cg_fs: &crate::cgroup::CgroupFs,
    id: &str,
    cgroups_path: Option<&str>,
    limits: &crate::cgroup::Limits,
    stats: bool,
) -> Result<Option<crate::cgroup::Cgroup>> {
    if !ctx.privilege.is_real_root() && limits.is_empty() && !stats && cgroups_path.is_none() {
        return Ok(None);
    }
    let cgroup = ex.timed(
        "cgroup",
        &format!(
            "create cgroup for container {id}{} ({})",
            cgroups_path
                .map(|p| format!(" at linux.cgroupsPath {p}"))
                .unwrap_or_default(),
            describe_limits(limits)
        ),
        || match cgroups_path {
            Some(path) => crate::cgroup::Cgroup::create_at(
                cg_fs,
                id,
                path,
                limits,
                !ctx.privilege.is_real_root(),
            ),
            None => crate::cgroup::Cgroup::create(
                cg_fs,
                &crate::cgroup::owned_name(id, crate::cgroup::Owner::current()),
                limits,
            ),
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

pub(crate) fn describe_limits(l: &crate::cgroup::Limits) -> String {
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
    if let Some(p) = l.cpu_period {
        v.push(format!("cpu period {p}µs"));
    }
    v.extend(l.settings.iter().map(|s| s.field.clone()));
    if v.is_empty() && l.without_accounting {
        "no limits: the device policy alone (--stats adds the counting hierarchies of cgroup v1)"
            .into()
    } else if v.is_empty() {
        "no limits: accounting only".into()
    } else {
        v.join(", ")
    }
}

/// Compiles (or loads from the cache) the seccomp filter of a compiled start, an image's or a
/// bundle's.
pub(crate) fn load_seccomp(
    cache_dir: &std::path::Path,
    source: Option<&crate::launch::plan::SeccompSource>,
    plan: &StartupPlan,
    ex: &Explain,
) -> Result<Option<crate::security::CompiledFilter>> {
    let Some(source) = source else {
        ex.step(
            "seccomp",
            "no filter (unconfined)",
            std::time::Duration::ZERO,
        );
        return Ok(None);
    };
    let arch = target_arch();
    let t = std::time::Instant::now();
    let (filter, cached) =
        crate::security::seccomp::load_cached(cache_dir, &source.bytes, &plan.caps.bounding, arch)
            .map_err(|e| anyhow::anyhow!("seccomp profile {}: {e}", source.name))?;
    ex.step(
        "seccomp",
        &format!(
            "{}: {} rules, default action {}, {} BPF instructions in {} program(s), {}",
            source.name,
            filter.rule_count,
            filter.default_action,
            filter.bpf_instructions,
            filter.programs.len(),
            if cached {
                "loaded from cache"
            } else {
                "compiled and cached"
            }
        ),
        t.elapsed(),
    );
    Ok(Some(filter))
}

pub(crate) fn target_arch() -> seccompiler::TargetArch {
    if cfg!(target_arch = "aarch64") {
        seccompiler::TargetArch::aarch64
    } else {
        seccompiler::TargetArch::x86_64
    }
}

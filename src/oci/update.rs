//! `rcrun update`: new resource limits for a running container's cgroup, as `runc update`
//! (containerd's shim passes `--resources FILE` with the OCI `linux.resources` object; podman
//! `update` and `docker update`-style flags work too).

use super::state::{ContainerDir, Status};
use crate::cli::UpdateArgs;
use crate::Ctx;
use anyhow::{bail, Context, Result};

/// The new `linux.resources`: the file (or stdin for `-`), or the flags.
fn resources(a: &UpdateArgs) -> Result<oci_spec::runtime::LinuxResources> {
    if let Some(f) = &a.resources {
        let bytes = if f.as_os_str() == "-" {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).context("read stdin")?;
            b
        } else {
            std::fs::read(f).with_context(|| format!("--resources {}", f.display()))?
        };
        return serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "--resources {}: not an OCI linux.resources object",
                f.display()
            )
        });
    }
    let mut v = serde_json::json!({});
    if let Some(m) = &a.memory {
        v["memory"]["limit"] =
            (crate::cgroup::parse_size(m).with_context(|| format!("--memory {m}"))? as i64).into();
    }
    if let Some(s) = &a.memory_swap {
        let total: i64 = if s == "-1" {
            -1
        } else {
            crate::cgroup::parse_size(s).with_context(|| format!("--memory-swap {s}"))? as i64
        };
        v["memory"]["swap"] = total.into();
    }
    if let Some(p) = a.pids_limit {
        v["pids"]["limit"] = p.into();
    }
    if let Some(s) = a.cpu_shares {
        v["cpu"]["shares"] = s.into();
    }
    if let Some(q) = a.cpu_quota {
        v["cpu"]["quota"] = q.into();
    }
    if let Some(p) = a.cpu_period {
        v["cpu"]["period"] = p.into();
    }
    if let Some(c) = &a.cpuset_cpus {
        v["cpu"]["cpus"] = c.clone().into();
    }
    if let Some(m) = &a.cpuset_mems {
        v["cpu"]["mems"] = m.clone().into();
    }
    if v.as_object().is_some_and(|o| o.is_empty()) {
        bail!(
            "update {}: nothing to change (give --resources FILE or a limit flag)",
            a.id
        );
    }
    Ok(serde_json::from_value(v)?)
}

/// `rcrun update [--resources FILE|-] [limit flags] ID`.
pub fn cmd_update(ctx: &Ctx, a: &UpdateArgs) -> Result<i32> {
    let cd = ContainerDir::open(&ctx.state_root, &a.id)?;
    let (record, status) = cd.status()?;
    if status == Status::Stopped {
        bail!("container not running (container {} is stopped)", a.id);
    }
    let r = resources(a)?;
    if r.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        bail!("update {}: the device rules are fixed at create (rcrun does not change a running container's device policy)", a.id);
    }
    let limits = crate::cgroup::from_spec(&r)?;
    let Some(mut cg) = record.adopt_cgroup() else {
        bail!(
            "container {} has no cgroup (rootless without a delegated one): its limits cannot change",
            a.id
        );
    };
    let applied = cg.update(&limits);
    for (p, v) in cg.writes() {
        tracing::debug!("update: write {v:?} to {}", p.display());
    }
    // The cgroup stays the container's: `delete` removes it.
    cg.keep();
    applied.with_context(|| format!("update container {}", a.id))?;
    Ok(0)
}

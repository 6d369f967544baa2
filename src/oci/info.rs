//! What the state directory and this runtime can tell: `state`, `list`, `features`.

use super::state::{self, ContainerDir, Status};
use crate::cli::ListArgs;
use crate::Ctx;
use anyhow::Result;

/// `rcrun state ID`.
pub fn cmd_state(ctx: &Ctx, id: &str) -> Result<i32> {
    let cd = ContainerDir::open(&ctx.state_root, id)?;
    let (record, status) = cd.status()?;
    println!(
        "{}",
        serde_json::to_string_pretty(&record.oci_state(status))?
    );
    Ok(0)
}

/// `rcrun list`.
pub fn cmd_list(ctx: &Ctx, a: &ListArgs) -> Result<i32> {
    let mut rows = Vec::new();
    for id in state::list_ids(&ctx.state_root) {
        let Ok(cd) = ContainerDir::open(&ctx.state_root, &id) else {
            continue;
        };
        if let Ok((r, s)) = cd.status() {
            rows.push((r, s));
        }
    }
    if ctx.quiet {
        for (r, _) in &rows {
            println!("{}", r.id);
        }
    } else if a.format == "json" {
        let v: Vec<_> = rows.iter().map(|(r, s)| r.oci_state(*s)).collect();
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "{:<20} {:>8} {:<10} {:<40} CREATED",
            "ID", "PID", "STATUS", "BUNDLE"
        );
        for (r, s) in &rows {
            let pid = if *s == Status::Stopped { 0 } else { r.pid };
            println!(
                "{:<20} {:>8} {:<10} {:<40} {}",
                r.id,
                pid,
                s.to_string(),
                r.bundle.display(),
                r.created
            );
        }
    }
    Ok(0)
}

/// `rcrun features`: what an engine may ask of this runtime (runtime-spec features.md).
pub fn cmd_features() -> Result<i32> {
    let caps: Vec<String> = ::caps::all()
        .into_iter()
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let doc = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::spec::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "bind", "rbind",
            "private", "rprivate", "shared", "rshared", "slave", "rslave", "relatime",
            "norelatime", "strictatime", "nostrictatime", "mode", "size", "uid", "gid",
            "newinstance", "ptmxmode", "gid"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false },
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false }
        },
        "annotations": {
            "org.opencontainers.runc.version": "none (rcrun)",
            "io.github.rcrun.version": env!("CARGO_PKG_VERSION")
        }
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(0)
}

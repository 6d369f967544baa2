//! The confinement a run asks for besides namespaces: the device policy, `--security-opt`, and
//! the seccomp filter (built in profile, a file, or none), compiled or loaded from the cache.

use crate::cli::RunArgs;
use crate::launch::explain::Explain;
use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// The device policy: as real root always (also with --userns), Docker's rule set plus each
/// `--device`, or everything with --privileged; rootless none, as the kernel already refuses.
pub(super) fn device_policy(
    ctx: &Ctx,
    a: &RunArgs,
    plan: &crate::spec::image::ImageRun,
    ex: &Explain,
) -> Option<Vec<crate::cgroup::devices::DeviceRule>> {
    use crate::cgroup::devices;
    if !ctx.privilege.is_real_root() {
        ex.step(
            "devices",
            &format!(
                "no device cgroup needed: in a user namespace the kernel refuses mknod (CAP_MKNOD counts only in the initial user namespace) and opens no device node on a mount made there; the container sees host nodes only as bind mounts (null, zero, full, random, urandom, tty{})",
                plan.devices
                    .iter()
                    .map(|d| format!(", {}", d.host.display()))
                    .collect::<String>()
            ),
            std::time::Duration::ZERO,
        );
        return None;
    }
    let rules = if a.privileged {
        devices::allow_all_rules()
    } else {
        let mut r = devices::oci_default_rules();
        r.extend(plan.devices.iter().map(|d| d.rule()));
        r
    };
    if ex.enabled {
        let what = if a.privileged {
            "--privileged: every device"
        } else if plan.devices.is_empty() {
            "OCI default, as Docker"
        } else {
            "OCI default, as Docker, plus --device"
        };
        let list: Vec<String> = rules.iter().map(|r| r.describe()).collect();
        ex.step(
            "devices",
            &format!(
                "device policy ({what}), applied by the cgroup before the container joins it: {}{}",
                list.join("; "),
                if plan.mapping.user_namespace() {
                    " — with --userns the kernel also refuses mknod inside"
                } else {
                    ""
                }
            ),
            std::time::Duration::ZERO,
        );
    }
    Some(rules)
}

/// What `--security-opt` asked for.
pub struct SecurityOptions {
    pub no_new_privs: bool,
    /// None = default profile; Some(None) = unconfined; Some(Some(path)) = a profile file.
    pub seccomp: Option<Option<PathBuf>>,
}

pub fn security_options(opts: &[String]) -> Result<SecurityOptions> {
    let mut out = SecurityOptions {
        no_new_privs: true,
        seccomp: None,
    };
    for o in opts {
        let (k, v) = o.split_once(['=', ':']).unwrap_or((o.as_str(), ""));
        match (k, v) {
            ("no-new-privileges", "" | "true") => out.no_new_privs = true,
            ("no-new-privileges", "false") => out.no_new_privs = false,
            ("seccomp", "unconfined") => out.seccomp = Some(None),
            ("seccomp", p) if !p.is_empty() => out.seccomp = Some(Some(PathBuf::from(p))),
            _ => bail!("--security-opt {o:?}: unknown option (use seccomp=PATH, seccomp=unconfined, no-new-privileges=false)"),
        }
    }
    Ok(out)
}

/// The seccomp profile's name and bytes, or None when unconfined.
pub(super) fn seccomp_source(
    a: &RunArgs,
    sec: &SecurityOptions,
) -> Result<Option<(String, Vec<u8>)>> {
    if a.privileged || matches!(sec.seccomp, Some(None)) {
        return Ok(None);
    }
    Ok(Some(match &sec.seccomp {
        Some(Some(path)) => (
            path.display().to_string(),
            std::fs::read(path).with_context(|| {
                format!(
                    "--security-opt seccomp={}: cannot read the profile",
                    path.display()
                )
            })?,
        ),
        _ => (
            "built-in configs/seccomp.json".to_string(),
            crate::security::DEFAULT_PROFILE.as_bytes().to_vec(),
        ),
    }))
}

//! The OCI runtime Spec, rcrun's one way into a start: an OCI bundle's `config.json`
//! ([`bundle`]) or the one an image run amounts to ([`image`]: the image's config and the flags
//! written as the `config.json` podman would hand crun). Either goes through the one compiler,
//! [`crate::launch::plan::compile`]. Also `rcrun spec`'s starter config.json, and the pieces of
//! OCI JSON both directions share (id mappings, resources, seccomp in OCI's format).

use crate::security::seccomp::{Profile, SyscallEntry};
use serde_json::{json, Value};

pub mod bundle;
pub mod image;
pub mod ulimit;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the OCI runtime spec built for this run does not parse as one: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("seccomp profile {name}: {reason}")]
    Seccomp { name: String, reason: String },
    #[error("read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an OCI runtime config: {source}")]
    Parse {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("the OCI runtime spec of this run: {0}")]
    Build(#[from] oci_spec::OciSpecError),
    #[error("capability {0} has no name in the OCI runtime spec")]
    Capability(String),
}

/// The seccomp profile of the run, already narrowed to the entries that apply (capabilities,
/// architecture, kernel): the OCI format has no `includes`/`excludes`.
pub struct SeccompInput<'a> {
    pub name: &'a str,
    pub profile: &'a Profile,
    pub entries: Vec<&'a SyscallEntry>,
}

/// The OCI runtime-spec version the document claims: every field written here exists in 1.1,
/// and runtimes check it (crun 1.8 refuses a 1.2 document).
pub const OCI_VERSION: &str = "1.1.0";

/// Docker's profile format → the OCI `linux.seccomp` object: the entries that apply, without
/// `includes`/`excludes`, and the architectures of `archMap` for this machine's arch.
pub(crate) fn seccomp_json(s: &SeccompInput<'_>) -> Result<Value, SpecError> {
    let bad = |reason: String| SpecError::Seccomp {
        name: s.name.to_string(),
        reason,
    };
    let native = if cfg!(target_arch = "aarch64") {
        "SCMP_ARCH_AARCH64"
    } else {
        "SCMP_ARCH_X86_64"
    };
    let architectures: Vec<String> = match (&s.profile.architectures, &s.profile.arch_map) {
        (Some(a), _) => a.clone(),
        (None, Some(map)) => map
            .iter()
            .filter(|e| e.architecture == native)
            .flat_map(|e| {
                std::iter::once(e.architecture.clone())
                    .chain(e.sub_architectures.iter().flatten().cloned())
            })
            .collect(),
        (None, None) => vec![native.to_string()],
    };
    let (default_action, default_errno) =
        split_action(&s.profile.default_action, s.profile.default_errno_ret);
    let mut syscalls = Vec::new();
    for e in &s.entries {
        let names: Vec<String> = e
            .names
            .iter()
            .flatten()
            .cloned()
            .chain(e.name.iter().cloned())
            .collect();
        if names.is_empty() {
            return Err(bad("a syscalls entry names no syscall".into()));
        }
        let (action, errno) = split_action(&e.action, e.errno_ret);
        let mut v = json!({"names": names, "action": action});
        if let Some(n) = errno {
            v["errnoRet"] = json!(n);
        }
        if let Some(args) = &e.args {
            v["args"] = json!(args
                .iter()
                .map(|a| {
                    let mut x = json!({"index": a.index, "value": a.value, "op": a.op});
                    if let Some(two) = a.value_two {
                        x["valueTwo"] = json!(two);
                    }
                    x
                })
                .collect::<Vec<_>>());
        }
        syscalls.push(v);
    }
    let mut out = json!({
        "defaultAction": default_action,
        "architectures": architectures,
        "syscalls": syscalls,
    });
    if let Some(n) = default_errno {
        out["defaultErrnoRet"] = json!(n);
    }
    Ok(out)
}

/// rcrun's profiles may write `SCMP_ACT_ERRNO(1)`; the OCI format wants the action and
/// `errnoRet` apart.
fn split_action(action: &str, errno: Option<u32>) -> (String, Option<u32>) {
    match action.split_once('(') {
        Some((name, rest)) => (
            name.to_string(),
            errno.or_else(|| rest.trim_end_matches(')').trim().parse().ok()),
        ),
        None => (action.to_string(), errno),
    }
}

/// The starter config.json `rcrun spec` writes: oci-spec's (runc's example: `sh` in a read-only
/// rootfs, Docker's masked and read-only paths), without the cgroup mount, which rcrun does
/// not make yet, and without inheritable or ambient capabilities; `rootless` maps container
/// root to the caller.
pub fn starter(rootless: Option<(u32, u32)>) -> oci_spec::runtime::Spec {
    let mut spec = match rootless {
        Some((uid, gid)) => oci_spec::runtime::Spec::rootless(uid, gid),
        None => oci_spec::runtime::Spec::default(),
    };
    spec.set_version(OCI_VERSION.to_string());
    spec.set_hostname(Some("rcrun".into()));
    // runc's example stopped granting inheritable and ambient capabilities (CVE-2022-29162).
    if let Some(p) = spec.process_mut() {
        if let Some(mut c) = p.capabilities().clone() {
            c.set_inheritable(None);
            c.set_ambient(None);
            p.set_capabilities(Some(c));
        }
    }
    if let Some(mounts) = spec.mounts_mut() {
        mounts.retain(|m| !matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2")));
    }
    spec
}

#[cfg(test)]
mod tests;

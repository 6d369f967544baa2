//! The OCI runtime-spec view of a start: `rcrun run IMAGE …` written as the `config.json` an OCI
//! runtime (runc, crun, youki) would be handed for the same container, as podman builds one
//! before it calls crun. `rcrun run --print-spec` prints it.
//!
//! Pure: a [`StartupPlan`], the cgroup [`Limits`] and the seccomp profile in, an
//! `oci_spec::runtime::Spec` out. The document is assembled as JSON and then parsed into the
//! typed `Spec`, so every action, architecture, namespace and capability name is checked
//! against the OCI types (a typo fails the unit tests, not a runtime).
//!
//! What the runtime spec cannot say stays an rcrun extension, in annotations under
//! `org.rcrun.`: the overlay of store layers that is the root (`root.path` names its mount
//! point), and where the id maps come from (newuidmap, or rcrun itself).

use crate::cgroup::devices::{DeviceKind, DeviceRule};
use crate::cgroup::Limits;
use crate::launch::mounts::{Mnt, MountStep};
use crate::launch::plan::{IdMapping, IdRange};
use crate::launch::StartupPlan;
use crate::security::seccomp::{Profile, SyscallEntry};
use serde_json::{json, Value};

pub mod bundle;

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

pub fn from_plan(
    plan: &StartupPlan,
    limits: &Limits,
    seccomp: Option<&SeccompInput<'_>>,
) -> Result<oci_spec::runtime::Spec, SpecError> {
    let doc = document(plan, limits, seccomp)?;
    Ok(serde_json::from_value(doc)?)
}

/// The same as JSON (what `--print-spec` writes, pretty-printed).
pub fn document(
    plan: &StartupPlan,
    limits: &Limits,
    seccomp: Option<&SeccompInput<'_>>,
) -> Result<Value, SpecError> {
    let caps: Vec<String> = crate::security::caps::cap_names(&plan.caps.bounding);
    let caps_of = |set: &::caps::CapsHashSet| crate::security::caps::cap_names(set);
    let mut process = json!({
        "terminal": plan.tty,
        "user": {
            "uid": plan.user.uid,
            "gid": plan.user.gid,
            "additionalGids": plan.user.groups,
        },
        "args": plan.argv,
        "env": plan.env,
        "cwd": plan.cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps_of(&plan.caps.effective),
            "permitted": caps_of(&plan.caps.permitted),
            "inheritable": [],
            "ambient": [],
        },
        "noNewPrivileges": plan.no_new_privs,
    });
    if let Some(name) = &plan.user.name {
        process["user"]["username"] = json!(name);
    }

    let mut mounts = Vec::new();
    let mut masked = Vec::new();
    let mut readonly = Vec::new();
    let mut devices = Vec::new();
    let mut symlinks = Vec::new();
    for step in &plan.mounts {
        match oci_mount(step, plan) {
            Placed::Mount(m) => mounts.push(m),
            Placed::Masked => masked.push(json!(step.target)),
            Placed::ReadOnly => readonly.push(json!(step.target)),
            Placed::Device(d) => devices.push(d),
            Placed::Symlink(to) => symlinks.push(format!("{} -> {to}", step.target)),
        }
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "uts"}),
        json!({"type": "ipc"}),
        json!({"type": "cgroup"}),
    ];
    if plan.new_netns {
        namespaces.push(json!({"type": "network"}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
        "devices": devices,
    });
    if plan.mapping.user_namespace() {
        linux["namespaces"]
            .as_array_mut()
            .expect("array")
            .push(json!({"type": "user"}));
        let (uids, gids) = ranges(&plan.mapping);
        linux["uidMappings"] = id_mappings(&uids);
        linux["gidMappings"] = id_mappings(&gids);
    }
    let resources = resources(limits);
    if resources.as_object().is_some_and(|o| !o.is_empty()) {
        linux["resources"] = resources;
    }
    if let Some(s) = seccomp {
        linux["seccomp"] = seccomp_json(s)?;
    }

    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "org.rcrun.rootfs".into(),
        json!("overlay: lowerdir = org.rcrun.rootfs.lowerdir (top first), upperdir on a private tmpfs discarded at exit"),
    );
    annotations.insert(
        "org.rcrun.rootfs.lowerdir".into(),
        json!(plan
            .lowers_top_first
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")),
    );
    annotations.insert(
        "org.rcrun.idmaps".into(),
        json!(match &plan.mapping {
            IdMapping::None => "none (real root, no user namespace)",
            IdMapping::Single { .. } => "written by rcrun (one id: yours)",
            IdMapping::Privileged { .. } =>
                "written by rcrun as root (--userns); the user namespace is entered after the root is built",
            IdMapping::Helpers { .. } => "written by newuidmap/newgidmap from /etc/subuid and /etc/subgid",
        }),
    );
    annotations.insert(
        "org.rcrun.etc-files".into(),
        json!("/etc/hostname, /etc/hosts and /etc/resolv.conf are written into the overlay's upper dir (no mount) when the image's /etc is a directory; else bound read-only from the run's private scratch tmpfs"),
    );
    if !symlinks.is_empty() {
        annotations.insert("org.rcrun.dev.symlinks".into(), json!(symlinks.join(", ")));
    }
    if plan.init {
        annotations.insert(
            "org.rcrun.init".into(),
            json!("process.args run under rcrun's static init (PID 1, from a sealed memfd)"),
        );
    }

    Ok(json!({
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {
            "path": plan.scratch.join("merged").display().to_string(),
            "readonly": plan.read_only,
        },
        "hostname": plan.hostname,
        "mounts": mounts,
        "linux": linux,
        "annotations": annotations,
    }))
}

enum Placed {
    Mount(Value),
    Masked,
    ReadOnly,
    Device(Value),
    Symlink(String),
}

/// One step of rcrun's mount table in OCI terms.
fn oci_mount(step: &MountStep, plan: &StartupPlan) -> Placed {
    let fs = |typ: &str, options: &[&str]| {
        Placed::Mount(json!({
            "destination": step.target,
            "type": typ,
            "source": typ,
            "options": options,
        }))
    };
    match &step.what {
        Mnt::Proc => fs("proc", &["nosuid", "noexec", "nodev"]),
        Mnt::Sysfs => fs("sysfs", &["nosuid", "noexec", "nodev", "ro"]),
        Mnt::Devpts => fs(
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
        Mnt::Mqueue => fs("mqueue", &["nosuid", "noexec", "nodev"]),
        Mnt::Tmpfs { data, flags } => {
            let mut options: Vec<String> = mount_flag_names(*flags);
            options.extend(data.split(',').filter(|o| !o.is_empty()).map(String::from));
            Placed::Mount(json!({
                "destination": step.target,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": options,
            }))
        }
        Mnt::Bind {
            source,
            recursive,
            read_only,
        } => {
            let mut options = vec![if *recursive { "rbind" } else { "bind" }];
            if *read_only {
                options.push("ro");
            }
            Placed::Mount(json!({
                "destination": step.target,
                "type": "bind",
                "source": source.display().to_string(),
                "options": options,
            }))
        }
        Mnt::HostFile { .. } => {
            // What podman hands crun for the same file: a bind of a file it wrote. rcrun writes
            // it into the overlay's upper dir instead (no mount) when the image's /etc is a
            // directory, else binds it from the run's private scratch tmpfs under this name
            // (child.rs); the annotation org.rcrun.etc-files says so.
            let name = step.target.trim_start_matches('/').replace('/', "_");
            Placed::Mount(json!({
                "destination": step.target,
                "type": "bind",
                "source": plan.scratch.join(name).display().to_string(),
                "options": ["bind"],
            }))
        }
        Mnt::Device {
            block,
            major,
            minor,
            mode,
        } => Placed::Device(json!({
            "path": step.target,
            "type": if *block { "b" } else { "c" },
            "major": major,
            "minor": minor,
            "fileMode": mode,
        })),
        Mnt::Symlink { to } => Placed::Symlink(to.clone()),
        Mnt::Mask => Placed::Masked,
        Mnt::ReadOnly => Placed::ReadOnly,
    }
}

/// The OCI mount options for the MS_* bits rcrun passes.
fn mount_flag_names(flags: u64) -> Vec<String> {
    use nix::mount::MsFlags as F;
    let f = F::from_bits_truncate(flags as _);
    [
        (F::MS_RDONLY, "ro"),
        (F::MS_NOSUID, "nosuid"),
        (F::MS_NODEV, "nodev"),
        (F::MS_NOEXEC, "noexec"),
        (F::MS_NOATIME, "noatime"),
        (F::MS_STRICTATIME, "strictatime"),
    ]
    .iter()
    .filter(|(b, _)| f.contains(*b))
    .map(|(_, n)| n.to_string())
    .collect()
}

fn ranges(m: &IdMapping) -> (Vec<IdRange>, Vec<IdRange>) {
    match m {
        IdMapping::None => (vec![], vec![]),
        IdMapping::Single { uid, gid } | IdMapping::Privileged { uid, gid } => {
            (vec![*uid], vec![*gid])
        }
        IdMapping::Helpers { uids, gids, .. } => (uids.clone(), gids.clone()),
    }
}

fn id_mappings(r: &[IdRange]) -> Value {
    json!(r
        .iter()
        .map(|r| json!({"containerID": r.inside, "hostID": r.outside, "size": r.count}))
        .collect::<Vec<_>>())
}

/// CFS period rcrun uses for `--cpus` (the kernel's default, as Docker).
const CPU_PERIOD_US: u64 = 100_000;

fn resources(l: &Limits) -> Value {
    let mut r = serde_json::Map::new();
    let mut memory = serde_json::Map::new();
    if let Some(m) = l.memory {
        memory.insert("limit".into(), json!(m));
    }
    if let Some(s) = l.memory_swap {
        memory.insert("swap".into(), json!(s));
    }
    if !memory.is_empty() {
        r.insert("memory".into(), Value::Object(memory));
    }
    if let Some(p) = l.pids {
        r.insert("pids".into(), json!({"limit": p}));
    }
    let mut cpu = serde_json::Map::new();
    if let Some(c) = l.cpus {
        cpu.insert("period".into(), json!(CPU_PERIOD_US));
        cpu.insert(
            "quota".into(),
            json!((c * CPU_PERIOD_US as f64).round() as i64),
        );
    }
    if let Some(s) = l.cpu_shares {
        cpu.insert("shares".into(), json!(s));
    }
    if let Some(c) = &l.cpuset_cpus {
        cpu.insert("cpus".into(), json!(c));
    }
    if !cpu.is_empty() {
        r.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(rules) = &l.devices {
        r.insert(
            "devices".into(),
            json!(rules.iter().map(device_rule).collect::<Vec<_>>()),
        );
    }
    Value::Object(r)
}

fn device_rule(d: &DeviceRule) -> Value {
    let mut v = json!({
        "allow": d.allow,
        "type": match d.kind { DeviceKind::All => "a", DeviceKind::Char => "c", DeviceKind::Block => "b" },
        "access": d.access.as_text(),
    });
    if let Some(m) = d.major {
        v["major"] = json!(m);
    }
    if let Some(m) = d.minor {
        v["minor"] = json!(m);
    }
    v
}

/// Docker's profile format → the OCI `linux.seccomp` object: the entries that apply, without
/// `includes`/`excludes`, and the architectures of `archMap` for this machine's arch.
fn seccomp_json(s: &SeccompInput<'_>) -> Result<Value, SpecError> {
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

pub fn cmd_spec(
    a: &crate::cli::SpecArgs,
    privilege: &crate::host::Privilege,
) -> anyhow::Result<i32> {
    use anyhow::Context;
    let path = a.bundle.join("config.json");
    // Only real root can run the root spec (no user namespace): anyone else gets the rootless
    // one without having to ask.
    let rootless = (a.rootless || !privilege.is_real_root()).then(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    });
    let json = serde_json::to_vec_pretty(&starter(rootless))?;
    // create_new: like runc, never overwrite a config.json someone edited.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| {
            format!(
                "create {} (remove it first to write a new one)",
                path.display()
            )
        })?;
    std::io::Write::write_all(&mut f, &json)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(0)
}

#[cfg(test)]
mod tests;

//! The compiler's `mounts` step ([`super::compile`]): one OCI mount of the spec → one
//! [`MountStep`] of the startup plan, its options checked and turned into mount(2) flags.

use super::{unsupported, CompileError};
use crate::launch::mounts::{Mnt, MountStep};
use std::path::Path;

/// An OCI mount → rcrun's mount step.
pub(super) fn mount_step(
    m: &oci_spec::runtime::Mount,
    bundle: &Path,
    host_files: &[(String, String)],
) -> Result<MountStep, CompileError> {
    use nix::mount::MsFlags as F;
    let target = m.destination().display().to_string();
    if !target.starts_with('/') {
        return Err(CompileError::Spec(format!(
            "mount destination {target:?} is not absolute"
        )));
    }
    let options: Vec<String> = m.options().clone().unwrap_or_default();
    let has = |o: &str| options.iter().any(|x| x == o);
    let typ = m.typ().clone().unwrap_or_default();
    let is_bind = has("bind") || has("rbind") || typ == "bind";
    let host_file = host_files.iter().find(|(dest, _)| *dest == target);
    let what = if let (true, Some((_, contents))) = (is_bind, host_file) {
        Mnt::HostFile {
            contents: contents.clone(),
        }
    } else if is_bind {
        let source = m
            .source()
            .clone()
            .ok_or_else(|| CompileError::Spec(format!("bind mount {target} has no source")))?;
        Mnt::Bind {
            source: if source.is_absolute() {
                source
            } else {
                bundle.join(source)
            },
            recursive: has("rbind"),
            read_only: has("ro"),
        }
    } else {
        match typ.as_str() {
            "proc" => Mnt::Proc,
            "sysfs" => Mnt::Sysfs,
            "devpts" => Mnt::Devpts,
            "mqueue" => Mnt::Mqueue,
            "cgroup" | "cgroup2" => Mnt::Cgroup { read_only: has("ro") },
            "tmpfs" => {
                let mut flags = F::empty();
                let mut data = Vec::new();
                for o in &options {
                    match o.as_str() {
                        "ro" => flags |= F::MS_RDONLY,
                        "nosuid" => flags |= F::MS_NOSUID,
                        "nodev" => flags |= F::MS_NODEV,
                        "noexec" => flags |= F::MS_NOEXEC,
                        "noatime" => flags |= F::MS_NOATIME,
                        "strictatime" => flags |= F::MS_STRICTATIME,
                        "rw" | "suid" | "dev" | "exec" | "relatime" => {}
                        o if propagation_flag(o).is_some() => {}
                        other => data.push(other.to_string()),
                    }
                }
                Mnt::Tmpfs {
                    data: data.join(","),
                    flags: flags.bits(),
                    source: m
                        .source()
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "tmpfs".into()),
                }
            }
            other => {
                return Err(unsupported(format!(
                    "mount type {other:?} at {target} (rcrun mounts proc, sysfs, tmpfs, devpts, mqueue, cgroup and bind)"
                )))
            }
        }
    };
    Ok(MountStep { target, what })
}

/// A propagation option of an OCI mount (`shared`, `rslave`, …) as mount(2) flags, applied by a
/// second call on the new mount point (mount_namespaces(7): propagation cannot be set in the call
/// that makes the mount).
pub(super) fn propagation_flag(option: &str) -> Option<u64> {
    use nix::mount::MsFlags as F;
    let f = match option {
        "shared" => F::MS_SHARED,
        "rshared" => F::MS_SHARED | F::MS_REC,
        "slave" => F::MS_SLAVE,
        "rslave" => F::MS_SLAVE | F::MS_REC,
        "private" => F::MS_PRIVATE,
        "rprivate" => F::MS_PRIVATE | F::MS_REC,
        "unbindable" => F::MS_UNBINDABLE,
        "runbindable" => F::MS_UNBINDABLE | F::MS_REC,
        _ => return None,
    };
    Some(f.bits())
}

/// Moves the steps under /sys after the others when the spec's own mounts end with /sys and what
/// lies under it (`spec_end`: the spec's mounts are `mounts[..spec_end]`, the generated steps —
/// device nodes, /dev links, masked and read-only paths — follow).
///
/// sysfs needs the container's final network namespace, which rcrun or its helper makes beside
/// the child's mounts (`NetSetup`); the child joins it before its first step under /sys. With
/// the masks and read-only paths of /proc, the device nodes and the links before that step, the
/// wait for the namespace overlaps them (warm starts 0.5 ms faster, root and rootless). The
/// spec's mounts keep their order (the runtime spec applies them "in the listed order"), and the
/// generated steps still follow every spec mount they could be covered by: none under /sys
/// covers one elsewhere. A spec mount elsewhere after /sys keeps the order as it is.
pub(super) fn sys_steps_last(mounts: &mut Vec<MountStep>, spec_end: usize) {
    let under_sys = |m: &MountStep| Path::new(&m.target).starts_with("/sys");
    let Some(first) = mounts[..spec_end].iter().position(under_sys) else {
        return;
    };
    if !mounts[first..spec_end].iter().all(under_sys) {
        return;
    }
    let (late, early): (Vec<_>, Vec<_>) = mounts.drain(first..).partition(under_sys);
    mounts.extend(early);
    mounts.extend(late);
}

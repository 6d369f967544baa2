//! Writing a container's limits into its new cgroup: the device policy first, then memory,
//! pids, CPU, cpuset, and the exact settings an OCI spec adds ([`super::Setting`]).

use std::path::Path;

use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuset::CpuSetController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::MaxValue;
use tracing::{debug, warn};

use super::*;

impl Cgroup {
    // ---- limits ---------------------------------------------------------

    pub(super) fn apply(&mut self, l: &Limits) -> Result<(), CgroupError> {
        let v2 = self.version == Version::V2;
        if let Some(rules) = &l.devices {
            self.apply_devices(rules)?;
        }
        if let Some(dir) = self.dir_for(Controller::Memory).map(Path::to_path_buf) {
            self.apply_memory(&dir, l)?;
        }
        if let (Some(n), Some(dir)) = (
            l.pids,
            self.dir_for(Controller::Pids).map(Path::to_path_buf),
        ) {
            let max = if n > 0 {
                MaxValue::Value(n)
            } else {
                MaxValue::Max
            };
            let ctl = PidController::new(dir.clone(), v2);
            self.cg_write(&dir, "pids.max", max.to_string(), || ctl.set_pid_max(max))?;
        }
        if let Some(dir) = self.dir_for(Controller::Cpu).map(Path::to_path_buf) {
            let ctl = CpuController::new(dir.clone(), v2);
            let period = l.cpu_period.unwrap_or(CPU_PERIOD_US);
            let quota = l
                .cpus
                .map(|cpus| ((cpus * period as f64).round() as i64).max(1000));
            if v2 {
                if quota.is_some() || l.cpu_period.is_some() {
                    // cpu.max is "$MAX $PERIOD" (cgroup-v2.rst, "cpu.max"). Written directly:
                    // cgroups-rs 0.3 does a read-modify-write of it even when both fields are
                    // given.
                    let max = quota.map_or("max".to_string(), |q| q.to_string());
                    self.write_file(&dir.join("cpu.max"), &format!("{max} {period}"))?;
                }
            } else {
                // Period first: the kernel checks the quota against it.
                if quota.is_some() || l.cpu_period.is_some() {
                    self.cg_write(&dir, "cpu.cfs_period_us", period.to_string(), || {
                        ctl.set_cfs_period(period)
                    })?;
                }
                if let Some(quota) = quota {
                    self.cg_write(&dir, "cpu.cfs_quota_us", quota.to_string(), || {
                        ctl.set_cfs_quota(quota)
                    })?;
                }
            }
            if let Some(shares) = l.cpu_shares {
                let (file, value) = if v2 {
                    ("cpu.weight", cpu_shares_to_weight(shares))
                } else {
                    // The kernel clamps to [2, 262144] itself; clamp so the
                    // recorded value is what takes effect.
                    ("cpu.shares", shares.clamp(2, 262_144))
                };
                // cgroups-rs' set_shares writes cpu.weight on v2 unconverted.
                self.cg_write(&dir, file, value.to_string(), || ctl.set_shares(value))?;
            }
        }
        if let (Some(cpus), Some(dir)) = (
            &l.cpuset_cpus,
            self.dir_for(Controller::Cpuset).map(Path::to_path_buf),
        ) {
            let cpus = parse_cpuset(cpus)?;
            let ctl = CpuSetController::new(dir.clone(), v2);
            self.cg_write(&dir, "cpuset.cpus", cpus.clone(), || ctl.set_cpus(&cpus))?;
        }
        for setting in &l.settings {
            self.apply_setting(setting)?;
        }
        Ok(())
    }

    /// The device policy, before any process is in the cgroup. v1: `devices.deny a` empties the
    /// new cgroup's list (it inherited its parent's "a *:* rwm"), then one `devices.allow` per
    /// rule (Documentation/admin-guide/cgroup-v1/devices.rst). v2: a BPF_PROG_TYPE_CGROUP_DEVICE
    /// program attached to the directory (cgroup-v2.rst, "Device controller"), as crun and
    /// youki do; it stays attached after rcrun closes its fds and goes with the cgroup.
    fn apply_devices(&mut self, rules: &[devices::DeviceRule]) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => {
                let Some(dir) = self.dir_for(Controller::Devices).map(Path::to_path_buf) else {
                    // plan_v1 made the controller required: it is there.
                    return Ok(());
                };
                let writes = devices::v1_writes(rules);
                if !fsutil::is_cgroupfs(&dir) {
                    // A mock tree (tests): each value replaces the file, as write_value does.
                    for (file, value) in writes {
                        self.write_file(&dir.join(file), &value)?;
                    }
                    return Ok(());
                }
                // One open per file and one write(2) per rule: the controller parses each write
                // as one rule and ignores the offset (devices.rst), so the ~12 rules of the
                // default policy cost 12 writes, not 12 statfs + open + write + close.
                let mut open: Option<(std::path::PathBuf, std::fs::File)> = None;
                for (file, value) in writes {
                    let path = dir.join(file);
                    if open.as_ref().is_none_or(|(p, _)| *p != path) {
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|source| CgroupError::Write {
                                path: path.clone(),
                                value: value.clone(),
                                source,
                            })?;
                        open = Some((path.clone(), f));
                    }
                    let (_, f) = open.as_mut().expect("opened above");
                    std::io::Write::write_all(f, value.as_bytes()).map_err(|source| {
                        CgroupError::Write {
                            path: path.clone(),
                            value: value.clone(),
                            source,
                        }
                    })?;
                    self.writes.push((path, value));
                }
            }
            Version::V2 => {
                let Some(dir) = self.dirs.first().map(|d| d.path.clone()) else {
                    return Ok(());
                };
                let program = devices::bpf_program(rules);
                crate::sys::bpf::apply_device_policy(&dir, &program).map_err(|source| {
                    CgroupError::DevicePolicy {
                        path: dir.clone(),
                        source,
                    }
                })?;
                self.writes.push((
                    dir,
                    format!(
                        "bpf(BPF_PROG_LOAD, CGROUP_DEVICE, {} instructions) + bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE)",
                        program.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn apply_memory(&mut self, dir: &Path, l: &Limits) -> Result<(), CgroupError> {
        let v2 = self.version == Version::V2;
        let ctl = MemController::new(dir.to_path_buf(), v2);
        if let Some(m) = l.memory {
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            let written = self.cg_write(dir, file, m.to_string(), || ctl.set_limit(m as i64));
            match written {
                // v1 refuses a memory limit above memory+swap (EINVAL): `rcrun update` raising
                // both writes the new total first (cgroup-v1/memory.rst, 2.5).
                Err(CgroupError::Write { ref source, .. })
                    if !v2 && source.raw_os_error() == Some(libc::EINVAL) =>
                {
                    let total = match l.memory_swap.filter(|s| *s != 0) {
                        Some(-1) => -1,
                        Some(s) => s,
                        None => (m as i64).saturating_mul(2),
                    };
                    self.cg_write(
                        dir,
                        "memory.memsw.limit_in_bytes",
                        total.to_string(),
                        || ctl.set_memswap_limit(total),
                    )?;
                    self.cg_write(dir, file, m.to_string(), || ctl.set_limit(m as i64))?;
                }
                r => r?,
            }
        }
        // Swap: Docker's --memory-swap is the memory+swap total; -1 unlimited;
        // unset/0 with --memory = as much swap as memory (total 2 × memory).
        let explicit = l.memory_swap.filter(|s| *s != 0);
        let total: Option<i64> = match (explicit, l.memory) {
            (Some(s), _) => Some(s),
            (None, Some(m)) => Some((m as i64).saturating_mul(2)),
            (None, None) => None,
        };
        let Some(total) = total else { return Ok(()) };
        // Whether the kernel accounts swap: v1 has memory.memsw.* only with
        // swap accounting (CONFIG_MEMCG_SWAP, swapaccount=1), visible at the
        // hierarchy root; v2 has memory.swap.max in non-root cgroups likewise.
        let (probe, file) = if v2 {
            (
                dir.parent().unwrap_or(dir).join("memory.swap.max"),
                "memory.swap.max",
            )
        } else {
            let mount = self
                .dirs
                .iter()
                .find(|d| d.path == dir)
                .map(|d| d.mount.clone());
            (
                mount
                    .unwrap_or_else(|| dir.to_path_buf())
                    .join("memory.memsw.limit_in_bytes"),
                "memory.memsw.limit_in_bytes",
            )
        };
        let supported = probe.exists() || dir.join(file).exists();
        if !supported {
            if explicit.is_some_and(|s| s > 0) {
                return Err(CgroupError::SwapUnsupported { path: probe });
            }
            // Unlimited or Docker's implicit default: nothing to enforce.
            debug!(path = %probe.display(), "no swap accounting; swap limit left as is");
            return Ok(());
        }
        let (value, raw): (String, i64) = if v2 {
            // memory.swap.max limits swap alone: total − memory.
            match (total, l.memory) {
                (-1, _) => ("max".into(), -1),
                (t, Some(m)) => {
                    let s = t - m as i64;
                    (s.to_string(), s)
                }
                (_, None) => return Ok(()), // rejected by validate()
            }
        } else {
            (total.to_string(), total)
        };
        self.cg_write(dir, file, value, || ctl.set_memswap_limit(raw))
    }

    /// One exact write of an OCI spec. An optional knob whose file this kernel or version lacks
    /// is skipped with a warning (runc: "kernel memory is deprecated ..., ignoring").
    fn apply_setting(&mut self, s: &Setting) -> Result<(), CgroupError> {
        let version = self.version;
        let (Some((file, value)), Some(dir)) = (
            s.for_version(version),
            self.dir_for(s.controller).map(Path::to_path_buf),
        ) else {
            if s.optional {
                warn!(field = %s.field, %version, "not applied: no such knob here");
                return Ok(());
            }
            // check_version and the controller planning make this unreachable; say so if not.
            return Err(CgroupError::Unsupported {
                field: s.field.clone(),
                version,
                reason: "its controller is not mounted",
            });
        };
        let path = dir.join(file);
        if s.optional && !path.exists() {
            warn!(field = %s.field, path = %path.display(), "not applied: the kernel has no such file");
            return Ok(());
        }
        match self.write_file(&path, value) {
            Err(CgroupError::Write { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err(CgroupError::NoKnob {
                    field: s.field.clone(),
                    path,
                })
            }
            r => r,
        }
    }
}

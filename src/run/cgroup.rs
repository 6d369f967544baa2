//! The cgroup of a run: Docker's limit flags, their narration, and the hook that creates the
//! cgroup and places the child in it around clone.

use crate::cli::RunArgs;
use crate::launch::explain::Explain;
use crate::launch::parent::BeforeStart;
use anyhow::{Context, Result};

/// Places the container in its cgroup between clone and start (before execve).
pub(super) struct CgroupHook<'a> {
    pub(super) cgroup: Option<&'a mut crate::cgroup::Cgroup>,
    /// As root: the cgroup fs to sweep for stale cgroups of killed runs once the child is on its
    /// way.
    pub(super) sweep_stale: Option<&'a crate::cgroup::CgroupFs>,
    /// The child moves itself (v1 `tasks` files opened before clone).
    pub(super) child_joins: bool,
    pub(super) ex: &'a Explain,
}

impl BeforeStart for CgroupHook<'_> {
    fn meanwhile(&mut self) {
        let Some(fs) = self.sweep_stale else {
            return;
        };
        // Cgroups of killed runs (rcrun got SIGKILL before removing its own): empty ones whose
        // owning rcrun (named in the cgroup's name) is gone. Swept here, while the child builds
        // its root, rather than on the way to clone. Unowned ones (older rcrun versions) only
        // after 30 s, as they may belong to runs starting right now.
        let t = std::time::Instant::now();
        let removed =
            crate::cgroup::gc_stale_older_than(fs, None, std::time::Duration::from_secs(30));
        for p in &removed {
            tracing::info!(path = %p.display(), "removed stale cgroup of a killed run");
        }
        // Not counted in the closing per-stage shares: it overlaps the child's steps.
        self.ex.detail(
            "cgroup",
            &format!(
                "sweep cgroups of killed runs (empty, owner gone) under rcrun/ — in rcrun, while the child mounts (overlaps it: not in the shares): {} removed",
                removed.len()
            ),
            t.elapsed(),
        );
    }

    fn self_join_files(
        &mut self,
    ) -> Result<Vec<(std::path::PathBuf, std::os::fd::OwnedFd)>, String> {
        let Some(cg) = self.cgroup.as_deref() else {
            return Ok(Vec::new());
        };
        let opened: Result<Vec<_>, std::io::Error> = cg
            .self_join_files()
            .into_iter()
            .map(|p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map(|f| (p.clone(), std::os::fd::OwnedFd::from(f)))
            })
            .collect();
        match opened {
            Ok(files) => {
                self.child_joins = !files.is_empty();
                Ok(files)
            }
            // A delegation that chowned cgroup.procs but not tasks: rcrun moves the child then.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(Vec::new()),
            Err(e) => Err(format!("open the cgroup's tasks files for writing: {e}")),
        }
    }

    fn clone_into(&mut self) -> Result<Option<(String, std::os::fd::OwnedFd)>, String> {
        let Some(dir) = self.cgroup.as_deref().and_then(|cg| cg.clone_into_dir()) else {
            return Ok(None);
        };
        let fd = nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("open {}: {e}", dir.display()))?;
        Ok(Some((dir.display().to_string(), fd)))
    }

    fn before_start(&mut self, pid: nix::unistd::Pid, born_inside: bool) -> Result<(), String> {
        if born_inside {
            return Ok(());
        }
        if self.child_joins {
            return Ok(());
        }
        if let Some(cg) = self.cgroup.as_deref_mut() {
            let paths: Vec<String> = cg
                .paths()
                .iter()
                .map(|p| p.join("cgroup.procs").display().to_string())
                .collect();
            self.ex.timed(
                "cgroup",
                &format!("write {pid} to {}", paths.join(", ")),
                || cg.add_process(pid.as_raw()).map_err(|e| e.to_string()),
            )?;
        }
        Ok(())
    }
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

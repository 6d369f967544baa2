//! Resource limits with Docker's flag semantics, and what each needs from the hierarchy.

use super::devices;
use super::parse::*;
use super::types::*;

/// Resource limits for one container, with Docker's flag semantics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// `--memory`: hard limit in bytes.
    pub memory: Option<u64>,
    /// `--memory-swap`: memory + swap total in bytes; `-1` = unlimited swap.
    /// Unset (or 0) with `memory` set means, as in Docker, "as much swap as
    /// memory" (total 2 × memory) where the kernel accounts swap.
    pub memory_swap: Option<i64>,
    /// `--pids-limit`: max number of tasks; 0 or negative = unlimited.
    pub pids: Option<i64>,
    /// `--cpus`: CPU bandwidth in CPUs (0.5 = half a CPU).
    pub cpus: Option<f64>,
    /// `--cpu-shares`: relative weight (v1 cpu.shares scale, default 1024).
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus`: CPUs allowed, list format (`0-1,3`).
    pub cpuset_cpus: Option<String>,
    /// The device policy ([`devices`]): v1 `devices.deny`/`devices.allow` writes or a v2 BPF
    /// program. `Some` makes the cgroup mandatory (rcrun sets one whenever it runs as root).
    pub devices: Option<Vec<devices::DeviceRule>>,
    /// CFS period for `cpus` in µs (an OCI spec's `cpu.period`); unset: [`CPU_PERIOD_US`].
    /// Written even without a quota when set.
    pub cpu_period: Option<u64>,
    /// The exact cgroup writes an OCI spec asks for beyond the docker flags above
    /// (`memory.swappiness`, `cpu.realtimeRuntime`, `blockIO`, `hugepageLimits`, `unified`, …),
    /// in the spec's order; see [`crate::cgroup::from_spec`].
    pub settings: Vec<Setting>,
    /// Join the v1 freezer hierarchy too (an OCI container, which `pause` may freeze; v2 has
    /// cgroup.freeze in every cgroup). Not a limit: never makes a cgroup necessary.
    pub freezer: bool,
    /// On cgroup v1, join only the hierarchies a limit, a setting or the device policy needs,
    /// not those that would only count (memory, pids, cpuacct): an image run without `--stats`,
    /// whose counters nobody reads. Each v1 hierarchy costs a mkdir, a join (a cgroup v1
    /// migration waits for an RCU grace period) and an rmdir per start. Engines' containers
    /// keep them: `podman stats` reads them.
    pub without_accounting: bool,
}

/// One cgroup file write from an OCI spec, with the file and value for each cgroup version
/// (`None`: that version has no such knob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The spec field it comes from, for errors and `--explain`
    /// (`linux.resources.memory.swappiness`).
    pub field: String,
    pub controller: Controller,
    pub v1: Option<(String, String)>,
    pub v2: Option<(String, String)>,
    /// A knob the runtime spec deprecates (kernel memory) or that one version lacks but is
    /// harmless to skip (swappiness on v2): skipped with a warning where the file does not
    /// exist, as runc does, instead of failing the start.
    pub optional: bool,
}

impl Setting {
    /// The (file, value) for `version`.
    pub fn for_version(&self, version: Version) -> Option<&(String, String)> {
        match version {
            Version::V1 => self.v1.as_ref(),
            Version::V2 => self.v2.as_ref(),
        }
    }
}

impl Limits {
    /// True when no limit at all is requested.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.memory_swap.is_none()
            && self.pids.is_none()
            && self.cpus.is_none()
            && self.cpu_shares.is_none()
            && self.cpuset_cpus.is_none()
            && self.cpu_period.is_none()
            && self.settings.is_empty()
    }

    /// A setting this cgroup version cannot apply (and that is not optional) is an error before
    /// anything is created.
    pub(super) fn check_version(&self, version: Version) -> Result<(), CgroupError> {
        match self
            .settings
            .iter()
            .find(|s| !s.optional && s.for_version(version).is_none())
        {
            Some(s) => Err(CgroupError::Unsupported {
                field: s.field.clone(),
                version,
                reason: "this cgroup version has no such knob",
            }),
            None => Ok(()),
        }
    }

    /// Checks combinations the kernel would reject or that make no sense.
    pub fn validate(&self) -> Result<(), CgroupError> {
        let invalid = |m: String| Err(CgroupError::InvalidLimits(m));
        if self.memory == Some(0) {
            return invalid("--memory must be greater than 0".into());
        }
        if let Some(m) = self.memory {
            if m > i64::MAX as u64 {
                return invalid(format!("--memory {m} is too large"));
            }
        }
        match (self.memory_swap, self.memory) {
            (Some(s), _) if s < -1 => {
                return invalid(format!("--memory-swap {s}: use -1 for unlimited swap"))
            }
            (Some(s), None) if s > 0 => {
                return invalid("--memory-swap needs --memory (it is the memory+swap total)".into())
            }
            (Some(s), Some(m)) if s > 0 && (s as u64) < m => {
                return invalid(format!(
                "--memory-swap ({}) is the memory+swap total and must be at least --memory ({})",
                format_size(s as u64),
                format_size(m)
            ))
            }
            _ => {}
        }
        if let Some(c) = self.cpus {
            if !c.is_finite() || c < 0.01 {
                return invalid(format!("--cpus {c}: must be at least 0.01"));
            }
        }
        if self.cpu_shares == Some(0) {
            return invalid("--cpu-shares must be greater than 0".into());
        }
        if let Some(s) = &self.cpuset_cpus {
            parse_cpuset(s)?;
        }
        Ok(())
    }

    /// Controllers whose absence makes the requested limits impossible.
    pub(super) fn required(&self) -> Vec<Controller> {
        let mut v = Vec::new();
        if self.devices.is_some() {
            v.push(Controller::Devices);
        }
        if self.memory.is_some() || self.memory_swap.is_some() {
            v.push(Controller::Memory);
        }
        if self.pids.is_some() {
            v.push(Controller::Pids);
        }
        if self.cpus.is_some() || self.cpu_shares.is_some() || self.cpu_period.is_some() {
            v.push(Controller::Cpu);
        }
        if self.cpuset_cpus.is_some() {
            v.push(Controller::Cpuset);
        }
        for s in self.settings.iter().filter(|s| !s.optional) {
            if !v.contains(&s.controller) {
                v.push(s.controller);
            }
        }
        v
    }

    /// Controllers joined when available: the required ones plus those giving
    /// statistics and OOM detection. cpuset only when asked for (it has no
    /// statistics and v1 needs cpus/mems initialised in every new cgroup).
    pub(super) fn wanted(&self, version: Version) -> Vec<Controller> {
        let mut v = vec![Controller::Memory, Controller::Pids];
        if version == Version::V1 && self.devices.is_some() {
            // v2 has no devices controller: its policy is a BPF program on the cgroup.
            v.push(Controller::Devices);
        }
        if version == Version::V1 {
            // v1: cpuacct counts CPU time; the cpu hierarchy only enforces quotas and shares, so
            // without them it would be one more directory to create, join and remove per run.
            v.push(Controller::Cpuacct);
            if self.cpus.is_some() || self.cpu_shares.is_some() || self.cpu_period.is_some() {
                v.push(Controller::Cpu);
            }
        } else {
            // v2 has cpu.stat in every cgroup; the controller adds the pressure and throttling
            // figures and is one write in the same directory.
            v.push(Controller::Cpu);
        }
        if self.cpuset_cpus.is_some() {
            v.push(Controller::Cpuset);
        }
        if version == Version::V1 && self.freezer {
            v.push(Controller::Freezer);
        }
        for s in &self.settings {
            if s.for_version(version).is_some() && !v.contains(&s.controller) {
                v.push(s.controller);
            }
        }
        if version == Version::V1 && self.without_accounting {
            let required = self.required();
            v.retain(|c| {
                required.contains(c)
                    || (*c == Controller::Freezer && self.freezer)
                    || self.settings.iter().any(|s| s.controller == *c)
            });
        }
        v
    }
}

//! An OCI spec's `linux.resources` (all but `devices`, which the compiler turns into the device
//! policy) as [`Limits`]: the knobs the docker flags share become the typed fields, everything
//! else an exact [`Setting`] with the file and value for each cgroup version, as runc's
//! libcontainer/cgroups/fs and fs2 write them.

use oci_spec::runtime::{LinuxResources, LinuxThrottleDevice};

use super::limits::{Limits, Setting};
use super::types::{CgroupError, Controller};

fn v1v2(
    field: &str,
    controller: Controller,
    v1: Option<(&str, String)>,
    v2: Option<(&str, String)>,
) -> Setting {
    Setting {
        field: format!("linux.resources.{field}"),
        controller,
        v1: v1.map(|(f, v)| (f.to_string(), v)),
        v2: v2.map(|(f, v)| (f.to_string(), v)),
        optional: false,
    }
}

/// blkio v1 weights (10–1000) → v2 `io.weight` (1–10000), as runc's
/// `cgroups.ConvertBlkIOToIOWeightValue`.
fn io_weight(blkio: u16) -> u64 {
    if blkio == 0 {
        return 0;
    }
    1 + (u64::from(blkio).saturating_sub(10)) * 9999 / 990
}

/// `linux.resources` → limits (without the device policy).
pub fn from_spec(r: &LinuxResources) -> Result<Limits, CgroupError> {
    let mut l = Limits::default();
    let mut s: Vec<Setting> = Vec::new();
    if let Some(m) = r.memory() {
        l.memory = m.limit().filter(|v| *v > 0).map(|v| v as u64);
        l.memory_swap = m.swap();
        if let Some(v) = m.reservation() {
            s.push(v1v2(
                "memory.reservation",
                Controller::Memory,
                Some(("memory.soft_limit_in_bytes", v.to_string())),
                Some(("memory.low", v.to_string())),
            ));
        }
        // Kernel memory limits: deprecated by the runtime spec; v1 kernels ≥ 6.1 still have
        // the files but ignore what is written, v2 has none.
        for (field, file, value) in [
            ("memory.kernel", "memory.kmem.limit_in_bytes", m.kernel()),
            (
                "memory.kernelTCP",
                "memory.kmem.tcp.limit_in_bytes",
                m.kernel_tcp(),
            ),
        ] {
            if let Some(v) = value {
                let mut k = v1v2(field, Controller::Memory, Some((file, v.to_string())), None);
                k.optional = true;
                s.push(k);
            }
        }
        if let Some(v) = m.swappiness() {
            if v > 100 {
                return Err(CgroupError::InvalidLimits(format!(
                    "linux.resources.memory.swappiness {v}: must be 0 to 100"
                )));
            }
            let mut k = v1v2(
                "memory.swappiness",
                Controller::Memory,
                Some(("memory.swappiness", v.to_string())),
                None,
            );
            // v2 has no per-cgroup swappiness; runc ignores it there too.
            k.optional = true;
            s.push(k);
        }
        if m.disable_oom_killer() == Some(true) {
            s.push(v1v2(
                "memory.disableOOMKiller",
                Controller::Memory,
                Some(("memory.oom_control", "1".into())),
                None,
            ));
        }
    }
    if let Some(p) = r.pids() {
        l.pids = Some(p.limit());
    }
    if let Some(c) = r.cpu() {
        if let Some(q) = c.quota().filter(|q| *q > 0) {
            let period = c
                .period()
                .filter(|p| *p > 0)
                .unwrap_or(super::CPU_PERIOD_US);
            l.cpus = Some(q as f64 / period as f64);
        }
        l.cpu_period = c.period().filter(|p| *p > 0);
        l.cpu_shares = c.shares().filter(|s| *s > 0);
        l.cpuset_cpus = c.cpus().clone().filter(|c| !c.is_empty());
        // Period before runtime: the kernel checks the runtime against the period
        // (Documentation/scheduler/sched-rt-group.rst).
        if let Some(v) = c.realtime_period() {
            s.push(v1v2(
                "cpu.realtimePeriod",
                Controller::Cpu,
                Some(("cpu.rt_period_us", v.to_string())),
                None,
            ));
        }
        if let Some(v) = c.realtime_runtime() {
            s.push(v1v2(
                "cpu.realtimeRuntime",
                Controller::Cpu,
                Some(("cpu.rt_runtime_us", v.to_string())),
                None,
            ));
        }
        if let Some(v) = c.idle() {
            s.push(v1v2(
                "cpu.idle",
                Controller::Cpu,
                Some(("cpu.idle", v.to_string())),
                Some(("cpu.idle", v.to_string())),
            ));
        }
        if let Some(v) = c.burst() {
            s.push(v1v2(
                "cpu.burst",
                Controller::Cpu,
                Some(("cpu.cfs_burst_us", v.to_string())),
                Some(("cpu.max.burst", v.to_string())),
            ));
        }
        if let Some(mems) = c.mems().as_ref().filter(|m| !m.is_empty()) {
            super::parse_cpuset(mems).map_err(|_| {
                CgroupError::InvalidLimits(format!(
                    "linux.resources.cpu.mems {mems:?}: expected a list such as 0 or 0-1,3"
                ))
            })?;
            s.push(v1v2(
                "cpu.mems",
                Controller::Cpuset,
                Some(("cpuset.mems", mems.clone())),
                Some(("cpuset.mems", mems.clone())),
            ));
        }
    }
    if let Some(b) = r.block_io() {
        if let Some(w) = b.weight() {
            s.push(v1v2(
                "blockIO.weight",
                Controller::Blkio,
                Some(("blkio.weight", w.to_string())),
                Some(("io.weight", format!("default {}", io_weight(w)))),
            ));
        }
        if let Some(w) = b.leaf_weight() {
            s.push(v1v2(
                "blockIO.leafWeight",
                Controller::Blkio,
                Some(("blkio.leaf_weight", w.to_string())),
                None,
            ));
        }
        for d in b.weight_device().iter().flatten() {
            let dev = format!("{}:{}", d.major(), d.minor());
            if let Some(w) = d.weight() {
                s.push(v1v2(
                    "blockIO.weightDevice",
                    Controller::Blkio,
                    Some(("blkio.weight_device", format!("{dev} {w}"))),
                    Some(("io.weight", format!("{dev} {}", io_weight(w)))),
                ));
            }
            if let Some(w) = d.leaf_weight() {
                s.push(v1v2(
                    "blockIO.weightDevice.leafWeight",
                    Controller::Blkio,
                    Some(("blkio.leaf_weight_device", format!("{dev} {w}"))),
                    None,
                ));
            }
        }
        let throttles: [(&str, &str, &str, &Option<Vec<LinuxThrottleDevice>>); 4] = [
            (
                "blockIO.throttleReadBpsDevice",
                "blkio.throttle.read_bps_device",
                "rbps",
                b.throttle_read_bps_device(),
            ),
            (
                "blockIO.throttleWriteBpsDevice",
                "blkio.throttle.write_bps_device",
                "wbps",
                b.throttle_write_bps_device(),
            ),
            (
                "blockIO.throttleReadIOPSDevice",
                "blkio.throttle.read_iops_device",
                "riops",
                b.throttle_read_iops_device(),
            ),
            (
                "blockIO.throttleWriteIOPSDevice",
                "blkio.throttle.write_iops_device",
                "wiops",
                b.throttle_write_iops_device(),
            ),
        ];
        for (field, v1_file, v2_key, devices) in throttles {
            for d in devices.iter().flatten() {
                let dev = format!("{}:{}", d.major(), d.minor());
                s.push(v1v2(
                    field,
                    Controller::Blkio,
                    Some((v1_file, format!("{dev} {}", d.rate()))),
                    Some(("io.max", format!("{dev} {v2_key}={}", d.rate()))),
                ));
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        let size = h.page_size();
        if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(CgroupError::InvalidLimits(format!(
                "linux.resources.hugepageLimits: page size {size:?} (expected e.g. 2MB)"
            )));
        }
        s.push(v1v2(
            "hugepageLimits",
            Controller::Hugetlb,
            Some((
                &format!("hugetlb.{size}.limit_in_bytes"),
                h.limit().to_string(),
            )),
            Some((&format!("hugetlb.{size}.max"), h.limit().to_string())),
        ));
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            s.push(v1v2(
                "network.classID",
                Controller::NetCls,
                Some(("net_cls.classid", id.to_string())),
                None,
            ));
        }
        for p in n.priorities().iter().flatten() {
            s.push(v1v2(
                "network.priorities",
                Controller::NetPrio,
                Some((
                    "net_prio.ifpriomap",
                    format!("{} {}", p.name(), p.priority()),
                )),
                None,
            ));
        }
    }
    let mut rdma: Vec<_> = r.rdma().iter().flatten().collect();
    rdma.sort_by(|a, b| a.0.cmp(b.0));
    for (device, limit) in rdma {
        let mut v = device.clone();
        if let Some(h) = limit.hca_handles() {
            v.push_str(&format!(" hca_handle={h}"));
        }
        if let Some(o) = limit.hca_objects() {
            v.push_str(&format!(" hca_object={o}"));
        }
        s.push(v1v2(
            "rdma",
            Controller::Rdma,
            Some(("rdma.max", v.clone())),
            Some(("rdma.max", v)),
        ));
    }
    let mut unified: Vec<_> = r.unified().iter().flatten().collect();
    unified.sort();
    for (file, value) in unified {
        let controller = Controller::of_v2_file(file)
            .filter(|_| !file.contains('/') && file != "." && file != "..")
            .ok_or_else(|| {
                CgroupError::InvalidLimits(format!(
                    "linux.resources.unified: {file:?} is not a file of a controller rcrun knows \
                     (memory, pids, cpu, cpuset, io, hugetlb, rdma)"
                ))
            })?;
        s.push(v1v2(
            &format!("unified.{file}"),
            controller,
            None,
            Some((file, value.clone())),
        ));
    }
    l.settings = s;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn cpu_keeps_the_exact_quota_and_period() {
        let l = from_spec(&resources(
            r#"{"cpu":{"shares":2048,"quota":200000,"period":500000,"realtimePeriod":1000000,"realtimeRuntime":950000,"cpus":"0","mems":"0"}}"#,
        ))
        .unwrap();
        assert_eq!(l.cpu_period, Some(500_000));
        assert_eq!((l.cpus.unwrap() * 500_000.0).round() as i64, 200_000);
        assert_eq!(l.cpu_shares, Some(2048));
        let files: Vec<_> = l.settings.iter().map(|s| s.v1.clone().unwrap()).collect();
        assert_eq!(
            files,
            [
                ("cpu.rt_period_us".to_string(), "1000000".to_string()),
                ("cpu.rt_runtime_us".into(), "950000".into()),
                ("cpuset.mems".into(), "0".into()),
            ]
        );
    }

    #[test]
    fn memory_knobs_and_what_v2_lacks() {
        let l = from_spec(&resources(
            r#"{"memory":{"limit":50593792,"reservation":50593792,"swap":50593792,"kernel":50593792,"kernelTCP":50593792,"swappiness":50,"disableOOMKiller":true}}"#,
        ))
        .unwrap();
        assert_eq!(l.memory, Some(50593792));
        assert!(l.check_version(super::super::Version::V1).is_ok());
        // The OOM killer switch has no v2 file: an error naming the field, before anything
        // is created.
        let e = l
            .check_version(super::super::Version::V2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux.resources.memory.disableOOMKiller"), "{e}");
        assert!(from_spec(&resources(r#"{"memory":{"swappiness":101}}"#)).is_err());
    }

    #[test]
    fn network_is_v1_only_and_unified_v2_only() {
        let l = from_spec(&resources(
            r#"{"network":{"classID":1048577,"priorities":[{"name":"eth0","priority":10}]}}"#,
        ))
        .unwrap();
        assert_eq!(l.settings[0].controller, Controller::NetCls);
        assert!(l.check_version(super::super::Version::V2).is_err());
        let l = from_spec(&resources(r#"{"unified":{"memory.high":"1000000"}}"#)).unwrap();
        assert!(l.check_version(super::super::Version::V1).is_err());
        assert!(from_spec(&resources(r#"{"unified":{"../../etc/x":"1"}}"#)).is_err());
        assert!(from_spec(&resources(r#"{"unified":{"bogus.x":"1"}}"#)).is_err());
    }

    #[test]
    fn blkio_weight_converts_for_v2() {
        assert_eq!(io_weight(10), 1);
        assert_eq!(io_weight(1000), 10000);
        let l = from_spec(&resources(
            r#"{"blockIO":{"weight":500,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}]}}"#,
        ))
        .unwrap();
        assert_eq!(l.settings[1].v2.as_ref().unwrap().1, "8:0 rbps=1048576");
    }
}

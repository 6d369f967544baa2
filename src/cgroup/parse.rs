//! Parsing of the user-facing limit flags (`--memory 64m`, `--cpus 0.5`,
//! `--cpuset-cpus 0-1,3`) with Docker's syntax, and the reverse formatting used
//! in messages ("64 MiB").

use super::CgroupError;

/// Parses a byte size the way Docker's `--memory` does (go-units `RAMInBytes`):
/// a decimal number with an optional binary unit `b`, `k`, `m`, `g`, `t`
/// (powers of 1024), case-insensitive, with an optional trailing `b`
/// (`64m`, `64mb`, `64MB`, `1.5g`, `100b`, `1024`).
pub fn parse_size(s: &str) -> Result<u64, CgroupError> {
    let bad = |reason: &'static str| CgroupError::BadSize {
        value: s.to_string(),
        reason,
    };
    let t = s.trim().to_ascii_lowercase();
    if t.is_empty() {
        return Err(bad("empty"));
    }
    // Split "<number><unit>"; the unit is the trailing alphabetic part.
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift: u32 = match unit {
        "" | "b" => 0,
        "k" | "kb" => 10,
        "m" | "mb" => 20,
        "g" | "gb" => 30,
        "t" | "tb" => 40,
        _ => return Err(bad("unknown unit (use b, k, m, g or t)")),
    };
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    let digits_ok = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    if int_part.is_empty() || !digits_ok(int_part) || !digits_ok(frac_part) {
        return Err(bad("not a non-negative number"));
    }
    if num.contains('.') && frac_part.is_empty() {
        return Err(bad("not a non-negative number"));
    }
    if int_part.len() > 20 || frac_part.len() > 18 {
        return Err(bad("too large"));
    }
    let int: u128 = int_part.parse().map_err(|_| bad("too large"))?;
    let mult: u128 = 1u128 << shift;
    let mut bytes = int.checked_mul(mult).ok_or_else(|| bad("too large"))?;
    if !frac_part.is_empty() {
        let frac: u128 = frac_part.parse().map_err(|_| bad("too large"))?;
        let denom = 10u128.pow(frac_part.len() as u32);
        // Floor, like go-units (which truncates the float product to int64).
        bytes += frac * mult / denom;
    }
    u64::try_from(bytes)
        .ok()
        .filter(|b| *b <= i64::MAX as u64) // cgroup files take signed 64-bit values
        .ok_or_else(|| bad("too large"))
}

/// Formats a byte count for humans, exact where possible: 67108864 -> "64 MiB",
/// 1610612736 -> "1.5 GiB", 1000 -> "1000 B".
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in UNITS {
        let unit = 1u64 << shift;
        if bytes >= unit {
            if bytes.is_multiple_of(unit) {
                return format!("{} {name}", bytes / unit);
            }
            let v = bytes as f64 / unit as f64;
            let s = format!("{v:.2}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            return format!("{s} {name}");
        }
    }
    format!("{bytes} B")
}

/// Parses Docker's `--cpus`: a positive decimal number of CPUs, e.g. `0.5`, `2`.
/// The smallest accepted value is 0.01: it becomes a CFS quota of 1000 µs per
/// 100000 µs period and the kernel rejects quotas below 1 ms
/// (Documentation/scheduler/sched-bwc.rst). The value may exceed the number of
/// CPUs present (the quota then never throttles).
pub fn parse_cpus(s: &str) -> Result<f64, CgroupError> {
    let bad = |reason: &'static str| CgroupError::BadCpus {
        value: s.to_string(),
        reason,
    };
    let t = s.trim();
    // Only plain decimal notation: no "inf", "nan", "1e3", signs.
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad("expected a positive decimal number such as 0.5 or 2"));
    }
    let v: f64 = t
        .parse()
        .map_err(|_| bad("expected a positive decimal number such as 0.5 or 2"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(bad("must be greater than 0"));
    }
    if v < 0.01 {
        return Err(bad(
            "must be at least 0.01 (the kernel's minimum CFS quota is 1 ms)",
        ));
    }
    if v > 1_000_000.0 {
        return Err(bad("too large"));
    }
    Ok(v)
}

/// Validates a cpuset list (`0-1,3`, Documentation/admin-guide/cgroup-v1/cpusets.rst
/// "list format") and returns it normalized (whitespace removed).
pub fn parse_cpuset(s: &str) -> Result<String, CgroupError> {
    let bad = |reason: &'static str| CgroupError::BadCpuset {
        value: s.to_string(),
        reason,
    };
    let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if t.is_empty() {
        return Err(bad("empty"));
    }
    let num = |p: &str| -> Result<u32, CgroupError> {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) || p.len() > 6 {
            return Err(bad("expected CPU numbers or ranges like 0-1,3"));
        }
        p.parse().map_err(|_| bad("CPU number too large"))
    };
    for item in t.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                if num(a)? > num(b)? {
                    return Err(bad("range start is greater than its end"));
                }
            }
            None => {
                num(item)?;
            }
        }
    }
    Ok(t)
}

/// Converts cgroup v1 `cpu.shares` ([2, 262144], default 1024) to cgroup v2
/// `cpu.weight` ([1, 10000], default 100).
///
/// This is the conversion runc/crun use since 2025 (opencontainers/cgroups
/// `ConvertCPUSharesToCgroupV2Value`, runc PR #4785, crun issue #1721): a
/// quadratic in log2(shares) that maps the minimum, the default and the maximum
/// onto each other (2 -> 1, 1024 -> 100, 262144 -> 10000):
///
/// `weight = ceil(10^((l^2 + 125 l) / 612 - 7/34))` with `l = log2(shares)`.
///
/// (The older linear formula `1 + (shares - 2) * 9999 / 262142` mapped the
/// default 1024 to 39, far below v2's default of 100.)
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0; // unset
    }
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let ok: &[(&str, u64)] = &[
            ("64m", 64 << 20),
            ("64M", 64 << 20),
            ("64mb", 64 << 20),
            ("64MB", 64 << 20),
            ("1g", 1 << 30),
            ("1G", 1 << 30),
            ("512k", 512 << 10),
            ("512KB", 512 << 10),
            ("100b", 100),
            ("100B", 100),
            ("1024", 1024),
            ("0", 0),
            ("1.5g", 3 << 29),
            ("2t", 2 << 40),
            (" 64m ", 64 << 20),
        ];
        for (s, want) in ok {
            assert_eq!(parse_size(s).unwrap(), *want, "{s}");
        }
        let bad = [
            "",
            "m",
            "-1",
            "-64m",
            "64x",
            "64mm",
            "64 m",
            "1.g",
            ".5g",
            "abc",
            "1e3",
            "99999999999999999999999",
            "9000000000g",
            "8388608t",
            "0x10",
        ];
        for s in bad {
            let e = parse_size(s).unwrap_err();
            assert!(matches!(e, CgroupError::BadSize { .. }), "{s}");
            assert!(
                e.to_string().contains(&format!("{s:?}")),
                "message names the value: {e}"
            );
        }
    }

    #[test]
    fn size_formatting() {
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(1000), "1000 B");
        assert_eq!(format_size(1 << 10), "1 KiB");
    }

    #[test]
    fn cpus() {
        for (s, want) in [
            ("0.5", 0.5),
            ("2", 2.0),
            ("1.25", 1.25),
            ("0.01", 0.01),
            ("64", 64.0),
        ] {
            assert_eq!(parse_cpus(s).unwrap(), want, "{s}");
        }
        for s in [
            "", "0", "0.0", "-1", "abc", "inf", "NaN", "1e3", "0.001", "1.2.3", "2000000",
        ] {
            let e = parse_cpus(s).unwrap_err();
            assert!(e.to_string().contains(&format!("{s:?}")), "{e}");
        }
    }

    #[test]
    fn cpusets() {
        for (s, want) in [
            ("0", "0"),
            ("0-1,3", "0-1,3"),
            (" 0 - 1 ", "0-1"),
            ("2,4,6-7", "2,4,6-7"),
        ] {
            assert_eq!(parse_cpuset(s).unwrap(), want);
        }
        for s in [
            "", ",", "0,", "1-0", "a", "0-", "-1", "0--1", "1-2-3", "0;1",
        ] {
            assert!(parse_cpuset(s).is_err(), "{s}");
        }
    }

    #[test]
    fn shares_to_weight() {
        assert_eq!(cpu_shares_to_weight(0), 0);
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 100);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
        assert_eq!(cpu_shares_to_weight(1_000_000), 10_000);
        // Monotonic in between.
        let mut last = 0;
        for s in (2..262_144).step_by(997) {
            let w = cpu_shares_to_weight(s);
            assert!(w >= last && (1..=10_000).contains(&w));
            last = w;
        }
        // 512 shares is "half the default" and lands well below 100.
        assert!(cpu_shares_to_weight(512) < 100 && cpu_shares_to_weight(2048) > 100);
    }
}

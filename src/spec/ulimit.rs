//! `--ulimit NAME=SOFT[:HARD]`, docker's syntax (its go-units names), as an OCI
//! `process.rlimits` entry: the compiler sets it with setrlimit(2) in the child before exec.

use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType};

#[derive(Debug, thiserror::Error)]
#[error("--ulimit {spec:?}: {reason}")]
pub struct UlimitError {
    pub spec: String,
    pub reason: String,
}

/// docker's names, each with its rlimit (getrlimit(2)).
const NAMES: [(&str, PosixRlimitType); 16] = [
    ("as", PosixRlimitType::RlimitAs),
    ("core", PosixRlimitType::RlimitCore),
    ("cpu", PosixRlimitType::RlimitCpu),
    ("data", PosixRlimitType::RlimitData),
    ("fsize", PosixRlimitType::RlimitFsize),
    ("locks", PosixRlimitType::RlimitLocks),
    ("memlock", PosixRlimitType::RlimitMemlock),
    ("msgqueue", PosixRlimitType::RlimitMsgqueue),
    ("nice", PosixRlimitType::RlimitNice),
    ("nofile", PosixRlimitType::RlimitNofile),
    ("nproc", PosixRlimitType::RlimitNproc),
    ("rss", PosixRlimitType::RlimitRss),
    ("rtprio", PosixRlimitType::RlimitRtprio),
    ("rttime", PosixRlimitType::RlimitRttime),
    ("sigpending", PosixRlimitType::RlimitSigpending),
    ("stack", PosixRlimitType::RlimitStack),
];

/// Parses one `--ulimit`: `nofile=1024:2048`, `nproc=512` (hard = soft), `-1` for unlimited.
pub fn parse_ulimit(spec: &str) -> Result<PosixRlimit, UlimitError> {
    let err = |reason: String| UlimitError {
        spec: spec.to_string(),
        reason,
    };
    let (name, values) = spec
        .split_once('=')
        .ok_or_else(|| err("expected NAME=SOFT[:HARD], e.g. nofile=1024:2048".into()))?;
    let typ = NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            err(format!(
                "unknown limit {name:?} (one of {})",
                NAMES.map(|(n, _)| n).join(", ")
            ))
        })?;
    let number = |v: &str| -> Result<u64, UlimitError> {
        match v {
            // RLIM_INFINITY, as the kernel and docker spell "unlimited".
            "-1" | "unlimited" => Ok(u64::MAX),
            _ => v
                .parse()
                .map_err(|_| err(format!("{v:?} is not a number (or -1 for unlimited)"))),
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => {
            let v = number(values)?;
            (v, v)
        }
    };
    if soft > hard {
        return Err(err(format!(
            "the soft limit {soft} is above the hard limit {hard}"
        )));
    }
    Ok(PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()
        .expect("every field is set"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_syntax() {
        let r = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!(
            (r.typ(), r.soft(), r.hard()),
            (PosixRlimitType::RlimitNofile, 1024, 2048)
        );
        let r = parse_ulimit("nproc=512").unwrap();
        assert_eq!((r.soft(), r.hard()), (512, 512));
        let r = parse_ulimit("core=-1").unwrap();
        assert_eq!((r.soft(), r.hard()), (u64::MAX, u64::MAX));
        let r = parse_ulimit("stack=8192:-1").unwrap();
        assert_eq!((r.soft(), r.hard()), (8192, u64::MAX));
    }

    #[test]
    fn errors_name_the_flag_and_the_problem() {
        for (bad, says) in [
            ("nofile", "expected NAME=SOFT[:HARD]"),
            ("files=10", "unknown limit \"files\""),
            ("nofile=ten", "\"ten\" is not a number"),
            (
                "nofile=2048:1024",
                "soft limit 2048 is above the hard limit 1024",
            ),
            ("nofile=1:2:3", "\"2:3\" is not a number"),
        ] {
            let e = parse_ulimit(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--ulimit {bad:?}: ")), "{e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

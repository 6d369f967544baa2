//! Linux capabilities for the container process (capabilities(7)).
//!
//! Planning ([`plan_caps`]) is pure and follows Docker's semantics
//! (moby `oci/caps.TweakCapabilities`). Applying is split in two because the
//! bounding set can only be reduced while we still hold `CAP_SETPCAP`, i.e.
//! before the uid switch, while effective/permitted must be set after it:
//!
//! ```text
//! apply_bounding(&plan)?;   // still uid 0 with full caps: PR_CAPBSET_DROP needs CAP_SETPCAP
//! setgroups/setgid/setuid   // uid 0 -> non-0 clears permitted+effective (no PR_SET_KEEPCAPS)
//! apply_sets(&plan)?;       // capset(2): effective, permitted; clear inheritable + ambient
//! set_no_new_privs()?;
//! seccomp::install(..)?;    // last, right before execve
//! ```
//!
//! Note on execve(2) (capabilities(7), "Transformation of capabilities during
//! execve()"): for a root (uid 0) container process the file sets are treated
//! as all-ones, so after exec `permitted = inheritable | bounding`; with an
//! empty inheritable set the bounding set is what really limits root. For a
//! non-root process without file capabilities the new permitted and effective
//! sets are empty (ambient is cleared), and `no_new_privs` makes the kernel
//! ignore file capabilities and set-user-ID bits altogether.

use std::collections::HashSet;

use ::caps::{CapSet, Capability, CapsHashSet};

use super::SecurityError;

/// The capability sets of the container's process: for an image run the result of combining the
/// default set with `--cap-add` / `--cap-drop` (inheritable and ambient empty, as Docker and
/// runc's default spec since CVE-2022-29162); for a bundle, what its config.json says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapPlan {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    /// Raised after the others (PR_CAP_AMBIENT_RAISE): each must be permitted and inheritable.
    pub ambient: CapsHashSet,
}

/// Parse a capability name. Accepts `NET_ADMIN`, `net_admin` and
/// `CAP_NET_ADMIN` (any case). `ALL` is *not* a capability; callers that
/// accept it (like [`plan_caps`]) handle it before calling this.
pub fn parse_cap(name: &str) -> Result<Capability, SecurityError> {
    let canonical = ::caps::to_canonical(name.trim());
    canonical
        .parse::<Capability>()
        .map_err(|_| SecurityError::UnknownCapability(name.to_string()))
}

/// Docker's default capability set (moby `oci/caps/defaults.go`): 14 caps.
pub fn default_caps() -> CapsHashSet {
    [
        Capability::CAP_CHOWN,
        Capability::CAP_DAC_OVERRIDE,
        Capability::CAP_FSETID,
        Capability::CAP_FOWNER,
        Capability::CAP_MKNOD,
        Capability::CAP_NET_RAW,
        Capability::CAP_SETGID,
        Capability::CAP_SETUID,
        Capability::CAP_SETFCAP,
        Capability::CAP_SETPCAP,
        Capability::CAP_NET_BIND_SERVICE,
        Capability::CAP_SYS_CHROOT,
        Capability::CAP_KILL,
        Capability::CAP_AUDIT_WRITE,
    ]
    .into_iter()
    .collect()
}

/// All capabilities the running kernel knows (`/proc/sys/kernel/cap_last_cap`),
/// restricted to those the `caps` crate can name. Falls back to the crate's
/// full list if procfs is not available.
/// Every capability this kernel supports that rcrun itself may still hold: a capability missing
/// from our own bounding set can never be raised again (capabilities(7)), so `--privileged` or
/// `--cap-add ALL` asking for it would only make capset(2) fail (seen where root runs with a
/// reduced bounding set, e.g. without CAP_SYS_RESOURCE inside another container).
fn all_supported_caps() -> CapsHashSet {
    let supported = ::caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| ::caps::all());
    match ::caps::read(None, ::caps::CapSet::Bounding) {
        Ok(ours) => supported.intersection(&ours).copied().collect(),
        Err(_) => supported,
    }
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL") || name.trim().eq_ignore_ascii_case("CAP_ALL")
}

/// Parse a list that may contain `ALL`; returns (contains_all, parsed caps).
fn parse_list(names: &[String]) -> Result<(bool, CapsHashSet), SecurityError> {
    let mut all = false;
    let mut set = HashSet::new();
    for name in names {
        if is_all(name) {
            all = true;
        } else {
            set.insert(parse_cap(name)?);
        }
    }
    Ok((all, set))
}

/// Compute the capability sets for the container process.
///
/// Docker semantics (moby `TweakCapabilities`), checked in this order:
/// * `privileged` → every capability the kernel supports (and rcrun's bounding set holds);
/// * `ALL` in `cap_add` → all of those minus `cap_drop`;
/// * `ALL` in `cap_drop` → exactly `cap_add` (so `--cap-drop ALL --cap-add X` = {X});
/// * otherwise → (defaults − cap_drop) ∪ cap_add.
///
/// Unknown names are rejected even when they would be irrelevant.
/// A non-root container user gets empty effective and permitted sets (the
/// bounding set still follows the plan), as Docker does.
pub fn plan_caps(
    cap_add: &[String],
    cap_drop: &[String],
    privileged: bool,
    user_is_root: bool,
) -> Result<CapPlan, SecurityError> {
    // Validate both lists first so a typo is reported even with --privileged.
    let (add_all, add) = parse_list(cap_add)?;
    let (drop_all, drop) = parse_list(cap_drop)?;

    let bounding: CapsHashSet = if privileged {
        all_supported_caps()
    } else if add_all {
        all_supported_caps().difference(&drop).copied().collect()
    } else if drop_all {
        add
    } else {
        default_caps()
            .difference(&drop)
            .copied()
            .chain(add)
            .collect()
    };

    let (effective, permitted) = if user_is_root {
        (bounding.clone(), bounding.clone())
    } else {
        (CapsHashSet::new(), CapsHashSet::new())
    };
    Ok(CapPlan {
        bounding,
        effective,
        permitted,
        inheritable: CapsHashSet::new(),
        ambient: CapsHashSet::new(),
    })
}

/// Drop every capability that is not in `plan.bounding` from the bounding set
/// of the calling thread (`PR_CAPBSET_DROP`, prctl(2)).
///
/// Must run while still privileged and BEFORE the uid switch: dropping from
/// the bounding set requires `CAP_SETPCAP` in the effective set
/// (capabilities(7), "Capability bounding set").
pub fn apply_bounding(plan: &CapPlan) -> Result<(), SecurityError> {
    let kept: Vec<u8> = plan.bounding.iter().map(|c| c.index()).collect();
    // One PR_CAPBSET_DROP per capability number, upwards, until the kernel answers EINVAL: it
    // refuses only numbers above its last capability (cap_valid, kernel/capability.c), and
    // dropping one already dropped is no error. So neither a PR_CAPBSET_READ before each drop
    // nor /proc/sys/kernel/cap_last_cap is needed, and capabilities newer than the `caps`
    // crate's list (which the plan can never keep) are dropped as well.
    for idx in 0u8..=u8::MAX {
        if kept.contains(&idx) {
            continue;
        }
        if bounding_prctl(libc::PR_CAPBSET_DROP, idx) != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            // Without CAP_SETPCAP every drop is refused (the permission is checked first), even
            // of one already gone or past the last: only a capability still in the set is an
            // error. PR_CAPBSET_READ says 1 for it, 0 for one gone, EINVAL past the last.
            match (
                err.raw_os_error(),
                bounding_prctl(libc::PR_CAPBSET_READ, idx),
            ) {
                (Some(libc::EPERM), 0) => continue,
                (Some(libc::EPERM), -1) => break,
                _ => {}
            }
            return Err(SecurityError::Caps {
                op: "drop from the bounding set",
                cap: ::caps::all()
                    .into_iter()
                    .find(|c| c.index() == idx)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| format!("capability #{idx}")),
                message: err.to_string(),
            });
        }
    }
    Ok(())
}

/// prctl(2) `PR_CAPBSET_DROP` or `PR_CAPBSET_READ` of capability number `idx`: -1 (errno set)
/// or the result (0, or for a read 1 when the capability is in the bounding set).
fn bounding_prctl(option: libc::c_int, idx: u8) -> libc::c_int {
    // SAFETY: both options take a capability number by value and no pointers; DROP only changes
    // the calling thread's bounding set, READ only reads it.
    unsafe {
        libc::prctl(
            option,
            libc::c_ulong::from(idx),
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    }
}

/// Set the effective and permitted sets to the plan, the ambient set cleared first (see
/// [`apply_inheritable`] and [`apply_ambient`] for the other two). Call after the uid/gid switch.
///
/// Order matters for capset(2): the new effective set must be a subset of the
/// new permitted set, and permitted can only shrink. Lowering effective first,
/// then permitted, keeps every intermediate state valid. Ambient is cleared
/// first (PR_CAP_AMBIENT_CLEAR_ALL); the kernel would also drop ambient caps
/// that leave permitted/inheritable, but clearing explicitly is clearer.
pub fn apply_sets(plan: &CapPlan) -> Result<(), SecurityError> {
    if ::caps::runtime::ambient_set_supported().is_ok() {
        ::caps::clear(None, CapSet::Ambient).map_err(|e| SecurityError::Caps {
            op: "clear",
            cap: "the ambient set".to_string(),
            message: e.to_string(),
        })?;
    }
    let effective: CapsHashSet = plan
        .effective
        .intersection(&plan.permitted)
        .copied()
        .collect();
    ::caps::set(None, CapSet::Effective, &effective).map_err(|e| SecurityError::Caps {
        op: "set the effective set to",
        cap: cap_names(&effective).join(","),
        message: e.to_string(),
    })?;
    ::caps::set(None, CapSet::Permitted, &plan.permitted).map_err(|e| SecurityError::Caps {
        op: "set the permitted set to",
        cap: cap_names(&plan.permitted).join(","),
        message: format!("{e} (permitted can only shrink; was the uid switched already?)"),
    })?;
    Ok(())
}

/// The inheritable set, then each ambient capability raised (PR_CAP_AMBIENT_RAISE: it must be
/// in permitted and inheritable, capabilities(7)). Called right before [`apply_sets`]' capset of
/// effective and permitted, while the process may still add to inheritable what is in its
/// bounding set; the ambient raise comes after.
pub fn apply_inheritable(plan: &CapPlan) -> Result<(), SecurityError> {
    ::caps::set(None, CapSet::Inheritable, &plan.inheritable).map_err(|e| SecurityError::Caps {
        op: "set the inheritable set to",
        cap: cap_names(&plan.inheritable).join(","),
        message: e.to_string(),
    })
}

/// See [`apply_inheritable`].
pub fn apply_ambient(plan: &CapPlan) -> Result<(), SecurityError> {
    for cap in &plan.ambient {
        ::caps::raise(None, CapSet::Ambient, *cap).map_err(|e| SecurityError::Caps {
            op: "raise in the ambient set",
            cap: cap.to_string(),
            message: format!("{e} (an ambient capability must also be permitted and inheritable)"),
        })?;
    }
    Ok(())
}

/// Set `no_new_privs` on the calling thread (prctl(2) `PR_SET_NO_NEW_PRIVS`).
/// It is inherited across fork and execve and cannot be unset.
pub fn set_no_new_privs() -> Result<(), SecurityError> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes only integer arguments (the unused
    // ones must be 0) and has no memory-safety implications.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(SecurityError::Prctl {
            op: "PR_SET_NO_NEW_PRIVS",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Sorted `CAP_*` names of a set, for printing and cache keys.
pub fn cap_names(set: &CapsHashSet) -> Vec<String> {
    let mut names: Vec<String> = set.iter().map(|c| c.to_string()).collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parse_accepts_all_spellings() {
        for n in [
            "NET_ADMIN",
            "net_admin",
            "CAP_NET_ADMIN",
            "cap_net_admin",
            " Net_Admin ",
        ] {
            assert_eq!(parse_cap(n).unwrap(), Capability::CAP_NET_ADMIN, "{n}");
        }
    }

    #[test]
    fn parse_rejects_unknown_with_helpful_message() {
        let err = parse_cap("NET_ADMINN").unwrap_err();
        assert!(matches!(err, SecurityError::UnknownCapability(ref v) if v == "NET_ADMINN"));
        let msg = err.to_string();
        assert!(
            msg.contains("NET_ADMINN") && msg.contains("capabilities(7)"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        assert!(parse_cap("").is_err());
        assert!(parse_cap("ALL").is_err());
    }

    #[test]
    fn defaults_are_dockers_14() {
        let d = default_caps();
        assert_eq!(d.len(), 14);
        assert!(d.contains(&Capability::CAP_AUDIT_WRITE));
        assert!(!d.contains(&Capability::CAP_SYS_ADMIN));
        assert!(!d.contains(&Capability::CAP_NET_ADMIN));
    }

    #[test]
    fn plan_defaults_root() {
        let p = plan_caps(&[], &[], false, true).unwrap();
        assert_eq!(p.bounding, default_caps());
        assert_eq!(p.effective, default_caps());
        assert_eq!(p.permitted, default_caps());
    }

    #[test]
    fn plan_add_and_drop() {
        let p = plan_caps(&s(&["net_admin"]), &s(&["CAP_CHOWN", "MKNOD"]), false, true).unwrap();
        assert!(p.bounding.contains(&Capability::CAP_NET_ADMIN));
        assert!(!p.bounding.contains(&Capability::CAP_CHOWN));
        assert!(!p.bounding.contains(&Capability::CAP_MKNOD));
        assert_eq!(p.bounding.len(), 13);
    }

    #[test]
    fn plan_drop_all_then_add() {
        let p = plan_caps(&s(&["NET_BIND_SERVICE"]), &s(&["ALL"]), false, true).unwrap();
        assert_eq!(cap_names(&p.bounding), vec!["CAP_NET_BIND_SERVICE"]);
        let p = plan_caps(&[], &s(&["all"]), false, true).unwrap();
        assert!(p.bounding.is_empty() && p.effective.is_empty());
    }

    #[test]
    fn plan_add_all() {
        let all = all_supported_caps();
        let p = plan_caps(&s(&["ALL"]), &[], false, true).unwrap();
        assert_eq!(p.bounding, all);
        assert!(p.bounding.contains(&Capability::CAP_SYS_ADMIN));
        let p = plan_caps(&s(&["ALL"]), &s(&["SYS_ADMIN"]), false, true).unwrap();
        assert_eq!(p.bounding.len(), all.len() - 1);
        assert!(!p.bounding.contains(&Capability::CAP_SYS_ADMIN));
        // add ALL wins over drop ALL, as in Docker
        let p = plan_caps(&s(&["ALL"]), &s(&["ALL"]), false, true).unwrap();
        assert_eq!(p.bounding, all);
    }

    #[test]
    fn plan_privileged_and_non_root() {
        let p = plan_caps(&[], &s(&["ALL"]), true, true).unwrap();
        assert_eq!(p.bounding, all_supported_caps());
        let p = plan_caps(&s(&["SYS_PTRACE"]), &[], false, false).unwrap();
        assert!(p.bounding.contains(&Capability::CAP_SYS_PTRACE));
        assert_eq!(p.bounding.len(), 15);
        assert!(p.effective.is_empty() && p.permitted.is_empty());
    }

    #[test]
    fn plan_rejects_unknown() {
        assert!(matches!(
            plan_caps(&s(&["FOO"]), &[], false, true),
            Err(SecurityError::UnknownCapability(ref v)) if v == "FOO"
        ));
        assert!(plan_caps(&[], &s(&["BAR"]), true, true).is_err());
    }

    #[test]
    fn names_sorted() {
        let names = cap_names(&default_caps());
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names[0], "CAP_AUDIT_WRITE");
    }

    /// Reads `Name:\tHEX` from /proc/thread-self/status (capability sets and
    /// no_new_privs are per-thread; libtest runs the test on its own thread).
    fn status_hex(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("{field} missing"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    }

    fn mask(set: &CapsHashSet) -> u64 {
        set.iter().fold(0, |m, c| m | c.bitmask())
    }

    /// The apply_* functions change process-wide state irreversibly, so the
    /// real calls run in a fresh copy of this test binary (single-threaded,
    /// `--test-threads=1`), selected by an environment variable.
    fn run_self(test: &str, mode: &str) {
        // libtest names omit the crate name that module_path!() starts with.
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, m)| m);
        let test = format!("{module}::{test}");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &test, "--test-threads=1", "--nocapture"])
            .env("RCRUN_SECURITY_CAPS_CHILD", mode)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child {mode} failed: {text}");
        assert!(
            text.contains("1 passed"),
            "child did not run the test: {text}"
        );
    }

    #[test]
    fn apply_root_user_in_subprocess() {
        const NAME: &str = "apply_root_user_in_subprocess";
        match std::env::var("RCRUN_SECURITY_CAPS_CHILD").as_deref() {
            Ok("root") => {
                let plan = plan_caps(
                    &s(&["NET_BIND_SERVICE", "SETPCAP"]),
                    &s(&["ALL"]),
                    false,
                    true,
                )
                .unwrap();
                apply_bounding(&plan).unwrap();
                apply_sets(&plan).unwrap();
                set_no_new_privs().unwrap();
                let want = mask(&plan.bounding);
                assert_eq!(status_hex("CapBnd"), want);
                assert_eq!(status_hex("CapEff"), want);
                assert_eq!(status_hex("CapPrm"), want);
                assert_eq!(status_hex("CapInh"), 0);
                assert_eq!(status_hex("CapAmb"), 0);
                assert_eq!(status_hex("NoNewPrivs"), 1);
            }
            Ok(_) => {}
            Err(_) => {
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } != 0 {
                    eprintln!("skipping: needs root");
                    return;
                }
                run_self(NAME, "root");
            }
        }
    }

    #[test]
    fn apply_bounding_again_without_setpcap_in_subprocess() {
        const NAME: &str = "apply_bounding_again_without_setpcap_in_subprocess";
        match std::env::var("RCRUN_SECURITY_CAPS_CHILD").as_deref() {
            Ok("again") => {
                let plan = plan_caps(&s(&["NET_BIND_SERVICE"]), &s(&["ALL"]), false, true).unwrap();
                apply_bounding(&plan).unwrap();
                apply_sets(&plan).unwrap();
                assert_eq!(
                    status_hex("CapEff"),
                    mask(&plan.bounding),
                    "no CAP_SETPCAP left"
                );
                // Every drop is now refused (EPERM), but nothing left to drop is no error.
                apply_bounding(&plan).unwrap();
                assert_eq!(status_hex("CapBnd"), mask(&plan.bounding));
                // A capability still in the set is: drop all.
                let narrower = CapPlan {
                    bounding: CapsHashSet::new(),
                    ..plan
                };
                assert!(
                    apply_bounding(&narrower).is_err(),
                    "NET_BIND_SERVICE stays: an error"
                );
            }
            Ok(_) => {}
            Err(_) => {
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } != 0 {
                    eprintln!("skipping: needs root");
                    return;
                }
                run_self(NAME, "again");
            }
        }
    }

    #[test]
    fn apply_non_root_user_in_subprocess() {
        const NAME: &str = "apply_non_root_user_in_subprocess";
        match std::env::var("RCRUN_SECURITY_CAPS_CHILD").as_deref() {
            Ok("nonroot") => {
                let plan = plan_caps(&[], &s(&["NET_RAW"]), false, false).unwrap();
                apply_bounding(&plan).unwrap();
                // SAFETY: plain integer syscalls; this subprocess is ours.
                unsafe {
                    assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
                    assert_eq!(libc::setresgid(1000, 1000, 1000), 0);
                    assert_eq!(libc::setresuid(1000, 1000, 1000), 0);
                }
                // setuid(2) from 0 to non-0 already emptied permitted/effective.
                assert_eq!(status_hex("CapPrm"), 0);
                apply_sets(&plan).unwrap();
                set_no_new_privs().unwrap();
                assert_eq!(status_hex("CapBnd"), mask(&plan.bounding));
                assert_eq!(status_hex("CapEff"), 0);
                assert_eq!(status_hex("CapPrm"), 0);
                assert_eq!(status_hex("CapInh"), 0);
                assert_eq!(status_hex("CapAmb"), 0);
            }
            Ok(_) => {}
            Err(_) => {
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } != 0 {
                    eprintln!("skipping: needs root");
                    return;
                }
                run_self(NAME, "nonroot");
            }
        }
    }
}

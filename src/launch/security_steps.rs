//! The last steps before execve, in the order that matters (capabilities(7), seccomp(2)):
//! drop the bounding set while still privileged → switch groups and user → set the remaining
//! capability sets → no_new_privs → re-arm the parent-death signal (a credential change clears
//! it) → the start gate (wait for the launcher's `start`) → seccomp, last, because the filter
//! would otherwise forbid the calls above (runc's init waits on its exec fifo at the same point
//! when the filter is applied late).
//!
//! Without no_new_privs, installing a filter is a privileged operation (seccomp(2): it needs
//! CAP_SYS_ADMIN then, which the container's capability sets rarely keep), so the filter goes in
//! first, before any capability is dropped, as runc does; it must then allow the calls below
//! (Docker's profile does).

use super::explain::Explain;
use super::failure::{fail, Failure};
use super::StartupPlan;
use crate::sys;

pub fn apply(
    plan: &StartupPlan,
    ex: &Explain,
    start_gate: &mut dyn FnMut() -> Result<(), Failure>,
) -> Result<(), Failure> {
    use crate::security;
    let u = &plan.user;
    let install_seccomp = || -> Result<(), Failure> {
        if let Some(f) = &plan.seccomp {
            ex.timed(
                "seccomp",
                &format!(
                    "seccomp(SECCOMP_SET_MODE_FILTER) ×{} programs, {} BPF instructions{}",
                    f.programs.len(),
                    f.bpf_instructions,
                    if plan.no_new_privs {
                        ""
                    } else {
                        " — first, while CAP_SYS_ADMIN is held (no no_new_privs)"
                    }
                ),
                || security::install(f).map_err(|e| fail("seccomp", e)),
            )?;
        }
        Ok(())
    };
    if let Some(adj) = plan.oom_score_adj {
        // First, while every capability is still held.
        ex.timed(
            "oom",
            &format!("write {adj} to /proc/self/oom_score_adj"),
            || sys::process::set_oom_score_adj(adj).map_err(|e| fail("oom_score_adj", e)),
        )?;
    }
    if !plan.no_new_privs {
        install_seccomp()?;
    }
    // Bounding set first: dropping from it needs CAP_SETPCAP, which we still have.
    ex.timed(
        "caps",
        &format!(
            "drop from bounding set all but {:?}",
            security::cap_names(&plan.caps.bounding)
        ),
        || {
            // The inheritable set too, while the effective set still holds CAP_SETPCAP: after a
            // switch to another uid only what is permitted could be added (capabilities(7)).
            // A uid change leaves it as it is.
            security::apply_bounding(&plan.caps)
                .and_then(|()| security::apply_inheritable(&plan.caps))
                .map_err(|e| fail("capability bounding and inheritable sets", e))
        },
    )?;
    ex.timed(
        "user",
        &format!(
            "setgroups({:?}); setresgid({}); setresuid({})",
            u.groups, u.gid, u.uid
        ),
        || {
            // A switch away from uid 0 clears the permitted set unless PR_SET_KEEPCAPS is set
            // (capabilities(7), "Effect of user ID changes on capabilities"); a spec may give a
            // non-root user capabilities. execve resets the flag.
            if u.uid != 0 && !plan.caps.permitted.is_empty() {
                sys::process::set_keep_caps(true)
                    .map_err(|e| fail("prctl(PR_SET_KEEPCAPS, 1)", e))?;
            }
            let groups = plan.mapping.setgroups_allowed().then_some(&u.groups[..]);
            sys::process::set_credentials(u.uid, u.gid, groups).map_err(|(call, e)| fail(&call, e))
        },
    )?;
    ex.timed(
        "caps",
        &format!(
            "capset: effective+permitted {:?}, inheritable {:?}, {}",
            security::cap_names(&plan.caps.effective),
            security::cap_names(&plan.caps.inheritable),
            if plan.caps.ambient.is_empty() {
                "ambient cleared".to_string()
            } else {
                format!("ambient {:?}", security::cap_names(&plan.caps.ambient))
            }
        ),
        || {
            security::apply_sets(&plan.caps)
                .and_then(|()| security::apply_ambient(&plan.caps))
                .map_err(|e| fail("capability sets", e))
        },
    )?;
    if plan.no_new_privs {
        ex.timed("nnp", "prctl(PR_SET_NO_NEW_PRIVS, 1)", || {
            sys::process::set_no_new_privs().map_err(|e| fail("prctl(PR_SET_NO_NEW_PRIVS)", e))
        })?;
    }
    if plan.die_with_rcrun {
        sys::process::die_with_parent().map_err(|e| fail("prctl(PR_SET_PDEATHSIG)", e))?;
    }
    start_gate()?;
    // Last before execve: the filter forbids several of the calls above.
    if plan.no_new_privs {
        install_seccomp()?;
    }
    Ok(())
}

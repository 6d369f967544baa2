//! The last steps before execve, in the order that matters (capabilities(7), seccomp(2)):
//! drop the bounding set while still privileged → switch groups and user → set the remaining
//! capability sets → no_new_privs → re-arm the parent-death signal (a credential change clears
//! it) → the start gate (wait for the launcher's `start`) → seccomp, last, because the filter
//! would otherwise forbid the calls above (runc's init waits on its exec fifo at the same point
//! when the filter is applied late).

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
    // Bounding set first: dropping from it needs CAP_SETPCAP, which we still have.
    ex.timed(
        "caps",
        &format!(
            "drop from bounding set all but {:?}",
            security::cap_names(&plan.caps.bounding)
        ),
        || security::apply_bounding(&plan.caps).map_err(|e| fail("capability bounding set", e)),
    )?;
    ex.timed(
        "user",
        &format!(
            "setgroups({:?}); setresgid({}); setresuid({})",
            u.groups, u.gid, u.uid
        ),
        || {
            let groups = plan.mapping.setgroups_allowed().then_some(&u.groups[..]);
            sys::process::set_credentials(u.uid, u.gid, groups).map_err(|(call, e)| fail(&call, e))
        },
    )?;
    ex.timed(
        "caps",
        &format!(
            "capset: effective+permitted {:?}, inheritable [], ambient cleared",
            security::cap_names(&plan.caps.effective)
        ),
        || security::apply_sets(&plan.caps).map_err(|e| fail("capability sets", e)),
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
    if let Some(f) = &plan.seccomp {
        ex.timed(
            "seccomp",
            &format!(
                "seccomp(SECCOMP_SET_MODE_FILTER) ×{} programs, {} BPF instructions",
                f.programs.len(),
                f.bpf_instructions
            ),
            || security::install(f).map_err(|e| fail("seccomp", e)),
        )?;
    }
    Ok(())
}

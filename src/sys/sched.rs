//! CPU placement for the work rcrun overlaps with its child's.
//!
//! The scheduler puts a forked child on its parent's CPU, and the child waits there until the
//! parent blocks: on the 2-vCPU machines of DESIGN.md, 43 of 50 forks of a busy parent started on
//! the parent's CPU, ~1 ms late (a tracepoint timeline of `rcrun run` showed the child's first
//! step only after rcrun's 0.7 ms unshare(CLONE_NEWNET)). Idle CPUs pull waiting tasks only at
//! their next balancing tick. So work meant to run beside the child (the network namespace as
//! root, the rootless network helper) first moves itself to another CPU: sched_setaffinity(2) on
//! the calling thread migrates it at once, and the child keeps the CPU it was queued on.

use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Moves the calling thread onto another CPU it may use than the one it runs on (the next one in
/// its affinity mask, cyclically). The returned guard gives the old mask back when dropped: later
/// children (network helpers, hooks, the container's own processes) inherit the affinity of the
/// process that forks them. None when there is no other CPU, or the kernel refuses (a cpuset of
/// one CPU): nothing changed then.
pub fn step_aside() -> Option<Aside> {
    let (mask, other) = another_allowed_cpu()?;
    sched_setaffinity(Pid::from_raw(0), &other).ok()?;
    Some(Aside { mask })
}

/// Puts process `pid`, just forked and not yet running, on another CPU it may use than the one
/// the caller runs on: sched_setaffinity(2) of a queued task moves it to the other run queue and
/// wakes that CPU, without waiting for it (unlike [`step_aside`], which must run there before it
/// returns). For a helper forked while the caller's next step is to wake a child that will take
/// the caller's CPU from it (a woken sleeper preempts the waker). False when there is no other CPU
/// or the kernel refuses: the helper then stays where the scheduler queued it.
pub fn place_elsewhere(pid: Pid) -> bool {
    another_allowed_cpu().is_some_and(|(_, other)| sched_setaffinity(pid, &other).is_ok())
}

/// The calling thread's affinity mask, and a mask of the one CPU after the current one in it
/// (cyclically); None when the mask allows only the current CPU.
fn another_allowed_cpu() -> Option<(CpuSet, CpuSet)> {
    let mask = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let here = sched_getcpu().ok()?;
    let n = CpuSet::count();
    let other = (1..n)
        .map(|k| (here + k) % n)
        .find(|&c| mask.is_set(c).unwrap_or(false))?;
    let mut one = CpuSet::new();
    one.set(other).ok()?;
    Some((mask, one))
}

/// The affinity mask [`step_aside`] replaced, restored on drop (the thread stays on the CPU it
/// moved to: that CPU is in the mask).
pub struct Aside {
    mask: CpuSet,
}

impl Drop for Aside {
    fn drop(&mut self) {
        let _ = sched_setaffinity(Pid::from_raw(0), &self.mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_aside_moves_to_another_allowed_cpu_and_restore_gives_the_mask_back() {
        let before = sched_getaffinity(Pid::from_raw(0)).unwrap();
        let allowed = (0..CpuSet::count())
            .filter(|&c| before.is_set(c).unwrap_or(false))
            .count();
        // Run in a thread of its own: the affinity is per thread, and the harness's is shared.
        std::thread::spawn(move || {
            let here = sched_getcpu().unwrap();
            match step_aside() {
                None => assert_eq!(allowed, 1, "refused with {allowed} CPUs allowed"),
                Some(aside) => {
                    assert_ne!(sched_getcpu().unwrap(), here, "still on CPU {here}");
                    let now = sched_getaffinity(Pid::from_raw(0)).unwrap();
                    let pinned = (0..CpuSet::count())
                        .filter(|&c| now.is_set(c).unwrap())
                        .count();
                    assert_eq!(pinned, 1);
                    drop(aside);
                    assert_eq!(sched_getaffinity(Pid::from_raw(0)).unwrap(), before);
                }
            }
        })
        .join()
        .unwrap();
    }
}

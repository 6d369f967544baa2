//! The network namespace of a root `rcrun run`, made before it is needed.
//!
//! A new network namespace costs ~0.7 ms of kernel work (every subsystem's per-namespace setup),
//! and on these two-vCPU VMs moving work to the other, idle CPU first waits for it to wake: up
//! to a few ms (a tracepoint timeline: rcrun's own move, `sched::step_aside`, took 0.07–4.2 ms,
//! and the child then waited 2–3 ms for the namespace before /sys). So as root a holder process
//! is forked as soon as `run` knows it needs a namespace, before the image is even looked up;
//! it makes the namespace on the other CPU while rcrun reads the image and plans, and spawn
//! joins it where it would otherwise unshare one ([`super::NetSetup::ParentWhileMounting`]).
//! If the holder failed, spawn makes the namespace itself, as before.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::os::fd::OwnedFd;

/// A holder process making (or holding) a network namespace with lo up; killed and reaped when
/// dropped unless [`EarlyNetns::join`] handed it on.
pub struct EarlyNetns {
    holder: Option<Pid>,
    ready: OwnedFd,
}

impl EarlyNetns {
    /// Forks the holder and puts it on another CPU than this one (sys::sched::place_elsewhere:
    /// it does not wait for that CPU). None if the fork fails: spawn then does it all itself.
    pub fn start() -> Option<EarlyNetns> {
        let (ready, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let holder = crate::sys::net::fork_namespace_holder(write).ok()?;
        crate::sys::sched::place_elsewhere(holder);
        Some(EarlyNetns {
            holder: Some(holder),
            ready,
        })
    }

    /// Moves the calling (single-threaded) process into the holder's namespace: waits until it is
    /// made, then setns(2). Err: the holder failed or the join did (the caller then unshares a
    /// namespace itself). Either way the holder is sent SIGKILL and returned, for the caller to
    /// reap once it is not in a hurry (its exit may wait for an idle CPU to wake).
    pub fn join(mut self) -> (nix::Result<()>, Pid) {
        let holder = self.holder.take().expect("held until join or drop");
        let joined = self
            .wait_made(holder)
            .and_then(|()| crate::sys::net::join_namespace_of(holder.as_raw() as u32));
        let _ = kill(holder, Signal::SIGKILL);
        (joined, holder)
    }

    /// [`EarlyNetns::join`], narrated for spawn: true once joined, false when the caller must
    /// make the namespace itself; and the holder, for the caller to reap.
    pub(super) fn join_narrated(self, ex: &super::explain::Explain) -> (bool, Pid) {
        let t = std::time::Instant::now();
        let (joined, holder) = self.join();
        ex.detail(
            "net",
            &format!(
                "setns(/proc/{holder}/ns/net) — the namespace a holder made while rcrun read the image{}",
                match &joined {
                    Ok(()) => String::new(),
                    Err(e) => format!(" FAILED ({e}): rcrun makes one itself"),
                }
            ),
            t.elapsed(),
        );
        (joined.is_ok(), holder)
    }

    fn wait_made(&self, holder: Pid) -> nix::Result<()> {
        let mut pid = [0u8; 4];
        let n = loop {
            match nix::unistd::read(&self.ready, &mut pid) {
                Err(Errno::EINTR) => continue,
                other => break other?,
            }
        };
        if n == 4 && i32::from_ne_bytes(pid) == holder.as_raw() {
            Ok(())
        } else {
            Err(Errno::ESRCH) // EOF: the holder failed before it wrote
        }
    }
}

impl Drop for EarlyNetns {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.take() {
            let _ = kill(holder, Signal::SIGKILL);
            while let Err(Errno::EINTR) = waitpid(holder, None) {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip_unless_root(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return false;
        }
        eprintln!("SKIP: {test}: needs root (unshare(CLONE_NEWNET) in the holder)");
        true
    }

    fn netns_of(path: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    }

    /// The thread joins the holder's namespace: not the host's, with lo up; the holder is killed
    /// and handed back, and reaping it finds it dead by SIGKILL.
    #[test]
    fn join_enters_a_new_namespace_with_lo_up_and_hands_back_the_killed_holder() {
        if skip_unless_root("early network namespace join") {
            return;
        }
        let host = netns_of("/proc/self/ns/net");
        let early = EarlyNetns::start().expect("fork the holder");
        let (joined, holder) = early.join();
        joined.expect("join the holder's namespace");
        // setns(2) moved this thread only: /proc/thread-self is this thread's view.
        assert_ne!(netns_of("/proc/thread-self/ns/net"), host);
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        // SAFETY: ifreq is plain old data; SIOCGIFFLAGS fills the flags of the one we own.
        let flags = unsafe {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
                *d = *s as libc::c_char;
            }
            use std::os::fd::AsRawFd;
            assert_eq!(
                libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr),
                0
            );
            ifr.ifr_ifru.ifru_flags
        };
        assert_ne!(flags & libc::IFF_UP as libc::c_short, 0, "lo is down");
        assert_eq!(
            waitpid(holder, None).unwrap(),
            nix::sys::wait::WaitStatus::Signaled(holder, Signal::SIGKILL, false)
        );
    }

    /// A run that fails before spawn drops the handle: the holder is gone, not left behind.
    #[test]
    fn dropping_the_handle_reaps_the_holder() {
        if skip_unless_root("early network namespace drop") {
            return;
        }
        let early = EarlyNetns::start().expect("fork the holder");
        let holder = early.holder.expect("held");
        drop(early);
        assert_eq!(kill(holder, None), Err(Errno::ESRCH), "holder left behind");
    }
}

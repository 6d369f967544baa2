//! The network namespace of a root `rcrun run`, made before it is needed.
//!
//! A new network namespace costs ~0.7–1.5 ms of kernel work (every subsystem's per-namespace
//! setup, mostly sysctl registration), and on these two-vCPU VMs moving work to the other, idle
//! CPU first waits for it to wake: up to a few ms (a tracepoint timeline: rcrun's own move,
//! `sched::step_aside`, took 0.07–4.2 ms, and the child then waited 2–3 ms for the namespace
//! before /sys). So as root a holder process makes it ahead: forked by main before the command
//! line is parsed when argv reads as a plain `run` ([`EarlyNetns::prefork`]), else by `run` as
//! soon as the parsed flags say it needs one ([`EarlyNetns::start`]), before the image is looked
//! up. It makes the namespace on the other CPU while rcrun parses, reads the image and plans,
//! and spawn joins it where it would otherwise unshare one
//! ([`super::NetSetup::ParentWhileMounting`]). If the holder failed, spawn makes the namespace
//! itself, as before.

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

    /// Called by main before the command line is parsed: forks the holder at once when argv looks
    /// like a plain foreground `rcrun run` and rcrun is real root, so the namespace is made while
    /// clap parses too (a head start of ~0.3 ms; the holder still sometimes finished after the
    /// child reached /sys), and the fork copies a smaller process (the parser's ~400 KiB of heap
    /// is not there yet, so fewer of rcrun's later writes are copy-on-write). `run` decides again
    /// on the parsed flags and drops a holder it has no use for (killed and reaped).
    pub fn prefork(args: &[std::ffi::OsString]) -> Option<EarlyNetns> {
        if !nix::unistd::geteuid().is_root() || !looks_like_plain_run(args) {
            return None;
        }
        if !crate::host::Privilege::detect().is_real_root() {
            return None;
        }
        EarlyNetns::start()
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

/// argv (program name first) of `rcrun [global options] run ...` with none of the flags that
/// make `run` skip its early namespace: detach, a name, --print-spec, --userns, a bundle, or a
/// network mode. A guess that only decides when the holder is forked: every token after `run` is
/// scanned, the container's own arguments too, so `ls -d` in them means no head start, never a
/// wrong namespace (clap parses, and `run` checks the real flags).
fn looks_like_plain_run(args: &[std::ffi::OsString]) -> bool {
    const GLOBAL_WITH_VALUE: [&str; 3] = ["--root", "--log", "--log-format"];
    const RUN_FLAGS_WITHOUT_EARLY_NETNS: [&str; 7] = [
        "--detach",
        "--name",
        "--print-spec",
        "--userns",
        "--bundle",
        "--network",
        "--net",
    ];
    let mut tokens = args.iter().skip(1).map(|a| a.to_str());
    // Global options, then the subcommand.
    loop {
        match tokens.next() {
            Some(Some("run")) => break,
            Some(Some(t)) if GLOBAL_WITH_VALUE.contains(&t) => {
                tokens.next();
            }
            Some(Some(t)) if t.starts_with('-') => {}
            _ => return false,
        }
    }
    tokens.all(|t| {
        let Some(t) = t else { return true };
        if let Some(long) = t.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            !RUN_FLAGS_WITHOUT_EARLY_NETNS.contains(&format!("--{name}").as_str())
        } else if let Some(short) = t.strip_prefix('-') {
            !short.contains('d') // -d, or a cluster such as -dit
        } else {
            true
        }
    })
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

    fn argv(line: &str) -> Vec<std::ffi::OsString> {
        line.split_whitespace().map(Into::into).collect()
    }

    /// The argv guess: a plain run (global options before or after `run`) yes; another command,
    /// or a flag that makes `run` skip the early namespace (anywhere after `run`), no.
    #[test]
    fn only_a_plain_run_is_guessed_to_want_the_namespace() {
        for yes in [
            "rcrun run bb.tar true",
            "rcrun -q --root /s run --rm -it -e A=1 bb.tar sh -c true",
            "rcrun --root=/s --log-format json run -v /x:/y bb.tar",
            "rcrun run --explain --root /s bb.tar",
            // Forked, then dropped by main (clap fails or prints help): tests/prefork.rs.
            "rcrun run --no-such-flag bb.tar true",
            "rcrun run --help",
        ] {
            assert!(looks_like_plain_run(&argv(yes)), "{yes}");
        }
        for no in [
            "rcrun",
            "rcrun create id",
            "rcrun --root run create x",
            "rcrun run -d bb.tar",
            "rcrun run -dit bb.tar sh",
            "rcrun run --detach bb.tar",
            "rcrun run --name web bb.tar",
            "rcrun run --network host bb.tar",
            "rcrun run --network=pasta bb.tar",
            "rcrun run --net none bb.tar",
            "rcrun run --print-spec bb.tar",
            "rcrun run --userns bb.tar",
            "rcrun run --bundle b id",
            "rcrun run bb.tar ls -d /",
        ] {
            assert!(!looks_like_plain_run(&argv(no)), "{no}");
        }
    }

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

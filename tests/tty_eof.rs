//! `rcrun run -it` when the end of input (a ^D, as `script` writes when its own stdin ends) is
//! already queued on rcrun's terminal before rcrun makes it raw: the container gets an end of
//! input, and no NUL (Linux queues a canonical VEOF as a NUL, which a switch to raw hands over as
//! data; forwarded, the container's terminal echoed it as `^@` and its `od` never ended).
//! The race `script` runs is lost on purpose here: the ^D is queued before rcrun starts.

mod common;
use common::*;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

/// Reads the pty master until the child exits (EIO once no slave is open) or `deadline`.
fn read_until_exit(master: &std::os::fd::OwnedFd, deadline: Instant) -> (Vec<u8>, bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return (out, true),
        }
        match nix::unistd::read(master.as_fd(), &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

#[test]
fn run_it_with_a_queued_eof_gives_the_container_eof_and_no_nul() {
    for who in modes("run -it with a queued end of input") {
        let store = case_dir("tty-eof", who);
        // Canonical with ECHO|ECHOCTL, as a fresh pty is (and as `script` leaves rcrun's).
        let pty = nix::pty::openpty(None, None).unwrap();
        nix::unistd::write(&pty.master, b"\x04").unwrap();
        // The line discipline takes the byte asynchronously: let it be queued before the start.
        std::thread::sleep(Duration::from_millis(100));
        let slave = pty.slave.as_raw_fd();
        let image = busybox_image();
        let mut cmd = rcrun_cmd(
            who,
            &[
                os("--root"),
                store.as_os_str(),
                os("run"),
                os("-it"),
                image.as_os_str(),
                os("sh"),
                os("-c"),
                os("od -c; echo done"),
            ],
        );
        // SAFETY: between fork and exec only async-signal-safe calls: setsid, ioctl, dup2.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for fd in 0..3 {
                    if libc::dup2(slave, fd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            })
        };
        let mut child = cmd.spawn().expect("start rcrun");
        drop(pty.slave);
        let (out, ended) = read_until_exit(&pty.master, Instant::now() + Duration::from_secs(20));
        if !ended {
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        let shown = String::from_utf8_lossy(&out);
        assert!(
            ended,
            "{who:?}: the container never saw the end of input: {shown:?}"
        );
        assert!(
            !out.contains(&0) && !shown.contains("^@"),
            "{who:?}: a NUL reached the container's terminal: {shown:?}"
        );
        assert!(
            shown.ends_with("0000000\r\ndone\r\n"),
            "{who:?}: od read no input and ended: {shown:?} (status {status:?})"
        );
        assert_eq!(status.code(), Some(0), "{who:?}: {shown:?}");
    }
}

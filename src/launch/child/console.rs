//! `-t`: a pseudo-terminal from the container's own devpts, its master handed to rcrun.

use crate::launch::failure::{fail, Failure};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The terminal must come from the container's own devpts instance (a host pty would be
/// invisible in /dev/pts inside, so `tty` would fail); the master goes back to rcrun, which
/// proxies it, like runc's console socket.
pub(super) fn open_console(sock: &OwnedFd) -> Result<(), Failure> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| fail("posix_openpt", e))?;
    nix::pty::grantpt(&master).map_err(|e| fail("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| fail("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| fail("ptsname", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail(&format!("open {name}"), e))?;
    let fds = [master.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(b"t")];
    nix::sys::socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(|e| fail("send pty master", e))?;
    drop(master);
    attach_terminal(&slave)
}

fn attach_terminal(slave: &OwnedFd) -> Result<(), Failure> {
    crate::sys::terminal::attach(slave.as_fd()).map_err(|(call, e)| fail(call, e))
}

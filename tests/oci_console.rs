//! runc's console protocol, as containerd's shim and podman use it: with a terminal, `rcrun
//! create --console-socket SOCK` and `rcrun exec -t -d --console-socket SOCK` connect to the
//! engine's unix socket and send the pty master (SCM_RIGHTS, the pty's name as the payload); the
//! engine then talks to the container's shell through it. `create` with a terminal and no socket
//! is refused by name. Every case ends with `delete --force` leaving nothing.

mod common;
use common::oci::*;
use common::*;

use serde_json::json;
use std::fs::File;
use std::io::{ErrorKind, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

type R = Result<(), String>;

/// A listening socket at DIR/console.sock that every mode's rcrun may connect to (rcrun-test,
/// or fake root in `unshare -Ur`, to whom a socket of the real root is "other's").
fn console_socket(c: &Case) -> (UnixListener, PathBuf) {
    let path = c.dir.join("console.sock");
    let listener = UnixListener::bind(&path).expect("bind the console socket");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    listener.set_nonblocking(true).unwrap();
    (listener, path)
}

/// The one message of the protocol: the pty master, which must be a terminal, and its name.
fn receive_master(s: &UnixStream) -> Result<File, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut name = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("recvmsg on the console socket: {e}"))?;
    let len = msg.bytes;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(|e| format!("control messages: {e}"))? {
        if let ControlMessageOwned::ScmRights(got) = cmsg {
            fds.extend(got);
        }
    }
    // SAFETY: the kernel just installed these fds in our table for us.
    let mut files: Vec<File> = fds
        .into_iter()
        .map(|fd| unsafe { File::from_raw_fd(fd) })
        .collect();
    let name = String::from_utf8_lossy(&name[..len]).into_owned();
    if files.len() != 1 || !name.starts_with("/dev/") {
        return Err(format!(
            "want one fd and a pty's name: {} fds, name {name:?}",
            files.len()
        ));
    }
    let master = files.remove(0);
    // SAFETY: isatty only inspects the fd we own.
    if unsafe { libc::isatty(master.as_raw_fd()) } != 1 {
        return Err(format!("the fd sent as {name:?} is not a terminal"));
    }
    Ok(master)
}

/// Runs `rcrun --root STATE ARGS...` while accepting on `listener`: the pty master it sent,
/// once it has exited 0, all within 10 s.
fn console_from(c: &Case, listener: &UnixListener, args: &[&str]) -> Result<File, String> {
    let log = c.dir.join("console-cmd.out");
    let out_file = File::create(&log).unwrap();
    let mut all = vec![os("--root"), c.state.as_os_str()];
    all.extend(args.iter().map(|a| os(a)));
    let mut child = rcrun_as_cmd(c.mode, &all)
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .spawn()
        .expect("run rcrun");
    let stop = |child: &mut std::process::Child, why: String| {
        let _ = child.kill();
        let _ = child.wait();
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        Err(format!("{args:?}: {why}: {out}"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut master = None;
    loop {
        // Checked first: a command that exited 0 has its connection queued already.
        let exited = child.try_wait().unwrap();
        if master.is_none() {
            match listener.accept() {
                Ok((s, _)) => match receive_master(&s) {
                    Ok(m) => master = Some(m),
                    Err(e) => return stop(&mut child, e),
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return stop(&mut child, format!("accept on the console socket: {e}")),
            }
        }
        if let Some(st) = exited {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            return match (st.code(), master) {
                (Some(0), Some(m)) => Ok(m),
                (Some(0), None) => Err(format!("{args:?}: exited 0, sent no pty: {out}")),
                (code, _) => Err(format!("{args:?}: status {code:?}: {out}")),
            };
        }
        if Instant::now() > deadline {
            return stop(&mut child, "not done within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Types `input` into the terminal, then reads it until `done` holds of all it printed (10 s).
fn converse(master: &mut File, input: &str, done: impl Fn(&str) -> bool) -> Result<String, String> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fd = master.as_raw_fd();
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
        );
    }
    master
        .write_all(input.as_bytes())
        .map_err(|e| format!("writing to the pty master: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => return Err(format!("the pty closed: {:?}", lossy(&seen))),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(format!("reading the pty: {e}: {:?}", lossy(&seen))),
        }
        if done(&lossy(&seen)) {
            return Ok(lossy(&seen));
        }
        if Instant::now() > deadline {
            return Err(format!("after 10 s the terminal shows {:?}", lossy(&seen)));
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn finish(c: &Case, id: &str, cgroups: &[PathBuf]) -> R {
    expect_ok(&c.rcrun(&["delete", "--force", id]), "delete --force")?;
    c.assert_gone(id, cgroups)
}

fn create_console(c: &Case) -> R {
    edit_config(&c.bundle, |d| {
        d["process"]["terminal"] = true.into();
        d["process"]["args"] = json!(["sh"]);
    });
    // Nobody would hold the terminal: refused, nothing left.
    let bad = format!("nosock-{}", c.name);
    let (code, out) = c.create(&bad, &[]);
    if code != Some(1) || !out.contains("--console-socket") || out.contains("panicked") {
        return Err(format!(
            "create with a terminal, no --console-socket: want status 1 naming it: {code:?}: {out}"
        ));
    }
    c.assert_gone(&bad, &[])?;

    let id = format!("tty-{}", c.name);
    let (listener, sock) = console_socket(c);
    let bundle = c.bundle.to_str().unwrap();
    let args = [
        "create",
        "--console-socket",
        sock.to_str().unwrap(),
        "-b",
        bundle,
        &id,
    ];
    let mut master = console_from(c, &listener, &args)?;
    let cgroups = c.cgroups(&id);
    if c.status(&id)?.0 != "created" {
        return Err(format!("after create: {:?}", c.status(&id)?));
    }
    expect_ok(&c.rcrun(&["start", &id]), "start")?;
    // $((6*7)) comes back as 42 only from a shell, not from the terminal's echo.
    converse(&mut master, "echo hi-from-pty-$((6*7))\n", |s| {
        s.contains("hi-from-pty-42")
    })?;
    finish(c, &id, &cgroups)
}

#[test]
fn create_sends_the_pty_master_over_the_console_socket() {
    each_mode("console-create", json!(["sh"]), None, create_console);
}

fn exec_console(c: &Case) -> R {
    let id = format!("xtty-{}", c.name);
    let (code, out) = c.create(&id, &[]);
    if code != Some(0) {
        return Err(format!("create: {code:?}: {out}"));
    }
    let cgroups = c.cgroups(&id);
    expect_ok(&c.rcrun(&["start", &id]), "start")?;
    c.wait_output("ready")?;
    let (listener, sock) = console_socket(c);
    let args = [
        "exec",
        "-t",
        "-d",
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
        "sh",
    ];
    let mut master = console_from(c, &listener, &args)?;
    converse(&mut master, "echo exec-pty-$((6*7)); tty\n", |s| {
        s.contains("exec-pty-42") && s.lines().any(|l| l.starts_with("/dev/pts/"))
    })?;
    finish(c, &id, &cgroups)
}

#[test]
fn exec_tty_through_the_console_socket() {
    each_mode(
        "console-exec",
        json!(["sh", "-c", "echo ready; exec sleep 300"]),
        Some(SIBLING_USERNS),
        exec_console,
    );
}

//! `--network slirp4netns`: a user-mode network for the container's own network namespace, as
//! podman gives a rootless container. rcrun starts slirp4netns(1) once the container's process
//! waits at its start gate (its namespaces exist, its command has not run), waits until it has
//! configured `tap0` (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3), publishes `-p` ports
//! through its API socket, and only then lets the command start. The helper dies with the
//! container: it reads `--exit-fd`, a pipe whose only write end rcrun holds, so it exits when
//! rcrun does, however rcrun ends (SIGKILL included), and rcrun also kills it at cleanup.
//!
//! As root rcrun has moved itself into the container's network namespace by then (NetSetup::
//! ParentWhileMounting): the helper goes back into the host's, whose descriptor rcrun kept, before
//! it execs.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The address slirp4netns gives the container, its gateway (the host) and its DNS forwarder.
pub const CONTAINER_ADDR: &str = "10.0.2.100";
pub const GATEWAY_ADDR: &str = "10.0.2.2";
pub const DNS_ADDR: &str = "10.0.2.3";

/// What `--network` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A namespace with only lo.
    None,
    /// The host's namespace.
    Host,
    /// A namespace connected by slirp4netns.
    Slirp4netns { allow_host_loopback: bool },
}

impl Network {
    /// `none`, `host`, `slirp4netns[:allow_host_loopback=true|false]` (podman's spelling).
    pub fn parse(s: &str) -> Result<Network> {
        let (mode, options) = s.split_once(':').unwrap_or((s, ""));
        let no_options = |n: Network| {
            if options.is_empty() {
                Ok(n)
            } else {
                bail!("--network {s}: {mode} takes no options")
            }
        };
        match mode {
            "none" => no_options(Network::None),
            "host" => no_options(Network::Host),
            "slirp4netns" => {
                let mut allow_host_loopback = false;
                for o in options.split(',').filter(|o| !o.is_empty()) {
                    match o.split_once('=') {
                        Some(("allow_host_loopback", v @ ("true" | "false"))) => {
                            allow_host_loopback = v == "true"
                        }
                        _ => bail!("--network {s}: unknown option {o:?} (slirp4netns takes allow_host_loopback=true|false)"),
                    }
                }
                Ok(Network::Slirp4netns {
                    allow_host_loopback,
                })
            }
            "bridge" | "default" => bail!("--network {s}: rcrun has no bridge network: --network slirp4netns gives the container a network of its own that reaches out, with ports published by -p"),
            _ => bail!("--network {s}: use none (the default: only lo), host, or slirp4netns[:allow_host_loopback=true]"),
        }
    }

    pub fn new_namespace(&self) -> bool {
        !matches!(self, Network::Host)
    }

    pub fn helper(&self) -> bool {
        matches!(self, Network::Slirp4netns { .. })
    }
}

/// One `-p [HOST_IP:]HOST_PORT:CTR_PORT[/tcp|udp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub spec: String,
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub udp: bool,
}

/// Parses `-p` as docker does (a host port is required: rcrun picks none itself).
pub fn parse_publish(spec: &str) -> Result<Publish> {
    let err = |why: &str| {
        anyhow::anyhow!(
            "-p {spec}: {why} (use [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80)"
        )
    };
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, false),
        Some((p, "udp")) => (p, true),
        Some((_, other)) => return Err(err(&format!("unknown protocol {other:?}"))),
        None => (spec, false),
    };
    let parts: Vec<&str> = ports.rsplitn(3, ':').collect();
    let (host_ip, host_port, container_port) = match parts.as_slice() {
        [c, h] => ("0.0.0.0", *h, *c),
        [c, h, ip] => (*ip, *h, *c),
        _ => return Err(err("a host port and a container port are needed")),
    };
    let port = |p: &str, which: &str| -> Result<u16> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(err(&format!(
                "{which} port {p:?} is not a number from 1 to 65535"
            ))),
        }
    };
    let host_ip = host_ip.trim_start_matches('[').trim_end_matches(']');
    if host_ip.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(err(&format!(
            "host address {host_ip:?} is not an IPv4 address"
        )));
    }
    Ok(Publish {
        spec: spec.to_string(),
        host_ip: host_ip.to_string(),
        host_port: port(host_port, "host")?,
        container_port: port(container_port, "container")?,
        udp: proto,
    })
}

/// The running helper: killed when dropped.
pub struct Helper {
    child: std::process::Child,
    /// Held open: the helper exits when it reads EOF here (rcrun gone).
    _exit_write: OwnedFd,
    api_dir: PathBuf,
    pub took: Duration,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.api_dir);
    }
}

/// The host's network namespace, kept before rcrun may leave it (as root it moves itself into
/// the container's while the child mounts).
pub fn host_namespace() -> Result<OwnedFd> {
    Ok(std::fs::File::open("/proc/self/ns/net")
        .context("open /proc/self/ns/net (the host's network namespace, for slirp4netns)")?
        .into())
}

/// Starts slirp4netns for the network namespace of `pid` (waiting at its start gate), waits
/// until `tap0` is configured, and publishes the ports.
pub fn start_slirp4netns(
    pid: i32,
    host_netns: &OwnedFd,
    allow_host_loopback: bool,
    ports: &[Publish],
    scratch_parent: &Path,
) -> Result<Helper> {
    let started = Instant::now();
    let (exit_read, exit_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let api_dir = scratch_parent.join(format!("net-{}-{pid}", std::process::id()));
    std::fs::create_dir_all(&api_dir).with_context(|| format!("mkdir {}", api_dir.display()))?;
    let api = api_dir.join("api.sock");
    let mut cmd = std::process::Command::new("slirp4netns");
    cmd.args(["--configure", "--mtu=65520"])
        .arg(format!("--exit-fd={}", exit_read.as_raw_fd()))
        .arg(format!("--ready-fd={}", ready_write.as_raw_fd()))
        .arg(format!("--api-socket={}", api.display()));
    if !allow_host_loopback {
        cmd.arg("--disable-host-loopback");
    }
    cmd.arg(pid.to_string())
        .arg("tap0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // Only when rcrun left it (as root): setns(2) needs CAP_SYS_ADMIN over the namespace, which a
    // plain user lacks even for the one they are in.
    let moved = {
        use std::os::unix::fs::MetadataExt;
        let here = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
        let host = nix::sys::stat::fstat(host_netns.as_fd())
            .map(|st| st.st_ino)
            .ok();
        here != host
    };
    let (exit_fd, ready_fd, netns_fd) = (
        exit_read.as_raw_fd(),
        ready_write.as_raw_fd(),
        moved.then(|| host_netns.as_raw_fd()),
    );
    // SAFETY: between fork and exec only async-signal-safe calls: fcntl, setns, prctl.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [exit_fd, ready_fd] {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Back into the host's network namespace.
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Dies with rcrun even before it reads --exit-fd.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    };
    let child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "--network slirp4netns: slirp4netns is not installed (Debian: apt-get install slirp4netns)"
        ),
        _ => anyhow::Error::new(e).context("start slirp4netns"),
    })?;
    drop(exit_read);
    drop(ready_write);
    let mut helper = Helper {
        child,
        _exit_write: exit_write,
        api_dir,
        took: Duration::ZERO,
    };
    // slirp4netns writes "1" to --ready-fd once tap0 is up; EOF means it failed.
    let mut ready = std::fs::File::from(ready_read);
    let mut byte = [0u8; 1];
    let configured = wait_readable(ready.as_fd(), Duration::from_secs(10))
        && matches!(ready.read(&mut byte), Ok(1));
    if !configured {
        let _ = helper.child.kill();
        let mut why = String::new();
        if let Some(mut e) = helper.child.stderr.take() {
            let _ = e.read_to_string(&mut why);
        }
        bail!(
            "slirp4netns did not configure the container's network within 10 s: {}",
            crate::printable(why.trim())
        );
    }
    for p in ports {
        add_hostfwd(&api, p)?;
    }
    helper.took = started.elapsed();
    Ok(helper)
}

fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return false,
        }
    }
}

/// slirp4netns's API (its `add_hostfwd` request): the host port bound in the host's network
/// namespace, forwarded to the container's address.
fn add_hostfwd(api: &Path, p: &Publish) -> Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(api).with_context(|| {
        format!(
            "-p {}: connect to slirp4netns's API {}",
            p.spec,
            api.display()
        )
    })?;
    let request = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": if p.udp { "udp" } else { "tcp" },
            "host_addr": p.host_ip,
            "host_port": p.host_port,
            "guest_addr": CONTAINER_ADDR,
            "guest_port": p.container_port,
        }
    });
    s.write_all(request.to_string().as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.read_to_string(&mut reply)
        .with_context(|| format!("-p {}: slirp4netns's answer", p.spec))?;
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
    if v.get("return").is_some() {
        return Ok(());
    }
    let desc = v["error"]["desc"].as_str().unwrap_or(reply.as_str());
    bail!(
        "-p {}: the host's {} port {}:{} cannot be published: it is taken or not yours to bind (slirp4netns: {})",
        p.spec,
        if p.udp { "UDP" } else { "TCP" },
        p.host_ip,
        p.host_port,
        crate::printable(desc)
    )
}

/// The container's /etc/resolv.conf: `--dns` servers, else slirp4netns's forwarder, else the
/// host's file (whose 127.0.0.x resolvers a new network namespace cannot reach: they are
/// replaced by nothing, as docker drops them).
pub fn resolv_conf(network: &Network, dns: &[String], host: &str) -> Result<String> {
    for d in dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            bail!("--dns {d}: not an IP address");
        }
    }
    let search: Vec<&str> = host
        .lines()
        .filter(|l| l.starts_with("search ") || l.starts_with("options "))
        .collect();
    let servers: Vec<String> = if !dns.is_empty() {
        dns.to_vec()
    } else if network.helper() {
        vec![DNS_ADDR.to_string()]
    } else {
        return Ok(host.to_string());
    };
    let mut out = String::new();
    for s in &search {
        out.push_str(s);
        out.push('\n');
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    Ok(out)
}

/// `--add-host NAME:IP` as /etc/hosts lines.
pub fn extra_hosts(specs: &[String]) -> Result<Vec<(String, String)>> {
    specs
        .iter()
        .map(|s| {
            let (name, ip) = s
                .split_once(':')
                .with_context(|| format!("--add-host {s}: use NAME:IP"))?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                bail!("--add-host {s}: {name:?} is not a host name");
            }
            if ip.parse::<std::net::IpAddr>().is_err() {
                bail!("--add-host {s}: {ip:?} is not an IP address");
            }
            Ok((name.to_string(), ip.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_takes_docker_s_syntax() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port, p.udp),
            ("0.0.0.0", 8080, 80, false)
        );
        let p = parse_publish("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port, p.udp),
            ("127.0.0.1", 5353, 53, true)
        );
        for (bad, says) in [
            ("80", "a host port and a container port are needed"),
            ("x:80", "host port \"x\""),
            ("8080:0", "container port \"0\""),
            ("8080:80/sctp", "unknown protocol \"sctp\""),
            ("host:8080:80", "host address \"host\""),
        ] {
            let e = parse_publish(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("-p {bad}: ")) && e.contains(says),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn network_modes_parse_as_podman_spells_them() {
        assert_eq!(Network::parse("none").unwrap(), Network::None);
        assert_eq!(
            Network::parse("slirp4netns:allow_host_loopback=true").unwrap(),
            Network::Slirp4netns {
                allow_host_loopback: true
            }
        );
        assert!(Network::parse("bridge").is_err());
        assert!(Network::parse("host:x").is_err());
        assert!(Network::parse("slirp4netns:mtu=1").is_err());
    }

    #[test]
    fn resolv_conf_names_the_forwarder_or_the_given_servers() {
        let host = "search example.org\nnameserver 127.0.0.53\n";
        let slirp = Network::Slirp4netns {
            allow_host_loopback: false,
        };
        assert_eq!(
            resolv_conf(&slirp, &[], host).unwrap(),
            "search example.org\nnameserver 10.0.2.3\n"
        );
        assert_eq!(
            resolv_conf(&Network::None, &["1.1.1.1".into()], host).unwrap(),
            "search example.org\nnameserver 1.1.1.1\n"
        );
        assert_eq!(resolv_conf(&Network::None, &[], host).unwrap(), host);
        assert!(resolv_conf(&Network::None, &["x".into()], host).is_err());
        assert_eq!(
            extra_hosts(&["db:10.0.0.5".into()]).unwrap(),
            vec![("db".to_string(), "10.0.0.5".to_string())]
        );
        assert!(extra_hosts(&["db".into()]).is_err());
    }
}

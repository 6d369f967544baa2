//! The container's network beyond `lo`: `--network pasta` or `--network slirp4netns`, the two
//! user-mode helpers podman uses for rootless containers. Either one is started by rcrun once the
//! container's process waits at its hooks point (its namespaces exist, its root is not yet
//! pivoted, its command has not run), configures the container's interface, publishes the `-p`
//! ports, and only then is the command let go. The helper dies with the container: rcrun kills it
//! at cleanup, and the kernel kills it when rcrun dies however it ends (PR_SET_PDEATHSIG; for
//! slirp4netns also its `--exit-fd`).
//!
//! As root rcrun has moved itself into the container's network namespace by then (NetSetup::
//! ParentWhileMounting): the helper goes back into the host's, whose descriptor rcrun kept, before
//! it execs, since it binds the published ports there.

mod pasta;
mod slirp4netns;

use anyhow::{bail, Context, Result};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use slirp4netns::{CONTAINER_ADDR, DNS_ADDR, GATEWAY_ADDR};

/// What `--network` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A namespace with only lo.
    None,
    /// The host's namespace.
    Host,
    /// A namespace connected by slirp4netns.
    Slirp4netns { allow_host_loopback: bool },
    /// A namespace connected by pasta (passt's namespace mode).
    Pasta { allow_host_loopback: bool },
}

impl Network {
    /// `none`, `host`, `pasta[:allow_host_loopback=true|false]`,
    /// `slirp4netns[:allow_host_loopback=true|false]` (podman's spelling; podman's `pasta:--map-gw`
    /// is accepted for `allow_host_loopback=true`).
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
            "slirp4netns" | "pasta" => {
                let mut allow_host_loopback = false;
                for o in options.split(',').filter(|o| !o.is_empty()) {
                    match (mode, o.split_once('=')) {
                        (_, Some(("allow_host_loopback", v @ ("true" | "false")))) => {
                            allow_host_loopback = v == "true"
                        }
                        ("pasta", None) if o == "--map-gw" => allow_host_loopback = true,
                        ("pasta", None) if o == "--no-map-gw" => allow_host_loopback = false,
                        _ => bail!("--network {s}: unknown option {o:?} ({mode} takes allow_host_loopback=true|false)"),
                    }
                }
                Ok(if mode == "pasta" {
                    Network::Pasta { allow_host_loopback }
                } else {
                    Network::Slirp4netns { allow_host_loopback }
                })
            }
            "bridge" | "default" => bail!("--network {s}: rcrun has no bridge network: --network pasta (or slirp4netns) gives the container a network of its own that reaches out, with ports published by -p"),
            _ => bail!("--network {s}: use none (the default: only lo), host, pasta[:allow_host_loopback=true] or slirp4netns[:allow_host_loopback=true]"),
        }
    }

    pub fn new_namespace(&self) -> bool {
        !matches!(self, Network::Host)
    }

    /// Whether a helper process connects the namespace.
    pub fn helper(&self) -> bool {
        self.dns_forwarder().is_some()
    }

    /// The address of the helper's DNS forwarder, which the container's /etc/resolv.conf names.
    pub fn dns_forwarder(&self) -> Option<&'static str> {
        match self {
            Network::None | Network::Host => None,
            Network::Slirp4netns { .. } => Some(DNS_ADDR),
            Network::Pasta { .. } => Some(pasta::DNS_FORWARD_ADDR),
        }
    }

    /// Starts the helper for the network namespace of `pid`, which waits at its hooks point, and
    /// publishes `ports`; `None` for a network without one. Its scratch (API socket, log) lies in
    /// `scratch_parent/net-<rcrun pid>-<pid>/`, which the store's sweep knows as rcrun's.
    pub fn start_helper(
        &self,
        pid: i32,
        host_netns: &OwnedFd,
        ports: &[Publish],
        scratch_parent: &Path,
    ) -> Result<Option<Helper>> {
        let scratch = scratch_parent.join(format!("net-{}-{pid}", std::process::id()));
        let started = Instant::now();
        let mut helper = match *self {
            Network::None | Network::Host => return Ok(None),
            Network::Slirp4netns {
                allow_host_loopback,
            } => slirp4netns::start(pid, host_netns, allow_host_loopback, ports, scratch)?,
            Network::Pasta {
                allow_host_loopback,
            } => pasta::start(pid, host_netns, allow_host_loopback, ports, scratch)?,
        };
        helper.took = started.elapsed();
        Ok(Some(helper))
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

/// A running helper: killed, reaped and its scratch removed when dropped.
pub struct Helper {
    child: std::process::Child,
    /// Descriptors held open for the helper's life (slirp4netns's --exit-fd write end).
    _held: Vec<OwnedFd>,
    scratch: PathBuf,
    /// The command line, for --explain.
    pub command_line: String,
    /// What the container got (addresses, forwarder), for --explain.
    pub gave: String,
    pub took: Duration,
}

impl Helper {
    /// The helper's program name.
    pub fn program(&self) -> &str {
        self.command_line.split(' ').next().unwrap_or("helper")
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The host's network namespace, kept before rcrun may leave it (as root it moves itself into
/// the container's while the child mounts).
pub fn host_namespace() -> Result<OwnedFd> {
    Ok(std::fs::File::open("/proc/self/ns/net")
        .context("open /proc/self/ns/net (the host's network namespace, for the network helper)")?
        .into())
}

/// The host's network namespace when rcrun has left it (as root), for the helper to go back to;
/// `None` when rcrun is still there: setns(2) needs CAP_SYS_ADMIN over the namespace, which a
/// plain user lacks even for the one they are in.
fn host_namespace_to_return_to(host_netns: &OwnedFd) -> Option<i32> {
    let here = crate::sys::process::is_own_namespace(host_netns.as_fd(), "net").unwrap_or(true);
    (!here).then(|| host_netns.as_raw_fd())
}

/// Spawns a prepared helper command, naming the package when the program is missing.
fn spawn(
    cmd: &mut std::process::Command,
    program: &str,
    package: &str,
) -> Result<std::process::Child> {
    cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "--network {program}: {program} is not installed (Debian: apt-get install {package})"
        ),
        _ => anyhow::Error::new(e).context(format!("start {program}")),
    })
}

/// The command line as a shell would take it, for --explain.
fn shown(cmd: &std::process::Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
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

/// The container's /etc/resolv.conf: `--dns` servers, else the helper's forwarder, else the
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
    } else if let Some(forwarder) = network.dns_forwarder() {
        vec![forwarder.to_string()]
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
        assert_eq!(
            Network::parse("pasta:--map-gw").unwrap(),
            Network::Pasta {
                allow_host_loopback: true
            }
        );
        assert_eq!(
            Network::parse("pasta").unwrap().dns_forwarder(),
            Some("169.254.1.1")
        );
        assert!(Network::parse("slirp4netns:--map-gw").is_err());
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

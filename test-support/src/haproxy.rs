//! HAProxy (Debian's `haproxy`) as the L4 balancer in front of replicas: TCP mode,
//! health checks on each replica's `/readyz`, and its runtime API for the servers'
//! states and session counts. The configuration written here is the one
//! `docs/OPERATIONS.md` shows. Returns errors: the scaling bench uses it too.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use keymux_client::testing::free_port;

use crate::replica::{Replica, pinned};

/// A server of the balancer: where clients' connections go, and where it checks.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    /// The replica's binary protocol address.
    pub addr: SocketAddr,
    /// Its admin port, where `/readyz` is checked.
    pub admin_port: u16,
}

impl From<&Replica> for Upstream {
    fn from(replica: &Replica) -> Self {
        Self { addr: replica.addr(), admin_port: replica.admin_port }
    }
}

/// One server's line of `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    /// Its backend: `keymux_replicas` for the first service, `keymux_replicas_1`...
    pub backend: String,
    /// `p0`, `p1`...: the upstreams in the order given.
    pub name: String,
    /// `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/2` (coming up), `MAINT`...
    pub status: String,
    /// Sessions open now.
    pub current: u64,
    /// Sessions since the start.
    pub total: u64,
}

/// A running `haproxy`, stopped when dropped.
pub struct Haproxy {
    child: Child,
    dir: PathBuf,
    /// Each service's frontend port on 127.0.0.1: the one address its clients are given.
    pub ports: Vec<u16>,
}

/// The configuration of the services `(port, upstreams)`: each a frontend on `port`
/// in front of its upstreams; the runtime API on `socket`. Checks every 200 ms, down
/// after 2 failures, up after 2 successes.
pub fn config(socket: &Path, services: &[(u16, &[Upstream])]) -> String {
    let mut text = global(socket);
    for (index, (port, upstreams)) in services.iter().enumerate() {
        let suffix = if index == 0 { String::new() } else { format!("_{index}") };
        text.push_str(&service(&suffix, *port, upstreams));
    }
    text
}

fn service(suffix: &str, port: u16, upstreams: &[Upstream]) -> String {
    let servers: String = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| format!("    server p{i} {} check port {}\n", u.addr, u.admin_port))
        .collect();
    format!(
        "
frontend keymux{suffix}
    bind 127.0.0.1:{port}
    default_backend keymux_replicas{suffix}

backend keymux_replicas{suffix}
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2
{servers}"
    )
}

fn global(socket: &Path) -> String {
    format!(
        "global
    stats socket {socket} mode 600 level admin
    maxconn 4096

defaults
    mode tcp
    timeout connect 1s
    timeout client 5m
    timeout server 5m
    # A connection refused by a replica that died before its checks noticed is tried
    # again, on another replica.
    retries 3
    option redispatch 1
",
        socket = socket.display()
    )
}

impl Haproxy {
    /// Starts `haproxy` in `dir` in front of `upstreams`, on the CPUs `cpus` lists or
    /// any, and waits until its frontend accepts connections.
    pub fn start(dir: &Path, upstreams: &[Upstream], cpus: Option<&str>) -> io::Result<Self> {
        Self::start_services(dir, &[upstreams], cpus)
    }

    /// [`Haproxy::start`] for several services, each with its own frontend (on
    /// [`Haproxy::addr_of`] its index) and upstreams: the binary protocol's and the Vault
    /// API's listeners of the same replicas, say.
    pub fn start_services(dir: &Path, services: &[&[Upstream]], cpus: Option<&str>) -> io::Result<Self> {
        let ports: Vec<u16> = services.iter().map(|_| free_port()).collect();
        let cfg = dir.join("haproxy.cfg");
        let listed: Vec<(u16, &[Upstream])> = ports.iter().copied().zip(services.iter().copied()).collect();
        std::fs::write(&cfg, config(&dir.join("haproxy.sock"), &listed))?;
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        let child = pinned("haproxy", cpus)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("haproxy (apt-get install haproxy): {e}")))?;
        let mut haproxy = Self { child, dir: dir.to_owned(), ports };
        let deadline = Instant::now() + Duration::from_secs(10);
        while haproxy.ports.iter().any(|&port| std::net::TcpStream::connect(("127.0.0.1", port)).is_err()) {
            if let Some(status) = haproxy.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
                return Err(io::Error::other(format!("haproxy exited ({status}):\n{log}")));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other("haproxy's frontend not up within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(haproxy)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The (first) service's frontend address.
    pub fn addr(&self) -> SocketAddr {
        self.addr_of(0)
    }

    /// Service `index`'s frontend address.
    pub fn addr_of(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[index]))
    }

    /// The servers' lines of `show stat`.
    pub fn servers(&self) -> io::Result<Vec<ServerStat>> {
        let mut socket = UnixStream::connect(self.dir.join("haproxy.sock"))?;
        socket.write_all(b"show stat\n")?;
        let mut csv = String::new();
        socket.read_to_string(&mut csv)?;
        let header: Vec<&str> =
            csv.lines().next().unwrap_or_default().trim_start_matches("# ").split(',').collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .ok_or_else(|| io::Error::other(format!("no {name} column")))
        };
        let (pxname, svname, status) = (column("pxname")?, column("svname")?, column("status")?);
        let (scur, stot) = (column("scur")?, column("stot")?);
        Ok(csv
            .lines()
            .skip(1)
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > stot && f[svname] != "FRONTEND" && f[svname] != "BACKEND")
            .map(|f| ServerStat {
                backend: f[pxname].to_owned(),
                name: f[svname].to_owned(),
                status: f[status].to_owned(),
                current: f[scur].parse().unwrap_or(0),
                total: f[stot].parse().unwrap_or(0),
            })
            .collect())
    }

    /// Waits up to `timeout` until `count` servers (of every backend) are `UP`; how long
    /// it took.
    pub fn wait_until_up(&self, count: usize, timeout: Duration) -> io::Result<Duration> {
        self.wait_for(timeout, |servers| servers.iter().filter(|s| s.status == "UP").count() == count)
    }

    /// Waits up to `timeout` until server `name` (of any backend) is no longer `UP`
    /// (`DOWN`, or `UP 1/2` on its way down); how long it took.
    pub fn wait_until_leaving(&self, name: &str, timeout: Duration) -> io::Result<Duration> {
        self.wait_for(timeout, |servers| servers.iter().any(|s| s.name == name && s.status != "UP"))
    }

    fn wait_for(&self, timeout: Duration, done: impl Fn(&[ServerStat]) -> bool) -> io::Result<Duration> {
        let started = Instant::now();
        loop {
            let servers = self.servers()?;
            if done(&servers) {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("haproxy's servers: {servers:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! `keymux serve` as its own process, the way operators run replicas: one config file,
//! fixed ports (a balancer names them), and signals: SIGTERM to drain, SIGKILL to die.
//! For the replica tests and the scaling bench; unlike the rest of this crate it returns
//! errors, because the benches' binaries use it too.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use keymux_client::testing::free_port;

/// A `keymux serve` child process on fixed loopback ports; killed when dropped.
pub struct Replica {
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    cpus: Option<String>,
    child: Option<Child>,
    /// The binary protocol's plain TCP port.
    pub port: u16,
    /// The admin port (`/metrics`, `/healthz`, `/readyz`).
    pub admin_port: u16,
}

impl Replica {
    /// Writes `dir/NAME.toml` (listeners on fresh loopback ports, then `config`: the
    /// `[backend]` table and whatever else, `server` more lines for `[server]`) and
    /// starts `binary` on it with `env` added, on the CPUs `cpus` lists (`taskset -c`)
    /// or any, waiting until `/readyz` answers 200.
    pub fn start(
        binary: &Path,
        dir: &Path,
        name: &str,
        server: &str,
        config: &str,
        env: &[(&str, &str)],
        cpus: Option<&str>,
    ) -> io::Result<Self> {
        let (port, admin_port) = (free_port(), free_port());
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config_text(port, admin_port, server, config))?;
        let mut replica = Self {
            binary: binary.to_owned(),
            config: path,
            log: dir.join(format!("{name}.log")),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            cpus: cpus.map(str::to_owned),
            child: None,
            port,
            admin_port,
        };
        replica.restart()?;
        Ok(replica)
    }

    /// Its config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// SIGHUP: the certificates are reloaded.
    pub fn reload(&self) -> io::Result<()> {
        let Some(child) = &self.child else { return Ok(()) };
        let status = Command::new("kill").args(["-HUP", &child.id().to_string()]).status()?;
        if !status.success() {
            return Err(io::Error::other(format!("kill -HUP failed: {status}")));
        }
        Ok(())
    }

    /// The plain TCP address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    /// Starts the process again on the same config and ports (after [`Replica::kill`]
    /// or a drain), waiting until it is ready.
    pub fn restart(&mut self) -> io::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = pinned(&self.binary, self.cpus.as_deref())
            .args(["serve", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.binary.display())))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(io::Error::other(format!(
                    "keymux exited ({status}): see {}",
                    self.log.display()
                )));
            }
            if matches!(http_get(self.admin_addr(), "/readyz"), Ok((200, _))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other(format!("keymux not ready within 30 s: see {}", self.log.display())))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the process dies at once, its connections with it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: the drain begins (not ready, then the listeners close, then in-flight
    /// requests finish).
    pub fn terminate(&self) -> io::Result<()> {
        let Some(child) = &self.child else { return Ok(()) };
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        if !status.success() {
            return Err(io::Error::other(format!("kill -TERM failed: {status}")));
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else { return Err(io::Error::other("not running")) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "keymux did not exit"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin endpoint's `/metrics` page.
    pub fn scrape(&self) -> io::Result<String> {
        Ok(http_get(self.admin_addr(), "/metrics")?.1)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command for `program`, run on the CPUs `cpus` lists (`taskset -c 0,2-3`), or on
/// any CPU when `None`.
pub fn pinned(program: impl AsRef<std::ffi::OsStr>, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A config file's text: `[server]` on plain TCP `port` (anonymous clients allowed)
/// with the `server` lines added, `[admin]` on `admin_port`, then `config` (the
/// `[backend]` table and whatever else).
pub fn config_text(port: u16, admin_port: u16, server: &str, config: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nallow_anonymous = true\n{server}\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n{config}"
    )
}

/// A minimal blocking HTTP/1.1 GET: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The `[backend]` table of a PKCS#11 token: `module`, the token by `label` or else by
/// `slot`, the PIN read from `pin_file`, `sessions` sessions.
pub fn pkcs11_backend(
    module: &Path,
    label: Option<&str>,
    slot: Option<u64>,
    pin_file: &Path,
    sessions: usize,
) -> String {
    let token = match (label, slot) {
        (Some(label), _) => format!("token_label = \"{label}\""),
        (None, Some(slot)) => format!("slot = {slot}"),
        (None, None) => String::new(),
    };
    format!(
        "[backend]\ntype = \"pkcs11\"\nmodule = \"{}\"\n{token}\npin = {{ file = \"{}\" }}\nsessions = {sessions}\n",
        module.display(),
        pin_file.display()
    )
}

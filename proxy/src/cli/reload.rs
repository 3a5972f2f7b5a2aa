//! `keymux reload`: asks a running proxy to reload its config file, through `POST
//! /reload` on its admin listener, with the operator token, both taken from the same
//! config file the proxy serves from.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::AdminConfig;
use crate::secrets::SecretSource;

/// Options of `keymux reload`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReloadArgs {
    /// The config file the proxy serves from: gives `admin.listen` and `operator.token`.
    #[arg(long, short = 'c', env = "KEYMUX_CONFIG")]
    pub config: PathBuf,
    /// The admin listener, when not `admin.listen` (a `--admin-listen` override).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
}

/// Sends the request and returns the proxy's answer (the changes made); an error when
/// the proxy refused the reload or could not be reached.
pub fn run(args: &ReloadArgs) -> anyhow::Result<String> {
    let (listen, token) = admin_and_token(&args.config)?;
    let Some(token) = token else {
        bail!(
            "{}: operator.token is not set, so the proxy has no /reload endpoint (send SIGHUP instead)",
            args.config.display()
        );
    };
    let token = token.resolve().context("operator.token")?;
    let admin = args.admin.unwrap_or(listen);
    let (status, body) = post(admin, "/reload", &token).with_context(|| format!("admin listener {admin}"))?;
    if status != 200 {
        bail!("reload refused (HTTP {status}): {}", body.trim());
    }
    Ok(body.trim().to_owned())
}

/// `admin.listen` and `operator.token` from the file, read without validating the
/// rest: the proxy checks the whole file, names a bad key and audits the refusal.
fn admin_and_token(path: &Path) -> anyhow::Result<(SocketAddr, Option<SecretSource>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let listen = match table.get("admin").and_then(|admin| admin.get("listen")) {
        Some(value) => value.clone().try_into().context("admin.listen")?,
        None => AdminConfig::default().listen,
    };
    let token = match table.get("operator").and_then(|operator| operator.get("token")) {
        Some(value) => Some(value.clone().try_into().context("operator.token")?),
        None => None,
    };
    Ok((listen, token))
}

/// One HTTP/1.1 POST with an empty body, `Connection: close`; the status and body.
/// (A whole HTTP client crate for one request to loopback would be most of this
/// binary's dependency tree again.)
fn post(addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("malformed HTTP status line")?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(body) } else { body.to_owned() }))
}

/// The body of a chunked response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

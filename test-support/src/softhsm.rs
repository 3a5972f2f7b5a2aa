//! The one place a SoftHSM2 configuration and token are made, for the tests'
//! token ([`crate::pkcs11`]) and the comparison bench's.
//!
//! SoftHSM2 finds its configuration through `SOFTHSM2_CONF` and sees only the tokens
//! that exist when a process initialises the module, so the token is made first, by
//! `softhsm2-util`, and the module loaded afterwards.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

/// The SoftHSM2 module Debian installs.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Writes a SoftHSM2 configuration at `conf` whose token directory is `tokens/` beside
/// it, emptied first: a fresh configuration holds no tokens.
pub fn fresh_config(conf: &Path) -> io::Result<()> {
    let tokens = conf.parent().unwrap_or(Path::new(".")).join("tokens");
    match std::fs::remove_dir_all(&tokens) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    std::fs::create_dir_all(&tokens)?;
    std::fs::write(
        conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
}

/// Initialises a new token labelled `label` in the first free slot of the configuration
/// at `conf`, with security officer PIN `so_pin` and user PIN `pin`.
pub fn init_token(conf: &Path, label: &str, so_pin: &str, pin: &str) -> io::Result<()> {
    let status = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin])
        .env("SOFTHSM2_CONF", conf)
        .stdout(Stdio::null())
        .status()
        .map_err(|error| {
            io::Error::new(error.kind(), format!("softhsm2-util (apt-get install softhsm2): {error}"))
        })?;
    if !status.success() {
        return Err(io::Error::other(format!("softhsm2-util --init-token failed: {status}")));
    }
    Ok(())
}

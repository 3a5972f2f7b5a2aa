"""Shared fixtures for the Python tests: a real `keymux serve` process per test.

The tests here use independent client stacks (hvac, grpcio, curl...) against the
keymux binary that `cargo build` made; scripts/test sets KEYMUX_BIN to it.
"""

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def keymux_bin() -> str:
    """The keymux binary under test (KEYMUX_BIN, else the debug build)."""
    return os.environ.get("KEYMUX_BIN", str(ROOT / "target" / "debug" / "keymux"))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Keymux:
    """One running `keymux serve`, its working directory and its ports.

    `config` is the TOML text after the [server], [admin] and [backend] tables this
    class writes (soft keystore, created on first start, fast KDF for tests), `server`
    more lines for its [server] table; extra ports (a front end's listener): ask
    `free_port()` and format the text yourself.
    """

    def __init__(self, workdir: Path, config: str = "", env: dict | None = None, server: str = ""):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.admin_port = free_port()
        self.env = dict(os.environ, KEYMUX_SOFT_PASSPHRASE="python-tests", **(env or {}))
        self.config_path = workdir / "keymux.toml"
        self.config_path.write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
allow_anonymous = true
{server}

[admin]
listen = "127.0.0.1:{self.admin_port}"

[backend]
type = "soft"
data_dir = "{workdir / 'data'}"
passphrase = {{ env = "KEYMUX_SOFT_PASSPHRASE" }}
create_if_missing = true
kdf_memory_kib = 8192
kdf_passes = 1
"""
            + config
        )
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "keymux.log"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs `keymux ARGS --config <this config>` (the key admin CLI, for example)."""
        return subprocess.run(
            [keymux_bin(), *args, "--config", str(self.config_path)],
            env=self.env, cwd=self.workdir, capture_output=True, text=True, check=check,
        )

    def start(self) -> "Keymux":
        """Starts the proxy and waits until /healthz answers 200."""
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [keymux_bin(), "serve", "--config", str(self.config_path)],
            env=self.env, cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"keymux exited early:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"keymux not healthy within 30 s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        """Stops the proxy (SIGTERM, then SIGKILL after 10 s)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self.log.close()


@pytest.fixture
def keymux(tmp_path):
    """A factory: `keymux(config_text, env, server=...)` starts a proxy, stopped after the test."""
    started = []

    def start(config: str = "", env: dict | None = None, server: str = "") -> Keymux:
        proxy = Keymux(tmp_path / f"keymux{len(started)}", config, env, server)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()

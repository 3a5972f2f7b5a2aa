"""The Kubernetes KMS v2 plugin, checked by an independent gRPC stack (grpcio) with stubs
that grpcio-tools generates here from the same proxy/proto/kubernetes_kms_v2.proto.

kube-apiserver itself is not run: it needs etcd and a cluster's worth of set-up, and it
calls exactly these three methods over this socket, with this client's wire format.
"""

import importlib
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest
from grpc_tools import protoc

from conftest import ROOT

PROTO = ROOT / "proxy" / "proto" / "kubernetes_kms_v2.proto"
ANNOTATION = "key-version.keymux.io"


@pytest.fixture(scope="session")
def kms(tmp_path_factory):
    """The generated modules: `kms.pb2` (messages) and `kms.grpc` (the stub)."""
    out = tmp_path_factory.mktemp("kms_stubs")
    status = protoc.main([
        "grpc_tools.protoc", f"-I{PROTO.parent}", f"--python_out={out}",
        f"--grpc_python_out={out}", str(PROTO),
    ])
    assert status == 0, "grpcio-tools could not compile the .proto"
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("kubernetes_kms_v2_pb2")
        pb2_grpc = importlib.import_module("kubernetes_kms_v2_pb2_grpc")
    finally:
        sys.path.remove(str(out))

    class Kms:
        pass

    Kms.pb2, Kms.grpc = pb2, pb2_grpc
    return Kms


class Plugin:
    """A proxy serving the plugin socket, and a stub connected to it."""

    def __init__(self, proxy, socket_path: Path, kms):
        self.proxy, self.socket, self.pb2 = proxy, socket_path, kms.pb2
        # grpc-go, so kube-apiserver, sends `:authority: localhost` on a Unix socket;
        # grpc-core would send the socket path, which the HTTP/2 server (h2) refuses as
        # a malformed authority. Say what the API server says.
        self.channel = grpc.insecure_channel(
            f"unix:{socket_path}", options=[("grpc.default_authority", "localhost")])
        self.stub = kms.grpc.KeyManagementServiceStub(self.channel)

    def status(self):
        return self.stub.Status(self.pb2.StatusRequest(), timeout=10)

    def encrypt(self, plaintext: bytes, uid: str = "uid-1"):
        return self.stub.Encrypt(self.pb2.EncryptRequest(plaintext=plaintext, uid=uid), timeout=10)

    def decrypt(self, encrypted, annotations=None, key_id=None):
        request = self.pb2.DecryptRequest(
            ciphertext=encrypted.ciphertext, uid="uid-2",
            key_id=encrypted.key_id if key_id is None else key_id,
            annotations=dict(encrypted.annotations) if annotations is None else annotations,
        )
        return self.stub.Decrypt(request, timeout=10).plaintext

    def wait_for(self, check, what: str, seconds: float = 15):
        """Polls `check()` until it is true (the proxy re-reads keys every 200 ms)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"not within {seconds} s: {what}")


@pytest.fixture
def plugin(keymux, kms):
    """A factory: `plugin(extra_config)` starts a proxy with the plugin on a socket."""
    channels = []

    def start(extra: str = "") -> Plugin:
        # A short path: Unix socket paths have a 108-byte limit that pytest's tmp_path can pass.
        socket_path = Path(tempfile.mkdtemp(prefix="kmx")) / "kms.sock"
        proxy = keymux(f"""
[keys]
refresh_interval = "200ms"

[kubernetes_kms]
socket = "{socket_path}"
key = "default"
status_cache_ttl = "100ms"
{extra}""")
        started = Plugin(proxy, socket_path, kms)
        channels.append(started.channel)
        return started

    yield start
    for channel in channels:
        channel.close()


def test_status_names_the_api_version_health_and_current_key_version(plugin):
    p = plugin()
    status = p.status()
    assert (status.version, status.healthz, status.key_id) == ("v2", "ok", "keymux:default:v1")


def test_the_socket_is_private_to_the_proxy_user(plugin):
    p = plugin()
    mode = os.stat(p.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_a_configured_group_may_connect(plugin):
    gid = os.getgid()
    p = plugin(f"socket_group = {gid}\n")
    info = os.stat(p.socket)
    assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == gid
    assert p.status().healthz == "ok"


def test_encrypt_then_decrypt_round_trips_with_annotations(plugin):
    p = plugin()
    for plaintext in [os.urandom(32), b"x", os.urandom(1024)]:
        encrypted = p.encrypt(plaintext)
        assert encrypted.key_id == "keymux:default:v1"
        assert dict(encrypted.annotations) == {ANNOTATION: b"1:default"}
        assert len(encrypted.ciphertext) < 1024 or len(plaintext) == 1024
        assert p.decrypt(encrypted) == plaintext
        # The key id the request names does not choose the key: the ciphertext does.
        assert p.decrypt(encrypted, key_id="some-other-key-id") == plaintext
    assert len(p.encrypt(os.urandom(32)).ciphertext) < 1024, "a DEK seed's ciphertext stays under the 1 kB limit"


def test_decrypt_refuses_foreign_annotations_and_tampered_ciphertexts(plugin):
    p = plugin()
    encrypted = p.encrypt(os.urandom(32))
    for annotations in [{}, {ANNOTATION: b"2:default"}, {ANNOTATION: b"1:other"},
                        {ANNOTATION: b"01:default"}, {ANNOTATION: b"1:default", "extra.example.com": b"x"}]:
        with pytest.raises(grpc.RpcError) as refused:
            p.decrypt(encrypted, annotations=annotations)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, annotations
    tampered = bytearray(encrypted.ciphertext)
    tampered[-1] ^= 1
    forged = p.pb2.EncryptResponse(ciphertext=bytes(tampered), key_id=encrypted.key_id,
                                   annotations=encrypted.annotations)
    with pytest.raises(grpc.RpcError) as refused:
        p.decrypt(forged)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    garbage = p.pb2.EncryptResponse(ciphertext=b"not a keymux blob", annotations=encrypted.annotations)
    with pytest.raises(grpc.RpcError) as refused:
        p.decrypt(garbage)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rotation_changes_the_key_id_and_old_ciphertexts_still_decrypt(plugin):
    p = plugin()
    old_plaintext = os.urandom(32)
    old = p.encrypt(old_plaintext)
    assert old.key_id == "keymux:default:v1"
    p.proxy.cli("key", "rotate", "default")
    p.wait_for(lambda: p.status().key_id == "keymux:default:v2", "Status names version 2")
    new = p.encrypt(b"new")
    assert new.key_id == "keymux:default:v2"
    assert dict(new.annotations) == {ANNOTATION: b"2:default"}
    assert p.decrypt(old) == old_plaintext
    assert p.decrypt(new) == b"new"


def test_a_disabled_version_is_refused(plugin):
    p = plugin()
    old = p.encrypt(b"secret under v1")
    p.proxy.cli("key", "rotate", "default")
    p.wait_for(lambda: p.status().key_id == "keymux:default:v2", "Status names version 2")
    p.proxy.cli("key", "disable", "default", "--version", "1")

    def refused():
        try:
            p.decrypt(old)
            return False
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
            return True

    p.wait_for(refused, "decrypting a version 1 ciphertext is refused")
    assert p.decrypt(p.encrypt(b"v2")) == b"v2", "the current version goes on working"


def test_the_acl_applies_to_the_peer_uid(plugin):
    uid = os.getuid()
    p = plugin(f"""
[[acl]]
uid = {uid + 1}
ops = ["wrap", "unwrap"]
keys = ["default"]
""")
    with pytest.raises(grpc.RpcError) as refused:
        p.encrypt(b"x")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert p.status().healthz != "ok", "Status probes with the caller's own permissions"

    allowed = plugin(f"""
[[acl]]
uid = {uid}
ops = ["wrap", "unwrap"]
keys = ["default"]
""")
    assert allowed.status().healthz == "ok"
    assert allowed.decrypt(allowed.encrypt(b"y")) == b"y"


def test_a_burst_of_10000_secrets(plugin):
    """Every call in flight at once on one channel, as an API server re-encrypting all
    Secrets would: all answered, none lost or mixed up."""
    p = plugin()
    plaintexts = [os.urandom(32) for _ in range(10_000)]
    encrypts = [p.stub.Encrypt.future(p.pb2.EncryptRequest(plaintext=x, uid=str(i)), timeout=120)
                for i, x in enumerate(plaintexts)]
    encrypted = [future.result() for future in encrypts]
    assert {e.key_id for e in encrypted} == {"keymux:default:v1"}
    decrypts = [p.stub.Decrypt.future(p.pb2.DecryptRequest(ciphertext=e.ciphertext, key_id=e.key_id,
                                                           annotations=dict(e.annotations)), timeout=120)
                for e in encrypted]
    assert [future.result().plaintext for future in decrypts] == plaintexts

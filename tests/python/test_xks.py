"""The AWS KMS External Key Store (XKS) proxy API, driven by curl's own SigV4 signer
(`curl --aws-sigv4`, as the XKS specification's Appendix D does), so the signature is
checked against an independent implementation.

AWS KMS itself cannot call a proxy on a test machine; curl sends the same requests it
would: the specification's JSON, signed for service `kms-xks-proxy`.
"""

import base64
import hashlib
import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import free_port

PREFIX = "example/uri/path/prefix"
REGION = "us-east-1"
STORES = {
    # name: (access key id, secret access key)
    "main": ("AKIAI2SFODNN7EXAMPLE2345", "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE"),
    "enc-only": ("ENCRYPTONLYACCESSKEY2345", "enc0nly+secret/for/the/xks/tests/only/0000000"),
    "dec-only": ("DECRYPTONLYACCESSKEY2345", "dec0nly+secret/for/the/xks/tests/only/0000000"),
    "neither": ("NEITHERACCESSKEYIDXX2345", "neither+secret/for/the/xks/tests/only/000000"),
}
METADATA = {
    "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
    "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "kmsOperation": "Encrypt",
    "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Xks:
    """A proxy serving the XKS API, and curl calls to it."""

    def __init__(self, proxy, port: int, scheme: str = "http", curl_args=()):
        self.proxy = proxy
        self.base = f"{scheme}://localhost:{port}/{PREFIX}/kms/xks/v1"
        self.curl_args = list(curl_args)

    def call(self, path: str, body, store: str = "main", region: str = REGION, secret: str | None = None,
             method: str = "POST", extra_headers=()):
        """(HTTP status, JSON body or None) of one curl --aws-sigv4 request."""
        access_key, store_secret = STORES[store]
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        command = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, *self.curl_args,
                   "--aws-sigv4", f"aws:amz:{region}:kms-xks-proxy",
                   "--user", f"{access_key}:{secret or store_secret}",
                   "-H", "Content-Type: application/json"]
        for header in extra_headers:
            command += ["-H", header]
        if method == "POST":
            command += ["--data-binary", "@-"]
        command.append(f"{self.base}/{path}")
        out = subprocess.run(command, input=data if isinstance(data, bytes) else data.encode(),
                             capture_output=True, check=True).stdout.decode()
        text, _, status = out.rpartition("\n")
        return int(status), (json.loads(text) if text.strip() else None)

    def error(self, path, body, **kwargs):
        """(status, errorName) of a call that must fail."""
        status, answer = self.call(path, body, **kwargs)
        assert status >= 400, answer
        return status, answer["errorName"]

    def encrypt(self, key: str, plaintext: bytes, aad: bytes | None = None, cdiv=False, store="main"):
        body = {"requestMetadata": METADATA, "plaintext": b64(plaintext), "encryptionAlgorithm": "AES_GCM"}
        if aad is not None:
            body["additionalAuthenticatedData"] = b64(aad)
        if cdiv:
            body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
        return self.call(f"keys/{key}/encrypt", body, store=store)

    def decrypt_body(self, encrypted: dict, aad: bytes | None = None, **changes):
        body = {"requestMetadata": dict(METADATA, kmsOperation="Decrypt"), "encryptionAlgorithm": "AES_GCM",
                **{k: encrypted[k] for k in ("ciphertext", "ciphertextMetadata", "initializationVector",
                                             "authenticationTag")}}
        if aad is not None:
            body["additionalAuthenticatedData"] = b64(aad)
        body.update(changes)
        return {k: v for k, v in body.items() if v is not None}

    def decrypt(self, key: str, encrypted: dict, aad: bytes | None = None, store="main", **changes):
        return self.call(f"keys/{key}/decrypt", self.decrypt_body(encrypted, aad, **changes), store=store)

    def wait_for(self, check, what: str, seconds: float = 15):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"not within {seconds} s: {what}")


def start_xks(keymux, extra: str = "", scheme: str = "http", curl_args=(), xks_extra: str = "") -> Xks:
    """A proxy with the XKS API: store `main` may do everything, the others as named.
    `extra` goes before `[xks]` (a `[tls]` table), `xks_extra` into it."""
    port = free_port()
    credentials = "".join(
        f"""
[[xks.credentials]]
name = "{name}"
access_key_id = {{ env = "XKS_AK_{i}" }}
secret_access_key = {{ env = "XKS_SK_{i}" }}
""" for i, name in enumerate(STORES))
    env = {}
    for i, (access_key, secret) in enumerate(STORES.values()):
        env[f"XKS_AK_{i}"], env[f"XKS_SK_{i}"] = access_key, secret
    proxy = keymux(f"""{extra}
[keys]
refresh_interval = "200ms"

[[acl]]
any = true
ops = ["wrap", "unwrap"]
keys = ["*"]

[[acl]]
token = "xks:main"
ops = ["encrypt", "decrypt"]
keys = ["*"]

[[acl]]
token = "xks:enc-only"
ops = ["encrypt"]
keys = ["*"]

[[acl]]
token = "xks:dec-only"
ops = ["decrypt"]
keys = ["*"]

[xks]
listen = "127.0.0.1:{port}"
uri_prefix = "{PREFIX}"
region = "{REGION}"
health_key = "default"
{xks_extra}
{credentials}""", env)
    return Xks(proxy, port, scheme, curl_args)


@pytest.fixture
def xks(keymux):
    """The XKS API on plain HTTP."""
    return start_xks(keymux)


def test_health(xks):
    status, health = xks.call("health", {"requestMetadata": {"kmsRequestId": "1", "kmsOperation": "KmsHealthCheck"}})
    assert status == 200
    assert health["xksProxyFleetSize"] == 1 and health["xksProxyVendor"] == "keymux"
    assert health["xksProxyModel"].startswith("keymux ") and health["ekmVendor"] == "keymux"
    [detail] = health["ekmFleetDetails"]
    assert detail["healthStatus"] == "ACTIVE" and detail["id"] and detail["model"]


def test_metadata_and_key_usage_by_store(xks):
    body = {"requestMetadata": dict(METADATA, kmsOperation="DescribeKey")}
    expected = {"main": ["ENCRYPT", "DECRYPT"], "enc-only": ["ENCRYPT"], "dec-only": ["DECRYPT"], "neither": []}
    for store, usage in expected.items():
        status, answer = xks.call("keys/default/metadata", body, store=store)
        assert status == 200
        assert answer == {"keySpec": "AES_256", "keyUsage": usage, "keyStatus": "ENABLED"}, store
    assert xks.error("keys/nosuchkey/metadata", body) == (404, "KeyNotFoundException")
    assert xks.error("keys/bad~key/metadata", body) == (400, "ValidationException")
    assert xks.error("keys/default/metadata", {"requestMetadata": {"kmsOperation": "x"}}) == (400, "ValidationException")


def test_encrypt_decrypt_round_trips_up_to_4300_bytes(xks):
    for size, aad in [(1, None), (32, b"project=nile,department=marketing"), (4300, os.urandom(8192)), (4300, None)]:
        plaintext = os.urandom(size)
        status, encrypted = xks.encrypt("default", plaintext, aad, cdiv=True)
        assert status == 200, encrypted
        assert len(base64.b64decode(encrypted["ciphertext"])) == size
        assert len(base64.b64decode(encrypted["initializationVector"])) == 12
        assert len(base64.b64decode(encrypted["authenticationTag"])) == 16
        metadata = base64.b64decode(encrypted["ciphertextMetadata"])
        assert len(metadata) <= 20 and metadata == b"\x01\x00\x00\x00\x01", "format 1, version 1"
        parts = [aad or b"", metadata] + [base64.b64decode(encrypted[k]) for k in
                                          ("initializationVector", "ciphertext", "authenticationTag")]
        assert encrypted["ciphertextDataIntegrityValue"] == b64(hashlib.sha256(b"".join(parts)).digest())
        status, decrypted = xks.decrypt("default", encrypted, aad)
        assert status == 200 and base64.b64decode(decrypted["plaintext"]) == plaintext
    status, plain = xks.encrypt("default", b"no integrity value asked")
    assert status == 200 and "ciphertextDataIntegrityValue" not in plain
    assert xks.encrypt("default", os.urandom(4301))[1]["errorName"] == "UnsupportedOperationException"


def test_decrypt_refuses_what_does_not_verify(xks):
    status, encrypted = xks.encrypt("default", b"secret", b"aad")
    assert status == 200
    tag = bytearray(base64.b64decode(encrypted["authenticationTag"]))
    tag[0] ^= 1
    metadata = bytearray(base64.b64decode(encrypted["ciphertextMetadata"]))
    metadata[-1] ^= 3
    cases = {
        "wrong aad": ({}, b"other", "InvalidCiphertextException"),
        "no aad": ({}, None, "InvalidCiphertextException"),
        "tampered tag": ({"authenticationTag": b64(bytes(tag))}, b"aad", "InvalidCiphertextException"),
        "metadata changed": ({"ciphertextMetadata": b64(bytes(metadata))}, b"aad", "InvalidCiphertextException"),
        "metadata missing": ({"ciphertextMetadata": None}, b"aad", "InvalidCiphertextException"),
        "16-byte iv": ({"initializationVector": b64(bytes(16))}, b"aad", "InvalidCiphertextException"),
        "5-byte iv": ({"initializationVector": b64(bytes(5))}, b"aad", "ValidationException"),
        "short tag": ({"authenticationTag": b64(bytes(8))}, b"aad", "ValidationException"),
        "not base64": ({"ciphertext": "%%%"}, b"aad", "ValidationException"),
        "algorithm": ({"encryptionAlgorithm": "AES_CBC"}, b"aad", "ValidationException"),
    }
    for what, (changes, aad, name) in cases.items():
        status, answer = xks.decrypt("default", encrypted, aad, **changes)
        assert answer["errorName"] == name, what
        assert status == 400, what
    assert xks.error("keys/default/encrypt", b"{not json") == (400, "ValidationException")
    assert xks.error("keys/default/encrypt", {"requestMetadata": METADATA}) == (400, "ValidationException")
    body = {"requestMetadata": METADATA, "plaintext": b64(b"x"), "encryptionAlgorithm": "AES_GCM",
            "ciphertextDataIntegrityValueAlgorithm": "MD5"}
    assert xks.error("keys/default/encrypt", body) == (400, "ValidationException")
    assert xks.encrypt("nosuchkey", b"x")[1]["errorName"] == "KeyNotFoundException"


def test_key_usage_is_enforced(xks):
    status, encrypted = xks.encrypt("default", b"x", store="enc-only")
    assert status == 200
    assert xks.decrypt("default", encrypted, store="enc-only") == (400, {
        "errorName": "InvalidKeyUsageException", "errorMessage": "forbidden"})
    assert xks.decrypt("default", encrypted, store="dec-only")[0] == 200
    assert xks.encrypt("default", b"x", store="dec-only")[1]["errorName"] == "InvalidKeyUsageException"
    assert xks.encrypt("default", b"x", store="neither")[1]["errorName"] == "InvalidKeyUsageException"


def test_signature_failures(xks):
    health = {"requestMetadata": {"kmsRequestId": "1", "kmsOperation": "KmsHealthCheck"}}
    assert xks.error("health", health, secret="wrong" + STORES["main"][1][5:]) == (401, "AuthenticationFailedException")
    assert xks.error("health", health, region="eu-west-1") == (401, "AuthenticationFailedException")
    status, _ = xks.call("health", health, extra_headers=["X-Unsigned-Header: fine"])
    assert status == 200, "headers outside SignedHeaders do not matter"
    unsigned = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", "--data", json.dumps(health),
                               f"{xks.base}/health"], capture_output=True, check=True).stdout.decode()
    text, _, code = unsigned.rpartition("\n")
    assert (int(code), json.loads(text)["errorName"]) == (401, "AuthenticationFailedException")
    stranger = dict(STORES, stranger=("STRANGERACCESSKEYID23456", "x" * 44))
    STORES.update(stranger)
    try:
        assert xks.error("health", health, store="stranger") == (401, "AuthenticationFailedException")
    finally:
        del STORES["stranger"]


def test_replayed_and_skewed_requests_are_refused(xks):
    """curl signs with an X-Amz-Date it is given: a request signed 6 minutes ago (a
    replay from outside the window) or 6 minutes ahead fails; 1 minute is within it."""
    health = {"requestMetadata": {"kmsRequestId": "1", "kmsOperation": "KmsHealthCheck"}}
    now = datetime.now(timezone.utc)
    for offset, expected in [(-360, 401), (360, 401), (-60, 200)]:
        stamp = (now + timedelta(seconds=offset)).strftime("%Y%m%dT%H%M%SZ")
        status, answer = xks.call("health", health, extra_headers=[f"X-Amz-Date: {stamp}"])
        assert status == expected, (offset, answer)
        if expected == 401:
            assert answer["errorName"] == "AuthenticationFailedException"


def test_paths_and_methods(xks):
    assert xks.error("keys/default", {}) == (404, "InvalidUriPathException")
    assert xks.error("nope", {}) == (404, "InvalidUriPathException")
    assert xks.call("health", b"", method="GET")[0] == 405
    assert xks.call("keys/default/encrypt", b"", method="GET")[0] == 405


def test_rotation_and_disabled_versions(xks):
    status, old = xks.encrypt("default", b"under v1")
    assert status == 200
    xks.proxy.cli("key", "rotate", "default")
    xks.wait_for(lambda: base64.b64decode(xks.encrypt("default", b"x")[1]["ciphertextMetadata"])[-1] == 2,
                 "new encrypts name version 2")
    assert base64.b64decode(xks.decrypt("default", old)[1]["plaintext"]) == b"under v1"
    xks.proxy.cli("key", "disable", "default", "--version", "1")
    xks.wait_for(lambda: xks.decrypt("default", old)[0] == 400, "version 1 refused")
    assert xks.decrypt("default", old)[1]["errorName"] == "InvalidStateException"
    xks.proxy.cli("key", "disable", "default", "--version", "2")
    body = {"requestMetadata": dict(METADATA, kmsOperation="DescribeKey")}
    xks.wait_for(lambda: xks.call("keys/default/metadata", body)[1]["keyStatus"] == "DISABLED", "key disabled")
    assert xks.encrypt("default", b"x")[1]["errorName"] == "InvalidStateException"


def make_pki(directory):
    """A CA, a server certificate for localhost and two client certificates (AWS KMS's
    CN, and another), made by the openssl command line."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=keymux test CA", "-days", "2")
    for name, cn, usage in [("server", "localhost", "serverAuth"),
                            ("kms", "cks.kms.us-east-1.amazonaws.com", "clientAuth"),
                            ("other", "someone-else", "clientAuth")]:
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        (directory / f"{name}.ext").write_text(
            f"subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage={usage}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return directory


HEALTH = {"requestMetadata": {"kmsRequestId": "1", "kmsOperation": "KmsHealthCheck"}}


def tls_version(xks, *flags):
    """The TLS version curl negotiated for a signed health request, and the status."""
    access_key, secret = STORES["main"]
    out = subprocess.run(["curl", "-sv", "-o", "/dev/null", "-w", "%{http_code}", *xks.curl_args, *flags,
                          "--aws-sigv4", f"aws:amz:{REGION}:kms-xks-proxy", "--user", f"{access_key}:{secret}",
                          "-X", "POST", "--data", json.dumps(HEALTH), f"{xks.base}/health"],
                         capture_output=True, text=True, check=True)
    used = [line for line in out.stderr.splitlines() if "SSL connection using" in line]
    return out.stdout, used[0] if used else out.stderr[-500:]


def test_https_with_tls_1_3_and_1_2(keymux, tmp_path):
    pki = make_pki(tmp_path)
    xks = start_xks(keymux, f"""
[tls]
cert = "{pki / 'server.pem'}"
key = "{pki / 'server.key'}"
""", scheme="https", curl_args=["--cacert", str(pki / "ca.pem")], xks_extra="""
[xks.http]
tls = true
allow_tls12 = true
""")
    status, used = tls_version(xks, "--tlsv1.3")
    assert status == "200" and "TLSv1.3" in used, used
    status, used = tls_version(xks, "--tlsv1.2", "--tls-max", "1.2")
    assert status == "200" and "TLSv1.2" in used, used
    status, encrypted = xks.encrypt("default", b"over https")
    assert status == 200 and base64.b64decode(xks.decrypt("default", encrypted)[1]["plaintext"]) == b"over https"


def test_mutual_tls_and_the_client_certificates_cn(keymux, tmp_path):
    pki = make_pki(tmp_path)
    tls = f"""
[tls]
cert = "{pki / 'server.pem'}"
key = "{pki / 'server.key'}"
client_ca = "{pki / 'ca.pem'}"
"""
    xks_extra = """client_cn = "cks.kms.us-east-1.amazonaws.com"
[xks.http]
tls = true
allow_tls12 = true
client_auth = "required"
"""
    ca = ["--cacert", str(pki / "ca.pem")]
    kms = start_xks(keymux, tls, "https", ca + ["--cert", str(pki / "kms.pem"), "--key", str(pki / "kms.key")],
                    xks_extra)
    assert kms.call("health", HEALTH)[0] == 200
    other = Xks(kms.proxy, int(kms.base.split(":")[2].split("/")[0]), "https",
                ca + ["--cert", str(pki / "other.pem"), "--key", str(pki / "other.key")])
    assert other.error("health", HEALTH) == (401, "AuthenticationFailedException")
    anonymous = Xks(kms.proxy, int(kms.base.split(":")[2].split("/")[0]), "https", ca)
    with pytest.raises(subprocess.CalledProcessError):
        anonymous.call("health", HEALTH)  # no client certificate: the handshake fails

"""The operator's surface on the real binary: config reload by SIGHUP, by `keymux
reload` (POST /reload on the admin listener, with the operator token) and by the file
watch; a bad file or a restart-only change keeps the old config and names the key;
every reload is audited."""

import json
import signal
import time
import urllib.error
import urllib.request

import pytest

TOKEN = "operator-test-token"


def operator_config(tmp: str, watch: str = "0s") -> str:
    return f"""
[audit]
path = "{tmp}/audit.jsonl"

[operator]
token = {{ env = "KEYMUX_OPERATOR_TOKEN" }}
watch_interval = "{watch}"
"""


def reload_records(proxy) -> list[dict]:
    """The audit log's config reload records, applied or refused."""
    path = proxy.workdir / "audit.jsonl"
    records = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "config_reload" in json.dumps(record):
            records.append(record)
    return records


def wait_for(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def edit(proxy, old: str, new: str) -> None:
    text = proxy.config_path.read_text()
    assert old in text, old
    proxy.config_path.write_text(text.replace(old, new))


def post_reload(proxy, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{proxy.admin_port}/reload", method="POST", data=b"")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def operator_proxy(keymux, tmp_path):
    def start(watch: str = "0s"):
        workdir = tmp_path / "keymux0"
        return keymux(
            operator_config(str(workdir), watch) + "\n[batch]\nmax_batch = 64\n",
            env={"KEYMUX_OPERATOR_TOKEN": TOKEN},
        )

    return start


def test_sighup_and_keymux_reload_apply_live_settings_and_refuse_the_rest(operator_proxy):
    proxy = operator_proxy()

    # SIGHUP reloads the whole file, not just certificates.
    edit(proxy, "max_batch = 64", "max_batch = 8")
    proxy.process.send_signal(signal.SIGHUP)
    record = wait_for(lambda: [r for r in reload_records(proxy) if "max_batch: 64 -> 8" in json.dumps(r)], "SIGHUP reload")
    assert "sighup" in json.dumps(record)

    # `keymux reload`: the CLI reads admin.listen and operator.token from the same file.
    edit(proxy, "max_batch = 8", "max_batch = 16")
    done = proxy.cli("reload")
    assert "batch.max_batch: 8 -> 16" in done.stdout, done

    # A bad value keeps the old config and names the key.
    edit(proxy, "max_batch = 16", "max_batch = 0")
    refused = proxy.cli("reload", check=False)
    assert refused.returncode != 0
    assert "batch.max_batch" in refused.stderr, refused

    # A restart-only setting is named in the refusal; nothing else applies either.
    edit(proxy, "max_batch = 0", "max_batch = 32")
    edit(proxy, f'listen = "127.0.0.1:{proxy.port}"', 'listen = "127.0.0.1:1"')
    refused = proxy.cli("reload", check=False)
    assert refused.returncode != 0 and "server.listen" in refused.stderr, refused
    assert "max_batch" not in refused.stderr

    # The endpoint wants the token: 401 without it or with another one.
    assert post_reload(proxy, None)[0] == 401
    assert post_reload(proxy, "wrong")[0] == 401
    status, body = post_reload(proxy, TOKEN)
    assert status == 409 and "server.listen" in body, body

    # Every attempt is in the audit log, and no token is.
    wait_for(lambda: len(reload_records(proxy)) >= 5, f"five audited reloads: {reload_records(proxy)}")
    log = (proxy.workdir / "audit.jsonl").read_text()
    assert TOKEN not in log
    assert proxy.process.poll() is None, "the proxy still serves"


def test_a_storm_of_sighups_leaves_one_consistent_config(operator_proxy):
    proxy = operator_proxy()
    edit(proxy, "max_batch = 64", "max_batch = 12")
    for _ in range(100):
        proxy.process.send_signal(signal.SIGHUP)
    wait_for(lambda: any("max_batch: 64 -> 12" in json.dumps(r) for r in reload_records(proxy)), "a reload")
    edit(proxy, "max_batch = 12", "max_batch = 13")
    done = proxy.cli("reload")
    assert "batch.max_batch: 12 -> 13" in done.stdout, done
    assert proxy.process.poll() is None


def test_the_file_watch_reloads_a_changed_file(operator_proxy):
    proxy = operator_proxy(watch="200ms")
    time.sleep(0.3)
    edit(proxy, "max_batch = 64", "max_batch = 2")
    wait_for(lambda: any("file change" in json.dumps(r) and "64 -> 2" in json.dumps(r) for r in reload_records(proxy)), "the watch")


def get(proxy, path: str, token: str | None = TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{proxy.admin_port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_audit_query_export_and_reindex(operator_proxy):
    proxy = operator_proxy()
    for batch in (8, 9, 10):
        edit(proxy, f"max_batch = {64 if batch == 8 else batch - 1}", f"max_batch = {batch}")
        proxy.cli("reload")

    # The query endpoint reads the index, brought up to date from the log.
    status, body = get(proxy, "/audit/query?op=config_reload&outcome=ok&limit=2")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["count"] == 2
    assert "9 -> 10" in answer["records"][0]["detail"], "newest first"
    status, body = get(proxy, "/audit/query?op=start&from=2000-01-01T00:00:00Z")
    assert status == 200 and json.loads(body)["count"] == 1, body
    assert json.loads(get(proxy, "/audit/query?to=2000-01-01T00:00:00Z")[1])["count"] == 0

    # Bad parameters name themselves; no token, no answer.
    for query, name in [("from=yesterday", "from"), ("limit=0", "limit"), ("outcome=maybe", "outcome"), ("colour=red", "colour")]:
        status, body = get(proxy, f"/audit/query?{query}")
        assert status == 400 and f"`{name}`" in body, (query, status, body)
    assert get(proxy, "/audit/query", token=None)[0] == 401
    assert get(proxy, "/audit/export", token="wrong")[0] == 401

    # Exports: every record as written (the chain intact), or CEF.
    status, body = get(proxy, "/audit/export?format=jsonl")
    assert status == 200
    lines = body.splitlines()
    assert len(lines) >= 4 and all(json.loads(line)["hash"] for line in lines)
    status, body = get(proxy, "/audit/export?format=cef")
    assert status == 200
    assert all(line.startswith("CEF:0|keymux|keymux|") for line in body.splitlines()), body
    assert "act=config_reload" in body
    assert get(proxy, "/audit/export?format=xml")[0] == 400

    # The CLI reads the same index; reindex rebuilds it from the log alone.
    index = proxy.workdir / "audit.jsonl.index.sqlite"
    assert index.exists()
    out = proxy.cli("audit", "query", "--op", "config_reload", "--limit", "1")
    assert "9 -> 10" in out.stdout and len(out.stdout.strip().splitlines()) == 1, out
    out = proxy.cli("audit", "reindex")
    assert "records indexed" in out.stdout, out
    out = proxy.cli("audit", "query", "--op", "config_reload")
    assert len(out.stdout.strip().splitlines()) == 3, out
    bad = proxy.cli("audit", "query", "--from", "nope", check=False)
    assert bad.returncode != 0 and "--from" in bad.stderr


def test_compliance_reports_as_json_and_html(operator_proxy):
    proxy = operator_proxy()
    proxy.cli("key", "create", "payments")
    proxy.cli("key", "rotate", "payments")
    edit(proxy, "max_batch = 64", "max_batch = 5")
    proxy.cli("reload")

    keys = json.loads(proxy.cli("report", "pci-dss-3.6.4", "--cryptoperiod", "90d").stdout)
    assert keys["report"] == "pci-dss-3.6.4" and keys["cryptoperiod_days"] == 90
    payments = next(k for k in keys["keys"] if k["key"] == "payments")
    assert payments["current_version"] == 2 and payments["decryptable_versions"] == [1, 2]
    assert payments["last_rotation"] and not payments["overdue"] and keys["overdue"] == []
    page = proxy.cli("report", "pci-dss-3.6.4", "--format", "html").stdout
    assert page.startswith("<!DOCTYPE html>") and "<td>payments</td>" in page

    trail = json.loads(proxy.cli("report", "pci-dss-10.2").stdout)
    assert trail["report"] == "pci-dss-10.2"
    actions = [record["action"] for record in trail["admin_actions"]]
    assert "start" in actions and "config_reload" in actions, actions
    page = proxy.cli("report", "pci-dss-10.2", "--format", "html").stdout
    assert "Admin actions" in page and "config_reload" in page
    bad = proxy.cli("report", "pci-dss-10.2", "--from", "last week", check=False)
    assert bad.returncode != 0 and "--from" in bad.stderr
    assert proxy.cli("report", "sox", check=False).returncode != 0


def test_healthz_verbose_gives_the_backend_detail(operator_proxy):
    proxy = operator_proxy()
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/healthz?verbose", timeout=10) as response:
        assert response.status == 200
        detail = json.loads(response.read())
    assert detail["status"] == "ok" and detail["ready"] is True and detail["not_ready"] is None
    assert detail["audit"] == {"failing": False}
    backend = detail["backends"][0]
    assert backend["kind"] == "soft"
    assert 0 <= backend["last_successful_probe_ms_ago"] < 60_000
    assert backend["errors"] == 0 and backend["error_ratio"] == 0.0
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/healthz", timeout=10) as response:
        assert response.read() == b"ok\n", "without ?verbose, the plain answer"

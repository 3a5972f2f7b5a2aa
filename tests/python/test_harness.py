"""The harness itself: a proxy starts, reports healthy and serves metrics."""

import urllib.request


def test_a_started_proxy_is_healthy_and_serves_metrics(keymux):
    proxy = keymux()
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/metrics") as r:
        assert b"keymux_" in r.read()
    listed = proxy.cli("key", "list")
    assert "default" in listed.stdout

"""pytest fixtures for the dev CSMS (tools/csms): a real OCPP 1.6J peer.

    def test_boot(csms, make_fw):
        fw = make_fw(sets=["csms_url=" + csms.url()])   # ws://127.0.0.1:<free port>/
        csms.wait_for_sync("BootNotification", cp="SIM0001")
        assert csms.call_sync("SIM0001", "Reset", {"type": "Soft"})["status"] == "Accepted"

`csms`: one CSMS per test on free ports (websocket and HTTP files/admin), its
data in the test's tmp_path. `make_csms(**kw)`: more of them, or with options
(passwords, TLS, boot_status, ...), all stopped at the end of the test.
"""

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tools.csms import CsmsServer  # noqa: E402


@pytest.fixture
def make_csms(tmp_path):
    servers = []

    def make(**kw):
        kw.setdefault("port", 0)
        kw.setdefault("http_port", 0)
        kw.setdefault("data_dir", tmp_path / ("csms%d" % len(servers)))
        server = CsmsServer(**kw)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def csms(make_csms):
    """A running dev CSMS: free ports, temp dirs, stopped after the test."""
    return make_csms()

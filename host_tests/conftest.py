import os

import pytest
from hypothesis import settings

from fwproc import FirmwareProcess
from csms_fixture import csms, make_csms  # noqa: F401  (the dev CSMS from tools/csms)

# CI gates on a fixed set of hypothesis examples, so a run passes or fails the
# same way every time; on a developer's machine the searches explore anew
# (raise their size with STATEFUL_EXAMPLES / OCPP_OFFLINE_EXAMPLES).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def make_fw(tmp_path):
    """Factory for firmware processes, each with its own simulation directory."""
    procs = []

    def make(sets=(), name="fw", **kw):
        fw = FirmwareProcess(tmp_path / name, sets=sets, **kw)
        procs.append(fw)
        return fw.start()

    yield make
    for fw in procs:
        fw.close()


@pytest.fixture
def fw(make_fw):
    """One charger, one connector, simulated time in step mode."""
    return make_fw()

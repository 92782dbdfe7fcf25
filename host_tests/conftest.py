import pytest
from fwproc import FirmwareProcess
from csms_fixture import csms, make_csms  # noqa: F401  (the dev CSMS from tools/csms)


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

"""OCA compliance, Firmware Management (OCPP side): UpdateFirmware downloads
over HTTP (resuming, retrying) and hands the image to the installer;
GetDiagnostics uploads a real archive. Statuses reach the CSMS in order."""
import io
import tarfile

import pytest

from ocpp_helpers import CP, iso_in, online_pair
from ota_helpers import kit, security_events  # noqa: F401


@pytest.fixture
def online(make_csms, make_fw, kit):  # noqa: F811
    # The manufacturer root is installed: a legacy UpdateFirmware image must
    # carry a signature that chains to it (release.py sign --embed).
    return online_pair(make_csms, make_fw, sets=["fw_root=" + kit.root(), "ota_confirm_s=30"], http_port=0)


def statuses(csms, action):
    return [m.payload["status"] for m in csms.messages(cp=CP, action=action, direction="in")]


def run_until(csms, fw, action, last, limit_ms=120_000, step=1000):
    t = 0
    while t < limit_ms:
        if statuses(csms, action) and statuses(csms, action)[-1] == last:
            return statuses(csms, action)
        fw.advance(step)
        t += step
    raise AssertionError("%s never reached %s: %s" % (action, last, statuses(csms, action)))


def put_image(csms, name, data):
    csms.files.add_firmware(name, data)
    return csms.file_url(name)


def test_tc_044_1_download_and_install(online, kit):  # noqa: F811
    csms, fw = online
    url = put_image(csms, "fw-2.bin", kit.files["good"]["signed"].read_bytes())
    mark = csms.mark()
    csms.call_sync(CP, "UpdateFirmware", {"location": url, "retrieveDate": iso_in(fw, 5)})
    seen = run_until(csms, fw, "FirmwareStatusNotification", "Installed")
    assert seen == ["Downloading", "Downloaded", "Installing", "Installed"]
    boots = csms.messages(cp=CP, action="BootNotification", direction="in", after=mark)
    assert [b.payload["firmwareVersion"] for b in boots] == ["0.2.0"]  # it rebooted into the new image


def test_tc_044_1_waits_for_the_retrieve_date_and_the_transaction(online, kit):  # noqa: F811
    csms, fw = online
    url = put_image(csms, "fw-3.bin", kit.files["good"]["signed"].read_bytes())
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag="CARD1")
    fw.advance(3000)
    csms.call_sync(CP, "UpdateFirmware", {"location": url, "retrieveDate": iso_in(fw, 120)})
    fw.advance(60_000)
    assert statuses(csms, "FirmwareStatusNotification") == []  # not before retrieveDate
    fw.advance(70_000)
    run_until(csms, fw, "FirmwareStatusNotification", "Downloaded")
    fw.advance(10_000)
    assert statuses(csms, "FirmwareStatusNotification")[-1] == "Downloaded"  # not under a transaction
    assert fw.conn()["status"] == "Charging"
    fw.cmd("unplug")
    run_until(csms, fw, "FirmwareStatusNotification", "Installed")


def test_tc_044_2_download_failed_after_retries(online):
    csms, fw = online
    url = csms.file_url("missing.bin")
    csms.call_sync(CP, "UpdateFirmware", {"location": url, "retrieveDate": iso_in(fw, 0),
                                          "retries": 2, "retryInterval": 30})
    seen = run_until(csms, fw, "FirmwareStatusNotification", "DownloadFailed")
    assert seen == ["Downloading"] * 3 + ["DownloadFailed"]


def test_tc_044_3_installation_failed(online):
    csms, fw = online
    url = put_image(csms, "not-firmware.bin", b"garbage" * 100)
    csms.call_sync(CP, "UpdateFirmware", {"location": url, "retrieveDate": iso_in(fw, 0)})
    seen = run_until(csms, fw, "FirmwareStatusNotification", "InstallationFailed")
    assert seen == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert fw.status()["boots"] == 1  # nothing changed: no reboot
    assert "InvalidFirmwareSignature" in [e["type"] for e in security_events(csms)]


def test_tc_044_3_unsigned_bundle_is_never_installed(online, kit):  # noqa: F811
    # A real bundle, but without the signature a legacy request cannot carry.
    csms, fw = online
    url = put_image(csms, "unsigned.bin", kit.files["good"]["bundle"].read_bytes())
    csms.call_sync(CP, "UpdateFirmware", {"location": url, "retrieveDate": iso_in(fw, 0)})
    seen = run_until(csms, fw, "FirmwareStatusNotification", "InstallationFailed")
    assert seen == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert fw.status()["slot"] == "F" and fw.status()["boots"] == 1


def test_tc_045_1_get_diagnostics_uploads_an_archive(online):
    csms, fw = online
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag="CARD1")
    fw.advance(3000)
    r = csms.call_sync(CP, "GetDiagnostics", {"location": csms.upload_url("")})
    name = r["fileName"]
    assert name.endswith(".tar")
    seen = run_until(csms, fw, "DiagnosticsStatusNotification", "Uploaded")
    assert seen == ["Uploading", "Uploaded"]
    up = csms.files.wait_for_upload(name, timeout=10)
    with open(up["path"], "rb") as f:
        blob = f.read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        names = t.getnames()
        assert {"log.txt", "status.json", "config.json", "ocpp_keys.json"} <= set(names)
        assert b"session started (CARD1)" in t.extractfile("log.txt").read()


def test_tc_045_2_upload_failed(online):
    csms, fw = online
    csms.files.upload_status = 500
    r = csms.call_sync(CP, "GetDiagnostics", {"location": csms.upload_url(""), "retries": 1, "retryInterval": 10})
    assert r["fileName"]
    seen = run_until(csms, fw, "DiagnosticsStatusNotification", "UploadFailed")
    assert seen == ["Uploading", "Uploading", "UploadFailed"]

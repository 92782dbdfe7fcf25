"""Power loss during a firmware update, end to end: the Unix firmware is
power-cut at every write boundary of a SignedUpdateFirmware (download
flushes, the job and queue records, every installed file's write and
rename, the slot marker, the boot record's switch to the trial, the trial's
boot count and its confirmation), then booted again. Every time it must come
up on a complete, verified image and the CSMS must hear a correct final
status.

The boundaries are counted by a run without a cut; the sweep then tries
each one in turn (two chargers at a time against one dev CSMS)."""
import hashlib
import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor

from ocpp_helpers import iso_in
from ota_helpers import FACTORY_VERSION, kit  # noqa: F401

WORKERS = 2


def manifest_files(bundle_path, target="unix"):
    data = open(bundle_path, "rb").read()
    n = struct.unpack(">I", data[11:15])[0]
    m = json.loads(data[15:15 + n])
    return {e["path"][len(target) + 1:]: e["sha256"] for e in m["files"] if e["path"].startswith(target + "/")}


def slot_complete(fw, slot, want):
    d = os.path.join(fw.dir, "flash", "slots", slot)
    for rel, sha in want.items():
        try:
            got = hashlib.sha256(open(os.path.join(d, rel), "rb").read()).hexdigest()
        except OSError:
            return False
        if got != sha:
            return False
    return True


def statuses(csms, cp, rid):
    return [m.payload["status"] for m in csms.messages(cp=cp, action="SignedFirmwareStatusNotification",
                                                       direction="in") if m.payload.get("requestId") == rid]


FINAL = ("Installed", "InstallationFailed")


def one_run(csms, make_fw, kit, k, want):  # noqa: F811
    """Update with a cut at boundary k (0: none). Returns (boundaries passed,
    died, (statuses, running slot, version, the slot's files all intact))."""
    cp = "CUT%04d" % k
    fw = make_fw(name=cp, sets=["id=" + cp, "csms_url=ws://127.0.0.1:%d" % csms.port, "fw_root=" + kit.root(),
                                "ota_confirm_s=20"])
    try:
        fw.advance(100)
        csms.wait_for_sync("BootNotification", cp=cp, timeout=20)
        fw.advance(2000)
        good = kit.files["good"]
        before = fw.request({"op": "cut_after", "n": k})["boundaries"]
        answered = True
        try:
            csms.call_sync(cp, "SignedUpdateFirmware", {"requestId": k, "retries": 3, "retryInterval": 5,
                                                        "firmware": {
                "location": csms.file_url("good.bin"), "retrieveDateTime": iso_in(fw, 0),
                "signingCertificate": good["cert"], "signature": good["signature"]}})
        except Exception:  # the power went while it was taking the request
            answered = False
        died = not answered
        if died:
            fw.proc.wait(timeout=10)
        for _ in range(400 if answered else 0):
            if fw.proc.poll() is not None:
                died = True
                break
            if statuses(csms, cp, k)[-1:] and statuses(csms, cp, k)[-1] in FINAL:
                break
            try:
                fw.advance(1000)
            except (OSError, ValueError, RuntimeError):  # the control channel went with the power
                fw.proc.wait(timeout=10)
                died = True
                break
        if not died:
            passed = fw.request({"op": "cut_after", "n": 0})["boundaries"] - before
            st = fw.status()
            return passed, False, (statuses(csms, cp, k), st["slot"], st["version"],
                                   st["slot"] == "F" or slot_complete(fw, st["slot"], want))
        fw.close()
        fw.start()  # power is back
        for i in range(400):
            s = statuses(csms, cp, k)
            if s and s[-1] in FINAL:
                break
            if not s and not answered and i >= 30:
                break  # the request was lost with the power: nothing to finish
            fw.advance(1000)
        st = fw.status()
        return k, True, (statuses(csms, cp, k), st["slot"], st["version"],
                         st["slot"] == "F" or slot_complete(fw, st["slot"], want))
    finally:
        fw.close()


def test_power_cut_at_every_write_boundary_of_an_update(make_csms, make_fw, kit):  # noqa: F811
    csms = make_csms(ping_interval=None, http_port=0)
    csms.files.add_firmware("good.bin", kit.files["good"]["bundle"].read_bytes())
    want = manifest_files(kit.files["good"]["bundle"])
    total, died, outcome = one_run(csms, make_fw, kit, 0, want)
    assert not died and outcome[0][-1] == "Installed" and outcome[1:] == ("A", "0.2.0", True)
    assert total > 50  # download flushes, ~2 per installed file, records

    def check(k):
        return k, one_run(csms, make_fw, kit, k, want)

    cuts = good = 0
    bad = []
    with ThreadPoolExecutor(WORKERS) as pool:
        for k, (_, died, (seen, slot, version, intact)) in pool.map(check, range(1, total + 1)):
            cuts += died
            # Installed and running it; or failed and still on the factory
            # image; or cut before the request was answered: then nothing
            # happened (the CSMS, without an answer, asks again).
            ok = intact and ((seen and seen[-1] == "Installed" and slot == "A" and version == "0.2.0") or
                             (seen[-1:] in (["InstallationFailed"], []) and slot == "F"
                              and version == FACTORY_VERSION))
            if ok:
                good += 1
            else:
                bad.append((k, seen, slot, version))
    print("power-cut sweep: %d boundaries, %d cuts, %d good boots" % (total, cuts, good))
    assert not bad, bad[:5]
    assert cuts == total and good == total

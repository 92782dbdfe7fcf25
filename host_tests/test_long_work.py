"""Long work gives the loop control (issue 8, item 6): hashing a bundle,
verifying its signature and chain (RSA modexp, ECDSA scalar multiplication),
the image check, installing into a slot and writing a large OCPP queue record
each run in bounded slices, and a signed update completes while a session
keeps charging.

No timing: the work runs in a sched.Slice with a 0 ms budget (it yields at
every unit), and a probe task counts how often the asyncio loop ran it during
the work, and the most work units done between two of its runs. A step that
does not yield leaves the probe at one run and the stretch at all the work."""
import base64
import hashlib
import json
import time

from mp import run_mp
from ocpp_helpers import CP  # noqa: F401
from ota_helpers import advance_until, fw_sets, kit, signed_request, signed_statuses  # noqa: F401

PROBE = r"""
import asyncio, gc, json
from firmware.core.sched import Slice

class Probe:
    # Runs whenever the loop gets control; notes the work units (sl.units)
    # done since its previous run.
    def __init__(self, sl):
        self.sl = sl
        self.runs = 0
        self.stretch = 0
        self.last = self.units()
        self.stop = False

    def units(self):
        return getattr(self.sl, "units", 0)

    def note(self):
        d = self.units() - self.last
        if d > self.stretch:
            self.stretch = d
        self.last = self.units()

    async def run(self):
        while not self.stop:
            self.note()
            self.runs += 1
            await asyncio.sleep_ms(0)

async def probed(sl, coro):
    p = Probe(sl)
    t = asyncio.create_task(p.run())
    await asyncio.sleep_ms(0)
    r0 = p.runs
    res = await coro
    p.note()  # what the work did after the probe last ran
    p.stop = True
    await t
    return res, {"runs": p.runs - r0, "stretch": p.stretch, "units": p.units()}

def out(**kw):
    print("OUT " + json.dumps(kw))
"""


def run(code):
    p = run_mp(PROBE + code, timeout=300, heapsize="8M")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("OUT ")]
    assert lines, p.stdout + p.stderr
    return [json.loads(ln[4:]) for ln in lines]


def yielded(r, at_least):
    # The loop ran between every two units, and at least `at_least` times.
    return r["runs"] >= at_least and r["stretch"] <= 1 and r["units"] >= at_least


def test_ecdsa_verify_yields_in_the_scalar_multiplication(kit):  # noqa: F811
    f = kit.files["good"]
    digest = hashlib.sha256(f["bundle"].read_bytes()).digest()
    out, = run(r"""
import binascii
from firmware.crypto import der, ecdsa
cert = der.parse_certificate(%r)
sig = binascii.a2b_base64(%r)
sl = Slice(0)
_, r = asyncio.run(probed(sl, sl.run(ecdsa.verify_work(cert.public_key[1], cert.public_key[2], %r, sig))))
bad = bytearray(%r); bad[0] ^= 1
try:
    ecdsa.verify(cert.public_key[1], cert.public_key[2], bytes(bad), sig)
    r["bad"] = "accepted"
except Exception as e:
    r["bad"] = getattr(e, "reason", repr(e))
out(**r)
""" % (f["cert"], f["signature"], digest, digest))
    # Three 256-bit modular inversions and the 256-bit ladder, 8 bits a unit.
    assert yielded(out, 4 * 256 // 8), out
    assert out["bad"] == "bad_signature"  # the synchronous API runs the same work


def test_rsa_modexp_yields_every_exponent_bit():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
    key = rsa.generate_private_key(65537, 2048)
    digest = hashlib.sha256(b"firmware").digest()
    sig = key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    pss = key.sign(digest, padding.PSS(padding.MGF1(hashes.SHA256()), 32), utils.Prehashed(hashes.SHA256()))
    n = key.public_key().public_numbers().n
    outs = run(r"""
from firmware.crypto import der, verify
key = ("rsa", %d, 65537)
for alg, sig in ((der.ALG_RSA_PKCS1_SHA256, %r), (der.ALG_RSA_PSS_SHA256, %r)):
    sl = Slice(0)
    ok, r = asyncio.run(probed(sl, sl.run(verify.verify_signature_work(key, alg, %r, sig, is_digest=True))))
    out(ok=ok, **r)
""" % (n, sig, pss, digest))
    for out in outs:
        assert out["ok"] is True
        assert yielded(out, 17), out  # e = 65537: 17 squarings, each its own unit


def test_bundle_hash_signature_chain_and_image_check_yield(kit):  # noqa: F811
    f = kit.files["good"]
    size = f["bundle"].stat().st_size
    out, = run(r"""
from firmware.crypto import der, pem
from firmware.crypto.sha import sha256_file_work, sha256_file
from firmware.ota.update import Updater
roots = pem.decode_all(open(%r).read())
path = %r
res = {}
sl = Slice(0)
d, r = asyncio.run(probed(sl, sl.run(sha256_file_work(path, 4096))))
res["hash"] = r
res["same_hash"] = d == sha256_file(path)
up = Updater(None, "unix")
sl = Slice(0)
_, r = asyncio.run(probed(sl, up.verify_signature_async(path, roots, 1800000000, %r, %r, sl=sl)))
res["signature"] = r
# The signed file (embedded trailer), as the USB path and a legacy update carry it.
sl = Slice(0)
(n, root), r = asyncio.run(probed(sl, up.verify_signature_async(%r, roots, 1800000000, sl=sl)))
res["embedded"] = r
res["root"] = root.subject_cn
out(**res)
""".replace("1800000000", str(int(time.time()))) % (kit.root(), str(f["bundle"]), f["signature"], f["cert"],
                                                    str(f["signed"])))
    assert yielded(out["hash"], size // 4096), out
    assert out["same_hash"]
    # Root self-signature, signing certificate, bundle signature: three ECDSA
    # verifies, plus the whole file's SHA-256 in 4 kB chunks.
    assert yielded(out["signature"], 3 * 4 * 256 // 8 + size // 4096), out
    assert yielded(out["embedded"], 3 * 4 * 256 // 8 + size // 4096), out


def test_image_check_and_install_into_a_slot_yield(kit, tmp_path):  # noqa: F811
    f = kit.files["good"]
    state = str(tmp_path)
    out, = run(r"""
from firmware.core.store import Store
from firmware.ota.slots import Slots
from firmware.ota.update import Updater
store = Store(%r + "/flash")
slots = Slots(store, %r + "/flash/slots", factory_version="0.1.0")
slots.boot()
up = Updater(slots, "unix")
path = %r
res = {}
sl = Slice(0)
(m, _), r = asyncio.run(probed(sl, up.check_async(path, sl=sl)))
res["check"] = r
res["files"] = sum(1 for e in m["files"] if e["path"].startswith("unix/"))
sl = Slice(0)
slot, r = asyncio.run(probed(sl, up.install_async(path, m, sl=sl)))
res["install"] = r
res["slot"] = slot
res["complete"] = Slots(Store(%r + "/flash"), %r + "/flash/slots", factory_version="0.1.0").check_slot(slot)
res["trial"] = slots.record()[0]["state"]
out(**res)
""" % (state, state, str(f["bundle"]), state, state))
    size = f["bundle"].stat().st_size
    assert yielded(out["check"], size // 4096), out
    # Every file written, then hashed again by arm_trial: at least one unit each.
    assert yielded(out["install"], 2 * out["files"]), out
    assert out["slot"] == "A" and out["complete"] and out["trial"] == "trial"


def test_a_large_queue_record_is_written_in_slices_and_nothing_is_lost(tmp_path):
    out, = run(r"""
from firmware.core.store import Store
from firmware.core.log import Log
from firmware.core.clock import SimClock
from firmware.ocpp.queue import TxQueue
log = Log(SimClock())
store = Store(%r)
q = TxQueue(store, log)
q.work = Slice(0)
mv = {"connectorId": 1, "transactionId": 7, "meterValue": [{"timestamp": "2026-01-01T00:00:00Z",
      "sampledValue": [{"value": "1234.5", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]}

async def written(n):
    # until the n-th write of the store has completed
    while store.writes < n:
        await asyncio.sleep_ms(0)

async def main():
    res = {}
    for i in range(199):
        q.push("MeterValues", mv, 7)
        await written(i + 1)
    # The 200th message: the probe runs while the record is encoded and written.
    async def push_and_wait():
        q.push("StopTransaction", {"transactionId": 7, "meterStop": 1}, 7)
        await written(200)
    _, r = await probed(q.work, push_and_wait())
    res["write"] = r
    gc.collect()
    res["on_flash"] = len(Store(%r).read("ocpp_queue.json", max_bytes=524288)["items"])
    # Pushed and not yet written when the next client reads the record
    # (a reboot in the same process): it is written first.
    q.push("StopTransaction", {"transactionId": 8, "meterStop": 2}, 8)
    res["pending"] = store.writes == 200
    gc.collect()
    q2 = TxQueue(store, log)
    res["read_back"] = len(q2)
    res["last"] = q2.items[-1][2]["transactionId"]
    await asyncio.sleep_ms(0)
    res["reread"] = len(TxQueue(Store(%r), log))
    out(**res)
asyncio.run(main())
""" % (str(tmp_path), str(tmp_path), str(tmp_path)))
    assert yielded(out["write"], 200), out  # one unit per queued message
    assert out["on_flash"] == 200
    assert out["pending"] and out["read_back"] == 201 and out["last"] == 8
    assert out["reread"] == 201


def long_work(fw):
    # How often long work gave the loop control (a firmware without slices: never).
    return fw.status().get("long_work", {"units": 0, "yields": 0, "longest": 0})


def test_signed_update_completes_while_a_session_keeps_charging(make_csms, make_fw, kit):  # noqa: F811
    csms = make_csms(ping_interval=None, http_port=0)
    fw = make_fw(sets=fw_sets(kit, csms))
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10)
    fw.advance(2000)
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag="CARD1")
    fw.advance(3000)
    assert fw.conn()["status"] == "Charging"
    work0 = long_work(fw)
    f = kit.files["good"]
    csms.files.add_firmware("good.bin", f["bundle"].read_bytes())
    r = signed_request(csms, fw, csms.file_url("good.bin"), f, request_id=9)
    assert r["status"] == "Accepted"
    samples = []

    def verified():
        st = fw.status()
        c = st["connectors"][0]
        samples.append((c["status"], c["contactor"], c["aux"], st["watchdog"], c.get("faults")))
        return "InstallScheduled" in signed_statuses(csms, 9)

    # Download, signature, chain and image check all happen with the session on.
    assert advance_until(fw, verified, limit_ms=120_000, step=200)
    assert signed_statuses(csms, 9) == ["Downloading", "Downloaded", "SignatureVerified", "InstallScheduled"]
    assert all(s[:4] == ("Charging", True, True, "ok") and not s[4] for s in samples), samples
    work = long_work(fw)
    size = f["bundle"].stat().st_size
    # The loop got control after every unit: the signer's chain at the request
    # (2 ECDSA verifies), then the bundle's signature and chain (3) and hash,
    # then the image check (every file's hash).
    assert work["yields"] - work0["yields"] >= 5 * 4 * 256 // 8 + 2 * (size // 4096), (work0, work)
    assert work["longest"] <= 1
    fw.advance(10_000)
    assert fw.conn()["status"] == "Charging" and fw.conn()["contactor"]
    fw.cmd("unplug")
    assert advance_until(fw, lambda: signed_statuses(csms, 9)[-1] in ("Installed", "InstallationFailed"))
    assert signed_statuses(csms, 9)[-3:] == ["Installing", "InstallRebooting", "Installed"]
    st = fw.status()
    assert st["watchdog"] == "ok" and st["version"] == "0.2.0"


def test_certificate_checks_of_the_csms_yield_too(make_csms, make_fw, kit):  # noqa: F811
    # InstallCertificate checks the root's self-signature: the same slices.
    csms = make_csms(ping_interval=None, http_port=0)
    fw = make_fw(sets=fw_sets(kit, csms))
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10)
    fw.advance(2000)
    y0 = long_work(fw)["yields"]
    with open(kit.root()) as fh:
        pem = fh.read()
    r = csms.call_sync(CP, "InstallCertificate", {"certificateType": "ManufacturerRootCertificate",
                                                  "certificate": pem})
    assert r["status"] == "Accepted"
    assert long_work(fw)["yields"] - y0 >= 4 * 256 // 8

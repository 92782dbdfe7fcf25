"""The local (USB) update path.

- firmware/ota/local.py on the MicroPython Unix port: a self-contained signed
  bundle (bundle + trailer with certificate and signature) is verified and
  installed into the inactive slot as a trial; every bad file is refused with
  its reason and leaves the boot record and the running slot untouched.
- tools/flash_bundle.py (CPython): the same refusals locally, --dry-run
  printing the mpremote commands, the result line parsed from a fake mpremote.
- boards/common/usb_update.py: the board-side entry mpremote runs.
- the bench REPL's hand-over to mpremote (Ctrl-C, Ctrl-A): the byte
  recogniser, and a whole board on a fake port that opens its contactor and
  reboots into the plain REPL.
"""
import json
import os
import stat
import struct
import subprocess
import sys
import time

import pytest

from fwproc import ROOT, micropython
from mp import run_mp

sys.path.insert(0, ROOT)
from tools import flash_bundle as fb  # noqa: E402
from tools import release  # noqa: E402

YEAR = 365 * 86400


def signed(bundle, keys, out):
    """release.py sign --embed: the bundle with its certificate and signature in a trailer."""
    release.sign_bundle(str(bundle), str(keys / "signing.key"), str(keys / "signing.pem"), str(out), embed=True)
    return str(out)


def make_src(d, ver, tag):
    src = d / ("src-" + tag) / "app"
    (src / "lib").mkdir(parents=True)
    (src / "main.py").write_text("VERSION = %r\n" % ver)
    (src / "lib" / "__init__.py").write_text("")
    (src / "lib" / "table.py").write_text(
        "T = [\n" + "".join("    (%d, %r),\n" % (i, "%s-%05d" % (tag, i)) for i in range(400)) + "]\n")
    return src


@pytest.fixture(scope="module")
def rel(tmp_path_factory):
    d = tmp_path_factory.mktemp("usb")
    r = {"dir": d}
    for name, alg, cn in (("ec", "ecdsa", None), ("rsa", "rsa3072", "RSA Maker Root"),
                          ("other", "ecdsa", "Other Maker Root"), ("twin", "ecdsa", None)):
        release.make_keys(str(d / name), alg, root_cn=cn or "Charger Manufacturer Root")
        r[name] = d / name
    for ver, minv, targets, tag in (("1.0.0", "1.0.0", "unix,esp32", "v100"), ("1.1.0", "1.1.0", "unix,esp32", "v110"),
                                    ("1.2.0", "1.0.0", "rp2040", "rp")):
        b = d / ("fw-%s-%s.bundle" % (ver, tag))
        release.make_bundle(ver, targets, minv, str(b), src=str(make_src(d, ver, tag)))
        r[tag] = b
    r["good"] = signed(r["v110"], r["ec"], d / "good.signed")
    r["good_rsa"] = signed(r["v110"], r["rsa"], d / "good-rsa.signed")
    r["base"] = signed(r["v100"], r["ec"], d / "base.signed")
    r["rp"] = signed(r["rp"], r["ec"], d / "rp.signed")
    r["foreign"] = signed(r["v110"], r["other"], d / "foreign.signed")
    r["twin"] = signed(r["v110"], r["twin"], d / "twin.signed")
    data = open(r["good"], "rb").read()
    n, c, s = struct.unpack(">IHH", data[-20:-12])
    m_off = 15 + struct.unpack(">I", data[11:15])[0]

    def variant(name, pos, xor=0x01):
        b = bytearray(data)
        b[pos] ^= xor
        p = d / (name + ".signed")
        p.write_bytes(bytes(b))
        r[name] = str(p)

    variant("flip_image", m_off + 100)
    variant("flip_manifest", 40)
    variant("flip_sig", n + c + s // 2)
    variant("flip_cert_key", n + c - 5)  # inside the certificate's signature value
    variant("flip_cert_tbs", n + 60)  # inside the to-be-signed part
    p = d / "bad_lengths.signed"
    p.write_bytes(data[:-20] + struct.pack(">IHH", n + 5, c, s) + fb.TRAILER_MAGIC)
    r["bad_lengths"] = str(p)
    p = d / "truncated.signed"
    p.write_bytes(data[:n - 10] + data[n:])  # the trailer still names N: lengths do not add up
    r["truncated"] = str(p)
    r["unsigned"] = str(r["v110"])
    return r


APPLY = r"""
import json, os, hashlib, binascii
from firmware.core.store import Store
from firmware.ota import VerifyError, local
from firmware.crypto import der, pem
from firmware.ota.slots import Slots
STATE = %r
ROOTS = [pem.decode_all(open(p).read())[0] for p in %r]
def mk():
    st = Store(STATE + "/store")
    return st, Slots(st, STATE + "/slots")
def tree(d):
    out = {}
    try:
        names = [e[0] for e in os.ilistdir(d)]
    except OSError:
        return out
    for n in names:
        p = d + "/" + n
        if os.stat(p)[0] & 0x4000:
            for k, v in tree(p).items():
                out[n + "/" + k] = v
        else:
            f = open(p, "rb"); out[n] = binascii.hexlify(hashlib.sha256(f.read()).digest()).decode(); f.close()
    return out
def snap():
    st, s = mk()
    return {"rec": st.read("boot_slots.json"), "A": tree(STATE + "/slots/A"), "B": tree(STATE + "/slots/B")}
res = []
for path, target, now in json.loads(%r):
    st, s = mk()
    s.boot()
    before = snap()
    try:
        slot = local.apply(path, st, s, target, ROOTS, now)
        r = {"ok": slot, "ver": s.version(slot)}
    except VerifyError as e:
        r = {"err": e.reason, "detail": e.detail}
    except Exception as e:
        r = {"crash": repr(e)}
    after = snap()
    r["rec_same"] = before["rec"] == after["rec"]
    r["running_same"] = before[s.running] == after[s.running]
    r["note"] = st.read("usb_update.json")
    r["rec"] = after["rec"]
    res.append(r)
    if r.get("confirm"):
        pass
print("RESULT " + json.dumps(res))
"""


def apply_cases(state, cases, roots):
    p = run_mp(APPLY % (str(state), [str(x) for x in roots], json.dumps(cases)), timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, p.stdout + p.stderr
    return json.loads(line[-1][7:])


def confirm(state):
    p = run_mp(r"""
from firmware.core.store import Store
from firmware.ota.slots import Slots
st = Store(%r + "/store"); s = Slots(st, %r + "/slots")
print("BOOT", s.boot()); print("CONFIRM", s.confirm())
""" % (str(state), str(state)))
    assert "CONFIRM True" in p.stdout, p.stdout + p.stderr


NOW = int(time.time())


def test_good_bundle_installs_as_trial(rel, tmp_path):
    roots = [rel["ec"] / "root.pem", rel["rsa"] / "root.pem"]
    r = apply_cases(tmp_path, [[rel["good"], "unix", NOW]], roots)[0]
    assert r["ok"] == "B" and r["ver"] == "1.1.0", r
    assert r["rec"]["state"] == "trial" and r["rec"]["trial_slot"] == "B" and r["rec"]["active"] == "B"
    assert r["running_same"]
    assert r["note"]["ok"] is True and r["note"]["slot"] == "B" and r["note"]["signer_root"] == "Charger Manufacturer Root"
    # RSA-3072 signed, into the other fresh state
    r = apply_cases(tmp_path / "rsa", [[rel["good_rsa"], "unix", NOW]], roots)[0]
    assert r["ok"] == "B" and r["note"]["signer_root"] == "RSA Maker Root", r


@pytest.mark.parametrize("name,target,now,reasons", [
    ("unsigned", "unix", 0, {"unsigned"}),
    ("flip_image", "unix", 0, {"bad_signature"}),
    ("flip_manifest", "unix", 0, {"bad_signature"}),
    ("flip_sig", "unix", 0, {"bad_signature"}),
    ("flip_cert_key", "unix", 0, {"bad_signature"}),
    ("flip_cert_tbs", "unix", 0, {"bad_signature", "malformed", "issuer_mismatch", "unknown_root"}),
    ("bad_lengths", "unix", 0, {"bad_signature"}),
    ("truncated", "unix", 0, {"bad_signature"}),
    ("foreign", "unix", 0, {"unknown_root"}),
    ("twin", "unix", 0, {"bad_signature"}),  # same root name, another key
    ("good", "unix", 3 * YEAR, {"cert_expired"}),
    ("good", "unix", -YEAR, {"cert_not_yet_valid"}),
    ("good", "rp2040", 0, {"wrong_target"}),
    ("rp", "unix", 0, {"wrong_target"}),
])
def test_bad_bundles_are_refused_and_nothing_changes(rel, tmp_path, name, target, now, reasons):
    # A confirmed 1.0.0 runs; then the bad file.
    roots = [rel["ec"] / "root.pem"]
    r = apply_cases(tmp_path, [[rel["base"], "unix", NOW]], roots)[0]
    assert r["ok"] == "B", r
    confirm(tmp_path)
    r = apply_cases(tmp_path, [[str(rel[name]), target, NOW + now]], roots)[0]
    assert r.get("err") in reasons, r
    assert r["rec_same"] and r["running_same"], r
    assert r["rec"]["state"] == "confirmed" and r["rec"]["active"] == "B"
    assert r["note"] == {"ok": False, "reason": r["err"], "detail": r["detail"], "time": NOW + now}


def test_downgrade_and_pending_trial_are_refused(rel, tmp_path):
    roots = [rel["ec"] / "root.pem"]
    r = apply_cases(tmp_path, [[rel["good"], "unix", NOW]], roots)[0]
    assert r["ok"] == "B"
    # A trial is pending: a second update waits for it.
    r = apply_cases(tmp_path, [[rel["good"], "unix", NOW]], roots)[0]
    assert r["err"] == "trial_pending" and r["rec_same"] and r["running_same"], r
    confirm(tmp_path)
    # 1.0.0 is below the running 1.1.0 (and its floor): a USB update never downgrades.
    r = apply_cases(tmp_path, [[rel["base"], "unix", NOW]], roots)[0]
    assert r["err"] == "downgrade" and r["rec_same"] and r["running_same"], r
    # The same version again is fine (a re-flash), into the other slot.
    r = apply_cases(tmp_path, [[rel["good"], "unix", NOW]], roots)[0]
    assert r["ok"] == "A" and r["running_same"], r


def test_no_roots_installed_refuses(rel, tmp_path):
    r = apply_cases(tmp_path, [[rel["good"], "unix", NOW]], [])[0]
    assert r["err"] == "unknown_root" and r["rec_same"], r


# ---------------------------------------------------------------- the board's entry point

USB = r"""
import sys
FACTORY = None
sys.path.insert(0, %r)
from boards.common import usb_update
class Port:
    def store_root(self):
        return %r
    def slots(self, store, log=None, **kw):
        from firmware.ota.slots import Slots
        return Slots(store, self.store_root() + "/slots", log=log, **kw)
ok = usb_update.run("unix", path=%r, now=%r, port=Port(), factory=FACTORY)
print("RET", ok)
"""


def test_usb_update_run_prints_one_line_and_removes_the_file(rel, tmp_path):
    store = tmp_path / "flash"
    store.mkdir()
    (store / "manufacturer_roots.pem").write_bytes((rel["other"] / "root.pem").read_bytes()
                                                   + (rel["ec"] / "root.pem").read_bytes())
    up = tmp_path / "update.bundle"
    up.write_bytes(open(rel["good"], "rb").read())
    p = run_mp(USB % (ROOT, str(store), str(up), NOW))
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(("UPDATE", "RET"))]
    # The board runs its factory image (firmware.version): the update goes to A.
    assert lines == ["UPDATE OK slot A version 1.1.0", "RET True"], p.stdout
    assert not up.exists()
    up.write_bytes(open(rel["flip_image"], "rb").read())
    p = run_mp(USB % (ROOT, str(store), str(up), NOW))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(("UPDATE", "RET"))]
    assert lines[0].startswith("UPDATE REFUSED ") and lines[1] == "RET False", p.stdout
    assert not up.exists()
    # A factory image newer than the bundle: a downgrade, refused.
    store2 = tmp_path / "flash2"
    store2.mkdir()
    (store2 / "manufacturer_roots.pem").write_bytes((rel["ec"] / "root.pem").read_bytes())
    up.write_bytes(open(rel["good"], "rb").read())
    p = run_mp(USB.replace("FACTORY = None", "FACTORY = '2.0.0'") % (ROOT, str(store2), str(up), NOW))
    assert "UPDATE REFUSED downgrade: 1.1.0 is older than the running 2.0.0" in p.stdout, p.stdout
    # Without the host's time the board's clock is used (set on this Unix port).
    up.write_bytes(open(rel["good"], "rb").read())
    p = run_mp(USB % (ROOT, str(store), str(up), None))
    assert "UPDATE REFUSED trial_pending" in p.stdout, p.stdout


# ---------------------------------------------------------------- host tool

@pytest.mark.parametrize("name,target,reason", [
    ("unsigned", None, "unsigned"), ("flip_image", None, "bad_signature"), ("flip_sig", None, "bad_signature"),
    ("flip_manifest", None, "bad_signature"), ("bad_lengths", None, "bad_signature"),
    ("truncated", None, "bad_signature"), ("rp", "esp32", "wrong_target"), ("good", "rp2040", "wrong_target"),
    ("foreign", None, "unknown_root"), ("twin", None, "bad_signature"),  # the board's answer, same rules
])
def test_host_refuses_locally(rel, name, target, reason):
    roots = fb.load_roots([str(rel["ec"] / "root.pem")])
    with pytest.raises(fb.Refused) as e:
        fb.local_check(str(rel[name]), target, roots)
    assert e.value.reason == reason


def test_host_checks_dates_and_passes_good(rel):
    roots = fb.load_roots([str(rel["ec"] / "root.pem")])
    info = fb.local_check(rel["good"], "esp32", roots)
    assert info["version"] == "1.1.0" and info["targets"] == ["unix", "esp32"]
    with pytest.raises(fb.Refused) as e:
        fb.local_check(rel["good"], "esp32", roots, now=time.time() + 3 * YEAR)
    assert e.value.reason == "cert_expired"
    # Without --root the chain is left to the board; the signature still counts.
    assert fb.local_check(rel["foreign"], "esp32")["version"] == "1.1.0"


def test_dry_run_prints_the_mpremote_commands(rel):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "flash_bundle.py"), rel["good"], "--dry-run",
                        "--port", "/dev/ttyUSB7", "--target", "esp32", "--root", str(rel["ec"] / "root.pem")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "local checks passed: version 1.1.0" in out
    cmds = [ln.strip() for ln in out.splitlines() if "mpremote connect /dev/ttyUSB7" in ln]
    assert len(cmds) == 3, out
    assert "resume exec" in cmds[0] and "PLATFORM" in cmds[0]
    assert "cp %s :/update.bundle + exec" % rel["good"] in cmds[1]
    assert """usb_update.run("esp32", path="/update.bundle", now=""" in cmds[1]
    assert cmds[2].endswith("resume reset")
    # A bad file never gets as far as mpremote.
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "flash_bundle.py"), rel["flip_sig"], "--dry-run"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "REFUSED locally: bad_signature" in p.stdout and "mpremote" not in p.stdout


def test_make_flash_bundle_target(rel):
    p = subprocess.run(["make", "-s", "flash-bundle", "BUNDLE=" + rel["good"], "PORT=/dev/ttyUSB3",
                        "FLASH_ARGS=--dry-run --target esp32"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "mpremote connect /dev/ttyUSB3" in p.stdout
    p = subprocess.run(["make", "-s", "flash-bundle"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "usage: make flash-bundle" in p.stdout


def fake_mpremote(tmp_path, answer, fail_first=1):
    """An mpremote stand-in: logs its argv; the first `fail_first` calls fail
    (the board rebooting after the hand-over), exec of usb_update prints answer."""
    log = tmp_path / "mpremote.log"
    cnt = tmp_path / "count"
    exe = tmp_path / "mpremote"
    exe.write_text("""#!%s
import json, sys
open(%r, "a").write(json.dumps(sys.argv[1:]) + "\\n")
try:
    n = int(open(%r).read())
except OSError:
    n = 0
open(%r, "w").write(str(n + 1))
if n < %d:
    print("could not enter raw repl"); sys.exit(1)
args = " ".join(sys.argv[1:])
if "PLATFORM" in args:
    print("PLATFORM esp32")
elif "usb_update" in args:
    print(%r)
""" % (sys.executable, str(log), str(cnt), str(cnt), fail_first, answer))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe), log


@pytest.mark.parametrize("answer,rc", [("UPDATE OK slot B version 1.1.0", 0),
                                       ("UPDATE REFUSED downgrade: 1.1.0 is older than the running 1.2.0", 1)])
def test_flash_runs_mpremote_and_reports(rel, tmp_path, answer, rc):
    exe, log = fake_mpremote(tmp_path, answer)
    out = []
    tty = tmp_path / "ttyUSB0"  # the board's serial port is there (a stand-in file)
    tty.write_text("")
    got = fb.flash(rel["good"], str(tty), None, (), mpremote=exe, out=out.append, pause=0)
    assert got == rc, out
    calls = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert sum(1 for c in calls if "PLATFORM" in " ".join(c)) == 2  # one retry while the board reboots
    apply = [c for c in calls if "usb_update" in " ".join(c)]
    assert len(apply) == 1 and 'usb_update.run("esp32"' in " ".join(apply[0])
    assert answer in out
    resets = [c for c in calls if c[-1] == "reset"]
    assert len(resets) == (1 if rc == 0 else 0)


# ---------------------------------------------------------------- the hand-over

def test_handover_recogniser():
    code = r"""
import json
from firmware.repl import handover_step
def run(s):
    st = 0
    for i, ch in enumerate(s):
        st = handover_step(st, ch)
        if st == 2:
            return i
    return None
cases = ["\r\x03\r\x01", "\r\x03\x03\r\x01", "\x03\x01", "\x03\n\r\r\x01", "plug(32)\x03\r\x01",
         "\x01", "\x03x\x01", "abc\x01", "\x03", "\x03\r\x04\x01", "\x01\x03"]
print(json.dumps([run(c) for c in cases]))
"""
    p = run_mp(code)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got == [3, 4, 1, 4, 10, None, None, None, None, None, None]


def test_repl_returns_handover_and_ignores_a_lone_ctrl_a():
    code = r"""
import asyncio, io
from firmware import repl
class S:
    def __init__(self, data):
        self.d = data
    async def read(self, n):
        c, self.d = self.d[:1], self.d[1:]
        return c
seen = []
ns = {"f": lambda: seen.append(1)}
out = io.StringIO()
r1 = asyncio.run(repl.repl(ns, S("()\x01f\r\x03\r\x01f()\r"), raw=True, out=out))
r2 = asyncio.run(repl.repl(ns, S("\x03\r\x01"), raw=False, out=out))
print("R", r1, r2, len(seen))
"""
    p = run_mp(code)
    assert p.returncode == 0, p.stderr + p.stdout
    # Raw: "()\x01f" runs f once (a lone Ctrl-A is the line editor's Home, as in
    # MicroPython's own REPL, not a hand-over), then the request hands over
    # before the next line; not raw (the Unix terminal): no hand-over, EOF.
    assert p.stdout.strip().splitlines()[-1] == "R handover None 1"


def test_board_hands_over_with_the_contactor_open(tmp_path):
    from test_board_math import FAKES
    (tmp_path / "fakes.py").write_text(FAKES)
    store = tmp_path / "flash"
    store.mkdir()
    (store / "config.json").write_text(json.dumps({"pins": {"demo": True}}))
    code = r"""
import sys
sys.path.insert(0, %r)
sys.path.insert(0, %r)
import asyncio
from fakes import FakePort
from boards.common.board import DevBoard
class P(FakePort):
    def reset(self):
        b = self.board
        print("COIL", [o.contactor.coil for o in b.plant.outlets], "TASKS", len(b.station.tasks.live))
        FakePort.reset(self)
port = P(%r)
port.board = DevBoard(port)
try:
    asyncio.run(port.board.run())
except SystemExit:
    pass
""" % (ROOT, str(tmp_path), str(store))
    proc = subprocess.Popen([micropython(), "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        time.sleep(1.0)
        for line, wait in (("plug(32)", 0.3), ("ev('C')", 1.5), ("status()", 0.3)):
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
            time.sleep(wait)
        proc.stdin.write(b"\r\x03")  # what mpremote sends when it connects
        proc.stdin.flush()
        time.sleep(0.1)
        proc.stdin.write(b"\r\x01")
        proc.stdin.flush()
        out = proc.communicate(timeout=20)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "contactor closed" in out, out  # it was charging
    assert "console handed over to mpremote" in out and "rebooting into the plain REPL" in out, out
    assert "RESET" in out
    assert (store / "maintenance").exists()  # the next boot is the plain REPL
    # At the reset the coil is off and the station's tasks are gone.
    i = out.index("console handed over")
    assert "COIL [False] TASKS 0" in out[i:], out[i:]


class PtyBoard:
    """A MicroPython process on one pseudo-terminal (the board's console) and
    a second one for mpremote (the "USB serial port"), bytes bridged between."""

    def __init__(self, argv):
        import pty
        import threading
        import tty
        self.ma, self.sa = pty.openpty()
        self.mb, self.sb = pty.openpty()
        tty.setraw(self.sa)
        tty.setraw(self.sb)
        self.port = os.ttyname(self.sb)
        self.proc = subprocess.Popen(argv, stdin=self.sa, stdout=self.sa, stderr=self.sa, cwd=ROOT)
        self.seen = bytearray()
        self.stop = threading.Event()
        self.th = threading.Thread(target=self._bridge, daemon=True)
        self.th.start()

    def _bridge(self):
        import select
        while not self.stop.is_set():
            r, _, _ = select.select([self.ma, self.mb], [], [], 0.05)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    self.stop.set()
                    break
                if fd == self.ma:
                    self.seen.extend(data)
                    os.write(self.mb, data)
                else:
                    os.write(self.ma, data)

    def type(self, line, wait):
        os.write(self.ma, line)  # typed at the board's console
        time.sleep(wait)

    def out(self):
        return self.seen.decode(errors="replace")

    def wait_for(self, text, timeout=30.0):
        # The board answers in its own time (a loaded CI machine): wait for it.
        t = time.monotonic() + timeout
        while text not in self.out():
            if time.monotonic() > t:
                raise AssertionError("board never said %r:\n%s" % (text, self.out()[-2000:]))
            time.sleep(0.05)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stop.set()
        self.th.join(2)
        for fd in (self.ma, self.sa, self.mb, self.sb):
            os.close(fd)


BOARD_ON_PTY = r"""
import sys, asyncio
sys.path.insert(0, %r)
sys.path.insert(0, %r)
from fakes import FakePort
from boards.common.board import DevBoard
from boards.common import usb_update
from firmware.ota.slots import Slots
class P(FakePort):
    def reset(self):
        print("COIL", [o.contactor.coil for o in self.board.plant.outlets])
        if EXIT_ON_RESET:
            FakePort.reset(self)
        print("RESET: (the real board reboots into the plain REPL here)")
    def slots(self, store, log=None, **kw):
        return Slots(store, self.store_root() + "/slots", log=log, **kw)
port = P(%r)
# This process is the board: the board package's Port (what the flash tool's
# command imports) is this fake port.
import boards.esp32
class _PortModule:
    Port = lambda: port
sys.modules["boards.esp32.port"] = _PortModule
port.board = DevBoard(port)
try:
    asyncio.run(port.board.run())
except SystemExit:
    pass
"""


def pty_board(tmp_path, exit_on_reset, interactive=False):
    from test_board_math import FAKES
    (tmp_path / "fakes.py").write_text(FAKES)
    store = tmp_path / "flash"
    store.mkdir()
    (store / "config.json").write_text(json.dumps({"pins": {"demo": True}}))
    code = "EXIT_ON_RESET = %r\n" % exit_on_reset + BOARD_ON_PTY % (ROOT, str(tmp_path), str(store))
    b = PtyBoard([micropython()] + (["-i"] if interactive else []) + ["-c", code])
    b.wait_for("bench REPL")
    b.type(b"plug(32)\r", 0.3)
    b.type(b"ev('C')\r", 0)
    b.wait_for("contactor closed")
    b.type(b"status()\r", 0.3)
    return b, store


def test_real_mpremote_connecting_hands_the_board_over(tmp_path):
    # The bench REPL of a board (shared board code on the fake port, demo
    # mode, charging) on a pseudo-terminal: the real mpremote's connection
    # alone makes the charger open its contactor and reboot into the plain REPL.
    b, store = pty_board(tmp_path, exit_on_reset=True)
    mpr = None
    try:
        mpr = subprocess.Popen([fb.mpremote_exe(), "connect", b.port, "exec", "print(1)"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        b.proc.wait(timeout=20)
    finally:
        if mpr is not None and mpr.poll() is None:
            mpr.kill()
            mpr.wait()
        b.close()
    out = b.out()
    i = out.index("console handed over to mpremote")
    assert "contactor closed" in out[:i], out  # it was charging when mpremote connected
    assert "COIL [False]" in out[i:] and "RESET" in out[i:], out
    assert (store / "maintenance").exists()


def test_flash_bundle_end_to_end_with_real_mpremote(rel, tmp_path):
    # tools/flash_bundle.py with the real mpremote against a charging board
    # on a pseudo-terminal (MicroPython's own REPL, raw REPL included, takes
    # over when the charger program ends: micropython -i). Hand-over, retry,
    # copy, the board's verification and install, the result line.
    b, store = pty_board(tmp_path, exit_on_reset=False, interactive=True)
    (store / "manufacturer_roots.pem").write_bytes((rel["ec"] / "root.pem").read_bytes())
    out = []
    try:
        rc = fb.flash(rel["good"], b.port, "esp32", fb.load_roots([str(rel["ec"] / "root.pem")]),
                      out=out.append, pause=0.5, remote=str(tmp_path / "update.bundle"))
    finally:
        b.close()
    con = b.out()
    assert "console handed over to mpremote" in con and "COIL [False]" in con, con
    assert "UPDATE OK slot A version 1.1.0" in out, (out, con[-3000:])
    assert rc == 0, out
    assert any("retry 1/" in x for x in out), out  # the first connection only handed over
    assert not (tmp_path / "update.bundle").exists()
    rec = json.loads((store / "boot_slots.json").read_text().splitlines()[0])
    assert rec["state"] == "trial" and rec["trial_slot"] == "A" and rec["last_good"] == "F"
    assert (store / "slots" / "A" / "app" / "main.mpy").exists()


def test_certificate_policy_refusals_over_usb(rel, tmp_path):
    """The firmware-signing certificate policy on the USB path: the trailer
    carries the signer and its intermediates (DER back to back). A TLS server
    certificate, an intermediate or the root as signer, a critical unknown
    extension, an issuer without keyCertSign, a missing intermediate and a
    BER signature are refused with their reason codes, on the board and by
    the host tool, leaving the boot record and the running slot as they
    were; the valid 3-level chain installs."""
    import hashlib
    from cryptography.hazmat.primitives import serialization
    from ota_helpers import ber_signature, issue, sign_digest, signer_kinds
    root, root_key = issue("Policy Test Root", None, None, ca=True, path_len=1,
                           key_usage={"key_cert_sign", "crl_sign"}, days=(-1, 3650))
    rp = tmp_path / "policy-root.pem"
    rp.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    data = open(rel["v110"], "rb").read()
    digest = hashlib.sha256(data).digest()

    def trailer(name, certs, sig):
        ders = b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)
        p = tmp_path / (name + ".signed")
        p.write_bytes(data + ders + sig + struct.pack(">IHH", len(data), len(ders), len(sig)) + fb.TRAILER_MAGIC)
        return str(p)

    kinds = signer_kinds(root, root_key)
    cases = []
    for name, (key, certs, reason) in kinds.items():
        if reason is not None:
            cases.append((name, trailer(name, certs, sign_digest(key, digest)), reason))
    key, certs, _ = kinds["three_level"]
    cases.append(("ber_signature", trailer("ber", certs, ber_signature(sign_digest(key, digest))), "bad_signature"))
    good = trailer("three_level", certs, sign_digest(key, digest))
    roots = [rel["ec"] / "root.pem", rp]
    state = tmp_path / "state"
    r = apply_cases(state, [[rel["base"], "unix", NOW]], roots)[0]
    assert r["ok"] == "B", r
    confirm(state)
    out = apply_cases(state, [[p, "unix", NOW] for _, p, _ in cases] + [[good, "unix", NOW]], roots)
    for (name, _, reason), r in zip(cases, out):
        assert r.get("err") == reason, (name, r)
        assert r["rec_same"] and r["running_same"], (name, r)
        assert r["rec"]["state"] == "confirmed" and r["rec"]["active"] == "B", (name, r)
        assert r["note"]["reason"] == reason
    assert out[-1].get("ok") == "A" and out[-1]["ver"] == "1.1.0", out[-1]
    # The host tool gives the same answers before touching a board.
    host_roots = fb.load_roots([str(rp)])
    for name, p, reason in cases:
        with pytest.raises(fb.Refused) as e:
            fb.local_check(p, "unix", host_roots)
        assert e.value.reason == reason, name
    assert fb.local_check(good, "unix", host_roots)["version"] == "1.1.0"


# ---------------------------------------------------------------- what the technician reads

FLASH = os.path.join(ROOT, "tools", "flash_bundle.py")


def readme_exit_codes():
    # "Exit status of `tools/flash_bundle.py`: 0 installed ..., 1 refused ..., 2 usage error ..."
    with open(os.path.join(ROOT, "README.md")) as f:
        text = " ".join(f.read().split())
    i = text.index("Exit status of `tools/flash_bundle.py`:")
    part = text[i:i + 400]
    import re
    return {word: int(n) for n, word in re.findall(r"(\d) (installed|refused|usage error)", part)}


def test_missing_file_says_no_such_file(tmp_path):
    missing = str(tmp_path / "fw-9.9.9.signed")
    p = subprocess.run([sys.executable, FLASH, missing], capture_output=True, text=True, timeout=60)
    assert "no such file: %s" % missing in p.stdout
    assert "bad_manifest" not in p.stdout
    assert p.returncode == readme_exit_codes()["usage error"] == 2


def test_refusal_exit_codes_match_the_readme(rel, tmp_path):
    codes = readme_exit_codes()
    assert codes == {"installed": 0, "refused": 1, "usage error": 2}
    unsigned = tmp_path / "plain.bundle"
    unsigned.write_bytes(open(rel["good"], "rb").read()[:-200])  # the trailer cut off
    for f in (str(unsigned), rel["flip_sig"]):
        p = subprocess.run([sys.executable, FLASH, f, "--port", "/dev/ttyUSB9"], capture_output=True, text=True,
                           timeout=60)
        assert "REFUSED" in p.stdout
        assert p.returncode == codes["refused"], p.stdout
    # through make too: the tool's status is said, whatever make exits with
    p = subprocess.run(["make", "-s", "-o", ".venv/.installed", "flash-bundle", "BUNDLE=" + str(unsigned)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "exit status 1 (1 refused" in p.stdout, p.stdout + p.stderr


def test_no_board_is_said_at_once(rel, tmp_path):
    # A port that is not there: said before any mpremote command, no retries.
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, FLASH, rel["good"], "--port", str(tmp_path / "ttyUSB0"), "--target", "esp32"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "no board on %s" % (tmp_path / "ttyUSB0") in p.stdout
    assert "retry" not in p.stdout and time.monotonic() - t0 < 20
    # mpremote's auto with no USB serial port at all
    exe, log = fake_mpremote(tmp_path, "UPDATE OK slot B version 1.1.0", fail_first=0)
    out = []
    rc = fb.flash(rel["good"], None, "esp32", (), mpremote=exe, out=out.append, pause=0, ports=lambda: [])
    assert rc == 2
    assert out[-1].startswith("no board attached") and not any("retry" in x for x in out)
    assert not log.exists()  # mpremote never ran

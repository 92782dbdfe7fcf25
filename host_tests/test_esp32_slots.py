"""boards/esp32/slots.py on the Unix port against a fake `esp32` module.

The fake Partition is a block device backed by a file (so it keeps its
content across "reboots", i.e. separate MicroPython processes), with find()
by label, info() and mark_app_valid_cancel_rollback() recorded in a file.
The slots are LittleFS (os.VfsLfs2) mounted at test mount points; Slots and
the USB update path (firmware/ota/local.py) run unchanged on them.
"""
import csv
import json
import os
import sys
import time

import pytest

from fwproc import ROOT
from mp import run_mp

sys.path.insert(0, ROOT)
from tools import release  # noqa: E402

FAKE_ESP32 = r'''
# Fake esp32 module: Partition.find by label over file-backed block devices.
import os, json
DIR = %r
BLOCK = 4096
RUNNING = -1
BOOT = -2
TYPE_APP = 0
TYPE_DATA = 1


class Partition:
    RUNNING = RUNNING
    BOOT = BOOT
    TYPE_APP = TYPE_APP
    TYPE_DATA = TYPE_DATA

    def __init__(self, which):
        if which == RUNNING:
            self.label = "app"
            self.sub = json.load(open(DIR + "/layout.json"))["running_subtype"]
            self.path = None
            self.blocks = 0
            return
        self.label = which
        self.sub = 0x81
        self.path = DIR + "/" + which + ".bin"
        self.blocks = os.stat(self.path)[6] // BLOCK

    @staticmethod
    def find(type=TYPE_APP, subtype=0xff, label=None):
        if type != TYPE_DATA:
            return []
        lay = json.load(open(DIR + "/layout.json"))
        return [Partition(l) for l in lay["data"] if label is None or l == label]

    def info(self):
        return (TYPE_APP if self.path is None else TYPE_DATA, self.sub, 0, self.blocks * BLOCK, self.label, False)

    def readblocks(self, n, buf, off=0):
        f = open(self.path, "rb")
        f.seek(n * BLOCK + off)
        f.readinto(buf)
        f.close()

    def writeblocks(self, n, buf, off=None):
        if off is None:
            # erase-then-write of whole blocks, as the real partition does
            off = 0
        f = open(self.path, "r+b")
        f.seek(n * BLOCK + off)
        f.write(buf)
        f.close()

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return BLOCK
        if op == 6:
            f = open(self.path, "r+b")
            f.seek(arg * BLOCK)
            f.write(b"\xff" * BLOCK)
            f.close()
            return 0
        return 0

    @staticmethod
    def mark_app_valid_cancel_rollback():
        f = open(DIR + "/marked", "a")
        f.write("1")
        f.close()
'''

PRE = r"""
import sys, json, os
sys.path.insert(0, %r)
import esp32
from firmware.core.store import Store
from firmware.core.log import Log
from firmware.core.clock import RealClock
from firmware.ota import VerifyError, local
from firmware.crypto import der, pem
from boards.esp32 import slots as ps
STATE = %r
MOUNTS = (("A", STATE + "/mnt_a"), ("B", STATE + "/mnt_b"))
def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
def out(**kw):
    print("OUT " + json.dumps(kw))
def mk():
    st = Store(STATE + "/store")
    log = Log(RealClock(), echo=print)
    s, kind = ps.open_slots(st, STATE + "/flash", log, esp32, MOUNTS)
    return st, s, kind
"""


def setup(tmp_path, parts=("slot_a", "slot_b"), running=0x00, blocks=64):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "esp32.py").write_text(FAKE_ESP32 % str(fake))
    for p in parts:
        (fake / (p + ".bin")).write_bytes(b"\xff" * (blocks * 4096))
    (fake / "layout.json").write_text(json.dumps({"data": list(parts), "running_subtype": running}))
    (tmp_path / "flash").mkdir()
    return fake


def mp(tmp_path, body):
    p = run_mp(PRE % (str(tmp_path / "fake"), str(tmp_path)) + body, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout, [json.loads(ln[4:]) for ln in p.stdout.splitlines() if ln.startswith("OUT ")]


@pytest.fixture(scope="module")
def signed_bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("esp32b")
    release.make_keys(str(d / "ec"), "ecdsa")
    out = {"root": str(d / "ec" / "root.pem")}
    for ver in ("1.0.0", "1.1.0"):
        src = d / ("src" + ver) / "app"
        src.mkdir(parents=True)
        (src / "main.py").write_text("VERSION = %r\n" % ver)
        (src / "table.py").write_text("T = %r\n" % ["%s-%d" % (ver, i) for i in range(600)])
        b = d / ("fw-%s.bundle" % ver)
        release.make_bundle(ver, "esp32,unix", ver, str(b), src=str(src))
        out[ver] = str(d / ("fw-%s.signed" % ver))
        release.sign_bundle(str(b), str(d / "ec" / "signing.key"), str(d / "ec" / "signing.pem"), out[ver],
                            embed=True)
    return out


APPLY = r"""
st, s, kind = mk()
slot, rep = s.boot()
roots = pem.decode_all(open(%r).read())
try:
    r = local.apply(%r, st, s, "esp32", roots, %d)
except VerifyError as e:
    r = "ERR " + e.reason
out(kind=kind, boot=slot, rep=rep, applied=r, dirs=[s.dir("A"), s.dir("B")],
    files=sorted(os.listdir(s.dir(r))) if r in ("A", "B") else None, rec=st.read("boot_slots.json"))
"""

BOOT_CONFIRM = r"""
st, s, kind = mk()
slot, rep = s.boot()
ok = s.check_slot(slot)
c = s.confirm()
out(kind=kind, boot=slot, rep=rep, ok=ok, confirmed=c, ver=s.version(slot),
    marked=exists(%r + "/fake/marked"))
"""


def test_partitions_formatted_mounted_and_updated(tmp_path, signed_bundles):
    setup(tmp_path)
    now = int(time.time())
    stdout, r = mp(tmp_path, APPLY % (signed_bundles["root"], signed_bundles["1.0.0"], now))
    r = r[0]
    # Blank partitions: formatted at the first mount, then used as the slots.
    assert "unreadable" in stdout and "formatting" in stdout
    assert r["kind"] == "partitions" and r["dirs"] == [str(tmp_path / "mnt_a"), str(tmp_path / "mnt_b")]
    assert r["applied"] == "B" and r["files"] == ["app", "slot.json"], r
    assert r["rec"]["state"] == "trial"
    # The files are on the partition, not on the host directory behind the mount point.
    assert not (tmp_path / "mnt_b" / "app").exists()
    assert b"main.mpy" in (tmp_path / "fake" / "slot_b.bin").read_bytes()
    # Next "boot" (a new process): mounted, not formatted; the trial runs and confirms.
    stdout, r = mp(tmp_path, BOOT_CONFIRM % str(tmp_path))
    assert "formatting" not in stdout
    assert r[0] == {"kind": "partitions", "boot": "B", "rep": "trial 1/3", "ok": True, "confirmed": True,
                    "ver": "1.0.0", "marked": False}  # a factory app: nothing to mark
    # 1.1.0 goes into A; a torn/garbled slot B ... is reformatted and B is incomplete.
    stdout, r = mp(tmp_path, APPLY % (signed_bundles["root"], signed_bundles["1.1.0"], now))
    assert r[0]["applied"] == "A", r
    stdout, r = mp(tmp_path, BOOT_CONFIRM % str(tmp_path))
    assert r[0]["boot"] == "A" and r[0]["confirmed"] is True and r[0]["ver"] == "1.1.0"
    # Garble slot A's filesystem (the running one): formatted at the next boot,
    # and the board comes up on the complete slot B instead.
    (tmp_path / "fake" / "slot_a.bin").write_bytes(os.urandom(64 * 4096))
    stdout, r = mp(tmp_path, BOOT_CONFIRM % str(tmp_path))
    assert "mnt_a unreadable" in stdout
    assert r[0]["boot"] == "B" and r[0]["ok"] is True and "corrupt" in r[0]["rep"], r


def test_confirm_marks_an_ota_app_valid(tmp_path, signed_bundles):
    setup(tmp_path, running=0x10)  # the running app is ota_0
    now = int(time.time())
    mp(tmp_path, APPLY % (signed_bundles["root"], signed_bundles["1.0.0"], now))
    stdout, r = mp(tmp_path, BOOT_CONFIRM % str(tmp_path))
    assert r[0]["confirmed"] is True and r[0]["marked"] is True
    # Nothing to confirm: not marked again.
    (tmp_path / "fake" / "marked").unlink()
    stdout, r = mp(tmp_path, BOOT_CONFIRM % str(tmp_path))
    assert r[0]["confirmed"] is False and r[0]["marked"] is False


@pytest.mark.parametrize("parts", [(), ("slot_a",)])
def test_without_the_partitions_slots_are_directories(tmp_path, signed_bundles, parts):
    setup(tmp_path, parts=parts)
    now = int(time.time())
    stdout, r = mp(tmp_path, APPLY % (signed_bundles["root"], signed_bundles["1.0.0"], now))
    assert r[0]["kind"] == "directories"
    assert r[0]["dirs"] == [str(tmp_path / "flash" / "slots" / "A"), str(tmp_path / "flash" / "slots" / "B")]
    assert r[0]["applied"] == "B"
    assert (tmp_path / "flash" / "slots" / "B" / "app" / "main.mpy").exists()
    if parts:
        # One partition alone is not used (and not formatted).
        assert (tmp_path / "fake" / "slot_a.bin").read_bytes() == b"\xff" * (64 * 4096)


def test_esp32_port_uses_the_partition_slots(tmp_path):
    setup(tmp_path)
    stdout, r = mp(tmp_path, r"""
from boards.esp32.port import Esp32Port
class P(Esp32Port):
    def store_root(self):
        return STATE + "/flash"
import boards.esp32.slots as m
st = Store(STATE + "/store")
s = P().slots(st)
out(cls=type(s).__name__, a=s.dir("A"))
""")
    # The real mount points (/slot_a) on the real port.
    assert r[0] == {"cls": "PartitionSlots", "a": "/slot_a"}


def test_partition_table_4mib():
    path = os.path.join(ROOT, "boards", "esp32", "partitions-4MiB.csv")
    rows = [r for r in csv.reader(open(path)) if r and not r[0].lstrip().startswith("#")]
    parts = {}
    end = 0x9000  # the partition table itself is at 0x8000
    for name, typ, sub, off, size, *_ in [[c.strip() for c in r] for r in rows]:
        off, size = int(off, 16), int(size, 16)
        assert off >= end, name  # in order, no overlap
        assert off % (0x10000 if typ == "app" else 0x1000) == 0, name
        assert size % 0x1000 == 0, name
        end = off + size
        parts[name] = (typ, sub, off, size)
    assert end <= 4 * 1024 * 1024
    # Stock MicroPython ESP32_GENERIC's app, so the table flashes under a stock build.
    assert parts["factory"] == ("app", "factory", 0x10000, 0x1F0000)
    assert parts["nvs"][:2] == ("data", "nvs") and parts["vfs"][0] == "data"
    for s in ("slot_a", "slot_b"):
        assert parts[s][0] == "data" and parts[s][3] >= 384 * 1024
    assert parts["slot_a"][3] == parts["slot_b"][3]
    assert parts["vfs"][3] >= 768 * 1024  # store + a signed esp32 bundle being copied in


def test_new_modules_hold_no_mutable_state():
    from test_fleet import CHECK
    mods = ["firmware.ota.local", "boards.esp32.slots", "boards.common.usb_update", "boards.esp32.port"]
    p = run_mp("MODS = %r\n" % mods + CHECK)
    assert p.returncode == 0, p.stderr
    assert [ln for ln in p.stdout.splitlines() if ln.startswith("BAD")][-1] == "BAD []"


def test_factory_image_with_partition_slots(tmp_path, signed_bundles):
    # A board running the firmware it was flashed with ("F"): the first update
    # goes to A on its partition; the factory image has no directory of ours.
    setup(tmp_path)
    stdout, r = mp(tmp_path, r"""
st = Store(STATE + "/store")
s, kind = ps.open_slots(st, STATE + "/flash", None, esp32, MOUNTS, factory_version="0.1.0")
slot, rep = s.boot()
roots = pem.decode_all(open(%r).read())
a = local.apply(%r, st, s, "esp32", roots, %d)
out(kind=kind, boot=slot, f=s.dir("F"), applied=a, dir=s.dir(a), rec=st.read("boot_slots.json"))
""" % (signed_bundles["root"], signed_bundles["1.0.0"], int(time.time())))
    r = r[0]
    assert r["kind"] == "partitions" and r["boot"] == "F" and r["f"] is None
    assert r["applied"] == "A" and r["dir"] == str(tmp_path / "mnt_a")
    assert r["rec"]["state"] == "trial" and r["rec"]["last_good"] == "F"

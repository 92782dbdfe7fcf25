# Two application slots (<root>/A, <root>/B) and an atomically written boot
# record in the Store ("boot_slots.json"):
#   {"active": "A"|"B", "versions": {"A": "x.y.z"|None, "B": ...},
#    "state": "confirmed"|"trial", "trial_slot": "A"|"B"|None,
#    "trial_boots": int, "max_trial_boots": int, "last_good": "A"|"B",
#    "min_version": "x.y.z"|None}
#
# An update goes into the inactive slot (wiped first, files extracted with an
# atomic writer: <file>.tmp, flush, rename), then the slot marker
# <slot>/slot.json (version, min_version, files with size and sha256) is
# written last, through a Store, so it carries a CRC. A slot is "complete"
# only if its marker reads and every listed file's SHA-256 matches
# (check_slot streams them). Then arm_trial switches the record to "trial".
# boot() counts trial boots and rolls back to last_good when the trial slot
# is incomplete or was never confirmed within max_trial_boots; a corrupt
# active slot or boot record still comes up on a complete slot.
#
# A board may also have a factory image (FACTORY, "F"): the firmware it was
# flashed with, read-only, outside the two slots (the Unix board's source
# tree; an ESP32's factory app). It counts as complete, it is where a charger
# with no installed update runs, and it is a last-known-good like any slot.
#
# Every write of the record and of the marker goes through the store, so a
# power cut can be injected at each of its write boundaries (Store.cut_at).
# The extracted files are plain file writes; an interrupted install leaves
# the inactive slot without a marker (incomplete) and the record untouched.
#
# install_work and check_slot_work are generators (firmware/core/work.py)
# yielding after each chunk hashed or written and each file removed, so the
# charger drives an install in bounded slices; install and check_slot run the
# same work at once (the boot loader, tests, the USB path).
import binascii
import os
from firmware.core.work import run_sync
from firmware.crypto.sha import hashed_chunks
from firmware.ota import VerifyError
from firmware.ota import bundle as _bundle

RECORD = "boot_slots.json"
MARKER = "slot.json"
MARKER_MAX = 65536  # a slot marker lists every file of an image; read back at most this big
NAMES = ("A", "B")
FACTORY = "F"
MAX_TRIAL_BOOTS = 3
CHUNK = 1024

try:
    _fsync = os.fsync
except AttributeError:
    _fsync = None


def other(slot):
    return "B" if slot == "A" else "A"


def _rm(p):
    try:
        os.remove(p)
    except OSError:
        pass


def _is_dir(p):
    try:
        return os.stat(p)[0] & 0x4000 != 0
    except OSError:
        return False


def _rmtree_work(d):
    try:
        names = [e[0] for e in os.ilistdir(d)]
    except OSError:
        return
    for n in names:
        if n in (".", ".."):
            continue
        p = d + "/" + n
        if _is_dir(p):
            yield from _rmtree_work(p)
            try:
                os.rmdir(p)
            except OSError:
                pass
        else:
            _rm(p)
        yield


def write_atomic(dest, chunks, mark=None):
    run_sync(write_atomic_work(dest, chunks, mark))


def write_atomic_work(dest, chunks, mark=None):
    """extract() writer: <dest>.tmp, flush (+fsync), rename over dest.

    The chunk iterator raises VerifyError after the last chunk of a bad file;
    then the temp file is removed and dest is never created. mark(): called
    at each write boundary (file flushed, file renamed), where a test may
    cut the power.
    """
    i = dest.rfind("/")
    if i > 0:
        _bundle._makedirs(dest[:i])
    tmp = dest + ".tmp"
    f = open(tmp, "wb")
    try:
        for c in chunks:
            f.write(c)
            yield
        f.flush()
        if _fsync:
            _fsync(f.fileno())
    except BaseException:
        f.close()
        _rm(tmp)
        raise
    f.close()
    if mark:
        mark()
    try:
        os.rename(tmp, dest)
    except OSError:
        _rm(dest)  # FAT: no rename over an existing file
        os.rename(tmp, dest)
    if mark:
        mark()


def _ver(v):
    try:
        return _bundle.parse_version(v)
    except Exception:
        return None


def _safe_rel(p):
    if not isinstance(p, str) or not p or p[0] == "/" or "\\" in p:
        return False
    for s in p.split("/"):
        if s in ("", ".", ".."):
            return False
    return True


def _marker_ok(m):
    # A slot marker: {"version":, "min_version":, "files": [{"path":, "size":, "sha256":}, ...]}
    return isinstance(m["files"], list) and _ver(m.get("version")) is not None


class Slots:
    def __init__(self, store, root, max_trial_boots=MAX_TRIAL_BOOTS, log=None, factory_version=None):
        self.store = store
        self.root = root.rstrip("/") or "/"
        self.max_trial_boots = max_trial_boots
        self.log = log
        self.factory_version = factory_version  # set: the board has a factory image
        self.running = None  # the slot boot() chose
        self.rolled_back = None  # (from slot, why) when boot() or rollback() went back
        for s in NAMES:
            _bundle._makedirs(self.dir(s))

    # ------------------------------------------------------------ slots
    def dir(self, slot):
        """The slot's directory; None for the factory image (it is not ours to write)."""
        if slot == FACTORY:
            return None
        return self.root + "/" + slot if self.root != "/" else "/" + slot

    def _names(self):
        return NAMES + (FACTORY,) if self.factory_version else NAMES

    def _marker_path(self, slot):
        return self.dir(slot) + "/" + MARKER

    def marker(self, slot):
        """The slot's marker dict, or None if missing/corrupt."""
        return self.store.read_file(self._marker_path(slot), None, check=_marker_ok, max_bytes=MARKER_MAX)

    def check_slot(self, slot):
        return run_sync(self.check_slot_work(slot))

    def check_slot_work(self, slot):
        """True if slot's marker is intact and every listed file's size and SHA-256 match."""
        if slot == FACTORY:
            return self.factory_version is not None
        if slot not in NAMES:
            return False
        m = self.marker(slot)
        if m is None or not m["files"]:
            return False
        d = self.dir(slot)
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        try:
            for e in m["files"]:
                p = e.get("path")
                if not _safe_rel(p):
                    return False
                f = open(d + "/" + p, "rb")
                try:
                    digest, n = yield from hashed_chunks(f, mv)
                finally:
                    f.close()
                if n != e.get("size") or binascii.hexlify(digest).decode() != e.get("sha256"):
                    return False
        except (OSError, AttributeError, TypeError):
            return False
        return True

    def version(self, slot):
        if slot == FACTORY:
            return self.factory_version
        m = self.marker(slot)
        return m["version"] if m else None

    # ------------------------------------------------------------ record
    def _default(self):
        good = "A" if self.check_slot("A") else ("B" if self.check_slot("B") else (
            FACTORY if self.factory_version else "A"))
        m = self.marker(good) if good != FACTORY else None
        return {"active": good, "versions": {"A": self.version("A"), "B": self.version("B")},
                "state": "confirmed", "trial_slot": None, "trial_boots": 0,
                "max_trial_boots": self.max_trial_boots, "last_good": good,
                "min_version": m.get("min_version") if m else None}

    def _valid(self, r):
        if not isinstance(r, dict):
            return False
        names = self._names()
        if r.get("active") not in names or r.get("last_good") not in names:
            return False
        st = r.get("state")
        if st == "trial":
            if r.get("trial_slot") not in NAMES:
                return False
            tb = r.get("trial_boots")
            if not isinstance(tb, int) or tb < 0:
                return False
        elif st != "confirmed":
            return False
        mx = r.get("max_trial_boots")
        if not isinstance(mx, int) or mx < 1:
            r["max_trial_boots"] = self.max_trial_boots
        if not isinstance(r.get("versions"), dict):
            r["versions"] = {"A": None, "B": None}
        return True

    def record(self):
        """(record, None) or (safe default, why) when missing/corrupt; never raises."""
        try:
            r = self.store.read(RECORD, None, check=self._valid)
        except Exception:
            r = None
        if r is None:
            # The store set a bad record aside (and logged why) until the next write.
            bad = self.store.aside.get(RECORD)
            try:
                os.stat(self.store.path(RECORD))
                why = "boot record corrupt"
            except OSError:
                why = "no boot record yet (first boot)"
            if bad:
                why = "boot record invalid" if bad.startswith("wrong type") else "boot record corrupt"
            return self._default(), why
        return r, None

    def _write(self, r):
        self.store.write(RECORD, r)

    def inactive(self):
        r, _ = self.record()
        return self._target(r)

    # ------------------------------------------------------------ install
    def _write_marker(self, slot, m):
        # Through the main store: atomic, and its power-cut boundaries count.
        self.store.write_file(self._marker_path(slot), m)

    def install(self, bundle_path, manifest, target, write_file=None, allow_downgrade=False):
        return run_sync(self.install_work(bundle_path, manifest, target, write_file, allow_downgrade))

    def install_work(self, bundle_path, manifest, target, write_file=None, allow_downgrade=False):
        """Wipe the inactive slot, extract target's files, write its marker, arm a trial.

        Raises VerifyError (wrong_target, downgrade, hash_mismatch, ...,
        trial_pending). Returns the slot armed.
        """
        r, why = self.record()
        if why:
            # Settle the record first: computed afresh after the extraction it
            # would take the new slot for the last good one.
            self._write(r)
        if r["state"] == "trial":
            raise VerifyError("trial_pending", "confirm or roll back the running trial first")
        if target not in manifest.get("targets", ()):
            raise VerifyError(_bundle.WRONG_TARGET)
        v = _bundle.parse_version(manifest["version"])
        floor = _ver(r.get("min_version"))
        if floor is not None and v < floor:
            raise VerifyError(_bundle.DOWNGRADE, "below min_version %s" % r["min_version"])
        running = _ver(self.version(r["active"]) if r["active"] == FACTORY else r["versions"].get(r["active"]))
        if running is not None and v < running:
            if not (allow_downgrade and manifest.get("allow_downgrade") is True):
                raise VerifyError(_bundle.DOWNGRADE)
        slot = self._target(r)
        d = self.dir(slot)
        # Marker first: from here on the slot is incomplete until the end.
        _rm(d + "/" + MARKER)
        _rm(d + "/" + MARKER + ".tmp")
        yield from _rmtree_work(d)
        _bundle._makedirs(d)
        yield from _bundle.extract_work(bundle_path, manifest, d, write_file or self._write_atomic, target)
        prefix = target + "/"
        files = []
        for e in manifest["files"]:
            if e["path"].startswith(prefix):
                files.append({"path": e["path"][len(prefix):], "size": e["size"], "sha256": e["sha256"]})
        self._write_marker(slot, {"version": manifest["version"],
                                  "min_version": manifest.get("min_version"), "files": files})
        yield from self.arm_trial_work(slot)
        return slot

    def _target(self, r):
        # The slot to overwrite: never the running one, nor the last good one
        # a trial would fall back to; from the factory image, A first.
        cur = self.running or r["active"]
        if cur == FACTORY:
            return "B" if r.get("last_good") == "A" and self.check_slot("A") else "A"
        return other(cur)

    def _write_atomic(self, dest, chunks):
        return write_atomic_work(dest, chunks, self.store.boundary)

    def arm_trial(self, slot):
        run_sync(self.arm_trial_work(slot))

    def arm_trial_work(self, slot):
        r, _ = self.record()
        if not (yield from self.check_slot_work(slot)):
            raise VerifyError("slot_incomplete", slot)
        if r["state"] == "confirmed" and r["active"] != slot:
            r["last_good"] = r["active"]
        r["versions"][slot] = self.version(slot)
        r["state"] = "trial"
        r["trial_slot"] = slot
        r["trial_boots"] = 0
        r["max_trial_boots"] = self.max_trial_boots
        r["active"] = slot
        self._write(r)

    # ------------------------------------------------------------ boot
    def boot(self):
        """Choose the slot to run at start; returns (slot, report)."""
        self.rolled_back = None
        r, why = self.record()
        if why:
            self._write(r)
            slot = r["active"]
            rep = "%s, using %s" % (why, slot)
            if not self.check_slot(slot):
                rep += " (no complete slot)"
            self.running = slot
            return slot, rep
        if r["state"] == "trial":
            s = r["trial_slot"]
            n = r["trial_boots"] + 1
            mx = r["max_trial_boots"]
            if not self.check_slot(s):
                return self._roll(r, "slot %s incomplete" % s)
            if n > mx:
                return self._roll(r, "not confirmed after %d boots" % mx)
            r["trial_boots"] = n
            self._write(r)  # counted before the trial firmware runs
            self.running = s
            return s, "trial %d/%d" % (n, mx)
        a = r["active"]
        if self.check_slot(a):
            self.running = a
            return a, "confirmed"
        for o in (other(a), FACTORY):
            if o != a and self.check_slot(o):
                r["active"] = o
                r["last_good"] = o
                if o != FACTORY:
                    r["versions"][o] = self.version(o)
                self._write(r)
                self.running = o
                return o, "slot %s corrupt, using %s" % (a, o)
        self.running = a
        return a, "slot %s corrupt, no complete slot" % a

    def _roll(self, r, why):
        frm = r["trial_slot"] if r["state"] == "trial" else r["active"]
        to = r["last_good"]
        if to == frm or not self.check_slot(to):
            for alt in (other(frm), FACTORY):
                if alt != frm and self.check_slot(alt):
                    to = alt
                    break
            else:
                if not self.check_slot(to):
                    to = frm if self.check_slot(frm) else to
        r["state"] = "confirmed"
        r["trial_slot"] = None
        r["trial_boots"] = 0
        r["active"] = to
        r["last_good"] = to
        self._write(r)
        self.running = to
        self.rolled_back = (frm, why)
        if self.log:
            self.log.error("ota", "rolled back from %s: %s" % (frm, why))
        return to, "rolled back from %s: %s" % (frm, why)

    def confirm(self):
        """The running trial slot is healthy: record it confirmed and last_good.

        Raises the anti-rollback floor to the slot's min_version. Returns True
        if a trial was confirmed, False if there was nothing to confirm.
        """
        r, why = self.record()
        if why or r["state"] != "trial":
            return False
        s = r["trial_slot"]
        if self.running is not None and self.running != s:
            return False
        m = self.marker(s)
        r["state"] = "confirmed"
        r["active"] = s
        r["last_good"] = s
        r["trial_slot"] = None
        r["trial_boots"] = 0
        if m:
            r["versions"][s] = m["version"]
            floor = m.get("min_version")
            if _ver(floor) is not None and (_ver(r.get("min_version")) is None
                                            or _ver(floor) > _ver(r.get("min_version"))):
                r["min_version"] = floor
        self._write(r)
        return True

    def trial(self):
        """True while the running image is on trial (not yet confirmed)."""
        r, why = self.record()
        return not why and r["state"] == "trial" and r["trial_slot"] == self.running

    def rollback(self, why):
        """Explicit rollback: back to last_good (or the other complete slot)."""
        r, _ = self.record()
        return self._roll(r, why)

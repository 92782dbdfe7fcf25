"""Install a signed firmware bundle on a board over USB (the bench technician's update).

    .venv/bin/python tools/flash_bundle.py fw-1.3.0.signed [--port /dev/ttyUSB0] [--target esp32|rp2040]
        [--root release-keys/root.pem] [--remote-path /update.bundle] [--dry-run]
    make flash-bundle BUNDLE=fw-1.3.0.signed [PORT=/dev/ttyUSB0]

The file is one self-contained signed bundle (tools/release.py sign --embed):
the bundle bytes, then a trailer with the signing certificate (DER), the raw
signature, their lengths and the magic b"CHARGER-SIG1":

    <bundle N><cert c><sig s><u32 N><u16 c><u16 s>b"CHARGER-SIG1"   (big-endian)

Steps:
  1. Local checks (refuse before touching the board), with the rules the
     board uses: a trailer, a signature over the first N bytes that verifies
     with the certificate's key, a certificate valid today (and, when --root
     is given, the board's own chain and certificate policy from
     firmware/crypto/verify.py and policy.py), the manifest read and validated by the firmware's own
     firmware/ota/bundle.py, N = header + manifest + files, a file for the
     target, every file's SHA-256.
  2. Hand-over: the first mpremote connection sends Ctrl-C Ctrl-A; the
     charger's bench REPL opens every contactor, saves and reboots into the
     plain REPL (maintenance boot), so that first connection may fail while
     the board reboots: it is retried.
  3. mpremote copies the file to :/update.bundle and runs
     boards.common.usb_update.run(target, now=<this PC's clock>, port=Port())
     on the board, with boards/<target>/port.py's Port,
     which verifies everything again (the board is the authority: chain to
     its installed manufacturer root, signature, target, downgrade floor,
     hashes) and installs into the inactive slot as a trial. It prints one
     line, "UPDATE OK slot B version 1.3.0" or "UPDATE REFUSED <reason>: ...".
  4. On OK, mpremote resets the board: the trial slot boots and must confirm
     itself, else the board rolls back. On a refusal the board stays in the
     plain REPL with nothing changed; `mpremote reset` starts the charger.

--dry-run prints the mpremote commands after the local checks and runs none.
Before any mpremote command the tool checks that the board's serial port is
there (--port, or any USB serial port for mpremote's auto), so a missing
board is said at once instead of retried.
Exit status: 0 installed (or dry run passed), 1 refused (by the local checks
or by the board), 2 usage error (no such file), no board, or mpremote failure.
"""
import argparse
import datetime
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from firmware.ota import VerifyError  # noqa: E402  (the board's rules, run on CPython)
from firmware.ota import bundle as fw_bundle  # noqa: E402
from firmware.crypto import der as fw_der  # noqa: E402
from firmware.crypto import verify as fw_verify  # noqa: E402
from firmware.crypto import sha as fw_sha  # noqa: E402
from firmware.core.work import run_sync  # noqa: E402

TRAILER_MAGIC = fw_bundle.SIG_MAGIC
BOARD_TARGETS = ("esp32", "rp2040")
PLATFORM_TARGET = {"esp32": "esp32", "rp2": "rp2040"}
REMOTE_PATH = "/update.bundle"
HANDOVER_TRIES = 5


class Refused(Exception):
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


class NoSuchFile(Exception):
    """The bundle named is not there: a usage error, not a refusal."""


# ---------------------------------------------------------------- the file

def read_trailer(path):
    """(N, cert_der, signature) or None without a trailer; Refused when it is damaged."""
    try:
        return fw_bundle.read_trailer(path)
    except VerifyError as e:
        raise Refused(e.reason, e.detail or "")


def _verify_sig(cert, digest, sig):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
    pub = cert.public_key()
    pre = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, digest, ec.ECDSA(pre))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, digest, padding.PKCS1v15(), pre)
        else:
            raise Refused("unsupported_algorithm", type(pub).__name__)
    except InvalidSignature:
        raise Refused("bad_signature", "the signature does not verify with the signing certificate")


def local_check(path, target=None, roots=(), now=None):
    """Refuse early on this PC. Returns a dict (version, targets, signer, ...) or raises Refused."""
    from cryptography import x509
    if not os.path.isfile(path):
        raise NoSuchFile(path)
    t = read_trailer(path)
    if t is None:
        raise Refused("unsigned", "no CHARGER-SIG1 trailer: sign with tools/release.py sign --embed")
    n, cert_der, sig = t
    try:
        # The signing certificate, then any intermediates (DER back to back).
        ders = fw_der.split_certificates(cert_der)
        for d in ders:
            fw_der.parse_certificate(d)  # the board's strict DER first: its reason codes
        cert = x509.load_der_x509_certificate(ders[0])
    except VerifyError as e:
        raise Refused(e.reason, "signing certificate: %s" % e)
    except ValueError as e:
        raise Refused("malformed", "signing certificate: %s" % e)
    now = now if now is not None else time.time()
    when = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    if when < cert.not_valid_before_utc:
        raise Refused("cert_not_yet_valid", cert.subject.rfc4514_string())
    if when > cert.not_valid_after_utc:
        raise Refused("cert_expired", cert.subject.rfc4514_string())
    if roots:
        # The board's own chain and certificate policy (firmware/crypto/verify.py, policy.py).
        from cryptography.hazmat.primitives import serialization
        try:
            fw_verify.verify_chain(ders, [r.public_bytes(serialization.Encoding.DER) for r in roots], int(now))
        except VerifyError as e:
            raise Refused(e.reason, e.detail or "")
    # The signed part's digest the board's way (firmware/crypto/sha.py).
    with open(path, "rb") as f:
        digest, got = run_sync(fw_sha.hashed_chunks(f, memoryview(bytearray(65536)), n))
    if got != n:
        raise Refused("size_mismatch", "truncated")
    _verify_sig(cert, digest, sig)
    try:
        m = fw_bundle.read_manifest(path)
        if m["data_offset"] + m["data_size"] != n:
            raise Refused("size_mismatch", "manifest says %d bytes, trailer %d" % (m["data_offset"] + m["data_size"], n))
        targets = [target] if target else [x for x in BOARD_TARGETS if x in m["targets"]]
        for tg in targets or [None]:
            if tg is None or tg not in m["targets"] or not any(e["path"].startswith(tg + "/") for e in m["files"]):
                raise Refused("wrong_target", "bundle targets %s, board %s" % (
                    ",".join(m["targets"]), target or "esp32/rp2040"))
        why = fw_bundle.check_bundle(path, m, targets[0], None, False, length=n)  # length, every SHA-256
        if why:
            raise Refused(why, "bundle contents")
    except VerifyError as e:
        raise Refused(e.reason, e.detail or "")
    return {"version": m["version"], "min_version": m["min_version"], "targets": m["targets"],
            "bundle_bytes": n, "signer": cert.subject.rfc4514_string(), "file_bytes": os.path.getsize(path)}


def load_roots(paths):
    from cryptography import x509
    out = []
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        out += x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data else [x509.load_der_x509_certificate(data)]
    return out


# ---------------------------------------------------------------- mpremote

def mpremote_exe():
    exe = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return exe if os.path.exists(exe) else "mpremote"


def commands(path, port, target, now, mpremote=None, remote=REMOTE_PATH):
    """The mpremote command lines, in order: hand-over/probe, copy+apply, reset."""
    mp = [mpremote or mpremote_exe(), "connect", port or "auto"]
    # Double quotes inside, so the printed commands paste into a shell as they are.
    probe = mp + ["resume", "exec", 'import sys; print("PLATFORM", sys.platform)']
    # The board's port comes from its own package (boards/<target>/port.py
    # Port): the shared usb_update knows no board.
    apply_code = ('from boards.common import usb_update; from boards.%s.port import Port; '
                  'usb_update.run("%s", path="%s", now=%d, port=Port())'
                  % (target or "TARGET", target or "TARGET", remote, int(now)))
    # resume: no soft reset (the boot set sys.path for the firmware's slot;
    # a soft reset would drop it).
    copy_apply = mp + ["resume", "cp", path, ":" + remote, "+", "exec", apply_code]
    reset = mp + ["resume", "reset"]
    return probe, copy_apply, reset


def usb_ports():
    """Serial ports mpremote's `auto` would consider: USB ones (with a vendor id)."""
    try:
        from serial.tools import list_ports
    except ImportError:  # no pyserial: let mpremote find out
        return None
    return [p.device for p in list_ports.comports() if p.vid is not None]


def missing_board(port, ports=usb_ports):
    """Why no board can be there (a message), or None."""
    if port is None or port == "auto":
        found = ports()
        if found == []:
            return "no board attached: no USB serial port found (plug the board in, or pass --port)"
        return None
    dev = port[len("port:"):] if port.startswith("port:") else port
    if dev.startswith("/") and not os.path.exists(dev):
        return "no board on %s: no such serial port" % dev
    return None


def _run(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def flash(path, port=None, target=None, roots=(), dry_run=False, mpremote=None, out=print,
          tries=HANDOVER_TRIES, pause=2.0, remote=REMOTE_PATH, ports=usb_ports):
    now = time.time()
    try:
        info = local_check(path, target, roots, now)
    except NoSuchFile:
        out("no such file: %s" % path)
        return 2
    except Refused as e:
        out("REFUSED locally: %s" % e)
        return 1
    out("local checks passed: version %s (min %s), targets %s, signed by %s, %d bytes" % (
        info["version"], info["min_version"], ",".join(info["targets"]), info["signer"], info["file_bytes"]))
    probe, copy_apply, reset = commands(path, port, target, now, mpremote, remote)
    if dry_run:
        out("dry run; these mpremote commands would run:")
        for c in (probe, copy_apply, reset):
            out("  " + " ".join(shlex.quote(x) for x in c))
        if target is None:
            out("  (TARGET: from the board's sys.platform, esp32 -> esp32, rp2 -> rp2040)")
        return 0
    why = missing_board(port, ports)
    if why:
        out(why)
        return 2
    platform = None
    for i in range(tries):
        try:
            p = _run(probe, 30)
        except subprocess.TimeoutExpired:
            p = None
        if p is not None and p.returncode == 0:
            for line in p.stdout.splitlines():
                if line.startswith("PLATFORM "):
                    platform = line.split()[1]
            if platform:
                break
        out("board not in the raw REPL yet (charger handing over / rebooting), retry %d/%d" % (i + 1, tries))
        time.sleep(pause)
    if not platform:
        out("mpremote could not reach the board's REPL on %s" % (port or "auto"))
        return 2
    board_target = PLATFORM_TARGET.get(platform)
    if target is not None and board_target is not None and target != board_target:
        out("REFUSED: --target %s but the board on %s is %s" % (target, port or "auto", board_target))
        return 1
    if target is None:
        if board_target is None:
            out("unknown board platform %r; pass --target" % platform)
            return 2
        target = board_target
        try:
            local_check(path, target, roots, now)
        except Refused as e:
            out("REFUSED locally: %s" % e)
            return 1
        probe, copy_apply, reset = commands(path, port, target, now, mpremote, remote)
    p = _run(copy_apply, 900)
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("UPDATE ")]
    if not lines:
        out("no answer from the board (mpremote rc %d):\n%s%s" % (p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
        return 2
    out(lines[-1])
    if not lines[-1].startswith("UPDATE OK"):
        out("nothing changed on the board; it waits in the plain REPL (`mpremote reset` starts the charger)")
        return 1
    r = _run(reset, 30)
    out("board reset: the new slot boots as a trial and must confirm itself" if r.returncode == 0
        else "reset failed (rc %d): reset the board by hand" % r.returncode)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="flash_bundle.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", help="signed bundle (release.py sign --embed)")
    ap.add_argument("--port", default=None, help="serial port (default: mpremote's auto)")
    ap.add_argument("--target", choices=BOARD_TARGETS, default=None, help="default: ask the board")
    ap.add_argument("--root", action="append", default=[], help="manufacturer root PEM to check the chain locally")
    ap.add_argument("--dry-run", action="store_true", help="local checks, then print the mpremote commands")
    ap.add_argument("--mpremote", default=None, help="mpremote executable")
    ap.add_argument("--remote-path", default=REMOTE_PATH, help="where the file goes on the board (default %(default)s)")
    a = ap.parse_args(argv)
    try:
        roots = load_roots(a.root)
    except (OSError, ValueError) as e:
        print("flash_bundle.py: --root: %s" % e, file=sys.stderr)
        return 2
    return flash(a.bundle, a.port, a.target, roots, a.dry_run, a.mpremote, remote=a.remote_path)


if __name__ == "__main__":
    sys.exit(main())

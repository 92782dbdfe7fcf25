# The local (USB) update path on the board: one self-contained signed file,
# verified here and installed into the inactive A/B slot as a trial.
#
# The file (tools/release.py sign --embed) is the bundle followed by a trailer:
#   <bundle N bytes><signing cert DER, c bytes><raw signature, s bytes>
#   <u32 N><u16 c><u16 s> b"CHARGER-SIG1"        (integers big-endian)
# The signature is over the SHA-256 of the first N bytes (the bundle exactly
# as OCPP would carry it), by the certificate's key, which must chain to an
# installed manufacturer root.
#
# Order of checks in apply(), each refusal a VerifyError(reason) and none of
# them touching the slots: trailer (unsigned), certificate chain and signature
# over the bundle (so any flipped byte in image, signature or certificate is
# refused before the manifest is trusted), manifest, length, target,
# downgrade / anti-rollback floor, pending trial, every file hash of this
# target. Only then does Slots.install wipe the inactive slot and arm a trial;
# the running slot and the boot record are never written on refusal.
#
# Reasons: unsigned, bad_signature, unknown_root, cert_expired,
# cert_not_yet_valid, issuer_mismatch, issuer_not_ca, malformed (verify.py),
# bad_manifest, size_mismatch, wrong_target, downgrade, hash_mismatch
# (bundle.py), trial_pending, slot_incomplete (slots.py), install_failed
# (the slot could not be written: the inactive slot is left incomplete, the
# boot record untouched). An out-of-memory inside the certificate or signature
# check currently surfaces from verify.py as malformed / bad_signature.
import binascii

from firmware.ota import VerifyError
from firmware.ota import bundle as _bundle

UNSIGNED = "unsigned"


def read_trailer(path):
    """(bundle_length, cert_der, signature) or None when the file carries no trailer."""
    try:
        return _bundle.read_trailer(path)
    except VerifyError:
        raise
    except Exception as e:  # a malformed trailer must be a refusal, not a crash
        raise VerifyError(_bundle.BAD_SIGNATURE, "trailer: %r" % e)


def verify_signed(path, roots, now):
    """Check trailer, chain and signature; returns (bundle_length, root Certificate)."""
    t = read_trailer(path)
    if t is None:
        raise VerifyError(UNSIGNED, "no CHARGER-SIG1 trailer: sign with tools/release.py sign --embed")
    n, cert_der, sig = t
    if isinstance(roots, (str, bytes)):
        from firmware.ota import der
        roots = der.pem_to_der_all(roots)
    if not roots:
        raise VerifyError("unknown_root", "no manufacturer root installed")
    root = _bundle.verify_bundle(path, binascii.b2a_base64(sig).strip(), cert_der, roots, now, length=n)
    return n, root


def check(path, slots, target, roots, now):
    """Every check of apply() without touching the slots; returns (manifest, root)."""
    n, root = verify_signed(path, roots, now)
    m = _bundle.read_manifest(path)
    if m["data_offset"] + m["data_size"] != n:
        raise VerifyError(_bundle.SIZE_MISMATCH, "manifest says %d bytes, trailer %d"
                          % (m["data_offset"] + m["data_size"], n))
    if target not in m["targets"] or not any(e["path"].startswith(target + "/") for e in m["files"]):
        raise VerifyError(_bundle.WRONG_TARGET, "bundle is for %s, this is %s" % (",".join(m["targets"]), target))
    r, _ = slots.record()
    v = _bundle.parse_version(m["version"])
    floor = r.get("min_version")
    if floor and v < _bundle.parse_version(floor):
        raise VerifyError(_bundle.DOWNGRADE, "%s is below the floor %s" % (m["version"], floor))
    cur = slots.version(r["active"]) or r["versions"].get(r["active"])  # also the factory image
    if cur and v < _bundle.parse_version(cur):
        # A technician's USB stick is never "the CSMS asked for it": no downgrade.
        raise VerifyError(_bundle.DOWNGRADE, "%s is older than the running %s" % (m["version"], cur))
    if r["state"] == "trial":
        raise VerifyError("trial_pending", "confirm or roll back the running trial first")
    why = _bundle.check_bundle(path, m, target, None, False, length=n)  # length + every file's SHA-256
    if why is not None:
        raise VerifyError(why, "bundle contents")
    return m, root


def apply(path, store, slots, target, roots, now, log=None):
    """Verify the signed file at path and install it into the inactive slot as a trial.

    store: the board's Store (the result is recorded as "usb_update.json").
    slots: a firmware.ota.slots.Slots. target: "esp32", "rp2040", "unix".
    roots: installed manufacturer roots (DER list). now: Unix epoch seconds.
    Returns the armed slot; raises VerifyError(reason) with nothing changed
    on the running slot. The caller resets the board to boot the trial.
    """
    try:
        m, root = check(path, slots, target, roots, now)
        r, why = slots.record()
        if why:
            # No boot record yet (a board that never booted through the
            # loader): write down what runs now first, or the default record
            # recomputed after extraction would make the new slot its own
            # last-known-good and leave the trial nothing to roll back to.
            from firmware.ota.slots import RECORD
            slots.store.write(RECORD, r)
        slot = slots.install(path, m, target)
    except VerifyError as e:
        if log:
            log.error("ota", "USB update refused: %s" % e)
        _note(store, {"ok": False, "reason": e.reason, "detail": e.detail, "time": now})
        raise
    except Exception as e:  # OSError while writing the slot, MemoryError, ...
        if log:
            log.error("ota", "USB update failed: %r" % e)
        _note(store, {"ok": False, "reason": "install_failed", "detail": repr(e), "time": now})
        raise VerifyError("install_failed", repr(e))
    if log:
        log.warn("ota", "USB update %s signed by %s installed in slot %s (trial)"
                 % (m["version"], root.subject_cn, slot))
    _note(store, {"ok": True, "version": m["version"], "slot": slot, "signer_root": root.subject_cn,
                  "time": now})
    return slot


def _note(store, rec):
    if store is None:
        return
    try:
        store.write("usb_update.json", rec)
    except Exception:
        pass  # the answer matters, its note does not

# The local (USB) update path on the board: one self-contained signed file,
# verified here and installed into the inactive A/B slot as a trial.
#
# The file (tools/release.py sign --embed) is the bundle followed by a trailer:
#   <bundle N bytes><signing cert DER + intermediates DER, c bytes><raw signature, s bytes>
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
# Reasons: unsigned, every certificate / signature reason of
# docs/firmware-signing.md (bad_signature, unknown_root, signer_is_ca, ...),
# bad_manifest, size_mismatch, wrong_target, downgrade, hash_mismatch
# (bundle.py), trial_pending, slot_incomplete (slots.py), install_failed
# (the slot could not be written: the inactive slot is left incomplete, the
# boot record untouched). The checks are firmware/ota/update.py's, the same
# an OCPP update goes through.
#
# apply_work is that whole sequence as work (firmware/core/work.py): apply
# runs it at once (the maintenance boot of boards/common/usb_update.py, where
# no charger runs), apply_async in bounded slices from a running charger.
from firmware.core.work import run_sync
from firmware.ota import VerifyError
from firmware.ota import bundle as _bundle
from firmware.ota.update import Updater
from firmware.core.errtext import errtext  # an exception in words for a log line

UNSIGNED = "unsigned"


def _roots(roots):
    if isinstance(roots, (str, bytes)):
        from firmware.crypto import pem
        return pem.decode_all(roots)
    return roots


def verify_signed(path, roots, now):
    """Check trailer, chain and signature; returns (bundle_length, root Certificate)."""
    return Updater(None, None).verify_signature(path, _roots(roots), now, unsigned=UNSIGNED)


def check(path, slots, target, roots, now):
    return run_sync(check_work(path, slots, target, roots, now))


def check_work(path, slots, target, roots, now):
    """Every check of apply() without touching the slots; returns (manifest, root)."""
    up = Updater(slots, target)
    n, root = yield from Updater(None, None).verify_signature_work(path, _roots(roots), now, unsigned=UNSIGNED)
    m, _ = yield from up.check_work(path, n)  # target, running version (the factory image too), length, every hash
    # A technician's USB stick is never "the CSMS asked for it": no downgrade,
    # and the boot record's own refusals (floor, a pending trial) come first.
    r, _ = slots.record()
    floor = r.get("min_version")
    if floor and _bundle.parse_version(m["version"]) < _bundle.parse_version(floor):
        raise VerifyError(_bundle.DOWNGRADE, "%s is below the floor %s" % (m["version"], floor))
    if r["state"] == "trial":
        raise VerifyError("trial_pending", "confirm or roll back the running trial first")
    return m, root


def apply(path, store, slots, target, roots, now, log=None):
    return run_sync(apply_work(path, store, slots, target, roots, now, log))


async def apply_async(path, store, slots, target, roots, now, log=None, sl=None):
    if sl is None:
        from firmware.core.sched import Slice, WORK_SLICE_MS
        sl = Slice(WORK_SLICE_MS)
    return await sl.run(apply_work(path, store, slots, target, roots, now, log))


def apply_work(path, store, slots, target, roots, now, log=None):
    """Verify the signed file at path and install it into the inactive slot as a trial.

    store: the board's Store (the result is recorded as "usb_update.json").
    slots: a firmware.ota.slots.Slots. target: "esp32", "rp2040", "unix".
    roots: installed manufacturer roots (DER list). now: Unix epoch seconds.
    Returns the armed slot; raises VerifyError(reason) with nothing changed
    on the running slot. The caller resets the board to boot the trial.
    """
    try:
        m, root = yield from check_work(path, slots, target, roots, now)
        slot = yield from Updater(slots, target).install_work(path, m)
    except VerifyError as e:
        if log:
            log.error("ota", "USB update refused: %s" % e)
        _note(store, {"ok": False, "reason": e.reason, "detail": e.detail, "time": now})
        raise
    except Exception as e:  # MemoryError, ...
        if log:
            log.error("ota", "USB update failed: %s" % errtext(e))
        _note(store, {"ok": False, "reason": "install_failed", "detail": errtext(e), "time": now})
        raise VerifyError("install_failed", errtext(e))
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

# The board side of the technician's USB update (tools/flash_bundle.py):
# after the bench REPL handed the console over to mpremote (contactors open,
# charger stopped), mpremote copies the signed bundle to /update.bundle and
# runs usb_update.run(target, now=<host time>, port=Port()) with the board's
# port (boards/<board>/port.py), which prints one result line
#   UPDATE OK slot B version 1.3.0
#   UPDATE REFUSED <reason>: <detail>
# and returns True/False. The host resets the board on OK; the loader then
# boots the trial slot, which must confirm itself (firmware/ota/slots.py).
# The bundle file is removed either way: flash is small, the host has a copy.
# This runs in the maintenance boot (boards/common/board.py handover): no
# charger, no control loop and no hardware watchdog, so the update's work
# (firmware/ota/local.py apply_work, the same generators a running charger
# drives in bounded slices) runs here to the end at once.
import os
import time
from firmware.core.errtext import errtext  # an exception in words for a log line

from firmware.ota import VerifyError

BUNDLE = "/update.bundle"
ROOTS_FILE = "manufacturer_roots.pem"  # installed at the factory, PEM (one or more) or DER
EPOCH_2000 = 946684800  # ports whose time.time() counts from 2000
PLAUSIBLE = 1735689600  # 2025-01-01: an RTC before this was never set


def wall_now():
    t = time.time()
    if time.gmtime(0)[0] == 2000:
        t += EPOCH_2000
    return int(t)


def installed_roots(store):
    """Manufacturer root certificates (DER list): those the OCPP certificate
    store holds (InstallCertificate, or seeded from config fw_root), else
    <store root>/manufacturer_roots.pem put there at the factory."""
    from firmware.crypto import pem
    from firmware.app import manufacturer_roots
    roots = manufacturer_roots(store)
    if roots:
        return roots
    try:
        f = open(store.path(ROOTS_FILE), "rb")
        try:
            data = f.read()
        finally:
            f.close()
    except OSError:
        return []
    if data[:1] == b"\x30":
        return [data]
    try:
        return pem.decode_all(data.decode())
    except Exception:
        return []


def factory_version():
    # The board's factory image is the firmware it was flashed with (frozen,
    # or copied to /firmware); after the maintenance boot that is what
    # `firmware` imports unless the loader put a slot first on sys.path.
    try:
        from firmware.version import VERSION
        return VERSION
    except ImportError:
        return None


def run(target, path=BUNDLE, now=None, port=None, roots=None, keep=False, factory=None):
    # now: the host's clock (epoch s). A board's RTC is usually unset after a
    # reset, and certificate validity needs a real date; the host's is used
    # when given, the board's only when it looks set.
    from firmware.core.store import Store
    from firmware.ota import local
    ok = False
    try:
        if port is None:  # the board's own (boards/<board>/port.py Port), named by the caller
            raise ValueError("no port given for %r" % target)
        store = Store(port.store_root())
        if now is None:
            now = wall_now()
            if now < PLAUSIBLE:
                raise VerifyError("clock_not_set", "the board's clock says %d; pass now=" % now)
        if roots is None:
            roots = installed_roots(store)
        # The same Slots the boot loader uses, factory image included, so the
        # boot record reads as valid and a factory-running board is not
        # "downgraded" past its own version.
        slots = port.slots(store, factory_version=factory or factory_version())
        slot = local.apply(path, store, slots, target, roots, now)
        print("UPDATE OK slot %s version %s" % (slot, slots.version(slot)))
        ok = True
    except VerifyError as e:
        print("UPDATE REFUSED %s" % e)
    except Exception as e:  # never a traceback instead of an answer
        print("UPDATE REFUSED internal: %s" % errtext(e))
    finally:
        if not keep:
            try:
                os.remove(path)
            except OSError:
                pass
    return ok

# Benchmark (MicroPython Unix port): one firmware update as the charger does
# it, without the rest of the charger around it.
#
#   micropython [-X heapsize=N] tools/bench/mp_update.py --url URL --dir DIR --root ROOT.pem
#       --sig SIG_B64 --cert CERT.pem [--until verify|install|boot] [--lib DIR_OF_MPY]
#
# Downloads the bundle over HTTP (firmware.net.http.download, as
# SignedUpdateFirmware does), verifies signature and chain (SHA-256 of the
# whole file + ECDSA/RSA), checks the image (target, version, every file's
# SHA-256), installs it into the inactive slot and arms the trial
# (firmware.ota.update.Updater), then boots the record and imports the new
# image's station module from the slot (boards/common/loader.py), as the next
# boot does. Prints one line "RESULT {json}": ms of each step (ticks), the
# live heap (gc.mem_alloc after a collect) between them, ok true when every
# step up to --until passed. run.py bisects -X heapsize with --until verify
# (the smallest heap in which download and verify work) and --until install.
import sys

_parts = __file__.split("/")
sys.path.insert(0, "/".join(_parts[:-3]) or ("." if len(_parts) == 3 else ".."))
if "--lib" in sys.argv:  # the firmware as .mpy (as frozen on a board), ahead of the .py tree
    sys.path.insert(0, sys.argv[sys.argv.index("--lib") + 1])

import asyncio
import gc
import json
import time


def arg(name, default=None):
    a = sys.argv
    return a[a.index(name) + 1] if name in a else default


def ms(t0):
    return time.ticks_diff(time.ticks_ms(), t0)


def live():
    gc.collect()
    return gc.mem_alloc()


def main():
    d = arg("--dir")
    from firmware.core.store import Store
    from firmware.net.http import download
    from firmware.crypto import pem
    from firmware.ota.slots import Slots
    from firmware.ota.update import Updater
    from firmware.version import VERSION
    f = open(arg("--root"))
    roots = pem.decode_all(f.read())
    f.close()
    f = open(arg("--cert"))
    cert = f.read()
    f.close()
    store = Store(d + "/flash")
    slots = Slots(store, d + "/flash/slots", factory_version=VERSION)
    slots.boot()
    up = Updater(slots, "unix")
    path = store.path("fw_download.bin")
    r = {"live_imports": live()}
    t = time.ticks_ms()
    r["bytes"] = asyncio.run(download(arg("--url"), path))
    r["download_ms"] = ms(t)
    r["live_downloaded"] = live()
    t = time.ticks_ms()
    up.verify_signature(path, roots, int(time.time()), arg("--sig"), cert)
    r["signature_ms"] = ms(t)
    t = time.ticks_ms()
    m, _ = up.check(path)
    r["check_ms"] = ms(t)
    until = arg("--until", "boot")
    if until == "verify":
        r["ok"] = True
        print("RESULT " + json.dumps(r))
        return
    t = time.ticks_ms()
    slot = up.install(path, m)
    r["install_ms"] = ms(t)
    r["files"] = len([e for e in m["files"] if e["path"].startswith("unix/")])
    r["live_installed"] = live()
    if until == "install":
        r["ok"] = True
        print("RESULT " + json.dumps(r))
        return
    # The next boot: count the trial, verify the slot, import the new image.
    from boards.common import loader
    t = time.ticks_ms()
    s2 = Slots(Store(d + "/flash"), d + "/flash/slots", factory_version=VERSION)
    chosen, report = s2.boot()
    r["boot_record_ms"] = ms(t)
    t = time.ticks_ms()
    loader.activate(s2.dir(chosen), None)
    import firmware.station  # noqa: F401  (the whole charger, from the slot's .mpy)
    from firmware.version import VERSION as NEW
    r["import_ms"] = ms(t)
    r.update({"ok": chosen == slot and NEW == m["version"], "slot": chosen, "version": NEW})
    print("RESULT " + json.dumps(r))


try:
    main()
except MemoryError as e:
    print("RESULT " + json.dumps({"ok": False, "error": "MemoryError %s" % e}))

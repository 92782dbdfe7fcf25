# The A/B application slots on an ESP32: two data partitions (labels
# "slot_a" and "slot_b", boards/esp32/partitions-4MiB.csv) each mounted as its
# own LittleFS at /slot_a and /slot_b. Slots (firmware/ota/slots.py) runs
# unchanged on them: only dir() maps A/B to the mount points. The boot record
# stays in the main store, so wiping or reformatting a slot never touches it.
#
# Why partitions rather than two directories on the main filesystem: a slot
# can be reformatted whole when its filesystem is unreadable (a torn write on
# one slot cannot damage the other or the store), and the space of each slot
# is reserved, so the store can never fill the room an update needs.
#
# Without the partitions (the stock MicroPython partition table) the slots
# fall back to directories on the main filesystem (<store root>/slots/A, B).
import os
from firmware.core.errtext import errtext  # an exception in words for a log line

from firmware.ota.slots import Slots

LABELS = (("A", "slot_a"), ("B", "slot_b"))
MOUNTS = (("A", "/slot_a"), ("B", "/slot_b"))
APP_OTA_FIRST = 0x10  # ESP-IDF app subtypes ota_0 .. ota_15
APP_OTA_LAST = 0x1F


def _esp32():
    try:
        import esp32
        return esp32
    except ImportError:
        return None


def find(esp32, label):
    """The data partition with this label, or None."""
    try:
        found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=label)
    except (AttributeError, OSError, TypeError, ValueError):
        return None
    return found[0] if found else None


def mount(part, mountpoint, log=None):
    """Mount part (a block device) as LittleFS at mountpoint; format it when unreadable.

    Returns "mounted" or "formatted". A fresh mount every time: whatever was
    mounted there before (by an earlier call in the same session) is unmounted
    first, so a second caller never formats a filesystem that is in use.
    """
    try:
        os.umount(mountpoint)
    except OSError:
        pass
    how = "mounted"
    try:
        fs = os.VfsLfs2(part)
    except OSError as e:
        # Unreadable (never formatted, or torn): the slot is only an update's
        # copy, its marker goes with it, so Slots sees it as incomplete.
        if log:
            log.warn("slots", "%s unreadable (%s): formatting" % (mountpoint, errtext(e)))
        os.VfsLfs2.mkfs(part)
        fs = os.VfsLfs2(part)
        how = "formatted"
    os.mount(fs, mountpoint)
    return how


def mount_slots(esp32=None, mounts=MOUNTS, labels=LABELS, log=None):
    """Mount both slot partitions. Returns {"A": dir, "B": dir}, or None when
    either partition is missing (then nothing is mounted)."""
    esp32 = esp32 or _esp32()
    if esp32 is None:
        return None
    parts = {}
    for slot, label in labels:
        p = find(esp32, label)
        if p is None:
            return None
        parts[slot] = p
    dirs = {}
    for slot, mp in mounts:
        mount(parts[slot], mp, log)
        dirs[slot] = mp
    return dirs


def mark_app_valid(esp32=None):
    """Cancel the bootloader's app rollback when the running app is an OTA app.

    On a factory app (the 4 MiB table here) there is nothing to cancel. With
    an ota_0/ota_1 table and CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE, an app the
    bootloader booted for the first time is rolled back on the next reset
    unless marked valid; our trial confirmation is the same "this firmware is
    healthy" event, so it marks the app too. Returns True if it marked.
    """
    esp32 = esp32 or _esp32()
    if esp32 is None:
        return False
    try:
        sub = esp32.Partition(esp32.Partition.RUNNING).info()[1]
        if APP_OTA_FIRST <= sub <= APP_OTA_LAST:
            esp32.Partition.mark_app_valid_cancel_rollback()
            return True
    except (AttributeError, OSError, TypeError, ValueError):
        pass
    return False


class PartitionSlots(Slots):
    # Slots whose A/B directories are the partitions' mount points.
    def __init__(self, store, dirs, esp32=None, log=None, **kw):
        self._dirs = dirs  # before Slots.__init__, which calls dir()
        self._esp32 = esp32
        Slots.__init__(self, store, "/", log=log, **kw)

    def dir(self, slot):
        # None for the factory image ("F") as in Slots: it is not ours to write.
        return self._dirs.get(slot)

    def confirm(self):
        ok = Slots.confirm(self)
        if ok:
            mark_app_valid(self._esp32)
        return ok


def open_slots(store, root, log=None, esp32=None, mounts=MOUNTS, **kw):
    """The ESP32's Slots: on the partitions when the table has them, else
    directories under root (the store's root). Returns (slots, kind). kw goes
    to Slots (factory_version, max_trial_boots)."""
    esp32 = esp32 or _esp32()
    dirs = mount_slots(esp32, mounts, LABELS, log)
    if dirs is not None:
        return PartitionSlots(store, dirs, esp32, log=log, **kw), "partitions"
    if log:
        log.info("slots", "no slot_a/slot_b partitions: slots are directories on the main filesystem")
    return Slots(store, root.rstrip("/") + "/slots", log=log, **kw), "directories"

# The boot loader's part of a board: which image of the charger firmware runs,
# and whether a trial image has earned its place.
#
# The board (clock, flash, hardware, this loader) stays what it was flashed
# with; the `firmware` package is imported from the slot the boot record
# names (firmware/ota/slots.py), or from the factory image when none is
# installed. A trial image confirms itself only when it has shown it works:
# its control loop has run healthy for a while and, when a CSMS is
# configured, the CSMS has accepted its BootNotification. Otherwise the board
# reboots it, the boot record counts the trial boot, and after the allowed
# number the loader is back on the last good image.
import sys
from firmware.ota.slots import FACTORY
from firmware.core.errtext import errtext  # an exception in words for a log line

PACKAGE = "firmware"
CONFIRM_MS = 60000  # healthy this long before a trial image is confirmed
TRIAL_LIMIT_MS = 600000  # not confirmed by then: reboot (a failed trial boot)
MAX_START_FAILURES = 8  # images that fail to start before the loader gives up


def activate(slot_dir, previous):
    """Make `import firmware...` read slot_dir (None: the factory image).

    previous: the image loaded so far (a slot directory, or None for the
    factory image). Returns slot_dir. Modules of another image are forgotten,
    so the next import reads the chosen one; nothing is reloaded when the
    image stays the same."""
    if slot_dir == previous:
        return slot_dir
    if previous is not None:
        while previous in sys.path:
            sys.path.remove(previous)
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    if slot_dir is not None:
        sys.path.insert(0, slot_dir)
    return slot_dir


class Loader:
    """Boots the charger from the image the boot record names.

    start(slot, report, failures) is the board's: it imports the charger
    (from `firmware`, now the chosen image), builds and starts the station
    and returns it. An image that fails to start counts as a failed boot: a
    trial is then rolled back by the boot record, a confirmed slot is given
    up for the other good image. failures: why earlier images failed, for
    the log the chosen image opens."""

    def __init__(self, slots, say=None):
        self.slots = slots
        self.image = None  # the slot directory `firmware` is read from; None: factory
        self.say = say or print

    def boot(self, start):
        slots = self.slots
        failures = []
        for _ in range(MAX_START_FAILURES):
            slot, report = slots.boot()
            self.image = activate(slots.dir(slot), self.image)
            try:
                return start(slot, report, failures)
            except Exception as e:
                if slot == FACTORY:
                    raise  # the factory image is the last resort: a bug to see
                why = "image in slot %s failed to start: %s" % (slot, errtext(e))
                self.say("boot: " + why)
                failures.append(why)
                if not slots.trial():
                    slots.rollback(why)
        raise RuntimeError("no image starts: %s" % failures)

    def boot_info(self, slot, report, failures):
        # What the station is told about its boot (firmware/station.py).
        rb = self.slots.rolled_back
        return {"slot": slot, "report": report, "trial": self.slots.trial(),
                "rolled_back": None if rb is None else {"from": rb[0], "why": rb[1]},
                "failures": failures}


    def watch(self, station, reboot, cfg):
        """Start a Trial for a trial image (None otherwise)."""
        if not station.boot_info.get("trial"):
            return None
        t = Trial(self.slots, station, reboot, cfg["ota_confirm_s"] * 1000, cfg["ota_trial_s"] * 1000)
        station.spawn(t.run(), "trial")
        return t


class Trial:
    """Watches a trial image after boot; confirms it or has it rebooted.

    slots: the board's Slots; station: the running Station; reboot: the
    board's reboot. on_confirmed: callables run once confirmed (the OCPP
    client reports Installed)."""

    def __init__(self, slots, station, reboot, confirm_ms=CONFIRM_MS, limit_ms=TRIAL_LIMIT_MS):
        self.slots = slots
        self.station = station
        self.reboot = reboot
        self.confirm_ms = confirm_ms
        self.limit_ms = limit_ms
        self.state = "trial"  # trial, confirmed, failed
        self.why = None

    def _ready(self):
        st = self.station
        why = st.health()
        if why is None and st.ocpp is not None and not st.ocpp.accepted_once:
            why = "waiting for BootNotification Accepted"
        return why

    async def run(self):
        st = self.station
        clock = st.clock
        t0 = clock.ticks_ms()
        healthy_since = None
        log = st.log
        log.warn("ota", "trial boot of %s: confirming after %d s of healthy running"
                 % (st.version, self.confirm_ms // 1000))
        while st.running:
            now = clock.ticks_ms()
            why = self._ready()
            if why is None:
                if healthy_since is None:
                    healthy_since = now
                if clock.ticks_diff(now, healthy_since) >= self.confirm_ms:
                    if self.slots.confirm():
                        self.state = "confirmed"
                        log.warn("ota", "firmware %s confirmed in slot %s" % (st.version, st.slot))
                        for f in st.on_confirmed:
                            f()
                    return
            else:
                healthy_since = None
                self.why = why
            if clock.ticks_diff(now, t0) >= self.limit_ms:
                self.state = "failed"
                log.error("ota", "firmware %s not confirmed within %d s (%s): rebooting"
                          % (st.version, self.limit_ms // 1000, self.why))
                self.reboot()
                return
            await clock.sleep_ms(1000)

# Contactor sequencing and supervision for one connector.
#
# The relay is driven through the board; the aux (mirror) contact tells what
# the contacts really did. After every switch the aux must follow within
# AUX_MS; a contactor still closed AUX_MS after the coil was released is
# welded (latched fault, PowerSwitchFailure), one that does not close is a
# recoverable switch failure. An aux that changes by itself is a fault too.
from firmware.core.clock import ticks_diff  # ticks wrap at 2^30 as on the boards
from micropython import const

AUX_MS = const(1000)
GROUND_MS = const(1000)  # ground check this long after closing


class Contactor:
    def __init__(self, hw, idx):
        self.hw = hw
        self.idx = idx
        self.cmd = False  # coil energised
        self.cmd_at = 0
        # AUX_MS has passed since cmd_at. Latched, because a tick stamp older
        # than 2^29 ms (6.2 days idle) reads as the future through ticks_diff:
        # without the latch the aux checks would go blind for the next 6.2 days.
        self.settled = False
        self.closed_at = None  # when aux confirmed closed
        self.opens = 0  # switching counts, for the service log
        self.closes = 0
        self.cause = None  # why check() returned a fault code (a format)
        self.cause_arg = None

    def close(self, now):
        if not self.cmd:
            self.cmd = True
            self.cmd_at = now
            self.settled = False
            self.closes += 1
            self.hw.contactor(self.idx, True)

    def open(self, now):
        if self.cmd:
            self.cmd = False
            self.cmd_at = now
            self.settled = False
            self.opens += 1
            self.hw.contactor(self.idx, False)

    def force_open(self, now):
        # From the watchdog or a failed tick, outside the normal sequence:
        # drive the coil only. An opening all the same: the aux gets its
        # AUX_MS to follow before a closed reading means a weld.
        if self.cmd:
            self.cmd_at = now
            self.settled = False
        self.cmd = False
        self.hw.contactor(self.idx, False)

    def check(self, now, aux):
        # Returns a fault code or None; the cause is then in self.cause (a
        # constant format) with its value in self.cause_arg (None: no value),
        # for Faults.raise_ to format only if the fault is new. Nothing is
        # built here: the control tick calls this every period.
        settled = self.settled
        if not settled and ticks_diff(now, self.cmd_at) >= AUX_MS:
            self.settled = settled = True
        if self.cmd:
            if aux:
                if self.closed_at is None:
                    self.closed_at = now
            elif self.closed_at is not None:
                self.closed_at = None
                self.cause = "aux contact opened while the contactor was held closed"
                self.cause_arg = None
                return "switch"
            elif settled:
                self.cause = "contactor did not close within %d ms"
                self.cause_arg = AUX_MS
                return "switch"
        else:
            self.closed_at = None
            if aux and settled:
                self.cause = "contactor still closed %d ms after opening (welded)"
                self.cause_arg = AUX_MS
                return "weld"
        return None

    def closed_for(self, now):
        if self.closed_at is None:
            return -1
        return ticks_diff(now, self.closed_at)

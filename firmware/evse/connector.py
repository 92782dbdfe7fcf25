# One connector as a machine: joins pilot, contactor, faults, metering and the
# limits from above into the IEC 61851-1 sequence. Knows nothing of OCPP: it
# exposes state and accepts authorize / stop / availability / limits.
#
# tick() runs every control period. It reads what the board sampled, updates
# the filtered pilot and the faults, then decides the pilot output and the
# contactor. The contactor is closed only while every condition holds:
# pilot C (or D with ventilation), PWM on, diode check passed, authorized,
# available, no blocking fault, C stable for close_delay_ms, the plug locked,
# and the aux contact read open with the coil off since the last opening (or
# since power-up). The plug is released only once the aux contact has read
# open for UNLOCK_MARGIN_MS.
import time
from micropython import const
from firmware.evse import pilot as cp
from firmware.evse.pilot import Pilot, duty_for, DC_HIGH, DC_LOW
from firmware.evse.contactor import Contactor, AUX_MS, GROUND_MS
from firmware.evse.faults import Faults, TABLE, LATCHED, HARD_WINDOW_MS, HOLD_F_MS
from firmware.evse.meter import EnergyRegister

from firmware.core.clock import ticks_diff as tdiff  # ticks wrap at 2^30 as on the boards
from firmware.core.clock import ticks_add as tadd

LOCK_MS = const(1000)  # the lock must report locked within this
UNLOCK_FAULT_MS = const(5000)  # unlock a locked connector this long into a fault
OC_WINDOW_MS = const(7000)  # EVerest: (offered + 0.5 A) * 1.1 for 7 s
OC_OPEN_MS = const(1000)  # after an overcurrent stop, open 1 s after PWM off
FOLLOW_MS = const(5000)  # an EV may take this long to follow a lower duty
SLOW_MS = const(1000)  # longest tickless sleep
# The lock is released this long after the aux contact first reads open with
# the coil off: the mirror contact may lead the main contacts by a few ms, and
# an AC arc lasts until the next zero crossing (10 ms at 50 Hz).
UNLOCK_MARGIN_MS = const(100)
UNKNOWN = const(-1)  # a limit whose value is not known yet: nothing may be offered
LIMITS = ("config", "cable", "derate", "external", "smart")  # smart: OCPP charging profiles

# PP resistance (ohm) -> cable rating (mA), IEC 62196; outside = error.
_PP = ((60, 0), (160, 63000), (450, 32000), (1000, 20000), (2200, 13000), (4500, 0))


def cable_ma(ohm):
    if ohm < 0:
        return None  # no PP circuit
    if ohm < _PP[0][0] or ohm > _PP[-1][0]:
        return 0
    for k in range(1, len(_PP)):  # by index: a slice would allocate (called every tick)
        if ohm <= _PP[k][0]:
            return _PP[k][1]
    return 0


class Connector:
    def __init__(self, idx, hw, cfg, clock, log, store):
        self.idx = idx
        self.id = idx + 1  # OCPP numbering
        self.name = str(idx + 1)
        self.hw = hw
        self.cfg = cfg
        self.clock = clock
        self.log = log
        self.src = "conn%d" % self.id
        self.pilot = Pilot()
        self.contactor = Contactor(hw, idx)
        self.faults = Faults(clock, log, self.name, store)
        self.energy = EnergyRegister(store, self.name)
        max_ma = int(cfg["max_current_a"] * 1000)
        # Limits from above (LIMITS order), combined as the minimum. None = no
        # limit; UNKNOWN = a limit whose value is not known: offer 0 (PWM off).
        # A socket's cable rating is unknown until PP is read for this plug-in.
        self.socket = not cfg["cable_a"]  # a socket outlet locks the plug; a tethered cable does not
        self.limits = [max_ma, UNKNOWN if self.socket else cfg["cable_a"] * 1000, None, None, None]
        self.cable_read = None  # cable_ma() of the PP last read while plugged; None: not read yet
        self.offered_ma = 0
        self.limited_by = "config"
        self.out = DC_HIGH
        hw.pilot(idx, DC_HIGH)
        hw.contactor(idx, False)
        self.authorized = False
        self.id_tag = None
        self.available = True
        self.stop_req = None  # reason of an EVSE-initiated stop in progress
        self.session = None  # dict while a session runs
        self.last_session = None
        self.pwm_on_at = None
        self.pwm_off_at = None  # PWM went off while the contactor was closed
        self.oc_since = None
        self.oc_ref_ma = 0  # offered current the EV is held to (lags drops by FOLLOW_MS)
        self.oc_ref_until = 0
        self.rcd_trips = 0
        self.rcd_retry_at = None
        # The lock keeps its position unpowered: a plug locked before a reset
        # stays locked until tick() may release it (contacts proven open).
        self.lock_cmd = bool(hw.locked[idx]) and self.socket
        self.lock_at = clock.ticks_ms()
        hw.lock(idx, self.lock_cmd)
        self.open_since = None  # first tick the aux read open with the coil off; None: not since the last close
        self.prev_state = cp.A
        self.vend_pending = False  # free vend: authorize this plug-in as soon as we may
        # Set from above (OCPP StopTransactionOnEVSideDisconnect and
        # UnlockConnectorOnEVSideDisconnect): whether unplugging at the EV ends
        # the session, and whether the plug is released then.
        self.stop_on_ev_disconnect = True
        self.unlock_on_ev_disconnect = True
        self.hold_lock = False  # kept locked after an EV-side disconnect until unlock()
        self.suspended = False  # suspend(): the session goes on without energy
        self.finishing = False  # a session ended and the EV is still plugged in
        self.listeners = []  # fn(connector, event, detail), for the layer above
        self.wake = None  # the control loop's wake-up: a command acts in this tick, not the next
        # Boot counts as a coil-off command: contacts still closed AUX_MS after
        # it are welded, by the same check as after every opening.
        self.contactor.cmd_at = clock.ticks_ms()
        self.contactor.settled = False
        if hw.aux[idx]:
            # The coil is off at power-up: closed contacts now are welded. Latch
            # and save at once instead of waiting out AUX_MS: a power cut in
            # between would forget it again.
            if self.faults.raise_("weld", "contacts closed with the coil off at power-up (welded)",
                                  self.contactor.cmd_at):
                self.faults.save_latched()

    # --- commands from above -------------------------------------------------
    def authorize(self, id_tag="FREEVEND"):
        self._woke()
        if self.faults.blocking() or not self.available:
            return False
        if self.session is None:
            self.authorized = True
            self.finishing = False
            self.id_tag = id_tag
            self.stop_req = None
            if cp.B <= self.pilot.state <= cp.D:
                self._start_session(self.clock.ticks_ms())
            # else identification first: the session starts when the EV plugs in
        return True

    def suspend(self, on):
        # Energy off (PWM off, SuspendedEVSE) while the session goes on: an
        # idTag found invalid with StopTransactionOnInvalidId off.
        self._woke()
        self.suspended = on
        if on:
            self.log.warn(self.src, "energy delivery suspended")

    def unlock(self):
        # Release a lock held after an EV-side disconnect (OCPP UnlockConnector).
        self._woke()
        self.hold_lock = False

    def cancel_authorization(self):
        # An identification that no EV followed (OCPP ConnectionTimeOut).
        self._woke()
        if self.session is None and self.authorized:
            self.authorized = False
            self.id_tag = None
            self.log.info(self.src, "authorization expired: no EV plugged in")
            return True
        return False

    def stop(self, reason="Local"):
        # EVSE-initiated stop: PWM off, the EV stops, open (forced at stop_force_ms).
        self._woke()
        self.vend_pending = False
        if self.session is not None or self.authorized:
            self.stop_req = reason
            self.authorized = False
            self.log.info(self.src, "stop requested: %s" % reason)
            return True
        return False

    def set_limit(self, source, ma):
        self._woke()
        self.limits[LIMITS.index(source)] = ma

    def set_available(self, on):
        self._woke()
        self.available = on
        if not on:
            self.stop("Other")
        elif self.cfg["free_vend"] and cp.B <= self.pilot.state <= cp.D and self.session is None:
            self.vend_pending = True

    def clear_latched(self, code=None):
        # Service command: clear latched faults whose cause is gone.
        done = []
        for c in list(self.faults.active):
            if (code is None or c == code) and TABLE[c][0] == LATCHED:
                if c == "weld" and self.hw.aux[self.idx]:
                    continue
                self.faults.clear(c, "service command")
                done.append(c)
        return done

    def _woke(self):
        if self.wake:
            self.wake()

    # --- the control tick ----------------------------------------------------
    def _start_session(self, now):
        self.session = {"start": now, "time": self.clock.wall(), "start_wh": self.energy.wh,
                        "id_tag": self.id_tag, "reason": None, "announced": False}
        self.log.info(self.src, "session started (%s)" % self.id_tag)
        self._announce()

    def _announce(self):
        # The layer above hears of a session (OCPP StartTransaction) once it is
        # real: for a socket, once the plug is locked. A plug that will not
        # lock ends the session unheard (no transaction).
        s = self.session
        if s is not None and not s["announced"] and (not self.socket or (self.lock_cmd and self.hw.locked[self.idx])):
            s["announced"] = True
            s["time"] = self.clock.wall()
            s["start_wh"] = self.energy.wh
            self._emit("session_start", s)

    def _end_session(self, reason):
        s = self.session
        if s is None:
            return
        s["reason"] = reason
        s["wh"] = self.energy.wh - s["start_wh"]
        self.last_session = s
        self.session = None
        self.suspended = False
        self.finishing = reason != "EVDisconnected"
        self.authorized = False
        self.log.info(self.src, "session ended: %s, %d Wh" % (reason, s["wh"]))
        if s["announced"]:
            self._emit("session_end", s)

    def _emit(self, event, detail):
        for fn in self.listeners:
            fn(self, event, detail)

    def _update_faults(self, now, st):
        hw, i, f = self.hw, self.idx, self.faults
        closed_for = self.contactor.closed_for(now)
        early = 0 <= closed_for < HARD_WINDOW_MS
        if st == cp.E:
            f.raise_("pilot_short", "pilot at 0 V (state E)", now)
        elif f.has("pilot_short") and st != cp.E:
            f.clear("pilot_short", "pilot no longer shorted")
        if st == cp.INVALID or (st == cp.F and self.out != DC_LOW):
            f.raise_("pilot", "pilot level %d mV outside every band", now, False, self.pilot.hi_mv)
        elif f.has("pilot") and st <= cp.D:
            f.clear("pilot", "pilot level valid again")
        if self.pilot.diode_fault:
            f.raise_("diode", "low half at %d mV with PWM on (no EV diode)", now, False, self.pilot.lo_mv)
        if hw.rcd[i]:
            if not f.has("rcd"):
                self.rcd_trips += 1
                hard = early or self.rcd_trips > self.cfg["rcd_retries"]
                f.raise_("rcd", "residual current trip %d" % self.rcd_trips, now, hard)
                self.rcd_retry_at = tadd(now, self.cfg["rcd_retry_s"] * 1000)
        if f.has("rcd") and not f.active["rcd"].hard and tdiff(now, self.rcd_retry_at) >= 0:
            hw.rcd_reset(i)
            f.clear("rcd", "retry %d of %d" % (self.rcd_trips, self.cfg["rcd_retries"]))
        if closed_for >= GROUND_MS and not hw.ground_ok[i]:
            f.raise_("ground", "no protective earth after closing", now, early)
        c = self.contactor
        code = c.check(now, hw.aux[i])
        if code is not None:
            f.raise_(code, c.cause, now, False, c.cause_arg)
        if self.lock_cmd and not hw.locked[i] and tdiff(now, self.lock_at) >= LOCK_MS:
            f.raise_("lock", "connector lock did not lock within %d ms", now, False, LOCK_MS)
        if hw.meter_wh[i] is None:
            f.raise_("meter", "energy meter not answering", now)
        elif f.has("meter"):
            f.clear("meter", "meter answering again")
        # Overcurrent against the highest current offered in the last
        # FOLLOW_MS: an EV may take that long to follow a lower duty.
        if self.offered_ma >= self.oc_ref_ma:
            self.oc_ref_ma = self.offered_ma
            self.oc_ref_until = tadd(now, FOLLOW_MS)
        elif tdiff(now, self.oc_ref_until) >= 0:
            self.oc_ref_ma = self.offered_ma
        if self.contactor.cmd and hw.current_ma[i] * 10 > (self.oc_ref_ma + 500) * 11:
            if self.oc_since is None:
                self.oc_since = now
            elif tdiff(now, self.oc_since) >= OC_WINDOW_MS and not f.has("overcurrent"):
                f.raise_("overcurrent", "EV drew %d mA for %d ms with %d mA offered" % (
                    hw.current_ma[i], OC_WINDOW_MS, self.oc_ref_ma), now)
        else:
            self.oc_since = None

    def _offered(self):
        lim = self.limits
        best, by = lim[0], 0
        for k in range(1, len(lim)):
            v = lim[k]
            if v is not None and v < best:
                best, by = v, k
        self.limited_by = LIMITS[by]
        return best if best > 0 else 0  # UNKNOWN offers nothing

    def tick(self, now):
        # Returns the ms this connector can sleep (tickless simulation).
        hw, i, f = self.hw, self.idx, self.faults
        c = self.contactor
        if f.unsaved:
            f.save_latched()  # raised in a tick that did not finish
        st = self.pilot.update(now, hw.cp_hi[i], hw.cp_lo[i], 0 < self.out < DC_HIGH, self.out == DC_LOW)
        if st != self.prev_state:
            self._on_state(now, self.prev_state, st)
            self.prev_state = st
        if c.cmd or hw.aux[i]:
            self.open_since = None
        elif self.open_since is None:
            self.open_since = now  # contacts proven open (coil off, aux open)
        if self.socket and st != cp.A:
            # PP on every tick while plugged (E, F and invalid levels too): a
            # new reading band acts at once; the same band costs nothing.
            ma = cable_ma(hw.pp_ohm[i])
            if ma != self.cable_read:
                self._read_pp(now, ma)
        self._update_faults(now, st)
        offered = self._offered()
        blocking = f.blocking()
        if self.vend_pending and not blocking and self.available and self.session is None:
            self.vend_pending = False
            self.authorize("FREEVEND")
        plugged = cp.B <= st <= cp.D
        want_pwm = (not blocking and self.available and plugged and self.authorized and not self.suspended
                    and self.stop_req is None and offered >= 6000)
        self.offered_ma = offered if want_pwm else 0
        if f.holding_f(now):
            if c.cmd and not f.open_now():
                # A fault that stops the EVSE way leaves the contacts closed for
                # a while: keep watching the pilot (PWM off, not F, which would
                # blind us to an unplug) and hold F once they are open.
                f.hold_until = tadd(now, HOLD_F_MS)
                out = DC_HIGH
            else:
                out = DC_LOW
        elif want_pwm:
            out = duty_for(offered)
        else:
            out = DC_HIGH
        if out != self.out:
            if 0 < out < DC_HIGH and not (0 < self.out < DC_HIGH):
                self.pwm_on_at = now
            self.out = out
            hw.pilot(i, out)
        pwm = 0 < out < DC_HIGH
        if self.socket:
            since = f.blocking_since()
            # Locked for the session; never released while the contacts may be
            # live (coil on, or aux still closed: a welded contactor keeps the
            # plug locked); released UNLOCK_FAULT_MS into a fault.
            live = c.cmd or hw.aux[i]
            # E, F or an invalid level is still a plug in the socket: only A unlocks at once.
            want_lock = self.hold_lock or (st != cp.A and not f.has("lock") and (live or (
                self.session is not None and (since is None or tdiff(now, since) < UNLOCK_FAULT_MS))))
            if not want_lock and self.lock_cmd and (
                    self.open_since is None or tdiff(now, self.open_since) < UNLOCK_MARGIN_MS):
                want_lock = True  # on every path: released only once the contacts are proven open
            if want_lock != self.lock_cmd:
                self.lock_cmd = want_lock
                self.lock_at = now
                hw.lock(i, want_lock)
                self.log.info(self.src, "connector %s" % ("lock" if want_lock else "unlock"))
            locked = hw.locked[i] and self.lock_cmd
            if self.session is not None and not self.session["announced"]:
                if locked:
                    self._announce()
                elif f.has("lock"):
                    self._end_session("Other")  # never announced: no transaction
        else:
            locked = True
        can_charge = st == cp.C or (st == cp.D and self.cfg["ventilation"])
        if c.cmd:
            if not can_charge or f.open_now() or self.pilot.diode_fault or not locked:
                c.open(now)
                self.log.info(self.src, "contactor opened: %s" % self._why_open(st))
            elif not pwm:
                if self.pwm_off_at is None:
                    self.pwm_off_at = now
                force = OC_OPEN_MS if f.has("overcurrent") else self.cfg["stop_force_ms"]
                if tdiff(now, self.pwm_off_at) >= force:
                    c.open(now)
                    self.log.warn(self.src, "contactor forced open: EV still in %s %d ms after PWM off"
                                  % (cp.NAMES[st], force))
            else:
                self.pwm_off_at = None
        elif (pwm and can_charge and self.pilot.diode_ok and self.authorized and not blocking and locked
              and self.open_since is not None and tdiff(now, self.pilot.since) >= self.cfg["close_delay_ms"]):
            c.close(now)
            self.pwm_off_at = None
            self.log.info(self.src, "contactor closed: EV in %s, %d mA offered" % (cp.NAMES[st], offered))
        if not c.cmd:
            self.pwm_off_at = None
            if self.stop_req is not None and self.session is not None:
                self._end_session(self.stop_req)
        if f.unsaved:
            f.save_latched()  # after the coil decision: opening never waits on flash
        return self._quiet(now, st)

    def _why_open(self, st):
        if self.faults.open_now():
            return "fault " + ",".join(self.faults.active)
        if self.pilot.diode_fault:
            return "diode fault"
        if st != cp.C and not (st == cp.D and self.cfg["ventilation"]):
            return "EV in state %s" % cp.NAMES[st]
        return "connector not locked"

    def _on_state(self, now, old, st):
        self.log.info(self.src, "pilot %s -> %s" % (cp.NAMES[old], cp.NAMES[st]))
        if st == cp.A:
            if self.socket:
                self.cable_read = None  # the next plug-in is read anew
                self.limits[1] = UNKNOWN
            self.faults.unplugged()
            if self.pilot.diode_fault:
                self.pilot.clear_diode()
            if self.rcd_trips:
                self.hw.rcd_reset(self.idx)
                self.rcd_trips = 0
            self.vend_pending = False
            self.finishing = False
            if self.session is not None and not self.stop_on_ev_disconnect and self.stop_req is None:
                self.log.info(self.src, "EV disconnected; the session goes on (StopTransactionOnEVSideDisconnect off)")
                return
            if self.session is not None:
                self._end_session("EVDisconnected")
                self.hold_lock = self.socket and not self.unlock_on_ev_disconnect
            self.authorized = False
            self.stop_req = None
            self.id_tag = None
        elif old == cp.A and cp.B <= st <= cp.D:
            if self.session is not None:
                pass  # back to a session kept over an EV-side disconnect
            elif self.authorized:
                self._start_session(now)  # identified before plugging in
            else:
                self.vend_pending = self.cfg["free_vend"]

    def _read_pp(self, now, ma):
        # The cable rating from PP (socket outlets): unknown or out of range
        # offers nothing.
        self.cable_read = ma
        ohm = self.hw.pp_ohm[self.idx]
        if ma is None:
            self.log.warn(self.src, "no PP reading: cable rating unknown, offering 0 A")
        elif ma == 0:
            self.faults.raise_("cable", "cable PP %d ohm outside 60..4500 ohm" % ohm, now)
        else:
            self.log.info(self.src, "cable PP %d ohm: %d A" % (ohm, ma // 1000))
        self.set_limit("cable", ma if ma else UNKNOWN)

    def _quiet(self, now, st):
        # How long nothing here can change without an input changing.
        c = self.contactor
        if (self.pilot.raw != st or self.pilot.counting() or self.faults.hold_until is not None
                or self.oc_since is not None
                or self.pwm_off_at is not None or self.hw.aux[self.idx] != c.cmd
                or (self.socket and self.hw.locked[self.idx] != self.lock_cmd)
                or tdiff(now, c.cmd_at) < AUX_MS + GROUND_MS + 100
                or (self.open_since is not None and tdiff(now, self.open_since) < UNLOCK_MARGIN_MS)
                or (self.pwm_on_at is not None and tdiff(now, self.pwm_on_at) < 100)):
            return 0
        if (0 < self.out < DC_HIGH and not c.cmd and st in (cp.C, cp.D)
                and not self.faults.blocking()):
            return 0  # waiting out close_delay_ms
        q = SLOW_MS
        since = self.faults.blocking_since()
        if since is not None and self.lock_cmd:
            q = min(q, max(0, UNLOCK_FAULT_MS - tdiff(now, since)))
        if self.rcd_retry_at is not None and self.faults.has("rcd"):
            q = min(q, max(0, tdiff(self.rcd_retry_at, now)))
        if tdiff(now, self.oc_ref_until) < 0:
            q = min(q, tdiff(self.oc_ref_until, now))
        return q

    # --- what a technician or the layer above sees --------------------------
    def status_name(self):
        st = self.pilot.state
        if self.faults.blocking():
            return "Faulted"
        if not self.available:
            return "Unavailable"
        if st == cp.A:
            if self.session is not None:
                return "SuspendedEV"  # kept over an EV-side disconnect
            return "Preparing" if self.authorized else "Available"
        if self.contactor.cmd:
            return "Charging" if self.out != DC_HIGH else "SuspendedEVSE"
        if self.session is None:
            return "Finishing" if self.finishing else "Preparing"
        if self.offered_ma < 6000:
            return "SuspendedEVSE"
        if st == cp.B:
            return "SuspendedEV"
        return "Preparing"

    def status(self):
        now = self.clock.ticks_ms()
        s = self.session
        return {
            "connector": self.id,
            "status": self.status_name(),
            "pilot": cp.NAMES[self.pilot.state],
            "pilot_hi_mv": self.pilot.hi_mv,
            "pilot_lo_mv": self.pilot.lo_mv,
            "duty_pm": self.out,
            "pwm": 0 < self.out < DC_HIGH,
            "offered_ma": self.offered_ma,
            "limit_ma": self._offered(),
            "limited_by": self.limited_by,
            "limits": {k: "unknown" if self.limits[i] == UNKNOWN else self.limits[i] for i, k in enumerate(LIMITS)},
            "contactor": self.contactor.cmd,
            "aux": bool(self.hw.aux[self.idx]),
            "locked": bool(self.hw.locked[self.idx]) if self.socket else None,
            "authorized": self.authorized,
            "available": self.available,
            "faults": [x.info() for x in self.faults.active.values()],
            "error_code": self.faults.ocpp_error(),
            "energy_wh": self.energy.wh if self.energy.read_since_boot else None,
            "power_w": self.energy.power_w,
            "current_ma": self.energy.current_ma,
            "session": None if s is None else {"id_tag": s["id_tag"], "wh": self.energy.wh - s["start_wh"],
                                               "ms": tdiff(now, s["start"])},
            "last_session": self.last_session,
            "rcd_trips": self.rcd_trips,
        }

# The hardware interface (firmware/sim/hw.py, boards/README.md) on real pins.
#
# Every machine object comes from a port object (boards/<board>/port.py), so
# this module imports no machine and the host tests can drive it with fakes.
#
# Hot path: the control loop calls sample(now) every tick. It reads the pilot
# in one short burst per connector into a preallocated array, PP, aux, RCD,
# ground and lock feedback, and copies what the slow path measured; integers
# only, no allocation. Slow path: slow(now), from a low-priority task every SLOW_MS,
# reads the CT in short bursts and, once a second, turns them into current,
# power and energy, and reads the NTC (floats are fine there).
#
# Meter: CT-based model. Current is the RMS of the CT signal, power assumes
# the nominal voltage (config voltage_v) on every wired phase (config phases)
# and a power factor of 1; energy is integrated in Wh since boot (the
# firmware's EnergyRegister keeps the persistent count). Not billing grade.
# A connector without ct_adc reports a failed meter (meter_wh None), which the
# firmware raises as PowerMeterFailure: no metering, no charging.
import time
import micropython
from firmware.core.clock import ticks_add, ticks_diff, ticks_ms, us_diff  # the boards' 2^30 tick period; us_diff for ticks_us
from array import array
from micropython import const
from boards.common import frontend as fe
from firmware.core.errtext import errtext  # an exception in words for a log line

_BUF = const(200)  # pilot samples per burst, at most; sums stay small ints
_STEADY_MV = const(2000)  # pilot span below this in a burst: a steady level
_STEP_MV = const(1500)  # a burst this far from the average: a new level, restart it
_PP_READS = const(4)
_CT_BURST = const(32)  # samples per CT burst (~1 ms)
_NTC_READS = const(8)
_WINDOW_MS = const(1000)  # meter / NTC update interval
_STALE_MS = const(5000)  # slow path silent this long: temperature and meter failed
SLOW_MS = const(23)  # slow-task period; not a multiple of 10, 16.7 or 20 ms


# The two inner loops are viper (native code, machine ints): the pilot is
# sampled and split every tick, and plain bytecode would spend milliseconds
# there. Raw readings are >= 0 and < 2**22, so _BUF of them sum below 2**30
# (a small int on 32-bit ports: reading the sums back allocates nothing).
@micropython.viper
def _fill(buf, n: int, rd, stride: int):
    # Back-to-back ADC reads, the tightest loop there is, to catch 40 us
    # pulses; keeps every stride-th when the ADC is faster than needed.
    p = ptr32(buf)
    for k in range(n):
        v = 0
        for j in range(stride):
            v = int(rd())
        p[k] = v


@micropython.viper
def _split(buf, n: int, steady: int, out):
    # Split at the midpoint of the burst's range; sum each half without the
    # samples next to an edge (slew), or with them if a half has no other
    # (a 10 % pulse on a slow ADC). A burst whose range is under `steady` is
    # one level (+12 V, F, E): both halves are the whole burst.
    # out = [high sum, high count, low sum, low count].
    p = ptr32(buf)
    o = ptr32(out)
    mn = p[0]
    mx = p[0]
    tot = 0
    for k in range(n):
        v = p[k]
        tot += v
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    if mx - mn < steady:
        o[0] = tot
        o[1] = n
        o[2] = tot
        o[3] = n
        return
    mid = (mn + mx) >> 1
    sh = 0
    nh = 0
    sl = 0
    nl = 0
    fh = 0
    fnh = 0
    fl = 0
    fnl = 0
    prev = p[0] > mid
    cur = p[1] > mid
    for k in range(1, n - 1):
        v = p[k]
        nxt = p[k + 1] > mid
        if cur:
            sh += v
            nh += 1
            if prev and nxt:
                fh += v
                fnh += 1
        else:
            sl += v
            nl += 1
            if (not prev) and (not nxt):
                fl += v
                fnl += 1
        prev = cur
        cur = nxt
    if fnh:
        sh = fh
        nh = fnh
    if fnl:
        sl = fl
        nl = fnl
    if not nh:
        sh = mx
        nh = 1
    if not nl:
        sl = mn
        nl = 1
    o[0] = sh
    o[1] = nh
    o[2] = sl
    o[3] = nl


class PinHardware:
    def __init__(self, port, pins, voltage_v=230, phases=3):
        P = pins
        n = len(P["cp_pwm"])
        self.port = port
        self.pins = P
        self.connectors = n
        # The interface: snapshots the control loop reads after sample().
        self.cp_hi = [12000] * n
        self.cp_lo = [12000] * n
        self.pp_ohm = [-1] * n
        self.aux = [False] * n
        self.rcd = [False] * n
        self.ground_ok = [True] * n
        self.meter_wh = [None] * n
        self.power_w = [0] * n
        self.current_ma = [0] * n
        self.voltage_mv = [0] * n
        self.locked = [False] * n
        self.temp_dc = None
        self.wdt = None  # the board sets an object with feed()
        self.on_change = None

        # Outputs first, straight into the safe state: coil off, pilot F.
        self._invert = P["cp_invert"]
        self._relay_on = P["relay_on"]
        self._f_u16 = fe.duty_u16(0, self._invert)
        self._relay = [port.output(p, 1 - self._relay_on) for p in P["relay"]]
        self._pwm = [port.pwm(p, 1000, self._f_u16) for p in P["cp_pwm"]]
        self._duty = [0] * n
        self._coil = bytearray(n)

        # Pilot input: one shared sample buffer, a ring of burst results each.
        adc_mv = P["adc_mv"]
        self._cp_rd = []
        num = den = 1
        for p in P["cp_adc"]:
            rd, num, den = port.adc(p, adc_mv)
            self._cp_rd.append(rd)
        self._num, self._den = num, den  # one ADC kind per board
        self._vref = P["vref_mv"]
        self._gain_q, self._off_mv = fe.divider(P["cp_r1"], P["cp_r2"], P["cp_r3"], self._vref)
        # Steady-level span in raw units: _STEADY_MV of pilot at the ADC pin.
        gain = self._gain_q / 1024
        self._steady_raw = fe.mv_to_raw(int(_STEADY_MV / gain) + 1, num, den)
        self._buf = array("i", bytes(4 * _BUF))
        self._halves = array("i", bytes(16))
        # The shortest pilot pulse we must see is the low half at 96 % duty
        # (40 us); board.py warns when one sample takes longer.
        us = self._time_reads(self._cp_rd[0], self._buf)
        span = P["cp_periods"] * 1000  # us of pilot one burst must cover
        self._stride = (span + _BUF * us - 1) // (_BUF * us)
        self.us_per_sample = us * self._stride
        self._nbuf = min(_BUF, max(16, (span + self.us_per_sample - 1) // self.us_per_sample))
        k = P["cp_bursts"]
        self._k = k
        self._ring_hi = array("i", bytes(4 * k * n))
        self._ring_lo = array("i", bytes(4 * k * n))
        self._ring_n = bytearray(n)  # bursts in the ring
        self._ring_pos = bytearray(n)
        self._sum_hi = [0] * n
        self._sum_lo = [0] * n

        # PP.
        self._pp_rd = [None if p is None else port.adc(p, adc_mv)[0] for p in P["pp_adc"]]
        self._pp_pull = int(P["pp_pullup"])

        # Discrete inputs, each pulled away from its asserted level, so an
        # open wire reads "aux open" (a switch fault when the coil is on), "no
        # ground" (fault) and, unavoidably, "not tripped" for the RCD.
        self._aux_closed = P["aux_closed"]
        self._aux = [self._input(p, self._aux_closed) for p in P["aux"]]
        self._gnd_ok = P["ground_ok"]
        self._gnd = [self._input(p, self._gnd_ok) for p in P["ground"]]
        self._rcd_trip = P["rcd_trip"]
        self._rcd_in = [self._input(p, self._rcd_trip) for p in P["rcd"]]
        self._rcd_flag = bytearray(n)  # set by the IRQ, cleared by rcd_reset
        self._rcd_mask = bytearray(n)  # reset pulse running: ignore the input
        self._rcd_until = [0] * n
        self._rcd_pulse = P["rcd_pulse_ms"]
        self._rcd_rst_on = P["rcd_reset_on"]
        self._rcd_rst = [None if p is None else port.output(p, 1 - self._rcd_rst_on) for p in P["rcd_reset"]]
        for i in range(n):
            if self._rcd_in[i] is not None:
                port.irq(self._rcd_in[i], self._rcd_trip, self._rcd_handler(i))

        # Connector lock: a level-driven actuator and a feedback switch.
        # Without feedback `locked` follows the command; without an actuator
        # too, so a board without a lock behaves as "locks at once".
        self._lock_on = P["lock_on"]
        self._lock = [None if p is None else port.output(p, 1 - self._lock_on) for p in P["lock"]]
        self._lock_closed = P["lock_closed"]
        self._lock_fb = [self._input(p, self._lock_closed) for p in P["lock_fb"]]
        self._lock_cmd = bytearray(n)

        # Slow path: CT meter and NTC.
        self._ct_rd = [None if p is None else port.adc(p, adc_mv)[0] for p in P["ct_adc"]]
        self._ct = [fe.Rms(self._vref // 2) for _ in range(n)]
        self._ct_wait = bytearray(n)  # a closed window's fit still running
        self._ct_dt = [0] * n  # that window's length, ms
        self._ct_turns = P["ct_turns"]
        self._ct_burden = P["ct_burden"]
        self._ct_floor = P["ct_floor_ma"]
        self._v_mv = int(voltage_v) * 1000
        self._phases = phases
        self._ma = [0] * n
        self._w = [0] * n
        self._wh = [0] * n
        self._mj = [0] * n  # energy below one Wh, mJ
        self.ct_rms_mv = [None] * n
        self._ntc_rd = port.adc(P["ntc_adc"], adc_mv)[0]
        self._ntc = (P["ntc_series"], P["ntc_r0"], P["ntc_beta"], P["ntc_t0"])
        self.slow_errors = 0
        now = ticks_ms()
        self._temp = self._read_ntc()
        self._window_at = now
        self._fresh_at = now

    def _input(self, p, asserted):
        if p is None:
            return None
        return self.port.input(p, "down" if asserted else "up")

    def _rcd_handler(self, i):
        # Runs in IRQ context: sets one byte, allocates nothing, so it is
        # safe as a hard IRQ too. sample() turns it into rcd[i].
        flags = self._rcd_flag

        def handler(pin):
            flags[i] = 1
        return handler

    @staticmethod
    def _time_reads(rd, buf):
        # Size the pilot burst from the real sampling speed of this board and
        # build: the loop _pilot_burst uses, timed.
        t0 = time.ticks_us()
        _fill(buf, 64, rd, 1)
        return max(1, us_diff(time.ticks_us(), t0) // 64)

    # --- outputs -----------------------------------------------------------------
    def pilot(self, i, duty):
        self._duty[i] = duty
        self._pwm[i].duty_u16(fe.duty_u16(duty, self._invert))

    def contactor(self, i, on):
        self._coil[i] = 1 if on else 0
        self._relay[i].value(self._relay_on if on else 1 - self._relay_on)

    def lock(self, i, on):
        self._lock_cmd[i] = 1 if on else 0
        pin = self._lock[i]
        if pin is not None:
            pin.value(self._lock_on if on else 1 - self._lock_on)

    def rcd_reset(self, i):
        # Clears the latch at once (the firmware re-reads rcd[] next tick);
        # the reset line is pulsed without blocking and released by sample().
        self._rcd_flag[i] = 0
        self.rcd[i] = False
        pin = self._rcd_rst[i]
        if pin is not None:
            pin.value(self._rcd_rst_on)
            self._rcd_mask[i] = 1
            self._rcd_until[i] = ticks_add(ticks_ms(), self._rcd_pulse)

    def safe(self, now=None):
        # Callable from anywhere (watchdog, exception handlers): no allocation.
        # The lock stays as it is: the connector releases it after a fault.
        off = 1 - self._relay_on
        for i in range(self.connectors):
            self._coil[i] = 0
            self._relay[i].value(off)
            self._duty[i] = 0
            self._pwm[i].duty_u16(self._f_u16)

    def quiet_ms(self, now):
        return 0  # real inputs can change at any time

    def changed(self):
        if self.on_change:
            self.on_change()

    # --- hot path ----------------------------------------------------------------
    def sample(self, now):
        stale = ticks_diff(now, self._fresh_at) > _STALE_MS
        for i in range(self.connectors):
            self._pilot_burst(i)
            self._sample_pp(i)
            pin = self._aux[i]
            self.aux[i] = (pin.value() == self._aux_closed) if pin is not None else self._coil[i] == 1
            pin = self._gnd[i]
            self.ground_ok[i] = (pin.value() == self._gnd_ok) if pin is not None else True
            pin = self._lock_fb[i]
            self.locked[i] = (pin.value() == self._lock_closed) if pin is not None else self._lock_cmd[i] == 1
            self._sample_rcd(i, now)
            if self._ct_rd[i] is None or stale:
                self.meter_wh[i] = None
                self.current_ma[i] = 0
            else:
                self.meter_wh[i] = self._wh[i]
                self.power_w[i] = self._w[i]
                self.current_ma[i] = self._ma[i]
                self.voltage_mv[i] = self._v_mv
        self.temp_dc = None if stale else self._temp

    def _sample_pp(self, i):
        rd = self._pp_rd[i]
        if rd is None:
            self.pp_ohm[i] = -1
            return
        s = 0
        for _ in range(_PP_READS):
            s += rd()
        mv = fe.raw_to_mv(s // _PP_READS, self._num, self._den)
        self.pp_ohm[i] = fe.pp_ohm(mv, self._pp_pull, self._vref)

    def _sample_rcd(self, i, now):
        if self._rcd_mask[i]:
            # A reset pulse may itself toggle the monitor's output; what it
            # says during the pulse is dropped, the level is read after it.
            if ticks_diff(now, self._rcd_until[i]) >= 0:
                self._rcd_rst[i].value(1 - self._rcd_rst_on)
                self._rcd_mask[i] = 0
                self._rcd_flag[i] = 0
            return
        pin = self._rcd_in[i]
        if self._rcd_flag[i] or (pin is not None and pin.value() == self._rcd_trip):
            self.rcd[i] = True  # latched until rcd_reset

    def _pilot_burst(self, i):
        # One burst of back-to-back reads covering cp_periods PWM periods,
        # split into high and low half (_split), converted to pilot mV and
        # averaged with the previous bursts.
        buf = self._buf
        n = self._nbuf
        _fill(buf, n, self._cp_rd[i], self._stride)
        o = self._halves
        _split(buf, n, self._steady_raw, o)
        num = self._num  # (4-way tuple assignment would allocate)
        den = self._den
        g = self._gain_q
        off = self._off_mv
        self._average(i, fe.pilot_mv(fe.raw_to_mv(o[0] // o[1], num, den), g, off),
                      fe.pilot_mv(fe.raw_to_mv(o[2] // o[3], num, den), g, off))

    def _average(self, i, hi, lo):
        # Mean of the last cp_bursts bursts (~10 PWM periods); a jump larger
        # than noise restarts it, so a new EV state shows within one tick.
        k = self._k
        c = self._ring_n[i]
        if c and (abs(hi - self.cp_hi[i]) > _STEP_MV or abs(lo - self.cp_lo[i]) > _STEP_MV):
            c = 0
            self._ring_pos[i] = 0
            self._sum_hi[i] = 0
            self._sum_lo[i] = 0
        pos = self._ring_pos[i]
        j = i * k + pos
        if c == k:
            self._sum_hi[i] -= self._ring_hi[j]
            self._sum_lo[i] -= self._ring_lo[j]
        else:
            c += 1
            self._ring_n[i] = c
        self._ring_hi[j] = hi
        self._ring_lo[j] = lo
        self._sum_hi[i] += hi
        self._sum_lo[i] += lo
        self._ring_pos[i] = pos + 1 if pos + 1 < k else 0
        self.cp_hi[i] = self._sum_hi[i] // c
        self.cp_lo[i] = self._sum_lo[i] // c

    # --- slow path -----------------------------------------------------------------
    def slow(self, now):
        # From a low-priority task every SLOW_MS (boards/common/board.py).
        for i in range(self.connectors):
            rd = self._ct_rd[i]
            if rd is not None:
                # Stamped: the meter files each burst by its mains phase (fe.Rms).
                self._ct[i].burst(rd, self._num, self._den, _CT_BURST, time.ticks_us())
        for i in range(self.connectors):
            # A window's fit runs in slices, one a wake (frontend.Rms.step).
            if self._ct_wait[i] and self._ct[i].step():
                self._ct_wait[i] = 0
                self._meter(i, self._ct[i].rms, self._ct_dt[i])
        dt = ticks_diff(now, self._window_at)
        if dt < _WINDOW_MS:
            return
        self._window_at = now
        for i in range(self.connectors):
            if self._ct_rd[i] is None:
                continue
            if self._ct[i].close():
                self._ct_wait[i] = 1
                self._ct_dt[i] = dt
            else:
                self._meter(i, None, dt)
        self._temp = self._read_ntc()
        self._fresh_at = now

    def _meter(self, i, rms, dt):
        # A closed window's RMS (None: nothing measured) -> current, power, energy.
        self.ct_rms_mv[i] = rms
        ma = 0 if rms is None else fe.ct_ma(rms, self._ct_burden, self._ct_turns)
        if ma < self._ct_floor:
            ma = 0
        w = ma * (self._v_mv // 1000) * self._phases // 1000
        # Energy over the window at its mean power.
        wh, self._mj[i] = fe.energy_step(self._mj[i], w, dt)
        self._wh[i] += wh
        self._ma[i] = ma
        self._w[i] = w

    def _read_ntc(self):
        rd = self._ntc_rd
        s = 0
        for _ in range(_NTC_READS):
            s += rd()
        mv = fe.raw_to_mv(s // _NTC_READS, self._num, self._den)
        series, r0, beta, t0 = self._ntc
        return fe.ntc_dc(mv, self._vref, series, r0, beta, t0)

    async def run_slow(self, clock, log=None):
        # The low-priority task. An exception is logged once and retried; if
        # it keeps failing, sample() reports temperature and meter as failed
        # after _STALE_MS, so the firmware stops charging.
        stagger = 0
        while True:
            try:
                self.slow(clock.ticks_ms())
            except Exception as e:
                self.slow_errors += 1
                if log and self.slow_errors == 1:
                    log.error("board", "meter/NTC read failed: %s" % errtext(e))
            # Staggered (SLOW_MS..SLOW_MS+4): wake-ups come in whole ms and
            # queue behind the control tick, so a fixed period settles on a
            # few phases of the mains cycle; the meter's fit needs more.
            stagger = stagger + 1 if stagger < 4 else 0
            await clock.sleep_ms(SLOW_MS + stagger)

    # --- for a technician (allocates; never from the control loop) -----------------
    def info(self):
        return {
            "pilot_duty_pm": list(self._duty),
            "pilot_hi_mv": list(self.cp_hi),
            "pilot_lo_mv": list(self.cp_lo),
            "pilot_burst": self._nbuf,
            "pilot_us_per_sample": self.us_per_sample,
            "pp_ohm": list(self.pp_ohm),
            "aux": list(self.aux),
            "rcd": list(self.rcd),
            "ground_ok": list(self.ground_ok),
            "locked": list(self.locked),
            "coil": list(self._coil),
            "ct_rms_mv": [None if r is None else round(r, 1) for r in self.ct_rms_mv],
            "current_ma": list(self._ma),
            "meter_wh": list(self.meter_wh),
            "temp_dc": self.temp_dc,
            "slow_errors": self.slow_errors,
        }


def park(port, pins):
    # Every output inactive at once (relays off, pilots at F as plain
    # outputs, lock released, RCD reset line idle): at boot before anything
    # waits, and in demo mode on a board that may be wired to a charger.
    f = 1 if pins["cp_invert"] else 0
    for key, level in (("relay", 1 - pins["relay_on"]), ("lock", 1 - pins["lock_on"]),
                       ("rcd_reset", 1 - pins["rcd_reset_on"])):
        for p in pins[key]:
            if p is not None:
                port.output(p, level)
    for p in pins["cp_pwm"]:
        port.output(p, f)

# The hardware interface, implemented on the simulated plant.
#
# Every board module offers the same attributes and methods (boards/README.md
# is the contract). The control loop calls sample(now) once per tick, then
# reads the attributes: a snapshot, so reading costs no allocation.
#
#   connectors            number of connectors
#   cp_hi[i], cp_lo[i]    pilot high / low half, mV, averaged over ~10 periods
#   pp_ohm[i]             proximity pilot resistance, ohm; -1 = no PP input fitted
#                         (the simulation also reports -1 with no cable; a real
#                         board cannot tell that from a broken PP and reads open: 100000)
#   aux[i]                aux (mirror) contact closed
#   rcd[i]                residual current tripped (latched until rcd_reset, which clears it here too)
#   ground_ok[i]          protective earth present
#   meter_wh[i]           meter register, Wh (None when the meter fails)
#   power_w[i], current_ma[i], voltage_mv[i]
#   locked[i]             connector lock feedback (True = locked)
#   soc_pct[i]            optional: the EV's state of charge (%) as the EV reports it
#                         (ISO 15118 on a real board), None when unknown
#   temp_dc               enclosure temperature, 0.1 C (None when the sensor fails)
#   tamper                enclosure tamper switch (True = opened); optional, boards without one omit it
#   pilot(i, duty)        per mille PWM at 1 kHz; 1000 = +12 V steady, 0 = -12 V (F)
#   contactor(i, on)      drive the relay coil
#   lock(i, on)           drive the connector lock actuator
#   rcd_reset(i)
#   safe(now=None)        every coil off, every pilot at F; callable from anywhere
#   quiet_ms(now)         ms in which no discrete input can change (sim only; 0 = unknown)
#   wdt                   object with feed(), or None
import time
from firmware.core.clock import us_since


class SimHardware:
    def __init__(self, plant):
        self.plant = plant
        n = len(plant.outlets)
        self.connectors = n
        self.cp_hi = [12000] * n
        self.cp_lo = [12000] * n
        self.pp_ohm = [-1] * n
        self.aux = [False] * n
        self.rcd = [False] * n
        self.ground_ok = [True] * n
        self.locked = [False] * n
        self.soc_pct = [None] * n
        self.meter_wh = [0] * n
        self.power_w = [0] * n
        self.current_ma = [0] * n
        self.voltage_mv = [0] * n
        self.temp_dc = 250
        self.tamper = plant.tamper
        self.wdt = None
        self.on_change = None  # the station's wake-up, when the bench changes an input
        self.stepping = True  # sample() steps the plant (False: run_plant does)
        self.step_us = 0  # run_plant: the last step's time, and the longest
        self.step_us_max = 0
        # Apply what the plant already holds (welded contacts after a power cut).
        for i, o in enumerate(plant.outlets):
            self.aux[i] = o.contactor.closed
            self.locked[i] = o.locked

    def sample(self, now):
        # On the Unix port the plant steps here, in the control tick, so a
        # simulated run is deterministic. A dev board in demo mode runs the
        # physics in its own task instead (run_plant): the plant's float
        # maths (soft float on the RP2040, and it allocates) stays out of the
        # safety loop, and sample() is then a no-op.
        if self.stepping:
            self.step(now)

    def step(self, now):
        # The physics up to `now`, then the readings into the snapshot.
        p = self.plant
        p.step(now)
        outlets = p.outlets
        for i in range(len(outlets)):
            o = outlets[i]
            self.cp_hi[i] = o.hi
            self.cp_lo[i] = o.lo
            self.pp_ohm[i] = (100000 if o.pp_open else o.pp_ohm) if o.ev.plugged else -1
            self.aux[i] = o.contactor.closed
            self.rcd[i] = o.rcd_tripped
            self.ground_ok[i] = o.ground_ok
            self.locked[i] = o.locked
            self.soc_pct[i] = o.ev.soc_pct if o.ev.plugged else None
            m = o.meter
            if m.ok:
                self.meter_wh[i] = int(m.wh)
                self.power_w[i] = m.power_w
                self.current_ma[i] = m.current_ma
                self.voltage_mv[i] = m.voltage_mv
            else:
                self.meter_wh[i] = None
                self.current_ma[i] = int(o.ev.draw_ma)  # the CT still measures
        self.tamper = p.tamper
        t = p.thermal
        self.temp_dc = int(t.temp * 10) if t.sensor_ok else None

    async def run_plant(self, clock, period_ms):
        # Demo mode on a dev board: the world outside steps in this task, one
        # control period apart, and writes the readings the control loop
        # takes. Timed, so the bench can read what the physics costs.
        self.stepping = False
        try:
            while True:
                t0 = time.ticks_us()
                self.step(clock.ticks_ms())
                us = us_since(t0)
                self.step_us = us
                if us > self.step_us_max:
                    self.step_us_max = us
                await clock.sleep_ms(period_ms)
        finally:
            # Ended (a plant error, or cancelled): sample() steps it again, so
            # the readings never freeze and an error shows in the control
            # tick, which opens everything and raises an internal fault.
            self.stepping = True

    def pilot(self, i, duty):
        self.plant.set_duty(i, duty)

    def contactor(self, i, on):
        self.plant.set_coil(i, on)

    def lock(self, i, on):
        self.plant.set_lock(i, on)

    def rcd_reset(self, i):
        # The latch and our snapshot of it: the caller must not see the old trip again.
        self.plant.outlets[i].rcd_tripped = False
        self.rcd[i] = False

    def safe(self, now=None):
        if now is not None:
            self.plant.step(now)  # the world moved on while the firmware was stuck
        for i in range(self.connectors):
            self.plant.set_coil(i, False)
            self.plant.set_duty(i, 0)

    def quiet_ms(self, now):
        return self.plant.quiet_ms(now)

    def changed(self):
        if self.on_change:
            self.on_change()

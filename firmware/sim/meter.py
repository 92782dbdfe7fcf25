# Simulated energy meter: integrates what the EV draws. Like a real meter it
# keeps its register itself (the plant saves it), and it can be made to stop
# answering.
class SimMeter:
    def __init__(self, voltage_mv=230000, phases=3):
        self.voltage_mv = voltage_mv
        self.phases = phases
        self.wh = 0.0
        self.power_w = 0
        self.current_ma = 0
        self.ok = True

    def step(self, dt_ms, current_ma):
        if not current_ma:
            self.power_w = self.current_ma = 0  # nothing drawn: no float garbage
            return
        p = current_ma * self.voltage_mv * self.phases / 1e6  # mA * mV = uW
        self.wh += p * dt_ms / 3600000
        self.power_w = int(p)
        self.current_ma = int(current_ma)

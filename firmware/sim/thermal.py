# Simulated thermal mass of the charger: heated by the current through it,
# cooling toward ambient with one time constant. At 32 A the steady rise is
# about 25 C, so a warm day plus a long charge reaches the derate points.
import math


class Thermal:
    def __init__(self, ambient_c=25.0):
        self.ambient = float(ambient_c)
        self.temp = float(ambient_c)
        self.tau_s = 600.0
        self.rise_per_a2 = 25.0 / (32 * 32)
        self.sensor_ok = True

    def step(self, dt_ms, amps):
        if dt_ms <= 0:
            return
        target = self.ambient + self.rise_per_a2 * amps * amps
        self.temp = target + (self.temp - target) * math.exp(-dt_ms / 1000 / self.tau_s)

    def set(self, c):
        # Bench "temp(c)": the charger is at c and its surroundings hold it there.
        self.temp = float(c)
        self.ambient = float(c)

    def to_dict(self):
        return {"ambient": self.ambient, "temp": self.temp, "sensor_ok": self.sensor_ok}

    def load(self, d):
        self.ambient = float(d.get("ambient", self.ambient))
        self.temp = float(d.get("temp", self.temp))
        self.sensor_ok = bool(d.get("sensor_ok", True))

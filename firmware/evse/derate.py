# Thermal derating: temperature -> maximum current, with hysteresis, a
# minimum interval between steps up, and shutdown when too hot.
#
# Steps down (hotter) act at once: lowering the current is always safe.
# Steps up wait for the temperature to fall hysteresis_c below the step's
# point and for min_interval_s since the last change, so the duty does not
# hunt. After a shutdown the charger resumes at resume_c on the lowest step.
from firmware.core.clock import ticks_diff  # ticks wrap at 2^30 as on the boards


class Derate:
    def __init__(self, curve):
        self.points = curve["points"]  # [[temp_c, percent], ...] rising temp
        self.hyst = curve["hysteresis_c"] * 10
        self.shutdown_dc = curve["shutdown_c"] * 10
        self.resume_dc = curve["resume_c"] * 10
        self.interval = int(curve["min_interval_s"] * 1000)
        self.level = 0  # 0 = full current, i = points[i-1] applies
        self.hot = False  # shut down
        self.changed_at = None

    def update(self, now, temp_dc):
        # temp in deci-degrees C. Returns True when the level changed.
        pts = self.points
        lvl = self.level
        changed = False
        while lvl < len(pts) and temp_dc >= pts[lvl][0] * 10:
            lvl += 1
        if lvl == self.level and lvl > 0 and not self.hot:  # shut down: resume on the lowest step
            quiet = self.changed_at is None or ticks_diff(now, self.changed_at) >= self.interval
            if quiet and temp_dc < pts[lvl - 1][0] * 10 - self.hyst:
                lvl -= 1
        if lvl != self.level:
            self.level = lvl
            self.changed_at = now
            changed = True
        if not self.hot and temp_dc >= self.shutdown_dc:
            self.hot = True
            self.level = len(pts)
            self.changed_at = now
            changed = True
        elif self.hot and temp_dc <= self.resume_dc:
            self.hot = False
            self.changed_at = now
            changed = True
        return changed

    def percent(self):
        if self.hot:
            return 0
        return 100 if self.level == 0 else self.points[self.level - 1][1]

    def limit_ma(self, max_ma):
        return max_ma * self.percent() // 100

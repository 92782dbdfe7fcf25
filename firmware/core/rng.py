# A small deterministic generator: simulated noise and switching delays, and
# reconnect jitter, are the same on every run with the same seed (no global
# random state).
class Rng:
    def __init__(self, seed=1):
        self.s = (seed or 1) & 0x7FFFFFFF

    def next(self):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return self.s

    def range(self, lo, hi):
        # integer in [lo, hi]
        return lo + self.next() % (hi - lo + 1)

# The network interface a board hands the charger (contract).
#
#   link.up              True while the link carries IP
#   link.state           "up", "connecting", "down", "no_ap", "wrong_password",
#                        "failed", "unconfigured" (no SSID), "none" (no radio)
#   link.address         the IP address (text), or None
#   link.signal()        RSSI in dBm, or None
#   await link.wait_up(timeout_ms) -> True once up, False at the timeout
#   link.run()           the task that brings the link up and keeps it up
#   link.info()          what status() and wifi() show; never the passphrase
#   link.configure(ssid, passphrase)   new credentials (the bench's wifi())
#   link.on_change       callables, called with up (bool) when it changes
#
# HostLink is the Unix board's: the host's network, always up. WlanLink is the
# ESP32's and the Pico W's, on network.WLAN in station mode: join within
# CONNECT_MS, else give up this try, and try again after a backoff with
# jitter (firmware/net/backoff.py), so chargers that lost the same access
# point do not all come back at once. A wrong passphrase backs off too (it
# may be the access point that is wrong, and it comes back) but says so.
# The passphrase is held here only: info() shows "set" or "", the log never
# names it.
from micropython import const
from firmware.net.backoff import Backoff

CONNECT_MS = const(15000)  # one join attempt, association and DHCP
POLL_MS = const(1000)  # how often a link that is up is checked
STEP_MS = const(200)  # how often a join in progress is checked
BASE_MS = const(2000)  # first wait after a failed join
CAP_MS = const(60000)  # longest wait between joins


class Link:
    # What every link has: state, listeners, waiting for it.
    def __init__(self, clock, log=None):
        self.clock = clock
        self.log = log
        self.up = False
        self.state = "down"
        self.address = None
        self.on_change = []
        self.changes = 0  # up/down transitions seen

    def _set(self, up, state, address=None):
        was = self.up
        self.up = up
        self.state = state
        self.address = address if up else None
        if up != was:
            self.changes += 1
            if self.log is not None:
                if up:
                    self.log.info("net", "link up, address %s" % address)
                else:
                    self.log.warn("net", "link down: %s" % state)
            for f in self.on_change:
                f(up)

    def signal(self):
        return None

    async def wait_up(self, timeout_ms):
        clock = self.clock
        t0 = clock.ticks_ms()
        while not self.up:
            if clock.ticks_diff(clock.ticks_ms(), t0) >= timeout_ms:
                return False
            await clock.sleep_ms(STEP_MS)
        return True

    def info(self):
        return {"kind": self.KIND, "state": self.state, "address": self.address, "rssi": self.signal()}

    def configure(self, ssid, passphrase):
        raise ValueError("this board's network has no credentials to set")


class HostLink(Link):
    # The Unix board: the host's network is there; its address is the host's.
    KIND = "host"

    def __init__(self, clock, log=None, address="host"):
        Link.__init__(self, clock, log)
        self._set(True, "up", address)

    async def run(self):
        return


class NoLink(Link):
    # A board without a radio (a Pico without W): no network, said plainly.
    KIND = "none"

    def __init__(self, clock, log=None):
        Link.__init__(self, clock, log)
        self.state = "none"

    async def run(self):
        if self.log is not None:
            self.log.warn("net", "this board has no network: free vend or local authorisation only")


class WlanLink(Link):
    # network.WLAN in station mode. network: the module (a fake one in tests).
    KIND = "wlan"

    def __init__(self, clock, log, network, ssid="", passphrase="", rng=None,
                 connect_ms=CONNECT_MS, base_ms=BASE_MS, cap_ms=CAP_MS):
        Link.__init__(self, clock, log)
        self.network = network
        self.wlan = network.WLAN(network.STA_IF)
        self.ssid = ssid
        self._pass = passphrase
        self.connect_ms = connect_ms
        self.backoff = Backoff(base_ms=base_ms, cap_ms=cap_ms, rng=rng)
        self.tries = 0  # join attempts since the last success
        self.joins = 0  # successful joins
        self.next_try_ms = None  # ms until the next join while backing off
        self._kick = False  # configure() asks for a join now
        self.state = "unconfigured" if not ssid else "down"

    def signal(self):
        if not self.up:
            return None
        try:
            return self.wlan.status("rssi")
        except Exception:  # a port or a moment without it
            return None

    def info(self):
        i = Link.info(self)
        i["ssid"] = self.ssid
        i["passphrase"] = "set" if self._pass else ""
        i["tries"] = self.tries
        i["joins"] = self.joins
        i["retry_in_ms"] = self.next_try_ms
        return i

    def configure(self, ssid, passphrase):
        if not isinstance(ssid, str) or not 1 <= len(ssid) <= 32:
            raise ValueError("ssid: 1..32 characters")
        if not isinstance(passphrase, str) or not (passphrase == "" or 8 <= len(passphrase) <= 63):
            raise ValueError("passphrase: empty (open network) or 8..63 characters")
        self.ssid = ssid
        self._pass = passphrase
        self.backoff.reset()
        self._kick = True
        try:
            self.wlan.disconnect()
        except Exception:
            pass
        self._set(False, "down")

    def _failure(self, status):
        n = self.network
        if status == getattr(n, "STAT_WRONG_PASSWORD", -1001):
            return "wrong_password"
        if status == getattr(n, "STAT_NO_AP_FOUND", -1002):
            return "no_ap"
        if status in (getattr(n, "STAT_CONNECT_FAIL", -1003), getattr(n, "STAT_ASSOC_FAIL", -1004),
                      getattr(n, "STAT_HANDSHAKE_TIMEOUT", -1005), getattr(n, "STAT_BEACON_TIMEOUT", -1006)):
            return "failed"
        return None

    async def _join(self):
        # One attempt: True when up.
        clock = self.clock
        w = self.wlan
        self.tries += 1
        self._set(False, "connecting")
        try:
            w.active(True)
            w.connect(self.ssid, self._pass)
        except Exception as e:  # a radio that refuses: retried like any failure
            self.state = "failed"
            self.log.warn("net", "wifi %s: join refused: %r" % (self.ssid, e))
            return False
        t0 = clock.ticks_ms()
        why = "timeout"
        while clock.ticks_diff(clock.ticks_ms(), t0) < self.connect_ms:
            await clock.sleep_ms(STEP_MS)
            if w.isconnected():
                self._set(True, "up", w.ifconfig()[0])
                return True
            f = self._failure(w.status())
            if f is not None:
                why = f
                break
        try:
            w.disconnect()  # stop the radio's own retries until ours
        except Exception:
            pass
        self.state = "failed" if why == "timeout" else why
        self.log.warn("net", "wifi %s: join failed (%s) after %d ms, try %d"
                      % (self.ssid, why, clock.ticks_diff(clock.ticks_ms(), t0), self.tries))
        return False

    def _renewed(self):
        # A DHCP renewal that kept the address changes nothing. One that
        # gave another address leaves sockets bound to the old one dead:
        # the users see the link go down and up (the OCPP client reconnects).
        try:
            a = self.wlan.ifconfig()[0]
        except Exception:
            return
        if a != self.address:
            self.log.warn("net", "address changed from %s to %s (DHCP)" % (self.address, a))
            self._set(False, "renewing")
            self._set(True, "up", a)

    async def run(self):
        clock = self.clock
        while True:
            if not self.ssid:
                self.state = "unconfigured"
                await clock.sleep_ms(POLL_MS)
                continue
            if self.up:
                if self.wlan.isconnected():
                    self._renewed()
                    await clock.sleep_ms(POLL_MS)
                    continue
                self._set(False, "down")  # lost: out of range, the AP gone
            self._kick = False
            if await self._join():
                self.tries = 0
                self.joins += 1
                self.backoff.reset()
                continue
            wait = self.backoff.next_ms()
            self.next_try_ms = wait
            t0 = clock.ticks_ms()
            while not self._kick and clock.ticks_diff(clock.ticks_ms(), t0) < wait:
                await clock.sleep_ms(STEP_MS)
            self.next_try_ms = None

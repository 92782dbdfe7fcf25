# What a real board gives the shared code: pins, PWM, ADC, watchdog, reset.
# boards/esp32/port.py and boards/rp2040/port.py subclass this and add their
# ADC flavour and pin map. `machine` is imported inside the methods so this
# module (and the shared code above it) imports on the Unix port too.
import os


class MachinePort:
    NAME = "generic"
    TARGET = None  # set by each board: "esp32", "rp2040"
    WDT_MS = 4000  # hardware watchdog; the station feeds it every 50 ms
    BOOT_WINDOW_MS = 1000  # boot_skip / Ctrl-C accepted this long after reset

    def defaults(self):
        raise NotImplementedError

    def caps(self):
        raise NotImplementedError

    def output(self, pin, value):
        from machine import Pin
        return Pin(pin, Pin.OUT, value=value)

    def input(self, pin, pull=None):
        from machine import Pin
        p = {"up": Pin.PULL_UP, "down": Pin.PULL_DOWN}.get(pull)
        return Pin(pin, Pin.IN, p) if p is not None else Pin(pin, Pin.IN)

    def irq(self, pin, active_level, handler):
        from machine import Pin
        pin.irq(trigger=Pin.IRQ_RISING if active_level else Pin.IRQ_FALLING, handler=handler)

    def pwm(self, pin, freq, duty_u16):
        from machine import Pin, PWM
        # Set the level first, then start PWM with the duty already right, so
        # the pilot never shows a default 50 % while booting.
        Pin(pin, Pin.OUT, value=1 if duty_u16 >= 32768 else 0)
        try:
            return PWM(Pin(pin), freq=freq, duty_u16=duty_u16)
        except TypeError:  # ports before the constructor took both
            p = PWM(Pin(pin))
            p.freq(freq)
            p.duty_u16(duty_u16)
            return p

    def adc(self, pin, adc_mv):
        # -> (read function, num, den): mV at the pin = read() * num // den.
        from machine import ADC, Pin
        return ADC(Pin(pin)).read_u16, adc_mv, 65535

    def wdt(self, timeout_ms):
        from machine import WDT
        return WDT(timeout=timeout_ms)

    def reset(self):
        import machine
        machine.reset()

    def serial(self):
        # The chip's unique id in hex: the charge point serial number the
        # OCPP client reports in BootNotification.
        import machine
        import binascii
        return binascii.hexlify(machine.unique_id()).decode().upper()

    def link(self, clock, log, cfg):
        # The network interface (firmware/net/link.py): network.WLAN in
        # station mode with the configured credentials, or, on a board
        # without a radio (a Pico without W), a link that says it has none.
        try:
            import network
        except ImportError:
            from firmware.net.link import NoLink
            return NoLink(clock, log)
        from firmware.net.link import WlanLink
        return WlanLink(clock, log, network, cfg["wifi_ssid"], cfg["wifi_pass"])

    def skip_pressed(self):
        # A board button that asks to skip the firmware (besides boot_skip).
        return False

    def slots(self, store, log=None, **kw):
        # The A/B application slots: directories on the main filesystem
        # (<store root>/slots/A, B). The ESP32 port maps them onto partitions.
        # kw goes to Slots (factory_version: the image the board was flashed with).
        from firmware.ota.slots import Slots
        return Slots(store, self.store_root().rstrip("/") + "/slots", log=log, **kw)

    def store_root(self):
        # "/flash" on ports that mount the filesystem there, else "/".
        try:
            os.stat("/flash")
            return "/flash"
        except OSError:
            return "/"

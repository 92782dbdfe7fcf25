# The RP2040 port: u16 ADC reads against the 3V3 reference, the Pico pin map,
# the BOOTSEL button as a "skip the firmware" button after reset.
from boards.common.port import MachinePort
from boards.rp2040 import pins


class Rp2040Port(MachinePort):
    NAME = "Raspberry Pi Pico"
    TARGET = "rp2040"  # which files of an update bundle this board takes
    WDT_MS = 4000  # the RP2040 watchdog allows at most 8388 ms

    def defaults(self):
        return pins.defaults()

    def caps(self):
        return pins.caps()

    def skip_pressed(self):
        # rp2.bootsel_button() exists from MicroPython 1.21 on. Held during
        # reset BOOTSEL starts the USB bootloader instead, so press it after.
        try:
            import rp2
            return rp2.bootsel_button() == 1
        except (ImportError, AttributeError):
            return False


Port = Rp2040Port  # the name tools/flash_bundle.py imports for any board

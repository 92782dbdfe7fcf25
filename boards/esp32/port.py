# The ESP32 port: calibrated ADC reads, the DevKitC pin map.
from boards.common.port import MachinePort
from boards.esp32 import pins


class Esp32Port(MachinePort):
    NAME = "ESP32 DevKitC"
    TARGET = "esp32"  # which files of an update bundle this board takes

    def defaults(self):
        return pins.defaults()

    def caps(self):
        return pins.caps()

    def slots(self, store, log=None, **kw):
        # slot_a / slot_b LittleFS partitions when the table has them
        # (boards/esp32/slots.py), else directories like the other boards.
        from boards.esp32 import slots
        return slots.open_slots(store, self.store_root(), log, **kw)[0]

    def adc(self, pin, adc_mv):
        # 11 dB attenuation for the 0..2.45 V range, read_uv() for the eFuse
        # calibration: raw ESP32 counts are off by up to ~6 % between chips,
        # more than a pilot band. Values are microvolts (< 2**22).
        from machine import ADC, Pin
        a = ADC(Pin(pin))
        a.atten(ADC.ATTN_11DB)
        return a.read_uv, 1, 1000


Port = Esp32Port  # the name tools/flash_bundle.py imports for any board

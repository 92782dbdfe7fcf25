# The ESP32 port: calibrated ADC reads, the DevKitC pin map.
from boards.common.port import MachinePort
from boards.esp32 import pins


class Esp32Port(MachinePort):
    NAME = "ESP32 DevKitC"

    def defaults(self):
        return pins.defaults()

    def caps(self):
        return pins.caps()

    def adc(self, pin, adc_mv):
        # 11 dB attenuation for the 0..2.45 V range, read_uv() for the eFuse
        # calibration: raw ESP32 counts are off by up to ~6 % between chips,
        # more than a pilot band. Values are microvolts (< 2**22).
        from machine import ADC, Pin
        a = ADC(Pin(pin))
        a.atten(ADC.ATTN_11DB)
        return a.read_uv, 1, 1000

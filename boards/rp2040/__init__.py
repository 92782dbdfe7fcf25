# RP2040 board (Raspberry Pi Pico): pin map, port, entry point.

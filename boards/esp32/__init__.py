# ESP32 board (ESP32 DevKitC, ESP32-WROOM-32): pin map, port, entry point.

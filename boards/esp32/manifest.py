# Freeze the charger into an ESP32 MicroPython build:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=<repo>/boards/esp32/manifest.py
# Paths are relative to this file. The board's /main.py then only needs
# `import boards.esp32.main` (see boards/README.md).
include("$(PORT_DIR)/boards/manifest.py")
include("../../manifest.py")  # the firmware package
package(
    "boards",
    files=[
        "__init__.py",
        "common/__init__.py",
        "common/frontend.py",
        "common/pinmap.py",
        "common/port.py",
        "common/hal.py",
        "common/board.py",
        "common/usb_update.py",
        "common/loader.py",
        "esp32/__init__.py",
        "esp32/pins.py",
        "esp32/port.py",
        "esp32/slots.py",
        "esp32/main.py",
    ],
    base_path="../..",
)

# Freeze the charger into an RP2040 MicroPython build:
#   make -C ports/rp2 BOARD=RPI_PICO FROZEN_MANIFEST=<repo>/boards/rp2040/manifest.py
# Paths are relative to this file. The board's /main.py then only needs
# `import boards.rp2040.main` (see boards/README.md).
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
        "rp2040/__init__.py",
        "rp2040/pins.py",
        "rp2040/port.py",
        "rp2040/main.py",
    ],
    base_path="../..",
)

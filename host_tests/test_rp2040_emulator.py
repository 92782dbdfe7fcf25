"""The real RP2040 image (MicroPython v1.28.0, RPI_PICO, project frozen in)
booted in the rp2040js emulator, with the harness playing the plant on the
Pico's pins (tools/emulator/run.js).

Skipped with the reason when the ARM toolchain, the MicroPython sources or
Node.js are missing; with CI set, a failure instead wherever the offline
source bundle exists (host_tests/rp2040emu.py). All times are emulated.
"""
import json

import pytest

from rp2040emu import Rp2040Emulator, bootrom, image, node_ready

# The charger's config for the emulated bench: a tethered 32 A cable frees
# GP27 (ADC1) for the current transformer, so the meter works and the
# charger charges (boards/README.md, "a Pico with a tethered 32 A cable").
CONFIG = {"id": "EMU0001", "cable_a": 32, "max_current_a": 16, "close_delay_ms": 100,
          "pins": {"pp_adc": None, "ct_adc": 27, "lock": None, "lock_fb": None}}
PICO_APP_BYTES = 640 * 1024


@pytest.fixture(scope="module")
def built():
    node = node_ready()
    rom = bootrom()
    info = image()
    return node, rom, info


@pytest.fixture(scope="module")
def emu(built):
    node, rom, info = built
    e = Rp2040Emulator(info["uf2_path"], rom, node)
    yield e
    e.close()


def _write_file(emu, name, text):
    # One line per statement at MicroPython's own REPL (empty filesystem).
    out = emu.command("f=open(%r,'w'); f.write(%r); f.close()" % (name, text))
    assert "Error" not in out, out


def test_image_fits_the_pico_application_area(built):
    info = built[2]
    assert info["micropython"] == "v1.28.0"
    assert info["firmware_bin_bytes"] <= PICO_APP_BYTES
    assert info["headroom_bytes"] == PICO_APP_BYTES - info["firmware_bin_bytes"]


def test_boots_to_the_plain_repl_on_an_empty_filesystem(emu):
    # Fresh flash: littlefs is formatted (the flash shim programs and erases),
    # no main.py, so MicroPython's own REPL answers.
    emu.until(">>> ", 20000)
    out = emu.command("import sys; print(sys.implementation.version, sys.platform)")
    assert out.startswith("(1, 28, 0"), out
    assert "rp2" in out
    out = emu.command("import os; print(os.statvfs('/')[0] * os.statvfs('/')[2])")
    assert int(out) > 1000 * 1024  # the 1408 KiB filesystem, mounted


def test_charger_boots_and_the_bench_repl_answers(emu):
    _write_file(emu, "config.json", json.dumps(CONFIG))
    _write_file(emu, "main.py", "import boards.rp2040.main\n")
    emu.take()
    emu.send("\x04")  # soft reset: main.py starts the charger from the frozen image
    emu.until("bench REPL", 20000)
    emu.until(">>> ", 2000)
    assert "Raspberry Pi Pico hardware mode: bench REPL" in emu.take()
    out = emu.command("help()")
    assert "status()" in out and "log(" in out, out
    out = emu.command("status()")
    # Read through the pins: the pilot ADC sees +12 V (no EV), the NTC 25 C.
    assert out.startswith("EMU0001  firmware"), out
    assert "connector 1  Available     pilot A (+12.0 V / +12.0 V)  PWM off (+12 V)" in out, out
    assert "temperature 25.0 C" in out and "limit 16.0 A (config)" in out, out
    assert "faults: none" in out, out

"""The real RP2040 image (MicroPython v1.28.0, RPI_PICO, project frozen in)
booted in the rp2040js emulator, with the harness playing the plant on the
Pico's pins (tools/emulator/run.js).

Skipped with the reason when the ARM toolchain, the MicroPython sources or
Node.js are missing; with CI set, a failure instead wherever the offline
source bundle exists (host_tests/rp2040emu.py). All times are emulated.

The tests run in file order on one emulated board (module-scoped `emu`):
each starts from the state the one before left, as a bench session would.
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
    assert "status(" in out and "log(" in out, out
    out = emu.command("status()")
    # Read through the pins: the pilot ADC sees +12 V (no EV), the NTC 25 C.
    assert out.startswith("EMU0001  firmware"), out
    assert "connector 1  Available     pilot A (+12.0 V / +12.0 V)  PWM off (+12 V)" in out, out
    assert "temperature 25.0 C" in out and "limit 16.0 A (config)" in out, out
    assert "faults: none" in out, out


# --- the plant through the pins (all times emulated) -------------------------------
def _coil_events(emu):
    return [e for e in emu.events() if e["what"] == "coil"]


def _opens_within(emu, change_ms, limit_ms, run_ms=300):
    emu.run(run_ms)
    offs = [e for e in _coil_events(emu) if not e["on"]]
    assert offs, "the contactor did not open"
    took = offs[0]["t_us"] / 1000 - change_ms
    assert 0 <= took <= limit_ms, "contactor opened %.1f ms after the change" % took
    assert not emu.state()["coil"]
    return took


def test_plug_and_charge_at_the_duty_for_the_configured_current(emu):
    # The plant's CT sits on ADC1 (GP27), as the config maps it; no PP.
    emu.plant(pins={"pp_adc_ch": None, "ct_adc_ch": 1}, ev="B", ev_max_a=32)
    emu.events()
    emu.run(300)
    s = emu.state()
    # 16 A configured: 16 / 0.6 = 26.6 % duty, read back from the PWM slice.
    assert s["pilot_duty_pm"] == 266, s
    assert not s["coil"]
    t_c = emu.call("plant", ev="C")["t_ms"]
    emu.run(1800)  # close delay (100 ms), then one meter window (1 s)
    on = [e for e in _coil_events(emu) if e["on"]]
    assert on and on[0]["t_us"] / 1000 - t_c >= CONFIG["close_delay_ms"], on
    s = emu.state()
    assert s["coil"] and s["aux"] and s["current_a"] > 15.9, s
    emu.run(1100)  # one whole meter window with the contacts closed
    out = emu.command("status()")
    assert "Charging      pilot C (+6.0 V / -12.0 V)  PWM 26.6% = 16.0 A" in out, out
    assert "contactor closed (aux closed)" in out, out
    # The CT through the ADC: 16 A RMS measured (the meter's model: +-0.5 A).
    amps = float(out.split("kW  ")[1].split(" A")[0])
    assert 15.5 <= amps <= 16.5, out
    free = int(emu.command("import gc; gc.collect(); print(gc.mem_free())"))
    print("emulated gc.mem_free() while charging: %d B" % free)
    assert free > 100 * 1024


def test_c_to_b_opens_within_100_ms(emu):
    emu.events()
    t = emu.call("plant", ev="B")["t_ms"]
    took = _opens_within(emu, t, 100)
    print("C->B: contactor open %.1f ms (emulated) after the pilot change" % took)
    assert "SuspendedEV" in emu.command("status()")


def test_rcd_trip_opens_within_100_ms(emu):
    emu.call("plant", ev="C")
    emu.run(400)
    assert emu.state()["coil"]
    emu.events()
    t = emu.call("plant", rcd_tripped=True)["t_ms"]
    took = _opens_within(emu, t, 100)
    print("RCD trip: contactor open %.1f ms (emulated) after the trip" % took)
    out = emu.command("status()")
    assert "fault rcd (recoverable, GroundFailure)" in out, out


def test_stalled_control_loop_is_reset_by_the_hardware_watchdog(emu):
    emu.plant(ev="A", rcd_tripped=False)
    emu.run(200)
    emu.events()
    emu.take()
    # The bench's stall(): the control task stops; nothing feeds the
    # RP2040's watchdog (4 s, boards/rp2040/port.py) and it resets the chip.
    emu.send("stall(20000)\r")
    t = emu.call("run", ms=50)["t_ms"]
    emu.until("bench REPL", 10000)
    resets = [e for e in emu.events() if e["what"] == "watchdog_reset" and e["timeout"]]
    assert len(resets) == 1, resets
    took = resets[0]["t_us"] / 1000 - t
    print("stall: watchdog reset %.0f ms (emulated) after the stall" % took)
    assert 3500 <= took <= 5000, took
    emu.until(">>> ", 2000)
    out = emu.command("status()")
    assert "boot #2" in out and "Available" in out, out


def test_thermal_derate_through_the_ntc(emu):
    emu.plant(ev="C", temp_c=25)
    emu.run(600)
    assert emu.state()["pilot_duty_pm"] == 266
    emu.plant(temp_c=66.0)  # past the first point of the curve: 50 %
    emu.run(2500)
    s = emu.state()
    assert s["pilot_duty_pm"] == 133, s  # 8 A
    out = emu.command("status()")
    assert "derate 50%" in out and "temperature 66.0 C" in out, out


def test_weld_detected_through_aux(emu):
    assert emu.state()["coil"]
    emu.plant(welded=True)
    emu.events()
    t = emu.call("plant", ev="B")["t_ms"]
    _opens_within(emu, t, 100)
    assert emu.state()["aux"]  # the coil is off, the aux contact still closed
    emu.run(1000)  # the aux must follow the coil within 1 s (firmware/evse/contactor.py)
    out = emu.command("status()")
    assert "contactor open (aux closed)" in out, out
    assert "fault weld (latched, PowerSwitchFailure)" in out, out


def test_socket_reads_the_cable_rating_through_pp(emu):
    # The default Pico map: a socket, PP on ADC1 (GP27) with its 1 k pull-up.
    cfg = {"id": "EMU0001", "max_current_a": 32}
    out = emu.command("f=open('config.json','w'); f.write(%r); f.close()" % json.dumps(cfg))
    assert "error" not in out, out
    emu.plant(pins={"pp_adc_ch": 1, "ct_adc_ch": None}, ev="A", welded=False, temp_c=25,
              pp_ohm=680)  # a 20 A cable plugged into the socket
    emu.take()
    emu.send("reboot()\r")
    emu.until("bench REPL", 20000)
    emu.until(">>> ", 2000)
    emu.plant(ev="B")
    emu.run(500)
    out = emu.command("print(hw.info()['pp_ohm'])")
    assert 650 <= int(out.strip("[]")) <= 710, out
    out = emu.command("c=bench.status()['connectors'][0]; print(c['limit_ma'], c['limited_by'], c['duty_pm'])")
    print("socket, 680 ohm PP: limit_ma limited_by duty_pm =", out)
    assert out.startswith("20000 "), out


def test_status_at_the_bench_repl_without_a_meter(emu):
    # The default Pico map has no CT: energy_wh is None until a meter reads.
    out = emu.command("status()")
    assert "Traceback" not in out and "TypeError" not in out, out
    assert "energy -- (no meter reading)" in out, out

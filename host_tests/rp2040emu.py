"""The RP2040 firmware image in an emulator, for the host tests.

`image()` builds (or reuses) build/image/rp2040/firmware.uf2 with tools/image.py;
`Rp2040Emulator` boots it in rp2040js (tools/emulator/run.js) and talks to the
harness one JSON line at a time. Everything timed here is emulated time: the
emulator is not cycle accurate, so its figures are never hardware figures.

When the toolchain, the MicroPython sources or Node are missing the tests
are skipped with the reason; with CI set that skip is a failure, but only
where the offline source bundle (../shared/vendor next to the repository, or
VENDOR_DIR) exists: a developer's clone without it still passes.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from fwproc import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import image as image_tool  # noqa: E402  (tools/image.py)

EMU_DIR = os.path.join(ROOT, "tools", "emulator")
IMAGE_DIR = os.path.join(ROOT, "build", "image", "rp2040")
BOOTROM_NAME = "rp2040-bootrom-b1.bin"


def _missing(why):
    # A skip on a developer's machine; a failure in CI where the bundle is there.
    if os.environ.get("CI") and os.path.isdir(image_tool.VENDOR_DIR):
        pytest.fail("RP2040 emulator test cannot run in CI: " + why, pytrace=False)
    pytest.skip(why)


def bootrom():
    # Not kept in the repository: read from the vendor folder (or RP2040_BOOTROM).
    path = os.environ.get("RP2040_BOOTROM") or os.path.join(image_tool.VENDOR_DIR, BOOTROM_NAME)
    if not os.path.isfile(path):
        _missing("no RP2040 boot ROM (%s)" % path)
    return path


def node_ready():
    # npm install from the lockfile into tools/emulator/node_modules, once.
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        _missing("Node.js and npm are needed for the RP2040 emulator (rp2040js)")
    marker = os.path.join(EMU_DIR, "node_modules", "rp2040js", "package.json")
    if not os.path.isfile(marker):
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=EMU_DIR,
                           capture_output=True, text=True, timeout=300)
        if r.returncode or not os.path.isfile(marker):
            _missing("npm ci in tools/emulator failed: %s" % (r.stderr or r.stdout)[-800:])
    return node


def image():
    """The RPI_PICO image, built by tools/image.py (incremental, cached in build/)."""
    micropy_dir = os.environ.get("MICROPY_DIR")
    if not micropy_dir and not os.path.isfile(image_tool.VENDOR_TARBALL):
        _missing("no MicroPython source tree: set MICROPY_DIR or provide the offline bundle")
    for tool in ("arm-none-eabi-gcc", "cmake", "make", "cc"):
        if shutil.which(tool) is None:
            _missing("%s not installed (README, 'Building firmware images')" % tool)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "image.py"), "rp2040"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    if r.returncode:
        pytest.fail("make image BOARD=rp2040 failed:\n" + (r.stdout + r.stderr)[-3000:], pytrace=False)
    with open(os.path.join(IMAGE_DIR, "image.json")) as f:
        info = json.load(f)
    info["uf2_path"] = os.path.join(IMAGE_DIR, "firmware.uf2")
    return info


class HarnessError(Exception):
    pass


class Rp2040Emulator:
    def __init__(self, uf2, rom, node="node"):
        # stderr to a file: a chatty emulator must not block on a full pipe.
        self.err = open(os.environ["EMU_STDERR"], "w+") if os.environ.get("EMU_STDERR") else tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [node, "--max-old-space-size=256", os.path.join(EMU_DIR, "run.js"), "--image", uf2, "--bootrom", rom],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1)
        self.console = ""  # everything the USB CDC console printed

    def call(self, cmd, **kw):
        kw["cmd"] = cmd
        self.proc.stdin.write(json.dumps(kw) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.err.seek(0)
            raise HarnessError("emulator exited: %s" % self.err.read()[-2000:])
        r = json.loads(line)
        if not r.get("ok"):
            raise HarnessError(r.get("error"))
        return r

    def run(self, ms):
        return self.call("run", ms=ms)

    def send(self, text):
        self.call("send", text=text)

    def until(self, text, ms, after=None):
        """Runs emulated time until the console shows text (since the last take()),
        after the string `after` when given."""
        r = self.call("until", text=text, ms=ms, after=after)
        if not r["found"]:
            raise HarnessError("%r not seen within %d ms of emulated time; console:\n%s"
                               % (text, ms, self.peek()[-2000:]))
        return r

    def peek(self):
        return self.call("output")["text"]

    def take(self):
        """Console text since the last take(); starts a new window for until()."""
        t = self.call("output", clear=True)["text"]
        self.console += t
        return t

    def command(self, line, ms=5000, prompt=">>> "):
        """Types one line at a prompt; returns what it printed before the next prompt."""
        self.take()
        self.send(line + "\r")
        self.until(prompt, ms, after=line)  # the echo, then the next prompt
        out = self.take()
        out = out.split(line, 1)[1].split(prompt, 1)[0]
        return out.strip("\r\n")

    def plant(self, **kw):
        self.call("plant", **kw)

    def state(self):
        return self.call("state")

    def events(self, clear=True):
        return self.call("events", clear=clear)["events"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()

#!/usr/bin/env python3
"""Build a MicroPython v1.28.0 firmware image with this project frozen in.

    python3 tools/image.py rp2040        Raspberry Pi Pico (RPI_PICO) .uf2
    python3 tools/image.py unix          the Unix port, project frozen in
    python3 tools/image.py esp32         the ESP32 port (needs ESP-IDF: IDF_PATH)
    ... --dry-run                        print the commands instead of running them

The MicroPython source tree is MICROPY_DIR when given (a git checkout of tag
v1.28.0 with the port's submodules, see README "Building firmware images"),
else an offline source bundle ../shared/vendor/micropython-1.28.0-src.tar.xz
next to the repository, unpacked once into build/. Everything built lands in
build/image/<board>/ and is reused by the next run (make is incremental).

Reproducible: the version header is pinned (MICROPY_GIT_TAG, needed when the
tree sits inside another git work tree, or it takes that tree's hash) and the
build date comes from SOURCE_DATE_EPOCH (default 2026-01-01).
"""
import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
# The optional offline bundle next to the repository; VENDOR_DIR points
# elsewhere (e.g. from a second git worktree of the same clone).
VENDOR_DIR = os.path.abspath(os.environ.get("VENDOR_DIR") or os.path.join(ROOT, "..", "shared", "vendor"))
VENDOR_TARBALL = os.path.join(VENDOR_DIR, "micropython-1.28.0-src.tar.xz")
VERSION_TAG = "v1.28.0"
DEFAULT_EPOCH = "1767225600"  # 2026-01-01 00:00 UTC
JOBS = os.environ.get("IMAGE_JOBS", "2")
# RPI_PICO: 2 MiB flash, the last 1408 KiB is the littlefs filesystem
# (MICROPY_HW_FLASH_STORAGE_BYTES), so the firmware must fit in 640 KiB.
RP2040_APP_BYTES = 640 * 1024
RP2040_BOARD = "RPI_PICO"
ESP32_BOARD = "ESP32_GENERIC"


class BuildError(Exception):
    pass


def say(msg):
    print("image: " + msg, flush=True)


class Builder:
    def __init__(self, board, micropy_dir=None, dry_run=False, out=None):
        self.board = board
        self.dry_run = dry_run
        self.micropy_dir = micropy_dir
        self.out = out or os.path.join(BUILD, "image", board)
        self.env = dict(os.environ)
        self.env["MICROPY_GIT_TAG"] = VERSION_TAG
        self.env.setdefault("SOURCE_DATE_EPOCH", DEFAULT_EPOCH)

    # --- helpers -------------------------------------------------------------------
    def run(self, cmd, cwd=None, env=None):
        shown = " ".join(shlex.quote(c) for c in cmd)
        if cwd:
            shown = "(cd %s && %s)" % (shlex.quote(cwd), shown)
        if self.dry_run:
            print(shown, flush=True)
            return
        say(shown)
        r = subprocess.run(cmd, cwd=cwd, env=env or self.env)
        if r.returncode:
            raise BuildError("command failed (exit %d): %s" % (r.returncode, shown))

    def need(self, tool, why):
        if not self.dry_run and shutil.which(tool) is None:
            raise BuildError("%s not found: %s (Debian: apt-get install build-essential cmake "
                             "python3 xz-utils gcc-arm-none-eabi libnewlib-arm-none-eabi "
                             "libstdc++-arm-none-eabi-newlib)" % (tool, why))

    # --- the source tree -------------------------------------------------------------
    def source(self):
        if self.micropy_dir:
            src = os.path.abspath(self.micropy_dir)
            if not self.dry_run and not os.path.isfile(os.path.join(src, "py", "mpconfig.h")):
                raise BuildError("MICROPY_DIR=%s is not a MicroPython source tree" % src)
            return src
        if os.path.isfile(VENDOR_TARBALL):
            return self.unpack(VENDOR_TARBALL)
        raise BuildError(
            "no MicroPython source tree: set MICROPY_DIR to a checkout of %s with its "
            "submodules (README, 'Building firmware images')" % VERSION_TAG)

    def unpack(self, tarball):
        # Once per tarball content: a stamp holds its size and mtime (cheap)
        # and sha256 (checked when size or mtime changed).
        dest = os.path.join(BUILD, "micropython-src")
        tree = os.path.join(dest, "micropython-1.28.0")
        stamp = os.path.join(dest, ".unpacked")
        st = os.stat(tarball)
        key = {"size": st.st_size, "mtime": int(st.st_mtime)}
        try:
            with open(stamp) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
        if old and os.path.isdir(tree):
            if all(old.get(k) == v for k, v in key.items()):
                return tree
            if old.get("sha256") == _sha256(tarball):
                return tree
        if self.dry_run:
            print("# unpack %s into %s" % (tarball, dest))
            return tree
        say("unpacking %s" % tarball)
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        with tarfile.open(tarball) as t:
            if hasattr(tarfile, "data_filter"):
                t.extractall(dest, filter="data")
            else:
                t.extractall(dest)
        if not os.path.isdir(tree):
            raise BuildError("%s has no micropython-1.28.0/ folder" % tarball)
        key["sha256"] = _sha256(tarball)
        with open(stamp, "w") as f:
            json.dump(key, f)
        return tree

    # --- steps ---------------------------------------------------------------------
    def mpy_cross(self, src):
        self.need("make", "builds mpy-cross and the port")
        self.need("cc", "compiles mpy-cross")
        self.run(["make", "-C", os.path.join(src, "mpy-cross"), "-j" + JOBS])

    def picotool(self, src, env):
        # pico-sdk 2.x runs picotool to make the .uf2; without one installed it
        # would git-clone it. Built once from the tree's picotool/ (the
        # offline bundle has it), without USB: only its file conversion is used.
        pt_src = os.path.join(src, "picotool")
        if not os.path.isdir(pt_src) and not self.dry_run:
            say("no picotool/ in the source tree: pico-sdk will fetch picotool itself")
            return
        prefix = os.path.join(BUILD, "image", "picotool-install")
        if os.path.isfile(os.path.join(prefix, "picotool", "picotoolConfig.cmake")) and not self.dry_run:
            env["PICOTOOL_FETCH_FROM_GIT_PATH"] = prefix
            return
        self.need("cmake", "builds picotool and the rp2 port")
        bdir = os.path.join(BUILD, "image", "picotool-build")
        self.run(["cmake", "-S", pt_src, "-B", bdir,
                  "-DPICO_SDK_PATH=" + os.path.join(src, "lib", "pico-sdk"),
                  "-DPICOTOOL_NO_LIBUSB=1", "-DPICOTOOL_FLAT_INSTALL=1",
                  "-DCMAKE_INSTALL_PREFIX=" + prefix])
        self.run(["cmake", "--build", bdir, "-j" + JOBS, "--target", "install"])
        env["PICOTOOL_FETCH_FROM_GIT_PATH"] = prefix

    def rp2040(self):
        src = self.source()
        self.need("arm-none-eabi-gcc", "cross-compiles the RP2040 firmware")
        self.need("cmake", "configures the rp2 port")
        self.mpy_cross(src)
        env = dict(self.env)
        self.picotool(src, env)
        manifest = os.path.join(ROOT, "boards", "rp2040", "manifest.py")
        # No CMAKE_ARGS here: it would replace the port Makefile's own, which
        # carry the board and FROZEN_MANIFEST, and silently drop the project.
        self.run(["make", "-C", os.path.join(src, "ports", "rp2"), "-j" + JOBS,
                  "BOARD=" + RP2040_BOARD, "BUILD=" + self.out,
                  "FROZEN_MANIFEST=" + manifest], env=env)
        if self.dry_run:
            return
        self.check_frozen()
        size = os.path.getsize(os.path.join(self.out, "firmware.bin"))
        info = {"board": RP2040_BOARD, "micropython": VERSION_TAG,
                "firmware_bin_bytes": size, "app_area_bytes": RP2040_APP_BYTES,
                "headroom_bytes": RP2040_APP_BYTES - size,
                "uf2": os.path.relpath(os.path.join(self.out, "firmware.uf2"), ROOT),
                "uf2_sha256": _sha256(os.path.join(self.out, "firmware.uf2"))}
        with open(os.path.join(self.out, "image.json"), "w") as f:
            json.dump(info, f, indent=1)
        say("firmware.bin %d B of %d B (headroom %d B, %.1f %%)"
            % (size, RP2040_APP_BYTES, RP2040_APP_BYTES - size,
               100.0 * (RP2040_APP_BYTES - size) / RP2040_APP_BYTES))
        check_rp2040_size(size)
        say("ok: %s" % info["uf2"])

    def unix(self):
        src = self.source()
        self.mpy_cross(src)
        if not self.dry_run:
            os.makedirs(self.out, exist_ok=True)
        manifest = os.path.join(self.out, "manifest.py")
        text = ('include("$(PORT_DIR)/variants/standard/manifest.py")\n'
                'include(%r)  # the firmware package\n'
                'package("boards", base_path=%r)\n'
                % (os.path.join(ROOT, "manifest.py"), ROOT))
        if not self.dry_run:
            _write_if_changed(manifest, text)
        # The Unix port gives mpy-cross no -march for frozen code, so the
        # viper functions (boards/common/hal.py) need it spelled out.
        self.run(["make", "-C", os.path.join(src, "ports", "unix"), "-j" + JOBS,
                  "VARIANT=standard", "BUILD=" + self.out,
                  "PROG=micropython",  # relative to BUILD
                  "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0",
                  "FROZEN_MANIFEST=" + manifest, "MPY_CROSS_FLAGS=-march=" + _host_arch()])
        if self.dry_run:
            return
        self.check_frozen()
        exe = os.path.join(self.out, "micropython")
        r = subprocess.run([exe, "-c", "import firmware.station; print(firmware.station.__file__)"],
                           cwd=self.out, capture_output=True, text=True)
        if r.returncode or r.stdout.strip() != "firmware/station.py":
            raise BuildError("the frozen Unix binary does not import firmware.station: %s%s"
                             % (r.stdout, r.stderr))
        say("ok: %s (%d B)" % (os.path.relpath(exe, ROOT), os.path.getsize(exe)))

    def esp32(self):
        idf = os.environ.get("IDF_PATH")
        if not idf:
            raise BuildError(
                "ESP-IDF is needed for an ESP32 image and IDF_PATH is not set. Install "
                "ESP-IDF (the version MicroPython %s's ports/esp32/README.md names), run "
                "`. $IDF_PATH/export.sh`, and give MICROPY_DIR (a full MicroPython checkout: "
                "the offline bundle has no ports/esp32). Or put the firmware onto a stock "
                "MicroPython build (README)." % VERSION_TAG)
        src = self.source()
        if not self.dry_run and not os.path.isdir(os.path.join(src, "ports", "esp32")):
            raise BuildError("%s has no ports/esp32: give MICROPY_DIR, a full MicroPython "
                             "checkout of %s" % (src, VERSION_TAG))
        self.mpy_cross(src)
        manifest = os.path.join(ROOT, "boards", "esp32", "manifest.py")
        self.run(["make", "-C", os.path.join(src, "ports", "esp32"),
                  "BOARD=" + ESP32_BOARD, "BUILD=" + self.out,
                  "FROZEN_MANIFEST=" + manifest])

    def check_frozen(self):
        path = os.path.join(self.out, "frozen_content.c")
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            raise BuildError("%s missing: was the project frozen?" % path)
        if '"firmware/station.py"' not in text and "firmware/station.py" not in text:
            raise BuildError("firmware/station.py is not in %s: the project was not frozen "
                             "(a CMAKE_ARGS on the make line drops FROZEN_MANIFEST)" % path)


def check_rp2040_size(size):
    if size > RP2040_APP_BYTES:
        raise BuildError("firmware.bin is %d B, over the Pico's %d B application area "
                         "(the rest of the flash is the filesystem)" % (size, RP2040_APP_BYTES))


def _host_arch():
    import platform
    m = platform.machine().lower()
    return {"x86_64": "x64", "amd64": "x64", "aarch64": "aarch64", "arm64": "aarch64"}.get(m, "x64")


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_if_changed(path, text):
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(text)


def vendor_present():
    return os.path.isfile(VENDOR_TARBALL)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("board", choices=("rp2040", "unix", "esp32"))
    ap.add_argument("--micropy-dir", default=os.environ.get("MICROPY_DIR") or None,
                    help="MicroPython v1.28.0 source tree (default: the offline bundle)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    a = ap.parse_args(argv)
    b = Builder(a.board, a.micropy_dir, a.dry_run)
    try:
        getattr(b, a.board)()
    except BuildError as e:
        print("image: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Run the charger firmware on the MicroPython Unix port, as `make sim` does.

The firmware gets this terminal as its serial console: a `>>>` bench REPL
(type help()) beside the running charger, and the control channel on
127.0.0.1:PORT for tools and tests. A power cut (powercut() at the REPL) ends
the firmware process the way pulled power would; this wrapper then restores
power after --off seconds, like a bench supply switched back on. Any other
exit ends the session.

Usage: python tools/sim.py [--dir DIR] [--off SECONDS] [firmware options...]
Firmware options are those of boards/unix/main.py (--time, --port, --set ...).
"""
import argparse
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def micropython():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    return exe if os.path.exists(exe) else "micropython"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="sim-data", help="simulation directory (flash and plant state)")
    ap.add_argument("--off", type=float, default=1.0, help="seconds without power after a power cut")
    args, rest = ap.parse_known_args()
    cmd = [micropython(), os.path.join(ROOT, "boards", "unix", "main.py"), "--dir", args.dir] + rest
    print("firmware: %s" % " ".join(cmd[1:]))
    print("bench: help() lists the commands; plug(32) then ev('C') starts a charge; Ctrl-C quits")
    while True:
        p = subprocess.Popen(cmd)
        try:
            rc = p.wait()
        except KeyboardInterrupt:
            p.send_signal(signal.SIGINT)
            rc = p.wait()
            return 0
        if rc == -signal.SIGKILL or rc == 137:
            print("\n[power cut: firmware off for %.1f s]" % args.off)
            time.sleep(args.off)
            print("[power restored]")
            continue
        return rc


if __name__ == "__main__":
    sys.exit(main())

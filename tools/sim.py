#!/usr/bin/env python3
"""Run the charger firmware on the MicroPython Unix port, as `make sim` does.

It starts the dev CSMS (tools/csms) on 127.0.0.1 and the firmware pointed at
it: the charger boots, registers and reports its connector Available. The
firmware gets this terminal as its serial console: a `>>>` bench REPL
(type help()) beside the running charger, and the control channel on
127.0.0.1:PORT for tools and tests. The CSMS logs every message to
<dir>/csms.log, and its HTTP admin sends any CSMS call (see tools/csms/README.md).

A power cut (powercut() at the REPL) ends the firmware process the way pulled
power would; this wrapper then restores power after --off seconds, like a
bench supply switched back on. Any other exit ends the session.

Usage: python tools/sim.py [--dir DIR] [--off SECONDS] [--csms-port P]
                           [--no-csms | --csms-url URL] [firmware options...]
Firmware options are those of boards/unix/main.py (--time, --port, --set ...).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def micropython():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    return exe if os.path.exists(exe) else "micropython"


def start_csms(d, port):
    """The dev CSMS in the background; returns (process, ws port, http port)."""
    ready = os.path.join(d, "csms-ports.json")
    if os.path.exists(ready):
        os.remove(ready)
    log = open(os.path.join(d, "csms.log"), "a")
    p = subprocess.Popen([sys.executable, "-m", "tools.csms", "--port", str(port), "--http-port", str(port + 1),
                          "--no-stdin", "--data-dir", os.path.join(d, "csms"), "--ready-file", ready],
                         cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        if os.path.exists(ready):
            with open(ready) as f:
                ports = json.load(f)
            return p, ports["port"], ports["http_port"]
        if p.poll() is not None:
            raise SystemExit("dev CSMS did not start; see %s" % os.path.join(d, "csms.log"))
        time.sleep(0.1)
    p.kill()
    raise SystemExit("dev CSMS did not start in time")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="sim-data", help="simulation directory (flash, plant state, CSMS log)")
    ap.add_argument("--off", type=float, default=1.0, help="seconds without power after a power cut")
    ap.add_argument("--csms-port", type=int, default=9000, help="dev CSMS port (HTTP admin on the next one)")
    ap.add_argument("--no-csms", action="store_true", help="no CSMS: free vend, every EV is authorized")
    ap.add_argument("--csms-url", help="use this CSMS instead of the dev one (ws:// or wss://, without the id)")
    args, rest = ap.parse_known_args()
    os.makedirs(args.dir, exist_ok=True)
    # Development manufacturer keys: the simulated charger trusts their root,
    # so a bundle signed with them installs (README: "Updating a charger").
    keys = os.path.join(args.dir, "release-keys")
    if not os.path.exists(os.path.join(keys, "root.pem")):
        sys.path.insert(0, ROOT)
        from tools import release
        release.make_keys(keys, root_cn="Development Manufacturer Root", signing_cn="Development Firmware Signing")
        print("development release keys in %s" % keys)
    rest = ["--set", "fw_root=" + os.path.abspath(os.path.join(keys, "root.pem"))] + rest
    csms = None
    if args.csms_url:
        rest = ["--set", "csms_url=" + args.csms_url] + rest
    elif not args.no_csms:
        csms, port, http_port = start_csms(args.dir, args.csms_port)
        rest = ["--set", "csms_url=ws://127.0.0.1:%d" % port] + rest
        print("dev CSMS on ws://127.0.0.1:%d, admin http://127.0.0.1:%d/api, log %s/csms.log"
              % (port, http_port, args.dir))
    cmd = [micropython(), os.path.join(ROOT, "boards", "unix", "main.py"), "--dir", args.dir] + rest
    print("firmware: %s" % " ".join(cmd[1:]))
    print("bench: help() lists the commands; plug(32), ev('C'), token('CARD1') starts a charge; Ctrl-C quits")
    try:
        while True:
            p = subprocess.Popen(cmd)
            try:
                rc = p.wait()
            except KeyboardInterrupt:
                p.send_signal(signal.SIGINT)
                p.wait()
                return 0
            if rc == -signal.SIGKILL or rc == 137:
                print("\n[power cut: firmware off for %.1f s]" % args.off)
                time.sleep(args.off)
                print("[power restored]")
                continue
            return rc
    finally:
        if csms is not None:
            csms.terminate()
            csms.wait(timeout=5)


if __name__ == "__main__":
    sys.exit(main())

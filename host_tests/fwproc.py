"""Drive the firmware on the MicroPython Unix port from CPython tests.

A FirmwareProcess is one charger: `micropython boards/unix/main.py` with its
own simulation directory, simulated time in step mode (time moves only when a
test advances it) and the control channel on a free localhost port. Tests
talk to it the way a bench tool would: one JSON request per line.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def micropython():
    exe = os.environ.get("MICROPYTHON") or os.path.join(os.path.dirname(sys.executable), "micropython")
    if not os.path.exists(exe):
        raise RuntimeError("micropython not found at %s; run the tests with `make test`" % exe)
    return exe


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class CommandError(Exception):
    pass


class FirmwareProcess:
    def __init__(self, directory, sets=(), connectors=1, seed=1, time_mode="step", heapsize=None, repl=False):
        self.dir = str(directory)
        self.sets = list(sets)
        self.connectors = connectors
        self.seed = seed
        self.time_mode = time_mode
        self.heapsize = heapsize
        self.repl = repl
        self.proc = None
        self.sock = None
        self.file = None
        self.boots = 0
        self.out_path = None

    # --- life cycle ----------------------------------------------------------
    def start(self, timeout=10.0):
        self.port = free_port()
        self.boots += 1
        self.out_path = os.path.join(self.dir, "console-%d.txt" % self.boots)
        os.makedirs(self.dir, exist_ok=True)
        cmd = [micropython()]
        if self.heapsize:
            cmd += ["-X", "heapsize=%s" % self.heapsize]
        cmd += [os.path.join(ROOT, "boards", "unix", "main.py"), "--dir", self.dir, "--port", str(self.port),
                "--time", self.time_mode, "--seed", str(self.seed), "--connectors", str(self.connectors)]
        if not self.repl:
            cmd.append("--no-repl")
        for s in self.sets:
            cmd += ["--set", s]
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if self.repl else subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("firmware exited %s:\n%s" % (self.proc.returncode, self.console()))
            if "control channel on" in self.console():
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("firmware did not start:\n" + self.console())
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        self.file = self.sock.makefile("rwb")
        return self

    def console(self):
        try:
            with open(self.out_path) as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "out", None):
            self.out.close()

    def powercut(self):
        """Pull the plug: the process dies at once; the plant state is kept."""
        self.send_raw(json.dumps({"op": "powercut"}).encode() + b"\n")
        rc = self.proc.wait(timeout=10)
        self.close()
        return rc

    def reboot(self):
        return self.cmd("reboot")

    # --- requests ------------------------------------------------------------
    def send_raw(self, data):
        self.file.write(data)
        self.file.flush()

    def read_reply(self):
        line = self.file.readline()
        if not line:
            raise RuntimeError("control channel closed; console:\n" + self.console())
        return json.loads(line)

    def request(self, obj):
        self.send_raw(json.dumps(obj).encode() + b"\n")
        return self.read_reply()

    def cmd(self, op, **args):
        r = self.request(dict(op=op, **args))
        if not r.get("ok"):
            raise CommandError("%s %s: %s" % (op, args, r.get("error")))
        return r

    def advance(self, ms):
        return self.cmd("advance", ms=int(ms))["t"]

    def status(self):
        return self.cmd("status")

    def conn(self, c=1):
        return self.status()["connectors"][c - 1]

    def now(self):
        return self.status()["t"]

    def log(self, since=0, n=500):
        return self.cmd("log", since=since, n=n)["entries"]

    def trace(self, since=0):
        return self.cmd("trace", since=since)["events"]

    def until(self, pred, step=10, limit=60000):
        """Advance in steps until pred(status) holds; returns the time it did."""
        t = 0
        while t <= limit:
            s = self.status()
            if pred(s):
                return s["t"]
            self.advance(step)
            t += step
        raise AssertionError("condition not met within %d ms; last status %s" % (limit, s))

    def charging(self, amps=32, c=1, settle=3000):
        """Plug in an EV that asks for energy and let the contactor close."""
        self.cmd("plug", amps=amps, c=c)
        self.cmd("ev", state="C", c=c)
        self.advance(settle)
        st = self.conn(c)
        assert st["contactor"] and st["aux"], st
        return st

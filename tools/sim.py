#!/usr/bin/env python3
"""Run the charger firmware on the MicroPython Unix port, as `make sim` does.

It starts the dev CSMS (tools/csms) on 127.0.0.1 and the firmware pointed at
it: the charger boots, registers and reports its connector Available. The
firmware gets this terminal as its serial console: a `>>>` bench REPL
(type help()) beside the running charger, and the control channel on
127.0.0.1:PORT for tools and tests. The CSMS logs every message to
<dir>/csms.log, and its HTTP admin sends any CSMS call (see tools/csms/README.md).

The firmware runs from the working tree: edited code is what runs, even
after an update was installed into a slot of the simulation directory.
--boot-slots boots what the boot record names instead, as a board would
(an update installed during the run boots either way).

A power cut (powercut() at the REPL) ends the firmware process the way pulled
power would; this wrapper then restores power after --off seconds, like a
bench supply switched back on. Any other exit ends the session.

Options are checked before anything starts (ports, firmware options, --set
keys). Secret values (auth_key, passwords) reach the firmware through its
environment, never its command line, and are masked wherever they are shown.
`make sim` passes SIM_ARGS through the environment for the same reason.

Usage: python tools/sim.py [--dir DIR] [--off SECONDS] [--csms-port P] [--boot-slots]
                           [--no-csms | --csms-url URL] [firmware options...]
"""
import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "boards", "unix", "main.py")
SECRET_ENV = "CHARGER_SECRET_SETS"  # --set lines handed to the firmware out of sight
CONTROL_PORT = 7700  # boards/unix/main.py's default


class Quit(Exception):
    """Ends the simulator with a message and an exit status, no traceback."""

    def __init__(self, msg, rc=2):
        Exception.__init__(self, msg)
        self.rc = rc


def micropython():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    return exe if os.path.exists(exe) else "micropython"


def is_secret(key):
    key = key.lower()
    return key == "auth_key" or "password" in key or "secret" in key


def mask_url(url):
    # ws://user:password@host -> ws://user:***@host
    return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", url)


def split_secrets(args):
    """Firmware args -> (args without secret --set, secret --set lines)."""
    out, secrets = [], []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--set" and i + 1 < len(args):
            kv = args[i + 1]
            if is_secret(kv.split("=", 1)[0]) or mask_url(kv) != kv:
                secrets.append(kv)
            else:
                out += [a, kv]
            i += 2
            continue
        out.append(a)
        i += 1
    return out, secrets


def shown(args):
    """The firmware's command line as printed: secrets masked."""
    out = []
    for a in args:
        k, eq, v = a.partition("=")
        if eq and is_secret(k):
            a = k + "=***"
        elif "://" in a:
            a = mask_url(a)
        out.append(a)
    return " ".join(out)


def firmware_help():
    r = subprocess.run([micropython(), MAIN, "--help"], cwd=ROOT, capture_output=True, text=True)
    return r.stdout


def check_firmware_args(rest, env):
    """The firmware checks its own options and --set keys: one source of truth."""
    r = subprocess.run([micropython(), MAIN, "--check"] + rest, cwd=ROOT, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("error")]
        raise Quit("\n".join(lines or [r.stdout + r.stderr]) + "\n(SIM_ARGS=--help lists the options and keys)")


def control_port(rest):
    port = CONTROL_PORT
    for i, a in enumerate(rest[:-1]):
        if a == "--port":
            port = int(rest[i + 1])  # checked by the firmware already
    return port


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def start_csms(d, port):
    """The dev CSMS in the background; returns (process, ws port, http port)."""
    ready = os.path.join(d, "csms-ports.json")
    if os.path.exists(ready):
        os.remove(ready)
    log_path = os.path.join(d, "csms.log")
    log = open(log_path, "a")
    # Its own session: Ctrl-C at the bench REPL is the firmware's, not the
    # CSMS's. Ctrl-C is held back while it starts, so no CSMS is left behind
    # by an interrupt between its start and the moment we own it.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        p = subprocess.Popen([sys.executable, "-m", "tools.csms", "--port", str(port), "--http-port",
                              str(port + 1), "--no-stdin", "--data-dir", os.path.join(d, "csms"),
                              "--ready-file", ready],
                             cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True,
                             preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, blocked))
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        raise
    finally:
        log.close()
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a Ctrl-C held back arrives here
        for _ in range(150):
            if os.path.exists(ready):
                with open(ready) as f:
                    ports = json.load(f)
                return p, ports["port"], ports["http_port"]
            if p.poll() is not None:
                with open(log_path) as f:
                    tail = f.read()[-400:]
                if "in use" in tail or "Errno 98" in tail:
                    raise Quit("port %d or %d in use; try --csms-port" % (port, port + 1))
                raise Quit("dev CSMS did not start; see %s" % log_path)
            time.sleep(0.1)
        raise Quit("dev CSMS did not start in time; see %s" % log_path)
    except BaseException:
        stop(p)
        raise


def stop(p):
    if p is not None and p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def parse(argv):
    ap = argparse.ArgumentParser(prog="make sim SIM_ARGS=...", add_help=False,
                                 description=__doc__.split("\n")[0])
    ap.add_argument("-h", "--help", action="store_true", help="this help, with the firmware's options")
    ap.add_argument("--dir", default="sim-data", help="simulation directory (flash, plant state, CSMS log)")
    ap.add_argument("--off", type=float, default=1.0, help="seconds without power after a power cut")
    ap.add_argument("--csms-port", type=int, default=9000, help="dev CSMS port (HTTP admin on the next one)")
    ap.add_argument("--no-csms", action="store_true", help="no CSMS: free vend, every EV is authorized")
    ap.add_argument("--csms-url", help="use this CSMS instead of the dev one (ws:// or wss://, without the id)")
    ap.add_argument("--boot-slots", action="store_true",
                    help="boot the image the boot record names (an installed update) instead of the working tree")
    args, rest = ap.parse_known_args(argv)
    if args.help:
        print(ap.format_help().replace("usage: make sim SIM_ARGS=...", "usage: make sim SIM_ARGS=\"...\"", 1))
        print("Any other option goes to the firmware:\n")
        print(firmware_help())
        raise Quit("", 0)
    if not 1 <= args.csms_port <= 65534:
        raise Quit("error: --csms-port %d: must be 1..65534 (the HTTP admin takes the next port)" % args.csms_port)
    if not 0 <= args.off <= 3600:
        raise Quit("error: --off %s: must be 0..3600 seconds" % args.off)
    return args, rest


def prepare(args, rest):
    """Everything checked before anything starts; returns (firmware args, env)."""
    rest, secrets = split_secrets(rest)
    env = dict(os.environ)
    env.pop("SIM_ARGS", None)
    env[SECRET_ENV] = "\n".join(secrets)
    rest = rest + ["--set-env", SECRET_ENV]
    if not args.boot_slots:
        rest = rest + ["--working-tree"]
    check_firmware_args(rest, env)
    if not args.csms_url and not args.no_csms:
        for p in (args.csms_port, args.csms_port + 1):
            if not port_free(p):
                raise Quit("error: port %d in use (another make sim?); try --csms-port" % p)
    cp = control_port(rest)
    if cp and not port_free(cp):
        raise Quit("error: control port %d in use (another make sim?); try --port" % cp)
    return rest, env


def run(args, rest, env):
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
    try:
        if args.csms_url:
            if mask_url(args.csms_url) != args.csms_url:  # credentials in the URL: out of sight
                env[SECRET_ENV] = "\n".join([env[SECRET_ENV], "csms_url=" + args.csms_url])
            else:
                rest = ["--set", "csms_url=" + args.csms_url] + rest
        elif not args.no_csms:
            csms, port, http_port = start_csms(args.dir, args.csms_port)
            rest = ["--set", "csms_url=ws://127.0.0.1:%d" % port] + rest
            print("dev CSMS on ws://127.0.0.1:%d, admin http://127.0.0.1:%d/ (index of the API), log %s/csms.log"
                  % (port, http_port, args.dir))
        cmd = [micropython(), MAIN, "--dir", args.dir] + rest
        hidden = []  # the secrets given, as their keys only
        for line in env[SECRET_ENV].split("\n"):
            if line:
                hidden += ["--set", line.split("=", 1)[0] + "=***"]
        print("firmware: %s" % shown(cmd[1:] + hidden))
        print("bench: help() lists the commands; plug(32), ev('C'), token('CARD1') starts a charge; "
              "Ctrl-C twice quits")
        tty = tty_mode()
        while True:
            p = subprocess.Popen(cmd, env=env)
            # The terminal's Ctrl-C is the firmware's to handle (its REPL
            # decides); this wrapper waits for it to end.
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                rc = p.wait()
            finally:
                signal.signal(signal.SIGINT, old)
                tty_mode(tty)  # the REPL's raw mode ends with it, even after a power cut (kill -9)
            if rc == -signal.SIGKILL or rc == 137:
                try:  # the message too: a Ctrl-C right after it is still in the pause
                    print("\n[power cut: firmware off for %.1f s]" % args.off, flush=True)
                    time.sleep(args.off)
                except KeyboardInterrupt:
                    print("[power stays off: simulator ended]")
                    return 0
                print("[power restored]")
                continue
            return rc
    finally:
        stop(csms)


def tty_mode(restore=None):
    # The terminal's mode (None: stdin is no terminal), or set it back.
    try:
        import termios
        if restore is None:
            return termios.tcgetattr(0)
        termios.tcsetattr(0, termios.TCSADRAIN, restore)
    except Exception:  # no terminal (a pipe), or termios.error
        return None


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # SIGTERM: the finally clauses stop the CSMS


def main(argv=None):
    signal.signal(signal.SIGTERM, _terminated)
    if argv is None:
        argv = sys.argv[1:] + shlex.split(os.environ.get("SIM_ARGS", ""))
    try:
        args, rest = parse(argv)
        rest, env = prepare(args, rest)
        return run(args, rest, env)
    except Quit as q:
        if str(q):
            print(str(q), file=sys.stderr if q.rc else sys.stdout)
        return q.rc
    except KeyboardInterrupt:
        print("\nsimulator stopped before the charger started")
        return 130
    except BrokenPipeError:  # `--help | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

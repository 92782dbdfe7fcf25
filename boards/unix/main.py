# Start the firmware on the MicroPython Unix port with the simulated plant.
#
#   micropython boards/unix/main.py [options]
#     --dir DIR          simulation directory: DIR/flash is the store (default sim-data)
#     --port N           control channel on 127.0.0.1:N (default 7700; 0 = none)
#     --time MODE        real (default), step (advanced by the control channel),
#                        jump (as fast as possible) or a number (times real time)
#     --connectors N     connectors the simulated hardware has (default 1)
#     --config FILE      JSON config written to the store before boot
#     --set KEY=VALUE    override one config key (repeatable; derate.shutdown_c=75)
#     --set-env VAR      more --set lines from environment variable VAR, one per
#                        line (keeps secrets such as auth_key out of the process list)
#     --seed N           seed of the plant's noise and switching delays
#     --no-repl          no REPL on stdin
#     --quiet            do not echo the log to the console
#     --working-tree     boot the source tree (the factory image) even when the
#                        boot record names an installed slot, until the record
#                        changes in this run (tools/sim.py's default)
#     --check            check the options and the --set keys, then exit (0: good)
#     --help             the options and every configuration key
import os
import sys

sys.path.insert(0, __file__.rsplit("/", 3)[0] if __file__.count("/") >= 3 else ".")

import asyncio
import json
from boards.unix.board import UnixBoard
from boards.unix.control import ControlChannel
from firmware.core.config import ConfigError
from firmware import repl as repl_mod

USAGE = "usage: main.py [--dir DIR] [--port N] [--time real|step|jump|RATE] [--connectors N] " \
        "[--config FILE] [--set KEY=VALUE]... [--set-env VAR] [--seed N] [--no-repl] [--quiet] " \
        "[--working-tree] [--check]"

# What each option takes, for the error that names a bad value.
RANGES = {"--port": "0..65535 (0: no control channel)",
          "--time": "real, step, jump or a rate 0 < RATE < 1000000 (times real time)",
          "--connectors": "1..4", "--seed": "an integer"}


def help_text():
    # The option list and every configuration key, from the one schema.
    from firmware.core.config import SCHEMA
    lines = [USAGE, "firmware options (boards/unix/main.py):",
             "  --dir DIR          simulation directory; DIR/flash is the store",
             "  --port N           control channel on 127.0.0.1:N, " + RANGES["--port"] + ", default 7700",
             "  --time MODE        " + RANGES["--time"] + ", default real",
             "  --connectors N     connectors of the simulated hardware, " + RANGES["--connectors"],
             "  --config FILE      JSON configuration written to the store before boot",
             "  --set KEY=VALUE    override one configuration key (repeatable; derate.shutdown_c=75)",
             "  --set-env VAR      --set lines from environment variable VAR (for secrets)",
             "  --seed N           seed of the plant's noise and switching delays",
             "  --no-repl, --quiet, --working-tree, --check",
             "configuration keys for --set (default: meaning):"]
    for k in sorted(SCHEMA):
        kind, d, lo, hi, what = SCHEMA[k]
        rng = " (%s..%s)" % (lo, hi) if kind in ("int", "num") else ""
        lines.append("  %-17s %s%s: %s" % (k, "see README" if d is None else json.dumps(d), rng, what))
    return "\n".join(lines)


def check(o):
    # The --set overrides against the configuration's keys; returns error lines.
    from firmware.core.config import apply_override, validate
    errors = []
    raw = {}
    for a in o["set"]:
        e = apply_override(raw, a)
        if e:
            # An unknown key's line names the nearest one. Here it refuses the
            # start (make sim checks first), so it is not "ignored".
            errors.append("--set " + e.replace("unknown key, ignored;", "unknown key;"))
    try:
        validate(raw)  # what would refuse the start (a bad charger id)
    except ConfigError as e:
        errors.append("config: %s; refusing to start" % e)
    return errors


def parse(argv):
    o = {"dir": "sim-data", "port": 7700, "time": "real", "connectors_hw": 1, "config": None,
         "set": [], "seed": 1, "repl": True, "echo_log": True, "working_tree": False, "check": False}
    it = iter(argv)
    for a in it:
        v = None
        try:
            if a == "--dir":
                o["dir"] = next(it)
            elif a == "--port":
                v = next(it)
                o["port"] = int(v)
                if not 0 <= o["port"] <= 65535:
                    raise ValueError("port")
            elif a == "--time":
                t = v = next(it)
                if t not in ("real", "step", "jump"):
                    rate = float(t)
                    if not 0 < rate < 1e6:  # also refuses nan and inf
                        raise ValueError(t)
                o["time"] = t
            elif a == "--connectors":
                v = next(it)
                o["connectors_hw"] = int(v)
                if not 1 <= o["connectors_hw"] <= 4:
                    raise ValueError("connectors")
                o["set"].append("connectors=%d" % o["connectors_hw"])
            elif a == "--config":
                o["config"] = next(it)
            elif a == "--set":
                o["set"].append(next(it))
            elif a == "--set-env":
                v = next(it)
                for line in (os.getenv(v) or "").split("\n"):
                    if line.strip():
                        o["set"].append(line.strip())
            elif a == "--seed":
                v = next(it)
                o["seed"] = int(v)
            elif a == "--no-repl":
                o["repl"] = False
            elif a == "--quiet":
                o["echo_log"] = False
            elif a == "--working-tree":
                o["working_tree"] = True
            elif a == "--check":
                o["check"] = True
            elif a in ("-h", "--help"):
                print(help_text())
                sys.exit(0)
            else:
                raise ValueError(a)
        except StopIteration:
            print("error: option %s needs a value\n%s" % (a, USAGE))
            sys.exit(2)
        except ValueError:
            if v is None:
                print("error: unknown option %s\n%s" % (a, USAGE))
            else:
                print("error: %s %s: must be %s\n%s" % (a, v, RANGES.get(a, "a valid value"), USAGE))
            sys.exit(2)
    if o["check"]:
        errors = check(o)
        for e in errors:
            print("error: " + e)
        sys.exit(2 if errors else 0)
    return o


async def run(board):
    o = board.opts
    if o["config"]:
        try:
            with open(o["config"]) as f:
                raw = json.loads(f.read())
        except (OSError, ValueError) as e:
            print("error: config file %s: %s" % (o["config"], e))
            sys.exit(2)
        board.store.write("config.json", raw)
    if o["port"]:
        # Bound before the boot: a port in use must not count as a boot.
        ch = ControlChannel(board, o["port"])
        try:
            await ch.start()
        except OSError as e:
            print("error: control port %d in use (%s); try --port" % (o["port"], e))
            sys.exit(2)
    try:
        board.boot()
    except ConfigError as e:
        print("error: config: %s; refusing to start" % e)
        sys.exit(2)
    if o["port"]:
        print("control channel on 127.0.0.1:%d" % o["port"])
    board.tasks.spawn(board.hw.wdt.run(), "simulated watchdog")
    if board.clock.simulated:
        board.tasks.spawn(board.clock.run(), "simulated clock")
    if o["repl"]:
        print("bench REPL: type help() for the commands")
        await repl_mod.repl(repl_mod.namespace(board.bench))
    while True:
        await asyncio.sleep(3600)


def main():
    board = UnixBoard(parse(sys.argv[1:]))
    try:
        asyncio.run(run(board))
    except KeyboardInterrupt:
        # Ctrl-C on a Unix terminal: never leave a contactor closed.
        board.shutdown()
        print("\ninterrupted: contactors open, firmware stopped")
    except BaseException:
        board.shutdown()  # whatever ends the firmware, the contactors open first
        raise


main()

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
#     --seed N           seed of the plant's noise and switching delays
#     --no-repl          no REPL on stdin
#     --quiet            do not echo the log to the console
import sys

sys.path.insert(0, __file__.rsplit("/", 3)[0] if __file__.count("/") >= 3 else ".")

import asyncio
import json
from boards.unix.board import UnixBoard
from boards.unix.control import ControlChannel
from firmware.core.config import ConfigError
from firmware import repl as repl_mod

USAGE = "usage: main.py [--dir DIR] [--port N] [--time real|step|jump|RATE] [--connectors N] " \
        "[--config FILE] [--set KEY=VALUE]... [--seed N] [--no-repl] [--quiet]"


def parse(argv):
    o = {"dir": "sim-data", "port": 7700, "time": "real", "connectors_hw": 1, "config": None,
         "set": [], "seed": 1, "repl": True, "echo_log": True}
    it = iter(argv)
    for a in it:
        try:
            if a == "--dir":
                o["dir"] = next(it)
            elif a == "--port":
                o["port"] = int(next(it))
                if not 0 <= o["port"] <= 65535:
                    raise ValueError("port")
            elif a == "--time":
                t = next(it)
                if t not in ("real", "step", "jump"):
                    rate = float(t)
                    if not 0 < rate < 1e6:  # also refuses nan and inf
                        raise ValueError(t)
                o["time"] = t
            elif a == "--connectors":
                o["connectors_hw"] = int(next(it))
                if not 1 <= o["connectors_hw"] <= 4:
                    raise ValueError("connectors")
                o["set"].append("connectors=%d" % o["connectors_hw"])
            elif a == "--config":
                o["config"] = next(it)
            elif a == "--set":
                o["set"].append(next(it))
            elif a == "--seed":
                o["seed"] = int(next(it))
            elif a == "--no-repl":
                o["repl"] = False
            elif a == "--quiet":
                o["echo_log"] = False
            elif a in ("-h", "--help"):
                print(USAGE)
                sys.exit(0)
            else:
                raise ValueError(a)
        except (StopIteration, ValueError):
            print("error: bad option %s\n%s" % (a, USAGE))
            sys.exit(2)
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
    try:
        board.boot()
    except ConfigError as e:
        print("error: config: %s; refusing to start" % e)
        sys.exit(2)
    if o["port"]:
        ch = ControlChannel(board, o["port"])
        try:
            await ch.start()
        except OSError as e:
            print("error: control channel port %d: %s" % (o["port"], e))
            sys.exit(2)
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

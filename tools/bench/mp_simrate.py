# Benchmark (MicroPython Unix port): simulated time per wall time, in-process.
#
#   micropython tools/bench/mp_simrate.py --dir DIR [--sim-s S] [--tls-port N --tls-sim-s S2]
#
# Builds the Unix board in-process with SimClock in step mode (no control
# channel, no REPL, log not echoed), sets ambient 45 C, plugs an EV in and
# lets it charge, then times SimClock.advance() over S simulated seconds.
# With --tls-port it then opens one TLS stream to 127.0.0.1:N, leaves it idle
# (as an OCPP wss:// connection between messages) and times S2 more simulated
# seconds. One "RESULT {json}" line per measurement.
import sys

_parts = __file__.split("/")
sys.path.insert(0, "/".join(_parts[:-3]) or ("." if len(_parts) == 3 else ".."))

import asyncio
import json
import time
from boards.unix.board import UnixBoard


def start_board_tasks(board):
    # What boards/unix/main.py starts beside the station (the simulated
    # hardware watchdog, where the board has one); no control channel, no REPL.
    wdt = getattr(board.hw, "wdt", None)
    if wdt is not None and hasattr(wdt, "run"):
        asyncio.create_task(wdt.run())


def parse(argv):
    o = {"dir": None, "sim_s": 86400, "tls_port": 0, "tls_sim_s": 600}
    it = iter(argv)
    for a in it:
        if a == "--dir":
            o["dir"] = next(it)
        elif a == "--sim-s":
            o["sim_s"] = int(next(it))
        elif a == "--tls-port":
            o["tls_port"] = int(next(it))
        elif a == "--tls-sim-s":
            o["tls_sim_s"] = int(next(it))
        else:
            print("usage: mp_simrate.py --dir DIR [--sim-s S] [--tls-port N --tls-sim-s S2]")
            sys.exit(2)
    if not o["dir"]:
        o["dir"] = "/tmp/mp_simrate_%d" % time.ticks_ms()
    return o


async def timed(board, label, sim_s):
    st = board.station
    n0 = st.control.late.count
    t0 = time.ticks_ms()
    await board.clock.advance(sim_s * 1000)
    wall = time.ticks_diff(time.ticks_ms(), t0)
    c = st.connectors[0].status()
    res = {"label": label, "sim_s": sim_s, "wall_ms": wall, "rate": sim_s * 1000 / max(1, wall),
           "control_runs": st.control.late.count - n0, "status": c["status"],
           "energy_wh": c["energy_wh"], "temp_c": st.temp_dc / 10 if st.temp_dc is not None else None,
           "derate_pct": st.derate.percent()}
    print("RESULT " + json.dumps(res))


async def main(o):
    opts = {"dir": o["dir"], "time": "step", "connectors_hw": 1, "set": [], "seed": 1,
            "repl": False, "echo_log": False}
    board = UnixBoard(opts)
    board.boot()
    start_board_tasks(board)
    board.ready = True
    b = board.bench
    b.ambient(45)
    b.plug(32)
    b.ev("C")
    await board.clock.advance(3000)
    c = board.station.connectors[0].status()
    if not (c["contactor"] and c["aux"]):
        print("RESULT " + json.dumps({"error": "not charging: %s" % c}))
        return
    await timed(board, "no network", o["sim_s"])
    if o["tls_port"]:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_NONE
        r, w = await asyncio.open_connection("127.0.0.1", o["tls_port"], ssl=ctx)
        w.write(b"idle")
        await w.drain()
        rd = asyncio.create_task(r.readline())
        await timed(board, "idle TLS stream open", o["tls_sim_s"])
        w.write(b"\n")
        await w.drain()
        await rd
        w.close()
        await w.wait_closed()
        await timed(board, "TLS stream closed again", o["tls_sim_s"])
    board.station.stop()


asyncio.run(main(parse(sys.argv[1:])))

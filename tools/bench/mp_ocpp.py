# OCPP figures on the MicroPython Unix port (run by tools/bench/run.py):
#   rate   CALL round trips per second to the dev CSMS (Heartbeat)
#   heap   live heap during a charging session with MeterValues every second
#   flood  control-loop lateness while the CSMS floods the charger with CALLs
# micropython tools/bench/mp_ocpp.py --dir D --url ws://127.0.0.1:P --phase P [--seconds S]
import sys

sys.path.insert(0, __file__.rsplit("/", 3)[0] if __file__.count("/") >= 3 else ".")

import asyncio
import gc
import json
import time
from boards.unix.board import UnixBoard


def parse(argv):
    o = {"dir": None, "url": None, "phase": "rate", "seconds": 10, "n": 500}
    it = iter(argv)
    for a in it:
        o[a.lstrip("-")] = next(it)
    o["seconds"] = float(o["seconds"])
    o["n"] = int(o["n"])
    return o


async def booted(board):
    cl = board.station.ocpp
    for _ in range(500):
        if cl.registered:
            return cl
        await asyncio.sleep_ms(10)
    raise SystemExit("no boot")


async def charging(board):
    b = board.bench
    b.plug(32)
    b.ev("C")
    await board.station.ocpp.present_token(1, "BENCH")
    for _ in range(400):
        await asyncio.sleep_ms(10)
        if board.station.connectors[0].contactor.cmd:
            return
    raise SystemExit("never charged")


async def main(o):
    # Import everything an OCPP charger runs first: what is live after this is
    # code (in flash when frozen on a board); what comes after is data.
    import firmware.ocpp.client, firmware.ocpp.handlers, firmware.net.ws, firmware.net.http  # noqa
    import firmware.station, firmware.core.log, firmware.core.config, firmware.bench, firmware.ota.update  # noqa
    import firmware.crypto.der, firmware.crypto.verify, firmware.crypto.ecdsa, firmware.crypto.rsa  # noqa (certificates)
    gc.collect()
    code = gc.mem_alloc()
    opts = {"dir": o["dir"], "time": "real", "connectors_hw": 1, "seed": 1, "repl": False, "echo_log": False,
            "set": ["csms_url=" + o["url"], "id=BENCH1"]}
    board = UnixBoard(opts)
    board.boot()
    cl = await booted(board)
    out = {}
    if o["phase"] == "rate":
        n = o["n"]
        t0 = time.ticks_ms()
        for _ in range(n):
            await cl.rpc.call("Heartbeat", {})
        dt = time.ticks_diff(time.ticks_ms(), t0)
        out = {"calls": n, "ms": dt, "per_s": n * 1000 / max(1, dt)}
    elif o["phase"] == "heap":
        cl.keys.values["MeterValueSampleInterval"] = 1
        cl.keys.values["MeterValuesSampledData"] = "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage"
        gc.collect()
        base = gc.mem_alloc()
        await charging(board)
        peak = 0
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < o["seconds"] * 1000:
            await asyncio.sleep_ms(250)
            gc.collect()
            peak = max(peak, gc.mem_alloc())
        out = {"live_before": base, "live_peak": peak, "sent": cl.rpc.calls, "queued": len(cl.queue),
               "code": code}
    else:
        await charging(board)
        board.station.control.late.reset()
        print("READY")
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < o["seconds"] * 1000:
            await asyncio.sleep_ms(100)
        c = board.station.connectors[0]
        out = {"late": board.station.control.late.summary(), "charging": c.contactor.cmd,
               "errors_sent": cl.rpc.errors_sent}
    print("RESULT " + json.dumps(out))


asyncio.run(main(parse(sys.argv[1:])))

# Benchmark (MicroPython Unix port): control-loop lateness in real time while
# other tasks load the asyncio loop.
#
#   micropython tools/bench/mp_lateness.py --dir DIR [--seconds S] [--tls-port N]
#                                          [--phases idle,json,store,tls,all]
#                                          [--update URL,ROOT.pem,SIG_B64,CERT.pem]
#
# Builds the Unix board (RealClock, simulated plant, store in DIR/flash, no
# control channel, no REPL), boots the station, plugs an EV in and lets it
# charge, then runs phases of S seconds each (a phase may say name:seconds).
# A phase is "idle", "all" (json+store+tls) or load kinds joined by "+":
#   json     20 kB OCPP-like message: json.dumps + json.loads, sleep_ms(0) between
#   store    atomic Store.write of a ~4 kB record, sleep_ms(2) between
#   tls      TLS connect, handshake, one line each way, close, sleep_ms(5) between
#   tlsidle  one TLS stream open and idle, its task waiting in read()
#   spin     a task that only does sleep_ms(0): counts loop iterations per second
#   update   a full signed firmware update, again and again: download over HTTP,
#            signature and chain, image check, install into a fresh slot pair
#            (as firmware/ocpp/fwmgmt.py does it, in the station's work slices
#            where the firmware has them). Needs --update URL,ROOT.pem,SIG_B64,CERT.pem
# The TLS kinds need --tls-port: a server on 127.0.0.1 that reads one line and
# answers b"pong\n" (tools/bench/run.py starts it). The control loop's lateness
# histogram is reset at the start of each phase.
#
# Output: human-readable lines, and one line per phase starting with
# "RESULT " followed by JSON, which tools/bench/run.py parses.
import sys

_parts = __file__.split("/")
sys.path.insert(0, "/".join(_parts[:-3]) or ("." if len(_parts) == 3 else ".."))

import asyncio
import gc
import json
import time
from boards.unix.board import UnixBoard
from firmware.core.store import Store

ticks_ms = time.ticks_ms
tdiff = time.ticks_diff


def start_board_tasks(board):
    # What boards/unix/main.py starts beside the station (the simulated
    # hardware watchdog, where the board has one); no control channel, no REPL.
    wdt = getattr(board.hw, "wdt", None)
    if wdt is not None and hasattr(wdt, "run"):
        asyncio.create_task(wdt.run())


def parse(argv):
    o = {"dir": None, "seconds": 8, "tls_port": 0, "phases": "idle,json,store,tls,all", "update": None}
    it = iter(argv)
    for a in it:
        if a == "--dir":
            o["dir"] = next(it)
        elif a == "--seconds":
            o["seconds"] = float(next(it))
        elif a == "--tls-port":
            o["tls_port"] = int(next(it))
        elif a == "--phases":
            o["phases"] = next(it)
        elif a == "--update":
            o["update"] = next(it).split(",")
        else:
            print("usage: mp_lateness.py --dir DIR [--seconds S] [--tls-port N] [--phases a,b] "
                  "[--update URL,ROOT.pem,SIG_B64,CERT.pem]")
            sys.exit(2)
    if not o["dir"]:
        o["dir"] = "/tmp/mp_lateness_%d" % ticks_ms()
    return o


class Stat:
    # Count and worst-case duration of one kind of blocking step (ms).
    def __init__(self):
        self.n = 0
        self.max_ms = 0
        self.total_ms = 0

    def add(self, ms):
        self.n += 1
        self.total_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms

    def info(self):
        return {"n": self.n, "max_ms": self.max_ms,
                "mean_ms": (self.total_ms / self.n) if self.n else 0}


def big_message(kb=20):
    # An OCPP-like MeterValues payload of about kb kilobytes.
    samples = []
    i = 0
    while True:
        samples.append({"timestamp": "2026-01-01T00:%02d:%02dZ" % (i // 60 % 60, i % 60),
                        "sampledValue": [
                            {"value": "%d.%03d" % (i * 7, i % 1000), "measurand": "Energy.Active.Import.Register",
                             "unit": "Wh", "context": "Sample.Periodic"},
                            {"value": "%d" % (i * 13 % 32000), "measurand": "Current.Import", "phase": "L1",
                             "unit": "A"},
                        ]})
        i += 1
        if i % 4 == 0 and len(json.dumps(samples)) >= kb * 1000 - 100:
            break
    return [2, "bench-%d" % kb, "MeterValues", {"connectorId": 1, "transactionId": 42, "meterValue": samples}]


async def json_load(stop, st):
    msg = big_message(20)
    st["bytes"] = len(json.dumps(msg))
    enc, dec = Stat(), Stat()
    st["encode"], st["decode"] = enc, dec
    while not stop[0]:
        t0 = ticks_ms()
        text = json.dumps(msg)
        t1 = ticks_ms()
        enc.add(tdiff(t1, t0))
        await asyncio.sleep_ms(0)
        t1 = ticks_ms()
        obj = json.loads(text)
        dec.add(tdiff(ticks_ms(), t1))
        obj = text = None
        await asyncio.sleep_ms(0)


async def store_load(stop, st, root):
    store = Store(root)
    rec = {"kind": "bench", "seq": 0, "entries": [[i, "entry %d of the bench record" % i, i * 3] for i in range(100)]}
    st["bytes"] = len(json.dumps(rec))
    w = Stat()
    st["write"] = w
    i = 0
    while not stop[0]:
        rec["seq"] = i
        t0 = ticks_ms()
        store.write("bench%d.json" % (i % 4), rec)
        w.add(tdiff(ticks_ms(), t0))
        i += 1
        await asyncio.sleep_ms(2)


async def tls_load(stop, st, port):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_NONE
    hs = Stat()  # wall time of a whole connection (handshake + one exchange)
    st["connection"] = hs
    st["errors"] = 0
    st["last_error"] = None
    while not stop[0]:
        t0 = ticks_ms()
        w = None
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            w.write(b"ping\n")
            await w.drain()
            line = await r.readline()
            if line != b"pong\n":
                raise OSError("bad reply %r" % line)
            hs.add(tdiff(ticks_ms(), t0))
        except Exception as e:  # noqa: E722 - a benchmark counts and goes on
            st["errors"] += 1
            st["last_error"] = repr(e)
            await asyncio.sleep_ms(50)
        finally:
            if w is not None:
                try:
                    w.close()
                    await w.wait_closed()
                except Exception:
                    pass
        await asyncio.sleep_ms(5)


async def tls_idle(stop, st, port):
    # One TLS stream kept open and idle, as an OCPP websocket over wss:// is
    # between messages: the task waits in read() for data that does not come.
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_NONE
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    w.write(b"idle")
    await w.drain()  # the handshake is done here
    st["open"] = True
    rd = asyncio.create_task(r.readline())
    while not stop[0]:
        await asyncio.sleep_ms(20)
    w.write(b"\n")
    await w.drain()
    try:
        st["reply"] = await asyncio.wait_for_ms(rd, 2000)
    except asyncio.TimeoutError:
        st["reply"] = None
    w.close()
    await w.wait_closed()


async def spin(stop, st):
    # Count asyncio loop iterations: a task that only yields.
    n = 0
    t0 = ticks_ms()
    while not stop[0]:
        await asyncio.sleep_ms(0)
        n += 1
    st["per_s"] = n * 1000 // max(1, tdiff(ticks_ms(), t0))


async def update_load(stop, st, board, spec, root):
    # The steps of an OCPP SignedUpdateFirmware after its request, repeated.
    from firmware.net.http import download
    from firmware.crypto import pem
    from firmware.ota.slots import Slots
    from firmware.ota.update import Updater
    from firmware.version import VERSION
    url, root_pem, sig, cert_pem = spec
    f = open(root_pem)
    roots = pem.decode_all(f.read())
    f.close()
    f = open(cert_pem)
    cert = f.read()
    f.close()
    sl = getattr(board.station, "work", None)  # the station's work slices (absent before issue 8)
    steps = {"download": Stat(), "verify": Stat(), "check": Stat(), "install": Stat()}
    st.update(steps)
    st["updates"] = 0
    st["errors"] = 0
    st["last_error"] = None
    st["async"] = sl is not None
    n = 0
    while not stop[0]:
        n += 1
        d = "%s/upd%d" % (root, n)
        store = Store(d)
        slots = Slots(store, d + "/slots", factory_version=VERSION)
        slots.boot()
        up = Updater(slots, "unix")
        path = store.path("fw_download.bin")
        now = board.clock.wall()
        try:
            t0 = ticks_ms()
            await download(url, path)
            steps["download"].add(tdiff(ticks_ms(), t0))
            t0 = ticks_ms()
            if sl is not None:
                await up.verify_signature_async(path, roots, now, sig, cert, sl=sl)
            else:
                up.verify_signature(path, roots, now, sig, cert)
            steps["verify"].add(tdiff(ticks_ms(), t0))
            await asyncio.sleep_ms(0)
            t0 = ticks_ms()
            m, _ = (await up.check_async(path, sl=sl)) if sl is not None else up.check(path)
            steps["check"].add(tdiff(ticks_ms(), t0))
            await asyncio.sleep_ms(0)
            t0 = ticks_ms()
            if sl is not None:
                await up.install_async(path, m, sl=sl)
            else:
                up.install(path, m)
            steps["install"].add(tdiff(ticks_ms(), t0))
            st["updates"] += 1
        except Exception as e:  # noqa: E722 - a benchmark counts and goes on
            st["errors"] += 1
            st["last_error"] = repr(e)
            await asyncio.sleep_ms(50)
        await asyncio.sleep_ms(0)
    if sl is not None:
        st["slices"] = {"units": sl.units, "yields": sl.yields, "longest_units": sl.longest}


def jsonable(st):
    out = {}
    for k, v in st.items():
        out[k] = v.info() if isinstance(v, Stat) else v
    return out


def cpu_ticks():
    # utime + stime of this process in clock ticks (USER_HZ, 100 on Linux).
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def preemptions():
    # Times the kernel took the CPU from this process (another process wanted
    # it): the host's share of lateness, not the firmware's.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


async def gc_watch(stop, st):
    # GC count is not exposed; record the free heap's low point instead.
    lo = gc.mem_free()
    while not stop[0]:
        f = gc.mem_free()
        if f < lo:
            lo = f
        await asyncio.sleep_ms(20)
    st["mem_free_min"] = lo


async def phase(board, name, seconds, o):
    station = board.station
    stop = [False]
    loads = {}
    tasks = []
    kinds = ("json", "store", "tls") if name == "all" else name.split("+")
    if "json" in kinds:
        loads["json"] = {}
        tasks.append(asyncio.create_task(json_load(stop, loads["json"])))
    if "store" in kinds:
        loads["store"] = {}
        tasks.append(asyncio.create_task(store_load(stop, loads["store"], o["dir"] + "/benchstore")))
    if "tls" in kinds and o["tls_port"]:
        loads["tls"] = {}
        tasks.append(asyncio.create_task(tls_load(stop, loads["tls"], o["tls_port"])))
    if "tlsidle" in kinds and o["tls_port"]:
        loads["tlsidle"] = {}
        tasks.append(asyncio.create_task(tls_idle(stop, loads["tlsidle"], o["tls_port"])))
        await asyncio.sleep_ms(200)  # connected and idle before the phase starts
    if "update" in kinds and o["update"]:
        loads["update"] = {}
        tasks.append(asyncio.create_task(update_load(stop, loads["update"], board, o["update"],
                                                     o["dir"] + "/benchupdate")))
    if "spin" in kinds:
        loads["spin"] = {}
        tasks.append(asyncio.create_task(spin(stop, loads["spin"])))
    gcst = {}
    tasks.append(asyncio.create_task(gc_watch(stop, gcst)))
    await asyncio.sleep_ms(50)  # let the loads start
    gc.collect()
    late = station.control.late
    late.reset()
    writes0 = board.store.writes
    cpu0 = cpu_ticks()
    pre0 = preemptions()
    t0 = ticks_ms()
    await asyncio.sleep_ms(int(seconds * 1000))
    summ = late.summary()
    wall = tdiff(ticks_ms(), t0)
    cpu = cpu_ticks()
    pre = preemptions()
    cpu_pct = None if cpu is None or cpu0 is None else (cpu - cpu0) * 1000 // wall  # 100 Hz clock ticks
    hist = list(late.hist)
    stop[0] = True
    for t in tasks:
        try:
            await asyncio.wait_for_ms(t, 3000)
        except asyncio.TimeoutError:
            pass
    c = station.connectors[0].status()
    res = {"phase": name, "wall_ms": wall, "late": summ, "expected_runs": wall // station.control.period,
           "hist_top": [[i, n] for i, n in enumerate(hist) if n and i >= 5],
           "loads": {k: jsonable(v) for k, v in loads.items()},
           "station_writes": board.store.writes - writes0,
           "cpu_pct": cpu_pct,
           "preempted": None if pre is None or pre0 is None else pre - pre0,
           "mem_free_min": gcst.get("mem_free_min"),
           "charging": c["status"] == "Charging" and c["contactor"] and c["aux"],
           "watchdog": station.watchdog.stalled or "ok",
           "tick_errors": station.tick_errors,
           "wdt_resets": getattr(board.hw.wdt, "resets", 0) if board.hw.wdt is not None else 0}
    return res


async def main(o):
    opts = {"dir": o["dir"], "time": "real", "connectors_hw": 1, "set": [], "seed": 1,
            "repl": False, "echo_log": False}
    board = UnixBoard(opts)
    board.boot()
    start_board_tasks(board)
    board.ready = True
    bench = board.bench
    await asyncio.sleep_ms(100)
    bench.plug(32)
    bench.ev("C")
    for _ in range(300):
        await asyncio.sleep_ms(10)
        c = board.station.connectors[0].status()
        if c["contactor"] and c["aux"]:
            break
    c = board.station.connectors[0].status()
    print("charging: %s, offered %d mA, contactor %s" % (c["status"], c["offered_ma"], c["contactor"]))
    if not (c["contactor"] and c["aux"]):
        print("RESULT " + json.dumps({"error": "EV did not start charging: %s" % c}))
        return
    print("period %d ms, %s s per phase, heap %d bytes" % (
        board.station.control.period, o["seconds"], gc.mem_free() + gc.mem_alloc()))
    for spec in o["phases"].split(","):
        # name[:seconds]; name is idle, all, or kinds joined by "+"
        name, _, secs = spec.partition(":")
        if "tls" in name and not o["tls_port"]:
            print("phase %s skipped (no --tls-port)" % name)
            continue
        if "update" in name and not o["update"]:
            print("phase %s skipped (no --update)" % name)
            continue
        res = await phase(board, name, float(secs) if secs else o["seconds"], o)
        la = res["late"]
        print("%-12s n=%d p50=%d p99=%d max=%d ms  cpu %s%%" % (
            name, la["n"], la["p50"], la["p99"], la["max"], res["cpu_pct"]))
        print("RESULT " + json.dumps(res))
    board.station.stop()


asyncio.run(main(parse(sys.argv[1:])))

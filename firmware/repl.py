# A REPL that runs as a task beside the charger (the role micropython-lib's
# aiorepl plays): the technician gets ">>> " on the console while the control
# loop keeps running. Bench commands are plain functions in its namespace.
# A command that raises prints its error; the charger is not touched.
import asyncio
import sys
from firmware.bench import COMMANDS, BenchError, check_args


def _fmt_a(ma):
    return "%d.%d A" % (ma // 1000, (ma % 1000) // 100)


def format_status(s):
    # One readable block for status() at the REPL.
    up = s["uptime_ms"] // 1000
    lines = ["%s  firmware %s (slot %s)  boot #%d  up %d:%02d:%02d  time %d" % (
        s["id"], s["version"], s["slot"], s["boots"], up // 3600, up // 60 % 60, up % 60, s["time"])]
    t = s["temp_c"]
    o = s["ocpp"]
    if isinstance(o, dict):
        o = "%s %s, %d queued, %d connection(s)" % (o["state"], o["url"], o["queued"], o["connections"])
    lines.append("temperature %s  derate %d%%  watchdog %s  ocpp %s" % (
        "sensor failed" if t is None else "%.1f C" % t, s["derate_pct"], s["watchdog"], o))
    for c in s["connectors"]:
        duty = c["duty_pm"]
        if duty >= 1000:
            pwm = "PWM off (+12 V)"
        elif duty <= 0:
            pwm = "F (-12 V)"
        else:
            pwm = "PWM %d.%d%% = %s" % (duty // 10, duty % 10, _fmt_a(c["offered_ma"]))
        lines.append("connector %d  %-13s pilot %s (%+.1f V / %+.1f V)  %s  limit %s (%s)" % (
            c["connector"], c["status"], c["pilot"], c["pilot_hi_mv"] / 1000, c["pilot_lo_mv"] / 1000,
            pwm, _fmt_a(c["limit_ma"]), c["limited_by"]))
        lines.append("  contactor %s (aux %s)  energy %.3f kWh  %.2f kW  %s" % (
            "closed" if c["contactor"] else "open", "closed" if c["aux"] else "open",
            c["energy_wh"] / 1000, c["power_w"] / 1000, _fmt_a(c["current_ma"])))
        ses = c["session"]
        if ses:
            lines.append("  session %s  %.3f kWh  %d s" % (ses["id_tag"], ses["wh"] / 1000, ses["ms"] // 1000))
        if c["faults"]:
            for f in c["faults"]:
                lines.append("  fault %s (%s, %s): %s" % (f["code"], f["severity"], f["ocpp"], f["cause"]))
        else:
            lines.append("  faults: none")
    e = s.get("errors")
    if e:
        lines.append("errors: %d internal, %d task death(s), %d security-log write failure(s)%s" % (
            e["internal"], e["task_deaths"], e["seclog_write_failures"],
            "" if not (e["internal"] or e["task_deaths"] or e["seclog_write_failures"]) else "  (see log())"))
    la = s["lateness"]
    lines.append("control loop lateness p50 %d ms  p99 %d ms  max %d ms  (%d runs)" % (
        la["p50"], la["p99"], la["max"], la["n"]))
    sim = s.get("plant")
    if sim:
        lines.append("plant: " + "  ".join("%s=%s" % (k, sim[k]) for k in sorted(sim)))
    return "\n".join(lines)


def namespace(bench):
    # The functions a technician can call. Each validates like the control
    # channel does, prints a readable answer and returns None.
    ns = {}

    def make(op):
        names = [a[0] for a in COMMANDS[op][1]]

        def cmd(*args, **kw):
            try:
                if len(args) > len(names):
                    raise BenchError("%s takes at most %d arguments" % (op, len(names)))
                for n, v in zip(names, args):
                    kw[n] = v
                r = getattr(bench, op)(**check_args(op, kw))
            except BenchError as e:
                print("error:", e)
                return None
            if op == "status":
                print(format_status(r))
            elif op == "help":
                for k, (h, a) in sorted(r["commands"].items()):
                    print("  %s(%s)  %s" % (k, ", ".join(a), h))
            elif op == "log":
                for e in r["entries"]:
                    print("%d %d.%03d %s: %s" % (e["seq"], e["t"] // 1000, e["t"] % 1000, e["src"], e["msg"]))
            elif r:
                print(r)
        return cmd

    for op in COMMANDS:
        ns[op] = make(op)  # advance() answers that it needs the control channel
    ns["bench"] = bench
    return ns


# The hand-over to mpremote. When mpremote connects it asks for MicroPython's
# raw REPL: b"\r\x03" (Ctrl-C: interrupt the running program), it drains the
# input, then b"\r\x01" (Ctrl-A: raw REPL). Our raw console ignores Ctrl-C
# (kbd_intr(-1): a stray Ctrl-C must never kill the charger with a contactor
# closed), so it watches for that pair itself: Ctrl-C, then only CR/LF/Ctrl-C,
# then Ctrl-A. repl() then returns HANDOVER and the board stops the station
# (every contactor open, records saved) before anything else runs, and leaves
# the charger program for MicroPython's own REPL (boards/common/board.py).
# A Ctrl-A alone, or Ctrl-C followed by anything else, is not a hand-over.
HANDOVER = "handover"
_IDLE = 0
_CTRL_C = 1
_REQUEST = 2


def handover_step(state, ch):
    """Feed one console character; returns the new state, _REQUEST (2) when
    the raw-REPL request (Ctrl-C [CR/LF/Ctrl-C]* Ctrl-A) is complete."""
    if ch == "\x03":
        return _CTRL_C
    if ch == "\x01":
        return _REQUEST if state == _CTRL_C else _IDLE
    if state == _CTRL_C and (ch == "\r" or ch == "\n"):
        return _CTRL_C
    return _IDLE


async def repl(ns, stream=None, raw=False, out=None):
    # raw: a board's UART: we echo and edit the line ourselves, and Ctrl-C
    # comes in as a character that drops the line instead of interrupting the
    # charger. On Unix the terminal does both, and kbd_intr(-1) would make
    # SIGINT kill the process before it can open the contactors, so raw is off
    # there and Ctrl-C ends the firmware through main's safe shutdown.
    # Ends at end of input or Ctrl-D (returns None) or, raw only, on mpremote's
    # raw-REPL request (returns HANDOVER, kbd_intr(3) already restored).
    out = out or sys.stdout
    s = stream or asyncio.StreamReader(sys.stdin)
    echo = raw
    kbd = False
    if raw:
        try:
            import micropython
            micropython.kbd_intr(-1)
            kbd = True
        except (ImportError, AttributeError):
            pass
    buf = []
    hs = _IDLE
    out.write(">>> ")
    try:
        while True:
            b = await s.read(1)
            if not b:
                return None
            ch = b if isinstance(b, str) else b.decode()
            if raw:
                hs = handover_step(hs, ch)
                if hs == _REQUEST:
                    return HANDOVER  # no output here: the caller opens contactors first
            if ch == "\x01":
                continue  # Ctrl-A without Ctrl-C before it: not a command character
            if ch == "\x03":  # Ctrl-C: drop the line; the charger keeps running
                buf = []
                out.write("^C\n>>> ")
                continue
            if ch == "\x04":
                return None
            if ch in "\x08\x7f":
                if buf:
                    buf.pop()
                    if echo:
                        out.write("\x08 \x08")
                continue
            if ch not in "\r\n":
                buf.append(ch)
                if echo:
                    out.write(ch)
                continue
            if echo:
                out.write("\n")
            line = "".join(buf).strip()
            buf = []
            if line:
                run_line(line, ns)
            out.write(">>> ")
    finally:
        if kbd:
            micropython.kbd_intr(3)


def run_line(line, ns):
    try:
        try:
            code = compile(line, "<repl>", "eval")
        except SyntaxError:
            exec(line, ns)
            return
        r = eval(code, ns)
        if r is not None:
            print(repr(r))
    except SystemExit:
        bench = ns.get("bench")
        if bench is not None and bench.resetting:
            raise  # reboot() / powercut() on a board whose reset returns as an exit
        print("error: exit() would stop the charger; use reboot()")
    except Exception as e:  # a failing command must not stop the charger
        print("error: %s: %s" % (type(e).__name__, e))

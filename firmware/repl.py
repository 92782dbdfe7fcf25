# A REPL that runs as a task beside the charger (the role micropython-lib's
# aiorepl plays): the technician gets ">>> " on the console while the control
# loop keeps running. Bench commands are plain functions in its namespace.
# A command that raises prints its error; the charger is not touched.
import asyncio
import sys
import time
from micropython import const
from firmware.bench import COMMANDS, FAULTS, BenchError, check_args
from firmware.core.clock import ticks_diff, ticks_ms as real_ms


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
        e = c["energy_wh"]  # None: no meter fitted (or it failed)
        lines.append("  contactor %s (aux %s)  energy %s  %s  %s" % (
            "closed" if c["contactor"] else "open", "closed" if c["aux"] else "open",
            "-- (no meter reading)" if e is None else "%.3f kWh" % (e / 1000), _kw(c["power_w"]),
            "--" if c["current_ma"] is None else _fmt_a(c["current_ma"])))
        ses = c["session"]
        if ses:
            lines.append("  session %s  %s  %d s" % (ses["id_tag"], "--" if ses.get("wh") is None else "%.3f kWh" % (
                ses["wh"] / 1000), ses["ms"] // 1000))
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
        inj = sim.get("injected")
        lines.append("plant: " + "  ".join("%s=%s" % (k, _num(sim[k])) for k in sorted(sim) if k != "injected"))
        if inj is not None:
            shown = [(i + 1, f) for i, fs in enumerate(inj) for f in fs]
            lines.append("injected faults: " + (", ".join(
                f if len(inj) == 1 else "%s (connector %d)" % (f, i) for i, f in shown) if shown else "none"))
    return "\n".join(lines)


def status_line(s, bench=None):
    # watch(): the state in one line.
    parts = []
    t = s.get("temp_c")
    for c in s["connectors"]:
        parts.append("c%d %s pilot %s %s %s %s" % (
            c["connector"], c["status"], c["pilot"], _fmt_a(c["offered_ma"]) + " offered",
            "closed" if c["contactor"] else "open", _kw(c["power_w"])))
        if c["faults"]:
            parts.append("faults " + ",".join(f["code"] for f in c["faults"]))
    up = s["t"] // 1000
    return "%d:%02d:%02d  %s  %s  derate %d%%" % (
        up // 3600, up // 60 % 60, up % 60, "  ".join(parts),
        "temp ?" if t is None else "%.1f C" % t, s["derate_pct"])


def _kw(w):
    return "-- kW" if w is None else "%.2f kW" % (w / 1000)


def _num(v):
    # A plant figure without float noise (72.01000000000001 -> 72.01).
    if isinstance(v, float):
        t = "%.2f" % v
        return t.rstrip("0").rstrip(".") if "." in t else t
    if isinstance(v, (list, tuple)):
        return ",".join(_num(x) for x in v)
    return str(v)


# What a fault injected at the bench does, by where the charger is.
_FAULT_SAYS = {
    "weld": ("the contacts stick when the contactor opens: aux still closed 1 s after the coil drops is a "
             "latched weld (PowerSwitchFailure), and the plug stays locked",
             "nothing yet: the contacts stick the next time the contactor closes and is told to open "
             "(charge, then ev(\"B\")); then a latched weld (PowerSwitchFailure). clear(\"weld\") takes it back"),
    "rcd": ("residual current 40 mA: the contactor opens at once (GroundFailure), retried after 5 min",
            "residual current flows once the contactor closes: it trips at once when charging starts"),
    "ground": ("earth lost: the contactor opens at once (GroundFailure)",
               "earth lost: charging is refused (GroundFailure)"),
    "meter": ("the meter stops answering: PWM off, then the contactor opens (PowerMeterFailure)",
              "the meter stops answering: no charging until it is back (PowerMeterFailure)"),
    "pilot_short": ("the pilot is shorted (state E): the contactor opens at once (EVCommunicationError)",
                    "the pilot is shorted (state E): EVCommunicationError, no charging"),
    "pilot_f": ("the pilot sits at -12 V: the contactor opens at once (EVCommunicationError)",
                "the pilot sits at -12 V: EVCommunicationError, no charging"),
    "temp_sensor": ("the temperature sensor fails: PWM off and the contactor opens",
                    "the temperature sensor fails: no charging until it reads again"),
    "stuck_open": ("the contacts will not close: the next closing is a switch fault (PowerSwitchFailure)",
                   "the contacts will not close: the next closing is a switch fault (PowerSwitchFailure)"),
    "diode": ("the EV's diode is gone: the diode check fails and the contactor opens (GroundFailure)",
              "the EV's diode is gone: the diode check fails once PWM is on (GroundFailure)"),
    "lock": ("the lock is jammed: the plug stays as it is; a lock fault when it must move (ConnectorLockFailure)",
             "the lock is jammed: the next plug-in cannot be locked (ConnectorLockFailure)"),
    "pp": ("the cable's PP resistor breaks: a cable fault, the contactor opens (OtherError)",
           "the cable's PP resistor breaks: a cable fault when plugged in (OtherError)"),
}


def answer(op, kw, r, bench):
    # What a command says at the REPL, in words (the control channel gets
    # the dict r). None: nothing to say.
    c = kw.get("c") or 1
    on = "" if c == 1 else " (connector %d)" % c
    conn = None
    try:
        conn = bench.board.station.connectors[c - 1]
    except (AttributeError, IndexError, TypeError):
        pass
    if op == "plug":
        return "plugged in, %d A cable%s" % (kw["amps"], on)
    if op == "unplug":
        return "unplugged" + on
    if op == "ev":
        st = kw["state"]
        if st == "A":
            return "unplugged" + on
        if st in ("diode", "nodiode"):
            return "EV diode %s%s" % ("fitted" if st == "diode" else "missing", on)
        if st in ("C", "D"):
            msg = "EV in %s%s: asks for energy" % (st, on)
            if conn is not None:
                auth = conn.authorized or conn.session is not None or conn.cfg["free_vend"]
                if not auth:
                    return msg + "; waiting for authorization: present a card, token(\"CARD1\")%s" % (
                        "" if c == 1 else ", %d" % c)
                return msg + "; the contactor closes after %d ms of stable %s" % (conn.cfg["close_delay_ms"], st)
            return msg
        return {"B": "EV in B%s: connected, not asking for energy", "E": "pilot shorted (E)%s",
                "F": "pilot at -12 V (F)%s"}[st] % on
    if op == "demand":
        return "the EV draws at most %s A%s" % (_num(kw["amps"]), on)
    if op == "evopt":
        ev = r.get("ev") or {}
        return "EV%s:\n" % on + "\n".join("  %-12s %s" % (k, _num(ev[k])) for k in sorted(ev))
    if op == "temp":
        return "charger held at %s C (status() shows the derating)" % _num(kw["celsius"])
    if op == "ambient":
        return "ambient %s C: the charger heats with current" % _num(kw["celsius"])
    if op == "fault":
        charging = conn is not None and conn.hw.aux[conn.idx]
        return "%s injected%s: %s" % (kw["name"], on, _FAULT_SAYS[kw["name"]][0 if charging else 1])
    if op == "clear":
        msg = "%s removed from the plant%s" % (kw["name"], on)
        if conn is not None and kw["name"] in conn.faults.active:
            from firmware.evse.faults import TABLE, LATCHED
            if TABLE[kw["name"]][0] == LATCHED:
                msg += "; the latched fault stays until service(\"%s\")" % kw["name"]
        return msg
    if op == "service":
        return "cleared: %s%s" % (", ".join(r["cleared"]), on)
    if op == "limit":
        return ("external limit removed" if kw["amps"] is None else "external limit %s A" % _num(kw["amps"])) + on
    if op == "available":
        return ("available" if kw["on"] else "unavailable") + on
    if op == "stop":
        return r["result"] + on
    if op == "token":
        return "%s: %s%s" % (kw["tag"], r["result"], on)
    if op == "plant_reset":
        return r["result"]
    if op == "tamper":
        return "enclosure " + ("opened" if kw["opened"] else "closed")
    if op == "stall":
        return "control task stalled for %d ms" % kw["ms"]
    if op == "hog":
        return "holding %d bytes; %d free" % (r["held"], r["free"])
    if op == "trace":
        ev = r["events"]
        if not ev:
            return "no switching events yet (now %d ms)" % r["now"]
        lines = ["      ms  conn  what        value"]
        for e in ev:
            lines.append("%8d  %4d  %-10s  %s" % (e[0], e[1], e[2], _num(e[3]) if len(e) > 3 else ""))
        lines.append("(now %d ms)" % r["now"])
        return "\n".join(lines)
    if op == "seclog":
        lines = r["lines"]
        return "\n".join(lines) if lines else "security log: empty"
    if op == "loglevel":
        return "console log: %s and above (log() keeps every entry)" % kw["level"]
    if op == "mute":
        return "console log muted; mute(False) or loglevel(\"info\") brings it back" if kw["on"] else \
            "console log back"
    return None


def help_one(op):
    if op == "watch":
        return "watch(c=None)\n  one status line a second until Enter (REPL only)"
    if op == "exit":
        return "exit()\n  says how to leave: the bench REPL runs beside the charger"
    h, spec = COMMANDS[op]
    lines = ["%s(%s)" % (op, ", ".join(a[0] if a[2] is None else "%s=%r" % (a[0], a[2]) for a in spec)), "  " + h]
    for name, kind, d, lo, hi in spec:
        if name == "c":
            what = "connector number, %s..%s" % (lo, hi)
        elif kind == "choice":
            what = "one of " + ", ".join(repr(x) for x in hi)
        elif lo is not None:
            what = "%s, %s..%s" % (kind.replace("opt_", "") + (" or None" if kind.startswith("opt_") else ""), lo, hi)
        else:
            what = kind.replace("opt_", "") + (" or None" if kind.startswith("opt_") else "")
        lines.append("  %-10s %s%s" % (name, what, "" if d is None else " (default %r)" % (d,)))
    return "\n".join(lines)


_EXIT_SAYS = ("the bench REPL runs beside the charger and does not end with exit(). "
              "Under make sim: Ctrl-C twice (within 1 s) stops the simulator, contactors opened first. "
              "On a board: maintenance() reboots without the charger (for mpremote); reboot() restarts it.")


def namespace(bench):
    # The functions a technician can call. Each validates like the control
    # channel does, prints a readable answer and returns None.
    ns = {}
    ops = {}  # command function -> its name, for help(plug)

    def make(op):
        names = [a[0] for a in COMMANDS[op][1]]

        def cmd(*args, **kw):
            if op == "help" and (args or kw):
                x = args[0] if args else None
                x = ops.get(x, x)
                if x in COMMANDS or x in ("watch", "exit"):
                    print(help_one(x))
                else:
                    print("help: give a command, e.g. help(plug); help() lists them")
                return None
            try:
                if len(args) > len(names):
                    raise BenchError("%s takes at most %d arguments" % (op, len(names)))
                for n, v in zip(names, args):
                    kw[n] = v
                kw = check_args(op, kw)
                if op == "token" and bench.board.station.ocpp is not None:
                    bench._conn(kw["c"])
                    ns["_then"] = (card, (bench, kw))  # the REPL waits for the CSMS's answer
                    return None
                r = getattr(bench, op)(**kw)
            except BenchError as e:
                print("error:", e)
                return None
            if op == "status":
                print(format_status(r))
            elif op == "help":
                for k, (h, a) in sorted(r["commands"].items()):
                    print("  %s(%s)  %s" % (k, ", ".join(a), h))
                print("  watch(c)  one status line a second until Enter (REPL only)")
                print("  help(plug) explains one command; Tab completes names; Up recalls a line")
            elif op == "log":
                for e in r["entries"]:
                    print("%d %d.%03d %s: %s" % (e["seq"], e["t"] // 1000, e["t"] % 1000, e["src"], e["msg"]))
            else:
                t = answer(op, kw, r, bench)
                if t is not None:
                    print(t)
                elif r:
                    print(r)
        ops[cmd] = op
        return cmd

    for op in COMMANDS:
        ns[op] = make(op)  # advance() answers that it needs the control channel

    def watch(c=None):
        if c is not None and not (isinstance(c, int) and 1 <= c <= 4):
            print("error: watch: c must be a connector number 1..4")
            return None
        ns["_then"] = (watching, (bench, c))  # the REPL loop runs it: it waits for the console
        return None

    def exit(*args):
        print(_EXIT_SAYS)

    ops[watch] = "watch"
    ops[exit] = "exit"
    ns["watch"] = watch
    ns["exit"] = exit
    ns["quit"] = exit
    ns["bench"] = bench
    names = {op: (tuple(a[0] for a in spec), tuple(x for a in spec if a[1] == "choice" for x in a[4]
                                                   if isinstance(x, str)))
             for op, (h, spec) in COMMANDS.items()}
    names["watch"] = (("c",), ())
    names["exit"] = ((), ())
    ns["_names"] = names
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


# --- the line editor ------------------------------------------------------------
# What MicroPython's own REPL gives a technician, beside the running charger:
# history (Up/Down, kept in RAM, bounded), Left/Right/Home/End, Ctrl-A/E/K/U,
# Backspace/Delete and Tab completion over the bench commands and their
# argument names. The line lives in one preallocated buffer; a key press
# allocates only what it writes to the console. Log lines that arrive while a
# line is typed are printed above it and the line is drawn again (the Log's
# echo goes through Editor.above). Printable ASCII only: the bench commands
# need nothing else.
_LINE_MAX = const(160)
_HISTORY = const(20)
PROMPT = ">>> "


class Editor:
    def __init__(self, out, echo, names):
        self.out = out
        self.echo = echo  # we draw the line: a raw terminal or a board's UART
        self.names = names  # completion: {command: (argument names, choices)}
        self.buf = bytearray(_LINE_MAX)
        self.n = 0  # characters in the line
        self.pos = 0  # the cursor
        self.hist = []
        self.hi = 0  # the history entry shown (len(hist): the line being typed)
        self.draft = ""  # that line, while Up shows older ones
        self.esc = 0  # escape sequence: 0 none, 1 ESC, 2 ESC [ (CSI), 3 ESC O
        self.escn = 0
        self.typing = False  # a prompt is on the console: log lines go above it
        self.log = None  # the log whose echo comes through above()
        self.log_out = None

    # -- the log's console lines --
    def attach(self, log):
        # Called before every key is awaited: a reboot on Unix makes a new
        # Log, which gets the same treatment (and the console level) as the last.
        if log is None or log is self.log:
            return
        if self.log is not None:
            log.echo_level = self.log.echo_level
        self.log = log
        self.log_out = log.echo
        if log.echo is not None:
            log.echo = self.above

    def above(self, line):
        out = self.log_out
        if out is None:
            return
        if self.echo and self.typing:
            self.out.write("\r\x1b[K")  # clear the line being typed
            out(line)
            self.draw()
        else:
            out(line)

    # -- the line --
    def text(self, a=0, b=-1):
        return bytes(self.buf[a:self.n if b < 0 else b]).decode()

    def set(self, t):
        t = t[:_LINE_MAX]
        self.n = self.pos = len(t)
        self.buf[:self.n] = t.encode()

    def prompt(self):
        self.out.write(PROMPT)
        self.typing = True

    def draw(self):
        if not self.echo:
            return
        w = self.out.write
        w("\r" + PROMPT)
        w(self.text())
        w("\x1b[K")
        if self.n > self.pos:
            w("\x1b[%dD" % (self.n - self.pos))

    def insert(self, t):
        buf = self.buf
        for ch in t:
            if self.n >= _LINE_MAX:
                break
            for i in range(self.n, self.pos, -1):
                buf[i] = buf[i - 1]
            buf[self.pos] = ord(ch)
            self.n += 1
            self.pos += 1
        if self.echo:
            if self.pos == self.n:
                self.out.write(t)
            else:
                self.draw()

    def delete(self, at):
        # Remove the character at `at` (Backspace: at = pos - 1).
        if not 0 <= at < self.n:
            return
        buf = self.buf
        for i in range(at, self.n - 1):
            buf[i] = buf[i + 1]
        self.n -= 1
        if self.pos > at:
            self.pos -= 1
        self.draw()

    def move(self, pos):
        pos = max(0, min(self.n, pos))
        if pos != self.pos and self.echo:
            d = pos - self.pos
            self.out.write("\x1b[%d%s" % (abs(d), "C" if d > 0 else "D"))
        self.pos = pos

    def recall(self, i):
        if not 0 <= i <= len(self.hist) or i == self.hi:
            return
        if self.hi == len(self.hist):
            self.draft = self.text()
        self.hi = i
        self.set(self.hist[i] if i < len(self.hist) else self.draft)
        self.draw()

    def enter(self):
        line = self.text().strip()
        self.n = self.pos = 0
        if line and (not self.hist or self.hist[-1] != line):
            self.hist.append(line)
            if len(self.hist) > _HISTORY:
                self.hist.pop(0)
        self.hi = len(self.hist)
        self.draft = ""
        self.typing = False
        if self.echo:
            self.out.write("\n")
        return line

    def drop(self):
        self.n = self.pos = 0
        self.hi = len(self.hist)
        self.typing = False

    def key(self, ch):
        # One character of input; returns the line on Enter, else None.
        o = ord(ch)
        if self.esc:
            return self._escape(ch)
        if ch == "\r" or ch == "\n":
            return self.enter()
        if 32 <= o < 127:
            self.insert(ch)
        elif o == 27:
            self.esc = 1
        elif o == 1:  # Ctrl-A
            self.move(0)
        elif o == 5:  # Ctrl-E
            self.move(self.n)
        elif o == 2:  # Ctrl-B
            self.move(self.pos - 1)
        elif o == 6:  # Ctrl-F
            self.move(self.pos + 1)
        elif o == 11:  # Ctrl-K: to the end of the line
            self.n = self.pos
            self.draw()
        elif o == 21:  # Ctrl-U: to the start of the line
            t = self.text(self.pos)
            self.set(t)
            self.pos = 0
            self.draw()
        elif o == 8 or o == 127:
            if self.pos:
                self.delete(self.pos - 1)
        elif o == 9:
            self.complete()
        elif o == 16:  # Ctrl-P, Ctrl-N: history as with Up, Down
            self.recall(self.hi - 1)
        elif o == 14:
            self.recall(self.hi + 1)
        return None

    def _escape(self, ch):
        if self.esc == 1:
            self.esc = 2 if ch == "[" else 3 if ch == "O" else 0
            self.escn = 0
            return None
        if "0" <= ch <= "9":
            self.escn = self.escn * 10 + ord(ch) - 48
            return None
        if ch == ";":  # a modifier follows (Ctrl-Right ...): the key counts
            self.escn = 0
            return None
        self.esc = 0
        if ch == "A":
            self.recall(self.hi - 1)
        elif ch == "B":
            self.recall(self.hi + 1)
        elif ch == "C":
            self.move(self.pos + 1)
        elif ch == "D":
            self.move(self.pos - 1)
        elif ch == "H":
            self.move(0)
        elif ch == "F":
            self.move(self.n)
        elif ch == "~":
            n = self.escn
            if n == 1 or n == 7:
                self.move(0)
            elif n == 4 or n == 8:
                self.move(self.n)
            elif n == 3:
                self.delete(self.pos)
        return None

    # -- Tab --
    def complete(self):
        buf = self.buf
        i = self.pos
        while i and (chr(buf[i - 1]).isalpha() or chr(buf[i - 1]).isdigit() or buf[i - 1] == 95):
            i -= 1
        word = self.text(i, self.pos)
        cands = self.candidates(i, word)
        if not cands:
            return
        common = cands[0]
        for c in cands[1:]:
            k = 0
            while k < len(common) and k < len(c) and common[k] == c[k]:
                k += 1
            common = common[:k]
        if len(common) > len(word):
            self.insert(common[len(word):])
        elif len(cands) > 1 and self.echo:
            self.out.write("\n" + "  ".join(cands) + "\n")
            self.draw()

    def candidates(self, start, word):
        # After "name(" or "," inside a bench call: its argument names (and,
        # after a quote, its choices); elsewhere the command names.
        line = self.text(0, start)
        depth = 0
        j = len(line) - 1
        while j >= 0:
            ch = line[j]
            if ch == ")":
                depth += 1
            elif ch == "(":
                if not depth:
                    break
                depth -= 1
            j -= 1
        if j >= 0:
            k = j
            while k and (line[k - 1].isalpha() or line[k - 1].isdigit() or line[k - 1] == "_"):
                k -= 1
            spec = self.names.get(line[k:j])
            if spec is not None:
                if line.endswith('"') or line.endswith("'"):
                    pool = spec[1]
                else:
                    pool = [a + "=" for a in spec[0]]
                return [c for c in pool if c.startswith(word)]
        return sorted(n + "(" for n in self.names if n.startswith(word))


def _tty_raw():
    # Unix: take the terminal out of line mode, so that the editor gets every
    # key and Ctrl-C comes as a character (the REPL decides what it does), but
    # keep its output processing ("\n" still starts a new line). Returns the
    # attributes to restore, or None when stdin is no terminal (a pipe: tests).
    try:
        import termios
        old = termios.tcgetattr(0)
        termios.setraw(0)
        a = termios.tcgetattr(0)
        a[1] = old[1]
        termios.tcsetattr(0, termios.TCSANOW, a)
        return old
    except Exception:
        return None


def _tty_restore(old):
    if old is not None:
        import termios
        termios.tcsetattr(0, termios.TCSANOW, old)


async def repl(ns, stream=None, raw=False, out=None):
    # raw: a board's UART: Ctrl-C comes in as a character that drops the line
    # instead of interrupting the charger, Ctrl-D reboots into maintenance
    # (the caller), and Ctrl-C [CR/LF] Ctrl-A is mpremote (HANDOVER). On Unix
    # the REPL puts the terminal in raw mode itself when stdin is one: the
    # first Ctrl-C drops the line, a second within 1 s ends the simulator
    # (KeyboardInterrupt: main's orderly stop), and Ctrl-D only says how to
    # leave: the charger keeps its console. On a pipe (tests) nothing is
    # echoed and Ctrl-C only drops the line.
    # Ends at end of input (returns None), on a board's Ctrl-D (None) or its
    # raw-REPL request (HANDOVER, kbd_intr(3) already restored).
    out = out or sys.stdout
    s = stream or asyncio.StreamReader(sys.stdin)
    tty = None if raw or stream is not None else _tty_raw()
    kbd = False
    if raw:
        try:
            import micropython
            micropython.kbd_intr(-1)
            kbd = True
        except (ImportError, AttributeError):
            pass
    ed = Editor(out, raw or tty is not None, ns.get("_names") or {})
    bench = ns.get("bench")
    board = getattr(bench, "board", None)
    hs = _IDLE
    last_c = None
    ed.prompt()
    try:
        while True:
            ed.attach(getattr(board, "log", None))
            b = await s.read(1)
            if not b:
                return None
            ch = b if isinstance(b, str) else b.decode()
            if raw:
                hs = handover_step(hs, ch)
                if hs == _REQUEST:
                    return HANDOVER  # no output here: the caller opens contactors first
            if ch == "\x03":  # Ctrl-C: drop the line; the charger keeps running
                now = real_ms()  # a person's double press: real time even under a simulated clock
                if tty is not None and last_c is not None and ticks_diff(now, last_c) < 1000:
                    out.write("^C\n")
                    raise KeyboardInterrupt  # main stops the charger in order
                last_c = now
                ed.drop()
                out.write("^C" + ("  (Ctrl-C again within 1 s ends the simulator)" if tty is not None else "")
                          + "\n" + PROMPT)  # one write: the prompt comes with it
                ed.typing = True
                continue
            if ch == "\x04":  # Ctrl-D
                if raw:
                    return None  # the board reboots into maintenance (it says so in its banner)
                if ed.n:
                    ed.delete(ed.pos)
                    continue
                out.write("\n(Ctrl-D: the bench stays, the charger needs its console; "
                          "Ctrl-C twice ends the simulator)\n")
                ed.prompt()
                continue
            line = ed.key(ch)
            if line is None:
                continue
            if line:
                run_line(line, ns)
                then = ns.get("_then")
                if then:  # a command that waits (watch, a card the CSMS decides on)
                    ns["_then"] = None
                    await then[0](s, out, *then[1])
            ed.prompt()
    finally:
        _tty_restore(tty)
        if kbd:
            micropython.kbd_intr(3)


async def card(s, out, bench, kw):
    # token() with a back office: the CSMS decides; wait for its answer (at
    # most 10 s) so that the next line, ev("C"), finds the card accepted.
    st = bench.board.station
    box = []

    async def ask():
        box.append(await st.ocpp.present_token(kw["c"], kw["tag"]))

    st.spawn(ask(), "token")
    for _ in range(100):
        if box:
            break
        await asyncio.sleep_ms(100)
    out.write("%s: %s%s\n" % (kw["tag"], box[0] if box else "asked the CSMS, no answer yet (log() shows it)",
                              "" if kw["c"] == 1 else " (connector %d)" % kw["c"]))


async def watching(s, out, bench, c):
    # watch(): one status line a second until a key (Enter) is pressed.
    import select
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    out.write("watching (one line a second); Enter stops\n")
    try:
        while True:
            try:
                out.write(status_line(bench.status(c), bench) + "\n")
            except Exception as e:
                out.write("error: %s\n" % e)
                return
            for _ in range(10):
                await asyncio.sleep_ms(100)
                if poll.poll(0):
                    await s.read(1)
                    return
    finally:
        poll.unregister(sys.stdin)


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
    except NameError as e:
        print("error: NameError: %s%s" % (e, _nearest(e, ns)))
    except Exception as e:  # a failing command must not stop the charger
        print("error: %s: %s" % (type(e).__name__, e))


def _nearest(e, ns):
    # A mistyped command: the nearest one (plgu -> plug?).
    t = str(e)
    a = t.find("'")
    b = t.find("'", a + 1)
    if a < 0 or b < 0:
        return ""
    word = t[a + 1:b]
    from firmware.core.config import distance, nearest
    known = [k for k in ns.get("_names", ()) if not k.startswith("_")]
    best = nearest(word, known) if known else None
    if best is None or distance(word, best) > max(1, len(word) // 2):
        return "; help() lists the commands"
    return "; %s?" % best

"""Send one request to a running simulator's control channel and print the reply.

    python tools/ctl.py status
    python tools/ctl.py plug 32              # arguments in the bench's order (plug(amps, c))
    python tools/ctl.py plug amps=32 c=2     # or by name
    python tools/ctl.py evopt soc_pct=95
    python tools/ctl.py '{"op": "ev", "state": "C"}'   # a whole JSON request
    python tools/ctl.py --port 7701 log n=5

Values are read as JSON where they parse (32, 16.5, true, null) and as text
otherwise (C, CARD1). The reply is printed as JSON; the exit status is 0 when
the charger answered "ok", 1 when it refused (its error on stderr), 2 for a
usage error or no simulator on the port. Plain Python, no netcat needed: the
same on every system.
"""
import argparse
import json
import socket
import sys

TIMEOUT_S = 60  # an "advance" of a simulated day answers when the day is done


class CtlError(Exception):
    pass


def _value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


class Channel:
    def __init__(self, host, port):
        try:
            self.sock = socket.create_connection((host, port), timeout=TIMEOUT_S)
        except OSError as e:
            raise CtlError("no simulator on %s:%d (%s); is make sim running? (--port)"
                           % (host, port, e.strerror or e))
        self.file = self.sock.makefile("rwb")

    def ask(self, req):
        self.file.write(json.dumps(req).encode() + b"\n")
        self.file.flush()
        line = self.file.readline()
        if not line:
            raise CtlError("the simulator closed the connection (a powercut or reboot?)")
        return json.loads(line)

    def close(self):
        self.sock.close()


def build(ch, words):
    """Command-line words -> one request dict (positional arguments named by
    asking the charger's help, so this tool never drifts from the bench)."""
    if len(words) == 1 and words[0].lstrip().startswith("{"):
        try:
            req = json.loads(words[0])
        except ValueError as e:
            raise CtlError("not a JSON request: %s" % e)
        if not isinstance(req, dict):
            raise CtlError("a JSON request must be an object")
        return req
    op, rest = words[0], words[1:]
    req = {"op": op}
    positional = [w for w in rest if "=" not in w]
    if positional:
        h = ch.ask({"op": "help"})
        spec = h.get("commands", {}).get(op)
        if spec is None:
            return req  # the charger names the unknown op itself
        names = spec[1]
        if len(positional) > len(names):
            raise CtlError("%s takes at most %d argument(s): %s" % (op, len(names), ", ".join(names) or "none"))
        req.update(zip(names, (_value(w) for w in positional)))
    for w in rest:
        if "=" in w:
            k, v = w.split("=", 1)
            req[k] = _value(v)
    return req


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python tools/ctl.py",
                                 description="One request to the simulator's control channel.",
                                 epilog="e.g. python tools/ctl.py plug 32; python tools/ctl.py status")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7700, help="control port (make sim's --port, default 7700)")
    ap.add_argument("op", help="a bench command (help lists them) or a JSON request")
    ap.add_argument("args", nargs="*", help="its arguments, in order or as name=value")
    a = ap.parse_args(argv)
    try:
        ch = Channel(a.host, a.port)
        try:
            reply = ch.ask(build(ch, [a.op] + a.args))
        finally:
            ch.close()
    except CtlError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        print("error: control channel: %s" % (e.strerror or e), file=sys.stderr)
        return 2
    try:
        print(json.dumps(reply, indent=1), flush=True)
    except BrokenPipeError:  # piped into head: the reader has what it wanted
        sys.stdout = None
    if not reply.get("ok"):
        print("error: %s" % reply.get("error"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

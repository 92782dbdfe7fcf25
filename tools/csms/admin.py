"""The back office's admin API (JSON over HTTP, on the files port) and the
text commands of the interactive prompt. Both drive the same CsmsServer.

GET  /api                          this list
GET  /api/chargepoints             known charge points: connection, boot, connectors
GET  /api/messages?cp=&action=&direction=&type=&after=&limit=
GET  /api/events?cp=&after=        connects, disconnects, refusals
GET  /api/transactions?cp=
GET  /api/files                    download/upload counters and uploads
POST /api/call/<cp>/<Action>       JSON payload -> {"ok": true, "result": {...}}
                                   or {"ok": false, "error": {"code", "description", "details"}}
                                   (?timeout=S, ?validate=0 skips the schema check)
POST /api/raw/<cp>                 the body goes out as one websocket text frame, unchanged
POST /api/drop/<cp>                drop the connection (?abort=0 for a close handshake)
POST /api/offline?seconds=S&how=refuse|reject    go away (for S seconds)
POST /api/online
POST /api/config                   {"boot_status": "Pending", "heartbeat_interval": 60,
                                    "default_id_tag_status": "Invalid",
                                    "id_tags": {"TAG1": "Blocked"}, ...}
"""

import json
import shlex

from .backoffice import CSMS_ACTIONS
from .chargepoint import CallErrorReceived, NotConnected
from .files import HttpError

try:
    from ocpp.exceptions import OCPPError
except ImportError:  # pragma: no cover
    OCPPError = Exception

CONFIG_KEYS = ("boot_status", "heartbeat_interval", "boot_retry_interval",
               "default_id_tag_status", "data_transfer_status", "sign_certificate_status")


def _flag(v, default=True):
    if v is None:
        return default
    return str(v).lower() not in ("0", "false", "no", "off")


async def call_outcome(csms, cp, action, payload, timeout=None, validate=True):
    """(http status, JSON object) for one CSMS-initiated CALL."""
    try:
        result = await csms.call(cp, action, payload, timeout=timeout, validate=validate)
        return 200, {"ok": True, "result": result}
    except CallErrorReceived as e:
        return 200, {"ok": False, "error": {"code": e.code, "description": e.description,
                                            "details": e.details}}
    except NotConnected as e:
        return 404, {"ok": False, "error": {"code": "NotConnected", "description": str(e)}}
    except TimeoutError as e:
        return 504, {"ok": False, "error": {"code": "Timeout", "description": str(e)}}
    except (ValueError, TypeError) as e:
        return 400, {"ok": False, "error": {"code": "BadRequest", "description": str(e)}}
    except OCPPError as e:  # the payload or the answer failed the 1.6 schema
        return 400, {"ok": False, "error": {"code": e.code, "description": e.description,
                                            "details": e.details}}


def apply_config(csms, cfg):
    """Change behaviour from a dict (admin API, prompt); returns what was set."""
    if not isinstance(cfg, dict):
        raise ValueError("config must be a JSON object")
    done = {}
    for k, v in cfg.items():
        if k in CONFIG_KEYS:
            setattr(csms.backoffice, k, v)
        elif k == "id_tags" and isinstance(v, dict):
            for tag, info in v.items():
                if isinstance(info, str):
                    csms.backoffice.set_id_tag(tag, info)
                else:
                    csms.backoffice.set_id_tag(tag, **info)
        elif k == "passwords" and isinstance(v, dict):
            for cp, pw in v.items():
                csms.set_password(cp, pw)
        else:
            raise ValueError("unknown config key %r (known: %s, id_tags, passwords)"
                             % (k, ", ".join(CONFIG_KEYS)))
        done[k] = v
    return done


INDEX_EXAMPLES = """Examples (charge point {cp}):
  curl {base}/api/chargepoints
  curl "{base}/api/messages?cp={cp}&limit=20"
  curl {base}/api/transactions
  curl -X POST -d '{{"type":"Soft"}}' {base}/api/call/{cp}/Reset
  curl -X POST -d '{{"idTag":"CARD2","connectorId":1}}' {base}/api/call/{cp}/RemoteStartTransaction
  curl -X POST -d '{{"key":"MeterValueSampleInterval","value":"10"}}' {base}/api/call/{cp}/ChangeConfiguration
  curl -X POST -d '{{"requestedMessage":"StatusNotification"}}' {base}/api/call/{cp}/TriggerMessage
  curl -X POST -d '{{"boot_status":"Rejected"}}' {base}/api/config
  curl -O {base}/firmware/<name>          firmware files ({base}/firmware lists them)
  curl -T diag.tar.gz {base}/upload/      uploads (a second one of the same name is kept beside it)
"""


class AdminApi:
    def __init__(self, csms):
        self.csms = csms

    def index(self, base):
        """The page at / : what this HTTP port serves, with examples."""
        cps = [c["id"] for c in self.csms.chargepoints()]
        head = "dev CSMS admin API at %s (JSON; tools/csms/README.md)\n\n" % base
        seen = "charge points seen: %s\n\n" % (", ".join(cps) if cps else "none yet")
        return (head + __doc__.split("\n\n", 1)[1].strip() + "\n\n" + seen
                + INDEX_EXAMPLES.format(base=base, cp=cps[0] if cps else "SIM0001"))

    async def __call__(self, req):
        try:
            return await self._route(req)
        except HttpError as e:
            return e.status, {"ok": False, "error": {"code": "HttpError", "description": str(e)}}
        except (ValueError, TypeError) as e:
            return 400, {"ok": False, "error": {"code": "BadRequest", "description": str(e)}}

    async def _route(self, req):
        csms, q, m = self.csms, req.query, req.method
        parts = [p for p in req.path.split("/") if p][1:]  # after "api"
        head = parts[0] if parts else ""
        if m == "GET":
            if head == "":
                return 200, {"ok": True, "help": __doc__.split("\n\n", 1)[1],
                             "actions": list(CSMS_ACTIONS)}
            if head == "chargepoints":
                return 200, {"ok": True, "chargepoints": csms.chargepoints()}
            if head == "messages":
                after = int(q["after"]) if "after" in q else None
                msgs = csms.messages(cp=q.get("cp"), action=q.get("action"),
                                     direction=q.get("direction"), type=q.get("type"), after=after)
                if "limit" in q:
                    msgs = msgs[-int(q["limit"]):]
                return 200, {"ok": True, "messages": [x.to_dict() for x in msgs]}
            if head == "events":
                after = int(q["after"]) if "after" in q else None
                return 200, {"ok": True, "events": [x.to_dict() for x in
                                                    csms.events(cp=q.get("cp"), after=after)]}
            if head == "transactions":
                return 200, {"ok": True, "transactions": csms.transactions(cp=q.get("cp"))}
            if head == "files":
                f = csms.files
                return 200, {"ok": True, "counters": dict(f.counters), "uploads": f.uploads}
        elif m == "POST":
            if head == "call" and len(parts) == 3:
                payload = req.json()
                timeout = float(q["timeout"]) if "timeout" in q else None
                return await call_outcome(csms, parts[1], parts[2], payload, timeout,
                                          _flag(q.get("validate")))
            if head == "raw" and len(parts) == 2:
                try:
                    await csms.send_raw(parts[1], req.body.decode("utf-8", "replace"))
                except NotConnected as e:
                    return 404, {"ok": False, "error": {"code": "NotConnected",
                                                        "description": str(e)}}
                return 200, {"ok": True}
            if head == "drop" and len(parts) == 2:
                await csms.drop(parts[1], abort=_flag(q.get("abort")))
                return 200, {"ok": True}
            if head == "offline":
                seconds = float(q["seconds"]) if "seconds" in q else None
                await csms.go_offline(seconds, how=q.get("how", "refuse"))
                return 200, {"ok": True, "offline_for": seconds}
            if head == "online":
                await csms.go_online()
                return 200, {"ok": True}
            if head == "config":
                return 200, {"ok": True, "set": apply_config(csms, req.json())}
        else:
            raise HttpError(405)
        raise HttpError(404, "no such API endpoint; GET /api lists them")


PROMPT_HELP = """commands:
  call CP Action {json}      send a CALL, e.g. call CP1 Reset {"type":"Soft"}
  raw CP text                send a websocket frame as is, e.g. raw CP1 [2,"x","Foo",{}]
  cps                        charge points
  msgs [N] [CP]              the last N messages (default 20)
  tx                         transactions
  offline [SECONDS] / online go away (and come back) / come back now
  drop CP                    drop one connection
  set KEY VALUE              boot_status, heartbeat_interval, default_id_tag_status, ...
  tag TAG STATUS [PARENT]    answer this idTag with this status
  help / quit"""


async def prompt_command(csms, line):
    """Run one prompt line; return the text to print. Never raises."""
    try:
        return await _prompt_command(csms, line.strip())
    except Exception as e:
        return "error: %s: %s" % (type(e).__name__, e)


async def _prompt_command(csms, line):
    if not line:
        return ""
    cmd, _, rest = line.partition(" ")
    rest = rest.strip()
    if cmd in ("help", "?"):
        return PROMPT_HELP
    if cmd == "call":
        args = rest.split(None, 2)
        if len(args) < 2:
            return "usage: call CP Action {json}"
        payload = json.loads(args[2]) if len(args) > 2 else {}
        status, obj = await call_outcome(csms, args[0], args[1], payload)
        return json.dumps(obj)
    if cmd == "raw":
        cp, _, text = rest.partition(" ")
        await csms.send_raw(cp, text)
        return "sent"
    if cmd == "cps":
        return "\n".join(_cp_line(c) for c in csms.chargepoints()) or "no charge points yet"
    if cmd == "msgs":
        args = rest.split()
        n = int(args[0]) if args and args[0].isdigit() else 20
        cp = next((a for a in args if not a.isdigit()), None)
        return "\n".join(x.line(csms.recorder.max_payload_log)
                         for x in csms.messages(cp=cp)[-n:]) or "no messages"
    if cmd == "tx":
        return "\n".join(json.dumps(t) for t in csms.transactions()) or "no transactions"
    if cmd == "offline":
        await csms.go_offline(float(rest) if rest else None)
        return "offline" + (" for %ss" % rest if rest else "")
    if cmd == "online":
        await csms.go_online()
        return "online"
    if cmd == "drop":
        await csms.drop(rest)
        return "dropped"
    if cmd == "set":
        key, _, value = rest.partition(" ")
        try:
            value = json.loads(value)
        except ValueError:
            pass
        return json.dumps(apply_config(csms, {key: value}))
    if cmd == "tag":
        args = shlex.split(rest)
        csms.backoffice.set_id_tag(args[0], args[1] if len(args) > 1 else "Accepted",
                                   args[2] if len(args) > 2 else None)
        return "ok"
    return "unknown command %r; try help" % cmd


def _cp_line(c):
    conns = " ".join("%s:%s" % (k, v.get("status")) for k, v in c["connectors"].items())
    boot = c["boot"] or {}
    return "%s %s boot=%s %s/%s fw=%s connectors[%s]" % (
        c["id"], "connected" if c["connected"] else "offline", c["boot_status"],
        boot.get("chargePointVendor"), boot.get("chargePointModel"),
        boot.get("firmwareVersion"), conns)

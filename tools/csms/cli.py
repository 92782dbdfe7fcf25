"""python -m tools.csms: the dev CSMS for a human (the back office of `make sim`).

Logs every message on one line (time, charge point, <- in / -> out, action,
compact payload), serves firmware files, uploads and the admin API on the
HTTP port, and reads commands from stdin when it is a terminal (or --stdin).
"""

import argparse
import asyncio
import datetime
import json
import os
import logging
import signal
import sys
import threading

from .admin import PROMPT_HELP, prompt_command
from .backoffice import ID_TAG_STATUSES
from .server import CsmsServer


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.csms",
                                description="Dev OCPP 1.6J CSMS (central system).")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--http-host", default=None,
                   help="listen address of the HTTP port (default: --host); the admin API "
                        "has no authentication")
    p.add_argument("--port", type=int, default=9000,
                   help="OCPP websocket port (default 9000; 0 picks a free one)")
    p.add_argument("--http-port", type=int, default=None,
                   help="files + admin HTTP port (default: --port + 1; 0 picks a free one; "
                        "-1: none)")
    p.add_argument("--data-dir", default="csms-data",
                   help="holds firmware/ (served) and uploads/ (default ./csms-data)")
    p.add_argument("--password", action="append", default=[], metavar="CP=PW",
                   help="HTTP Basic password for a charge point (repeatable)")
    p.add_argument("--auth-required", action="store_true",
                   help="refuse charge points that have no --password")
    p.add_argument("--tls-cert", help="server certificate (PEM): wss://")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument("--tls-client-ca", help="require client certificates from this CA (profile 3)")
    p.add_argument("--tls-port", type=int, default=None,
                   help="with --tls-cert: ws:// on --port and wss:// on this port at once "
                        "(0: a free one), for moving a charger from security profile 1 to 2")
    p.add_argument("--http-tls", action="store_true", help="serve the HTTP port over TLS too")
    p.add_argument("--boot-status", default="Accepted", choices=("Accepted", "Pending", "Rejected"))
    p.add_argument("--heartbeat-interval", type=int, default=300)
    p.add_argument("--boot-retry-interval", type=int, default=10)
    p.add_argument("--default-auth", default="Accepted", choices=ID_TAG_STATUSES,
                   help="idTagInfo status for idTags not given with --id-tag")
    p.add_argument("--id-tag", action="append", default=[], metavar="TAG=STATUS[:PARENT]",
                   help="answer this idTag so (repeatable), e.g. --id-tag BAD=Blocked")
    p.add_argument("--call-timeout", type=float, default=30.0)
    p.add_argument("--ping-interval", type=float, default=20.0,
                   help="websocket ping interval, s (0: no pings)")
    p.add_argument("--stdin", dest="stdin", action="store_true", default=None,
                   help="read commands from stdin (default: when it is a terminal)")
    p.add_argument("--no-stdin", dest="stdin", action="store_false")
    p.add_argument("--lax-datetime", action="store_true",
                   help="don't check date-time fields (RFC 3339) beyond the schema")
    p.add_argument("--keep-messages", type=int, default=100000,
                   help="messages kept in memory for the admin API (default 100000)")
    p.add_argument("--quiet", action="store_true", help="don't log messages")
    p.add_argument("--max-payload", type=int, default=400,
                   help="clip logged payloads to this many characters")
    p.add_argument("--ready-file", help="write {\"port\":..,\"http_port\":..} here when listening")
    p.add_argument("-v", "--verbose", action="store_true", help="library logs too")
    a = p.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    for opt in a.password:
        if "=" not in opt:
            p.error("--password takes CP=PW")
    return a


def build(a):
    passwords = dict(opt.split("=", 1) for opt in a.password)
    id_tags = {}
    for opt in a.id_tag:
        tag, _, rest = opt.partition("=")
        status, _, parent = (rest or "Accepted").partition(":")
        if status not in ID_TAG_STATUSES:
            raise SystemExit("--id-tag %s: status must be one of %s" % (opt, ID_TAG_STATUSES))
        id_tags[tag] = {"status": status, "parent_id_tag": parent or None}
    http_port = a.http_port
    if http_port is None:
        http_port = a.port + 1 if a.port else 0
    return CsmsServer(
        a.host, a.port, http_port=None if http_port < 0 else http_port, http_host=a.http_host,
        strict_datetime=not a.lax_datetime, keep_messages=a.keep_messages or None,
        data_dir=a.data_dir, passwords=passwords, auth_required=a.auth_required,
        tls_cert=a.tls_cert, tls_key=a.tls_key, tls_client_ca=a.tls_client_ca, tls_port=a.tls_port,
        http_tls=a.http_tls, call_timeout=a.call_timeout,
        ping_interval=a.ping_interval or None, max_payload_log=a.max_payload,
        boot_status=a.boot_status, heartbeat_interval=a.heartbeat_interval,
        boot_retry_interval=a.boot_retry_interval, default_id_tag_status=a.default_auth,
        id_tags=id_tags)


class StampedFormatter(logging.Formatter):
    """Each line starts with its time as ISO-8601 UTC with ms, the stamp the
    firmware's log uses, so csms.log and the charger's log line up. Message
    lines (tools.csms.msg) carry their own stamp: the time the frame was
    recorded."""

    def format(self, record):
        text = super().format(record)
        if record.name == "tools.csms.msg":
            return text
        t = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        return "%s %s" % (t.isoformat(timespec="milliseconds").replace("+00:00", "Z"), text)


def setup_logging(a):
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(StampedFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    for name in ("websockets", "tools.csms.websockets", "asyncio"):
        logging.getLogger(name).setLevel(logging.INFO if a.verbose else logging.WARNING)
    # The ocpp package logs each frame and a traceback per bad frame; the
    # recorder's one-liners say the same.
    logging.getLogger("ocpp").setLevel(logging.INFO if a.verbose else logging.WARNING)
    logging.getLogger("tools.csms.ocpp").setLevel(logging.INFO if a.verbose else logging.CRITICAL)
    if a.quiet:
        logging.getLogger("tools.csms.msg").setLevel(logging.WARNING)


def _stdin_reader(loop, csms, stop):
    """Thread: one command per line; EOF just ends the prompt, not the CSMS."""
    print("type help for commands", flush=True)
    for line in sys.stdin:
        if line.strip() in ("quit", "exit"):
            loop.call_soon_threadsafe(stop.set)
            return
        fut = asyncio.run_coroutine_threadsafe(prompt_command(csms, line), loop)
        try:
            out = fut.result()
        except Exception as e:  # the loop went away
            out = "error: %s" % e
        if out:
            print(out, flush=True)


async def run(a):
    csms = build(a)
    await csms.start_async()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    http = ("%s://%s:%d" % (csms.files.scheme, csms.http_host, csms.http_port)
            if csms.files else None)
    print("dev CSMS: OCPP 1.6J on %s<chargePointId>" % csms.url(), flush=True)
    if csms.tls_port is not None:
        print("  and on %s<chargePointId>" % csms.tls_url(), flush=True)
    if http:
        print("  firmware files %s/firmware/<name>  (from %s)" % (http, csms.files.firmware_dir))
        print("  uploads        %s/upload/<name>    (into %s)" % (http, csms.files.upload_dir))
        print("  admin          %s/api   e.g. curl -X POST -d '{\"type\":\"Soft\"}' "
              "%s/api/call/CP1/Reset" % (http, http), flush=True)
    if a.ready_file:
        # Written whole then renamed: a reader polling for it never sees it half written.
        with open(a.ready_file + ".tmp", "w") as f:
            json.dump({"port": csms.port, "http_port": csms.http_port, "url": csms.url(),
                       "tls_port": csms.tls_port}, f)
        os.replace(a.ready_file + ".tmp", a.ready_file)
    use_stdin = a.stdin if a.stdin is not None else _isatty(sys.stdin)
    if use_stdin:
        threading.Thread(target=_stdin_reader, args=(loop, csms, stop), daemon=True,
                         name="csms-stdin").start()
    try:
        await stop.wait()
    finally:
        await csms.stop_async()


def _isatty(f):
    try:
        return f is not None and f.isatty()
    except (ValueError, OSError):
        return False


def main(argv=None):
    a = parse_args(argv)
    setup_logging(a)
    try:
        asyncio.run(run(a))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        raise SystemExit("dev CSMS: %s" % e)


__doc__ += "\n" + PROMPT_HELP

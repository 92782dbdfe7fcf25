"""The dev CSMS: OCPP 1.6J over WebSocket, plus the HTTP side server.

    csms = CsmsServer(port=0, http_port=0, data_dir=tmp).start()   # own thread + loop
    csms.wait_for_sync("BootNotification", cp="CP1")
    csms.call_sync("CP1", "Reset", {"type": "Soft"})
    csms.stop()

or inside a running loop: `await csms.start_async()` ... `await csms.stop_async()`.
Coroutines (call, wait_for, send_raw, go_offline, ...) run on the CSMS's loop;
their `*_sync` twins may be called from any other thread. Queries
(messages, events, chargepoints, transactions) and behaviour changes
(configure, override, set_id_tag, set_password) are plain thread-safe calls.
"""

import asyncio
import base64
import binascii
import hmac
import logging
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from . import recorder as rec
from .admin import AdminApi, apply_config
from .backoffice import BackOffice
from .chargepoint import CsmsChargePoint, NotConnected
from .files import FileServer
from .tls import peer_subject, server_context

log = logging.getLogger("tools.csms")

SUBPROTOCOL = "ocpp1.6"
_AUTO = object()


class CsmsServer:
    def __init__(self, host="127.0.0.1", port=9000, *, http_port=None, http_host=None,
                 data_dir=None, firmware_dir=None, upload_dir=None,
                 passwords=None, auth_required=False,
                 tls_cert=None, tls_key=None, tls_client_ca=None, http_tls=False, tls_port=None,
                 call_timeout=10.0, ping_interval=20.0, ping_timeout=20.0, max_size=2 ** 20,
                 admin=True, max_payload_log=400, strict_datetime=True, keep_messages=None,
                 **behaviour):
        """host/port: the OCPP websocket listener (port 0: a free port, see .port).
        http_port: the files + admin HTTP server (None: none; 0: a free port).
        data_dir: holds firmware/ and uploads/ unless firmware_dir/upload_dir
        are given (default: a temporary directory).
        passwords: {cp_id: password} for HTTP Basic auth; auth_required also
        refuses charge points without a password. tls_cert/tls_key: wss://;
        tls_client_ca: require a client certificate from that CA (profile 3);
        http_tls: serve https:// with the same certificate. tls_port (with
        tls_cert): serve ws:// on `port` and wss:// on tls_port (0: a free
        one, see .tls_port) at once, for a charger moving from security
        profile 1 to 2.
        strict_datetime: check date-time fields (RFC 3339) in both directions,
        which the `ocpp` package's schema check skips. keep_messages: keep only
        about this many recorded items (None: all).
        behaviour: BackOffice options (boot_status, heartbeat_interval,
        boot_retry_interval, default_id_tag_status, id_tags, data_transfer_status,
        sign_certificate_status, first_transaction_id)."""
        self.host = host
        self.port = port
        self.http_host = http_host or host
        self.passwords = dict(passwords or {})
        self.auth_required = auth_required
        self.call_timeout = call_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_size = max_size
        # hostile knob: answer this subprotocol (None: no header) whatever is offered
        self.answer_subprotocol = _AUTO
        self.strict_datetime = strict_datetime
        self.recorder = rec.Recorder(max_payload_log, keep_messages)
        if data_dir is not None and "counters_path" not in behaviour:
            # A data directory of the caller's outlives the run: so do the counters.
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            behaviour["counters_path"] = str(Path(data_dir) / "counters.json")
        self.backoffice = BackOffice(**behaviour)
        self._ssl = server_context(tls_cert, tls_key, tls_client_ca) if tls_cert else None
        self.tls_port = tls_port if tls_cert else None
        self._tls_server = None
        self._tmp = None
        if data_dir is None and (firmware_dir is None or upload_dir is None):
            self._tmp = tempfile.TemporaryDirectory(prefix="csms-")
            data_dir = self._tmp.name
        data_dir = Path(data_dir) if data_dir else None
        self.files = None
        if http_port is not None:
            self.files = FileServer(firmware_dir or data_dir / "firmware",
                                    upload_dir or data_dir / "uploads",
                                    host=self.http_host, port=http_port,
                                    ssl=self._ssl if http_tls else None,
                                    api=AdminApi(self) if admin else None)
        self._cps = {}  # cp id -> CsmsChargePoint (connected now)
        self._ws_server = None
        self._old_servers = []
        self._offline = None  # None, "refuse" or "reject"
        self._online_timer = None
        self._online_task = None
        self._loop = None
        self._thread = None
        self._stop_event = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def scheme(self):
        return "wss" if self._ssl and self.tls_port is None else "ws"

    def tls_url(self, cp_id=""):
        """With tls_port: the wss:// URL beside the ws:// one."""
        return "wss://%s:%d/%s" % (self.host, self.tls_port, urllib.parse.quote(cp_id))

    @property
    def http_port(self):
        return self.files.port if self.files else None

    def url(self, cp_id=""):
        """The URL a charge point connects to: ws://host:port/<cp_id>."""
        return "%s://%s:%d/%s" % (self.scheme, self.host, self.port, urllib.parse.quote(cp_id))

    def file_url(self, name=""):
        return "%s://%s:%d/firmware/%s" % (self.files.scheme, self.http_host, self.files.port,
                                           urllib.parse.quote(name))

    def upload_url(self, name=""):
        return "%s://%s:%d/upload/%s" % (self.files.scheme, self.http_host, self.files.port,
                                         urllib.parse.quote(name))

    @property
    def admin_url(self):
        return "%s://%s:%d/api" % (self.files.scheme, self.http_host, self.files.port)

    async def start_async(self):
        """Start listening on the running loop; returns once listening."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        await self._listen()
        if self.files is not None:
            await self.files.start()
        log.debug("CSMS listening on %s<chargePointId> (OCPP 1.6J)%s", self.url(),
                 "; files and admin on %s://%s:%d" % (self.files.scheme, self.http_host,
                                                      self.files.port) if self.files else "")
        return self

    async def stop_async(self):
        if self._online_timer:
            self._online_timer.cancel()
        servers = self._old_servers + [x for x in (self._ws_server, self._tls_server) if x]
        self._ws_server, self._tls_server, self._old_servers = None, None, []
        for s in servers:
            s.close()
        for cp in list(self._cps.values()):
            cp._connection.transport.abort()
        for s in servers:
            try:
                await asyncio.wait_for(s.wait_closed(), 5)
            except asyncio.TimeoutError:
                log.warning("websocket server did not close in time")
        if self.files is not None:
            await self.files.stop()

    def start(self):
        """Run the CSMS in a thread with its own loop; returns once listening."""
        ready = threading.Event()
        failure = []

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as e:
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_until_complete(self._stop_event.wait())
                loop.run_until_complete(self.stop_async())
            finally:
                _cancel_all(loop)
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        self._thread = threading.Thread(target=run, name="csms", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self):
        """Stop the thread started by start() (or nothing if not started)."""
        if self._thread is not None:
            if self._loop is not None and not self._loop.is_closed():
                try:
                    self._loop.call_soon_threadsafe(self._stop_event.set)
                except RuntimeError:
                    pass
            self._thread.join(10)
            self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    async def __aenter__(self):
        return await self.start_async()

    async def __aexit__(self, *exc):
        await self.stop_async()

    def _not_on_loop(self):
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is self._loop:
            raise RuntimeError("on the CSMS loop: await the coroutine instead of *_sync")

    def _sync(self, coro, timeout=None):
        """Run a coroutine on the CSMS loop from another thread."""
        if self._loop is None or self._loop.is_closed():
            coro.close()
            raise RuntimeError("CSMS not running")
        try:
            self._not_on_loop()
        except RuntimeError:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ---------------------------------------------------------------- websocket side

    async def _listen(self):
        both = self.tls_port is not None
        self._ws_server = await self._serve(self.port, None if both else self._ssl)
        if not self.port:
            self.port = self._ws_server.sockets[0].getsockname()[1]
        if both:
            self._tls_server = await self._serve(self.tls_port, self._ssl)
            if not self.tls_port:
                self.tls_port = self._tls_server.sockets[0].getsockname()[1]

    def _serve(self, port, ssl):
        return serve(
            self._handler, self.host, port, ssl=ssl,
            process_request=self._process_request, select_subprotocol=self._select_subprotocol,
            ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
            max_size=self.max_size, logger=logging.getLogger("tools.csms.websockets"))

    def _process_request(self, connection, request):
        path = urllib.parse.urlsplit(request.path).path
        cp_id = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
        connection.csms_cp_id = cp_id
        remote = _remote(connection)
        if not cp_id:
            self.recorder.event("?", rec.REFUSED, reason="no charge point id in path",
                                path=request.path, remote=remote)
            return connection.respond(404, "The URL must end with the charge point id.\n")
        if self._offline == "reject":
            self.recorder.event(cp_id, rec.REFUSED, reason="offline", remote=remote)
            return connection.respond(503, "CSMS offline.\n")
        expected = self.passwords.get(cp_id)
        if expected is not None or self.auth_required:
            got = _basic_auth(request.headers.get("Authorization"))
            ok = (got is not None and expected is not None and got[0] == cp_id
                  and hmac.compare_digest(got[1].encode("utf-8", "surrogateescape"),
                                          expected.encode("utf-8", "surrogateescape")))
            if not ok:
                self.recorder.event(cp_id, rec.REFUSED, remote=remote,
                                    reason="bad credentials" if got else "no credentials",
                                    user=got[0] if got else None)
                r = connection.respond(401, "Unauthorized.\n")
                r.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
                return r
        return None

    def _select_subprotocol(self, connection, offered):
        connection.csms_offered = list(offered)
        if self.answer_subprotocol is not _AUTO:
            return self.answer_subprotocol
        # OCPP-J: without a shared subprotocol, complete the handshake without
        # one and close at once (in _handler).
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    async def _handler(self, ws):
        cp_id = getattr(ws, "csms_cp_id", "?")
        offered = getattr(ws, "csms_offered", [])
        remote = _remote(ws)
        if SUBPROTOCOL not in offered:
            self.recorder.event(cp_id, rec.REFUSED, reason="subprotocol", offered=offered,
                                remote=remote)
            await ws.close(1002, "subprotocol ocpp1.6 required")
            return
        old = self._cps.get(cp_id)
        if old is not None:  # the same charge point again: the new link wins
            log.info("%s: new connection replaces the old one", cp_id)
            old._connection.transport.abort()
        cp = CsmsChargePoint(cp_id, ws, self)
        self._cps[cp_id] = cp
        info = self.backoffice.info(cp_id)
        tls = ws.transport.get_extra_info("sslcontext") is not None
        tls_peer = peer_subject(ws.transport) if tls else None
        tls_serial = None
        if tls_peer:
            try:
                tls_serial = ws.transport.get_extra_info("peercert").get("serialNumber")
            except Exception:
                pass
        with self.backoffice._lock:
            info.connected, info.remote, info.path = True, remote, ws.request.path
            info.subprotocol, info.tls_peer = ws.subprotocol, tls_peer
            info.connected_since = time.time()
            info.connections += 1
        self.recorder.event(cp_id, rec.CONNECT, remote=remote, path=ws.request.path,
                            subprotocol=ws.subprotocol, tls=tls, tls_peer=tls_peer, tls_serial=tls_serial,
                            user=(_basic_auth(ws.request.headers.get("Authorization")) or (None,))[0])
        try:
            await cp.start()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("%s: connection handler failed", cp_id)
        finally:
            if self._cps.get(cp_id) is cp:
                del self._cps[cp_id]
                info.connected = False
            self.recorder.event(cp_id, rec.DISCONNECT, code=ws.close_code,
                                reason=ws.close_reason, remote=remote)

    def _cp(self, cp_id):
        cp = self._cps.get(cp_id)
        if cp is None:
            raise NotConnected("charge point %r is not connected" % cp_id)
        return cp

    def connected(self, cp_id=None):
        """Is this charge point connected now? Without an id: the connected ids."""
        if cp_id is None:
            return sorted(self._cps)
        return cp_id in self._cps

    def connection(self, cp_id):
        """The websockets ServerConnection of a connected charge point, for
        anything the helpers here don't cover (ping, fragmented send, ...)."""
        return self._cp(cp_id)._connection

    def set_tls_cert(self, cert, key):
        """Serve another server certificate from the next TLS handshake on
        (e.g. an invalid one, OCTT TC_078); connections up now keep theirs."""
        self._ssl.load_cert_chain(str(cert), str(key))

    def set_password(self, cp_id, password):
        """HTTP Basic password for a charge point (None: no check for it)."""
        if password is None:
            self.passwords.pop(cp_id, None)
        else:
            self.passwords[cp_id] = password

    # ---- CSMS-initiated messages ----

    async def call(self, cp_id, action, payload=None, timeout=None, validate=True):
        """Send a CALL to a connected charge point; return the CALLRESULT payload.

        `action` is a CSMS-initiated 1.6 action name and `payload` a camelCase
        dict (or pass an ocpp.v16.call dataclass as payload and action=None).
        Raises CallErrorReceived (.code, .description, .details) for a
        CALLERROR, TimeoutError, NotConnected, and ocpp's validation errors
        when `validate` and the payload or answer breaks the 1.6 schema."""
        if not isinstance(action, str) and payload is None:
            action, payload = None, action
        return await self._cp(cp_id).call_action(action, payload, timeout, validate)

    def call_sync(self, cp_id, action, payload=None, timeout=None, validate=True):
        t = self.call_timeout if timeout is None else timeout
        return self._sync(self.call(cp_id, action, payload, timeout, validate), t + 5)

    async def send_raw(self, cp_id, frames):
        """Send text (or bytes) frames exactly as given: malformed JSON, wrong
        types, oversized, unknown actions, floods (a list goes out back to back).
        A raw CALL's answer is recorded with its action; wait_for(unique_id=...)."""
        await self._cp(cp_id).send_raw(frames)

    def send_raw_sync(self, cp_id, frames, timeout=30):
        return self._sync(self.send_raw(cp_id, frames), timeout)

    # ---- going away ----

    async def drop(self, cp_id, abort=True, code=1001, reason=""):
        """Drop one charge point's connection: TCP abort (like a lost network),
        or a close handshake with this code. It may reconnect at once."""
        cp = self._cps.get(cp_id)
        if cp is None:
            return
        ws = cp._connection
        if abort:
            ws.transport.abort()
        else:
            try:
                await asyncio.wait_for(ws.close(code, reason), 3)
            except asyncio.TimeoutError:
                ws.transport.abort()
        await asyncio.sleep(0)

    def drop_sync(self, cp_id, abort=True, code=1001, reason=""):
        return self._sync(self.drop(cp_id, abort, code, reason), 10)

    async def go_offline(self, seconds=None, how="refuse", abort=True):
        """Drop every connection and refuse new ones, for `seconds` (None: until
        go_online). how="refuse": stop listening (connection refused);
        how="reject": accept TCP but answer the handshake with HTTP 503."""
        if how not in ("refuse", "reject"):
            raise ValueError("how must be 'refuse' or 'reject'")
        if self._online_timer:
            self._online_timer.cancel()
            self._online_timer = None
        if how == "refuse" and self._ws_server is not None:
            for srv in (self._ws_server, self._tls_server):
                if srv is not None:
                    srv.close(close_connections=False)
                    self._old_servers.append(srv)
            self._ws_server = self._tls_server = None
        elif how == "reject" and self._ws_server is None:
            await self._listen()
        self._offline = how
        self.recorder.event("*", rec.OFFLINE, how=how, seconds=seconds)
        await asyncio.gather(*(self.drop(cp_id, abort) for cp_id in list(self._cps)))
        for _ in range(100):  # let the handlers see their connections end
            if not self._cps:
                break
            await asyncio.sleep(0.01)
        if seconds is not None:
            self._online_timer = self._loop.call_later(seconds, self._online_later)

    def go_offline_sync(self, seconds=None, how="refuse", abort=True):
        return self._sync(self.go_offline(seconds, how, abort), 30)

    def _online_later(self):
        self._online_timer = None
        self._online_task = self._loop.create_task(self.go_online())

    async def go_online(self):
        if self._online_timer:
            self._online_timer.cancel()
            self._online_timer = None
        if self._offline is None:
            return
        if self._ws_server is None:
            await self._listen()
        self._offline = None
        self.recorder.event("*", rec.ONLINE)

    def go_online_sync(self):
        return self._sync(self.go_online(), 30)

    @property
    def offline(self):
        return self._offline is not None

    # ---------------------------------------------------------------- recording

    def messages(self, cp=None, action=None, direction=None, type=None, unique_id=None,
                 after=None, predicate=None):
        """Recorded frames, oldest first, filtered: direction "in" (from the
        charge point) or "out"; type CALL/CALLRESULT/CALLERROR/INVALID;
        after=a mark() or a message's seq; predicate(message) -> bool."""
        return self.recorder.messages(cp, action, direction, type, unique_id, after, predicate)

    def events(self, cp=None, type=None, after=None):
        """Connection events: CONNECT, DISCONNECT, REFUSED (cp "*": OFFLINE, ONLINE)."""
        return self.recorder.events(cp, type, after)

    def mark(self):
        """The current end of the record; wait_for(after=mark) sees only newer items."""
        return self.recorder.mark()

    def subscribe(self, fn):
        """fn(message) for every frame and event from now on (called on the CSMS loop)."""
        self.recorder.subscribe(fn)

    async def wait_for(self, action=None, cp=None, direction=rec.IN, type=None, timeout=10.0,
                       after=None, unique_id=None, predicate=None):
        """The first recorded frame (earlier or later) that matches; by default a
        frame from the charge point. after=mark() for only new ones."""
        return await self.recorder.wait_async(
            timeout, cp=cp, action=action, direction=direction, type=type, unique_id=unique_id,
            after=after, predicate=predicate)

    def wait_for_sync(self, action=None, cp=None, direction=rec.IN, type=None, timeout=10.0,
                      after=None, unique_id=None, predicate=None):
        """wait_for for other threads; blocks, raises TimeoutError."""
        self._not_on_loop()
        return self.recorder.wait_sync(
            timeout, cp=cp, action=action, direction=direction, type=type, unique_id=unique_id,
            after=after, predicate=predicate)

    def wait_event_sync(self, type, cp=None, timeout=10.0, after=None):
        """Block until a connection event (CONNECT, DISCONNECT, REFUSED, ...)."""
        self._not_on_loop()
        return self.recorder.wait_sync(timeout, cp=cp, type=type, after=after, events=True)

    def wait_connected_sync(self, cp_id, timeout=10.0):
        """Block until this charge point is connected (now or later)."""
        self._not_on_loop()
        mark = self.mark()
        if self.connected(cp_id):
            return True
        self.recorder.wait_sync(timeout, cp=cp_id, type=rec.CONNECT, after=mark, events=True)
        return True

    def wait_disconnected_sync(self, cp_id, timeout=10.0):
        """Block until this charge point is not connected (now or later)."""
        self._not_on_loop()
        mark = self.mark()
        if not self.connected(cp_id):
            return True
        self.recorder.wait_sync(timeout, cp=cp_id, type=rec.DISCONNECT, after=mark, events=True)
        return True

    # ---------------------------------------------------------------- behaviour, state

    def configure(self, **kw):
        """Set behaviour: boot_status, heartbeat_interval, boot_retry_interval,
        default_id_tag_status, data_transfer_status, sign_certificate_status."""
        return apply_config(self, kw)

    def override(self, action, response, cp=None, times=None):
        """Script the answer to a charge point's `action`: a payload dict, a
        Reply (delay / error / never), NO_REPLY, or fn(cp_id, payload) returning
        one of those or None for the normal answer. See BackOffice.override."""
        return self.backoffice.override(action, response, cp, times)

    def clear_overrides(self, action=None, cp=None):
        self.backoffice.clear_overrides(action, cp)

    def set_id_tag(self, id_tag, status="Accepted", parent_id_tag=None, expiry_date=None):
        self.backoffice.set_id_tag(id_tag, status, parent_id_tag, expiry_date)

    def chargepoints(self):
        return self.backoffice.chargepoints()

    def chargepoint(self, cp_id):
        """What the CSMS knows of one charge point (dict), or None."""
        for cp in self.backoffice.chargepoints():
            if cp["id"] == cp_id:
                return cp
        return None

    def transactions(self, cp=None):
        return self.backoffice.transactions(cp)


def _cancel_all(loop):
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _remote(connection):
    try:
        addr = connection.remote_address
        return "%s:%s" % addr[:2] if addr else None
    except Exception:
        return None


def _basic_auth(header):
    """(user, password) from an Authorization: Basic header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None

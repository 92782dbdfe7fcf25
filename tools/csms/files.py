"""The CSMS's HTTP side server: firmware downloads, diagnostics/log uploads, admin.

GET/HEAD /firmware/<name>  a file from `firmware_dir`, with single-range
                           `Range: bytes=a-b` support (206/416) so a download
                           can resume; GET /firmware/ lists the files
PUT /upload/<name>         the raw body is stored as `upload_dir/<name>`
POST /upload/<name>        raw body, or multipart/form-data (the first file
POST /upload/              part; its filename when the URL gives none)
/api/...                   handed to the admin API (admin.py), if any

A small HTTP/1.1 server on asyncio streams, one request per connection.
Test knobs (attributes, change any time): `download_status` / `upload_status`
(answer with this HTTP status instead), `rate_limit` (bytes/s for
downloads), `drop_after` (close a download after sending this many body
bytes, to exercise resume). Counters in `counters`, each request in `log`,
each stored upload in `uploads`.
"""

import asyncio
import collections
import email.utils
import json
import logging
import os
import re
import threading
import time
import urllib.parse
from pathlib import Path

log = logging.getLogger("tools.csms.http")

REASONS = {200: "OK", 201: "Created", 204: "No Content", 206: "Partial Content",
           400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
           413: "Content Too Large", 416: "Range Not Satisfiable",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}

CHUNK = 64 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9._\-+=@,]")


class HttpError(Exception):
    def __init__(self, status, text=""):
        super().__init__(text or REASONS.get(status, ""))
        self.status = status


class Request:
    def __init__(self, method, target, version, headers, remote):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # lower-case name -> value (last one wins)
        self.remote = remote
        split = urllib.parse.urlsplit(target)
        self.path = urllib.parse.unquote(split.path)
        self.query = dict(urllib.parse.parse_qsl(split.query))
        self.body = b""

    def json(self):
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise HttpError(400, "body is not JSON: %s" % e) from None


def safe_name(name):
    """A plain file name from an URL or form field: no directories, no dot names."""
    name = _SAFE.sub("_", os.path.basename(name.replace("\\", "/")))
    if name in ("", ".", ".."):
        return None
    return name[:200]


def parse_range(header, size):
    """(start, end) inclusive for one `bytes=` range; None to ignore the header
    (absent, malformed, several ranges); "unsatisfiable" for a 416."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    first, last = m.groups()
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(size - n, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignore, as RFC 9110 says
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def parse_multipart(body, content_type):
    """[(headers dict, name, filename, data)] of a multipart/form-data body."""
    m = re.search(r'boundary=(?:"([^"]+)"|([^;\s]+))', content_type or "")
    if not m:
        raise HttpError(400, "multipart body without boundary")
    boundary = (m.group(1) or m.group(2)).encode("latin-1")
    parts = []
    for chunk in (b"\r\n" + body).split(b"\r\n--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        disp = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disp)
        filename = re.search(r'\bfilename="([^"]*)"', disp)
        parts.append((headers, name.group(1) if name else None,
                      filename.group(1) if filename else None, data))
    return parts


class FileServer:
    def __init__(self, firmware_dir, upload_dir, host="127.0.0.1", port=0, ssl=None,
                 api=None, max_body=256 * 1024 * 1024, header_timeout=30.0, body_timeout=300.0):
        self.firmware_dir = Path(firmware_dir)
        self.upload_dir = Path(upload_dir)
        self.host = host
        self.port = port
        self.ssl = ssl
        self.api = api  # async callable(Request) -> (status, obj) for /api/...
        self.max_body = max_body
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        # test knobs
        self.download_status = None
        self.upload_status = None
        self.rate_limit = None
        self.drop_after = None
        # what happened
        self.counters = collections.Counter()
        self.log = []  # one dict per request
        self.uploads = []  # one dict per stored upload
        self._cond = threading.Condition()
        self._server = None

    @property
    def scheme(self):
        return "https" if self.ssl else "http"

    async def start(self):
        self.firmware_dir.mkdir(parents=True, exist_ok=True)
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self.ssl,
                                                  limit=64 * 1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self):
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass
            self._server = None

    # ---- helpers for tests ----

    def add_firmware(self, name, data):
        """Put a file in the firmware directory; returns its path."""
        p = self.firmware_dir / safe_name(name)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p

    def wait_for_upload(self, name=None, timeout=10.0, after=0):
        """Block until an upload (named `name`, if given) beyond the first
        `after` uploads has been stored; return its record."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for u in self.uploads[after:]:
                    if name is None or u["name"] == name:
                        return u
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no upload %r within %ss" % (name, timeout))
                self._cond.wait(left)

    # ---- the server ----

    async def _serve(self, reader, writer):
        peer = writer.get_extra_info("peername")
        remote = "%s:%s" % peer[:2] if peer else None
        entry = {"time": time.time(), "remote": remote, "method": None, "path": None,
                 "status": None, "bytes": 0}
        try:
            req = await self._read_request(reader, writer, remote)
            entry["method"], entry["path"] = req.method, req.path
            entry["range"] = req.headers.get("range")
            self.counters["requests"] += 1
            await self._dispatch(req, reader, writer, entry)
        except HttpError as e:
            self.counters["errors"] += 1
            await self._try_respond(writer, entry, e.status, str(e) + "\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            pass
        except Exception:
            log.exception("HTTP request failed")
            self.counters["errors"] += 1
            await self._try_respond(writer, entry, 500, "internal error\n")
        finally:
            if entry["method"] is not None or entry["status"] is not None:
                self.log.append(entry)
                log.info("%s %s %s -> %s (%s bytes)", remote, entry["method"], entry["path"],
                         entry["status"], entry["bytes"])
            try:
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 2)
            except Exception:
                pass

    async def _try_respond(self, writer, entry, status, text):
        try:
            await self._respond(writer, entry, status, text)
        except Exception:  # the client is gone
            pass

    async def _read_request(self, reader, writer, remote):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.header_timeout)
        except asyncio.LimitOverrunError:
            raise HttpError(431) from None
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                raise
            raise HttpError(400, "incomplete request") from None
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise HttpError(400, "bad request line") from None
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        req = Request(method.upper(), target, version, headers, remote)
        if method.upper() in ("POST", "PUT"):
            req.body = await asyncio.wait_for(self._read_body(req, reader, writer),
                                              self.body_timeout)
        return req

    async def _read_body(self, req, reader, writer):
        h = req.headers
        if h.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if "chunked" in h.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                line = await reader.readuntil(b"\r\n")
                try:
                    n = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise HttpError(400, "bad chunk size") from None
                if n == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    return bytes(body)
                if len(body) + n > self.max_body:
                    raise HttpError(413)
                body += await reader.readexactly(n)
                await reader.readexactly(2)
        if "content-length" not in h:
            if req.method == "PUT":
                raise HttpError(411)
            return b""
        try:
            n = int(h["content-length"])
        except ValueError:
            raise HttpError(400, "bad Content-Length") from None
        if n < 0:
            raise HttpError(400, "bad Content-Length")
        if n > self.max_body:
            raise HttpError(413)
        return await reader.readexactly(n)

    async def _dispatch(self, req, reader, writer, entry):
        p = req.path
        if p == "/" and self.api is not None and hasattr(self.api, "index"):
            if req.method not in ("GET", "HEAD"):
                raise HttpError(405)
            page = self.api.index("%s://%s" % (self.scheme, req.headers.get("host") or
                                               "%s:%d" % (self.host, self.port)))
            await self._respond(writer, entry, 200, page)
        elif p == "/api" or p.startswith("/api/"):
            if self.api is None:
                raise HttpError(404, "no admin API here")
            status, obj = await self.api(req)
            body = json.dumps(obj, indent=1, default=str).encode() + b"\n"
            await self._respond(writer, entry, status, body, "application/json")
        elif p == "/firmware" or p == "/firmware/":
            if req.method not in ("GET", "HEAD"):
                raise HttpError(405)
            files = [{"name": f.name, "size": f.stat().st_size}
                     for f in sorted(self.firmware_dir.iterdir()) if f.is_file()]
            await self._respond(writer, entry, 200, json.dumps(files).encode(), "application/json")
        elif p.startswith("/firmware/"):
            if req.method not in ("GET", "HEAD"):
                raise HttpError(405)
            await self._download(req, writer, entry, p[len("/firmware/"):])
        elif p == "/upload" or p.startswith("/upload/"):
            if req.method not in ("PUT", "POST"):
                raise HttpError(405)
            await self._upload(req, writer, entry, p[len("/upload/"):])
        else:
            raise HttpError(404)

    async def _download(self, req, writer, entry, name):
        self.counters["downloads"] += 1
        fname = safe_name(name)
        path = self.firmware_dir / fname if fname else None
        if self.download_status is not None:
            raise HttpError(self.download_status, "download refused (test)")
        if path is None or not path.is_file():
            self.counters["not_found"] += 1
            raise HttpError(404, "no such firmware file")
        size = path.stat().st_size
        rng = parse_range(req.headers.get("range"), size)
        headers = {"Accept-Ranges": "bytes",
                   "Last-Modified": email.utils.formatdate(path.stat().st_mtime, usegmt=True)}
        if rng == "unsatisfiable":
            self.counters["range_unsatisfiable"] += 1
            headers["Content-Range"] = "bytes */%d" % size
            await self._respond(writer, entry, 416, b"", headers=headers)
            return
        if rng is None:
            status, start, end = 200, 0, size - 1
        else:
            self.counters["range_requests"] += 1
            status, (start, end) = 206, rng
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, size)
        length = end - start + 1
        await self._send_head(writer, entry, status, length, "application/octet-stream", headers)
        if req.method == "HEAD":
            return
        sent = 0
        with open(path, "rb") as f:
            f.seek(start)
            while sent < length:
                n = min(CHUNK, length - sent)
                if self.rate_limit:
                    n = min(n, max(int(self.rate_limit) // 10, 1))
                if self.drop_after is not None:
                    n = min(n, self.drop_after - sent)
                    if n <= 0:
                        self.counters["dropped"] += 1
                        writer.transport.abort()
                        return
                data = f.read(n)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                sent += len(data)
                entry["bytes"] = sent
                self.counters["download_bytes"] += len(data)
                if self.rate_limit:
                    await asyncio.sleep(len(data) / float(self.rate_limit))
        if sent == length:
            self.counters["downloads_complete"] += 1

    async def _upload(self, req, writer, entry, name):
        self.counters["upload_requests"] += 1
        if self.upload_status is not None:
            raise HttpError(self.upload_status, "upload refused (test)")
        ctype = req.headers.get("content-type", "")
        data, form_name = req.body, None
        if req.method == "POST" and ctype.lower().startswith("multipart/form-data"):
            parts = parse_multipart(req.body, ctype)
            files = [p for p in parts if p[2] is not None] or parts
            if not files:
                raise HttpError(400, "multipart body without a part")
            _, _, form_name, data = files[0]
        fname = safe_name(name) or (safe_name(form_name) if form_name else None)
        if fname is None:
            fname = "upload-%d.bin" % (len(self.uploads) + 1)
        path = self.upload_dir / fname
        wanted = fname
        n = 1
        while path.exists():
            # A second upload of the same name keeps both: diag.tar.gz -> diag-2.tar.gz.
            n += 1
            stem, dot, ext = wanted.partition(".")
            fname = "%s-%d%s%s" % (stem, n, dot, ext)
            path = self.upload_dir / fname
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        rec = {"time": time.time(), "name": fname, "path": str(path), "size": len(data),
               "method": req.method, "content_type": ctype, "remote": req.remote}
        if fname != wanted:
            rec["renamed_from"] = wanted
        with self._cond:
            self.uploads.append(rec)
            self._cond.notify_all()
        self.counters["uploads"] += 1
        self.counters["upload_bytes"] += len(data)
        answer = {"stored": fname, "size": len(data)}
        if fname != wanted:
            answer["note"] = "%s already existed; kept both, this one is %s" % (wanted, fname)
        body = json.dumps(answer).encode() + b"\n"
        await self._respond(writer, entry, 201 if req.method == "PUT" else 200, body,
                            "application/json")

    async def _send_head(self, writer, entry, status, length, ctype, headers=None):
        entry["status"] = status
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Unknown")),
                 "Date: " + email.utils.formatdate(usegmt=True),
                 "Server: dev-csms", "Connection: close",
                 "Content-Length: %d" % length]
        if ctype:
            lines.append("Content-Type: " + ctype)
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()

    async def _respond(self, writer, entry, status, body=b"", ctype="text/plain; charset=utf-8",
                       headers=None):
        if isinstance(body, str):
            body = body.encode()
        await self._send_head(writer, entry, status, len(body), ctype if body else None, headers)
        if body and entry.get("method") != "HEAD":
            writer.write(body)
            await writer.drain()
        entry["bytes"] = len(body)

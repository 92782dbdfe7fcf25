# Firmware update bundles on the device: read and check the manifest, verify
# the signature and certificate chain, stream the files out. Nothing here
# holds a whole bundle (or a whole file of it) in RAM.
#
# Bundle format 1 (written by tools/release.py, whose docstring is the
# reference), integers big-endian:
#   0   b"CHARGER-FW"          magic
#   10  u8  format (1)
#   11  u32 manifest length N  (<= MAX_MANIFEST)
#   15  N bytes UTF-8 JSON     {"format":1, "version":"X.Y.Z", "min_version":"X.Y.Z",
#                               "targets":[...], "allow_downgrade":bool, "created":str,
#                               "files":[{"path":"<target>/...", "size":int, "sha256":hex}]}
#   15+N the files' bytes, concatenated in manifest order
# The file is exactly 15 + N + sum(size) bytes long. The OCPP signature
# (SignedUpdateFirmware firmware.signature, base64) is over the SHA-256 of the
# whole file, by the key of firmware.signingCertificate, which must chain to
# an installed ManufacturerRootCertificate.
#
# A signed bundle (tools/release.py sign --embed) carries its signature: the
# bundle's bytes, then a trailer, so one file travels over USB or a legacy
# UpdateFirmware (which has no signature field):
#   <bundle, L bytes> <signing certificate DER, c bytes> <signature, s bytes>
#   <u32 L> <u16 c> <u16 s> b"CHARGER-SIG1"
# The signature is over the SHA-256 of the first L bytes (the plain bundle),
# so signing with and without --embed gives the same signature. The c bytes
# are the signing certificate's DER, then its intermediate CAs' DER back to
# back if the manufacturer has any (the OCPP request carries them as further
# PEM blocks in signingCertificate). The signature is DER (ECDSA: raw 64-byte
# r || s is accepted too), PKCS#1 v1.5, or PSS with salt length 32.
#
# Reasons (VerifyError.reason or check_bundle's return value):
#   bad_manifest   header/manifest unreadable, oversized or invalid (incl. path traversal)
#   wrong_target   the bundle has nothing for this hardware
#   downgrade      older than the running version and not allowed
#   size_mismatch  file length differs from what the manifest says
#   hash_mismatch  a file's SHA-256 differs from the manifest
#   bad_signature  the signature does not verify (or cannot be decoded)
#   plus every reason of firmware.crypto.verify.verify_chain (unknown_root, cert_expired, ...)
#
# Long steps (every file's hash, the signature, extracting) are generators
# (*_work, firmware/core/work.py) yielding after each chunk, so the charger
# drives them in bounded slices; check_bundle, verify_bundle and extract run
# the same work to the end at once (host tools, tests, the USB path).
import binascii
import json
import os
from firmware.core.errtext import errtext  # an exception in words for a log line

from firmware.core.work import run_sync
from firmware.ota import VerifyError

MAGIC = b"CHARGER-FW"
FORMAT = 1
HEADER = 15  # magic + format byte + u32 manifest length
SIG_MAGIC = b"CHARGER-SIG1"
SIG_TAIL = 20  # u32 + u16 + u16 + magic
MAX_SIG_PART = 8192  # certificate or signature: far above any real one
MAX_MANIFEST = 65536
MAX_FILES = 1024
MAX_PATH = 160
CHUNK = 4096

BAD_MANIFEST = "bad_manifest"
WRONG_TARGET = "wrong_target"
DOWNGRADE = "downgrade"
SIZE_MISMATCH = "size_mismatch"
HASH_MISMATCH = "hash_mismatch"
BAD_SIGNATURE = "bad_signature"

_HEX = "0123456789abcdef"
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"


def _bad(detail):
    return VerifyError(BAD_MANIFEST, detail)


def parse_version(v):
    # "X.Y.Z" -> (X, Y, Z); digits only, at most 6 per part, no leading zeros.
    if not isinstance(v, str) or len(v) > 20:
        raise _bad("version")
    parts = v.split(".")
    if len(parts) != 3:
        raise _bad("version " + v)
    out = []
    for p in parts:
        if not p or len(p) > 6 or (len(p) > 1 and p[0] == "0"):
            raise _bad("version " + v)
        for c in p:
            if c < "0" or c > "9":
                raise _bad("version " + v)
        out.append(int(p))
    return tuple(out)


def _check_name(t):
    if not isinstance(t, str) or not 0 < len(t) <= 16:
        raise _bad("target")
    for c in t:
        if c not in _NAME_CHARS:
            raise _bad("target " + t)


def _check_path(p, targets):
    # Relative, "/"-separated, no empty/"."/".." part, first part a listed target.
    if not isinstance(p, str) or not 0 < len(p) <= MAX_PATH:
        raise _bad("path")
    if p[0] == "/" or "\\" in p or ":" in p or "\x00" in p:
        raise _bad("path " + p)
    parts = p.split("/")
    if len(parts) < 2:
        raise _bad("path " + p)
    for s in parts:
        if s in ("", ".", ".."):
            raise _bad("path " + p)
    if parts[0] not in targets:
        raise _bad("path target " + p)


def _check_hex(h):
    if not isinstance(h, str) or len(h) != 64:
        raise _bad("sha256")
    for c in h:
        if c not in _HEX:
            raise _bad("sha256")


def validate_manifest(m):
    return run_sync(validate_manifest_work(m))


def validate_manifest_work(m):
    """Check a decoded manifest; returns it (with defaults filled in) or raises bad_manifest.
    Work (up to MAX_FILES entries, each a path and a hash checked by
    character): one yield per file entry."""
    if not isinstance(m, dict):
        raise _bad("manifest not an object")
    if m.get("format") != FORMAT:
        raise _bad("format")
    v = parse_version(m.get("version"))
    if parse_version(m.get("min_version")) > v:
        raise _bad("min_version above version")
    targets = m.get("targets")
    if not isinstance(targets, list) or not 0 < len(targets) <= 8:
        raise _bad("targets")
    for t in targets:
        _check_name(t)
    if len(set(targets)) != len(targets):
        raise _bad("duplicate target")
    ad = m.get("allow_downgrade", False)
    if ad is not True and ad is not False:
        raise _bad("allow_downgrade")
    m["allow_downgrade"] = ad
    if not isinstance(m.get("created", ""), str):
        raise _bad("created")
    files = m.get("files")
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        raise _bad("files")
    seen = set()
    total = 0
    for e in files:
        if not isinstance(e, dict):
            raise _bad("file entry")
        p = e.get("path")
        _check_path(p, targets)
        if p in seen:
            raise _bad("duplicate path " + p)
        seen.add(p)
        size = e.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > (1 << 30):
            raise _bad("size")
        total += size
        _check_hex(e.get("sha256"))
        yield
    m["data_size"] = total
    return m


def read_manifest(path, max_manifest=MAX_MANIFEST):
    return run_sync(read_manifest_work(path, max_manifest))


def read_manifest_work(path, max_manifest=MAX_MANIFEST):
    """Read and validate a bundle's header and manifest.

    Returns the manifest dict plus "data_offset" (where the first file starts)
    and "data_size" (sum of the file sizes). Raises VerifyError(bad_manifest).
    """
    try:
        f = open(path, "rb")
    except OSError as e:
        raise _bad("cannot open: %s" % errtext(e))
    try:
        try:
            head = f.read(HEADER)
            if not head or len(head) != HEADER or head[:len(MAGIC)] != MAGIC:
                raise _bad("not a firmware bundle")
            if head[10] != FORMAT:
                raise _bad("bundle format %d" % head[10])
            n = (head[11] << 24) | (head[12] << 16) | (head[13] << 8) | head[14]
            if not 0 < n <= max_manifest:
                raise _bad("manifest length %d" % n)
            blob = f.read(n)
            if not blob or len(blob) != n:
                raise _bad("truncated manifest")
        except OSError as e:
            raise _bad("read: %s" % errtext(e))
    finally:
        f.close()
    try:
        m = json.loads(blob.decode())
    except Exception as e:  # ValueError / UnicodeError
        raise _bad("json: %s" % errtext(e))
    blob = None
    m = yield from validate_manifest_work(m)
    m["data_offset"] = HEADER + n
    return m


def _file_size(path):
    return os.stat(path)[6]


def read_trailer(path):
    """(bundle_length, cert_der, signature) of a signed bundle, or None if the
    file has no trailer. Raises VerifyError(bad_signature) for a damaged one."""
    try:
        size = _file_size(path)
        if size < SIG_TAIL:
            return None
        f = open(path, "rb")
        try:
            f.seek(size - SIG_TAIL)
            t = f.read(SIG_TAIL)
            if t[8:] != SIG_MAGIC:
                return None
            n = (t[0] << 24) | (t[1] << 16) | (t[2] << 8) | t[3]
            c = (t[4] << 8) | t[5]
            s = (t[6] << 8) | t[7]
            if not (0 < c <= MAX_SIG_PART and 0 < s <= MAX_SIG_PART and n + c + s + SIG_TAIL == size):
                raise VerifyError(BAD_SIGNATURE, "trailer lengths")
            f.seek(n)
            cert = f.read(c)
            sig = f.read(s)
        finally:
            f.close()
    except OSError as e:
        raise VerifyError(BAD_SIGNATURE, "trailer: %s" % errtext(e))
    if len(cert) != c or len(sig) != s:
        raise VerifyError(BAD_SIGNATURE, "trailer truncated")
    return n, cert, sig


def check_bundle(path, manifest, target, running_version, allow_downgrade=False, length=None):
    return run_sync(check_bundle_work(path, manifest, target, running_version, allow_downgrade, length))


def check_bundle_work(path, manifest, target, running_version, allow_downgrade=False, length=None):
    """Return None if the bundle fits this device, else a reason string.

    target: this hardware ("esp32", "rp2040", "unix"). running_version: the
    running firmware's "X.Y.Z" (None skips the downgrade check). A lower version
    is refused unless both the bundle's allow_downgrade and the caller's
    allow_downgrade (the CSMS asked for it) are set. Then the total length and
    every file's SHA-256 are checked, streamed. length: the bundle's length
    inside a signed file (read_trailer), else the whole file.
    """
    try:
        if target not in manifest["targets"]:
            return WRONG_TARGET
        prefix = target + "/"
        if not any(e["path"].startswith(prefix) for e in manifest["files"]):
            return WRONG_TARGET
        if running_version is not None:
            if parse_version(manifest["version"]) < parse_version(running_version):
                if not (allow_downgrade and manifest.get("allow_downgrade") is True):
                    return DOWNGRADE
        if (length if length is not None else _file_size(path)) != manifest["data_offset"] + manifest["data_size"]:
            return SIZE_MISMATCH
        files = _walk(path, manifest, None)
        try:
            for e, chunks in files:
                for _ in chunks:
                    yield
        finally:
            files.close()  # closes the bundle file at once, also on an error
    except VerifyError as ex:
        return ex.reason
    except OSError:
        return SIZE_MISMATCH
    return None


def _walk(path, manifest, target):
    # Yields (entry, chunk iterator) for each file in order (only target's if
    # given); a chunk iterator raises hash_mismatch / size_mismatch after the
    # last chunk, before it is exhausted, so a writer that commits only on
    # exhaustion never commits a bad file. Chunks are views into one buffer.
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    f = open(path, "rb")
    try:
        pos = manifest["data_offset"]
        prefix = None if target is None else target + "/"
        for e in manifest["files"]:
            size = e["size"]
            if prefix is not None and not e["path"].startswith(prefix):
                pos += size
                continue
            f.seek(pos)
            yield e, _chunks(f, mv, size, e["sha256"])
            pos += size
    finally:
        f.close()


def _chunks(f, mv, size, want):
    from firmware.crypto.sha import hashed_chunks
    digest, n = yield from hashed_chunks(f, mv, size)
    if n != size:
        raise VerifyError(SIZE_MISMATCH, "truncated")
    if binascii.hexlify(digest).decode() != want:
        raise VerifyError(HASH_MISMATCH, "file")


def _sig_alg(cert):
    from firmware.crypto import der
    kind = cert.public_key[0]
    if kind == "ec":
        return der.ALG_ECDSA_SHA256
    if kind == "rsa":
        return der.ALG_RSA_PKCS1_SHA256
    raise VerifyError("unsupported_algorithm", kind)


def verify_bundle(path, sig_b64, signing_cert_pem, roots, now, alg=None, length=None):
    return run_sync(verify_bundle_work(path, sig_b64, signing_cert_pem, roots, now, alg, length))


def verify_bundle_work(path, sig_b64, signing_cert_pem, roots, now, alg=None, length=None):
    """Verify the signature over the whole bundle file and the signing certificate.

    sig_b64: the base64 signature (OCPP firmware.signature). signing_cert_pem:
    the signing certificate (PEM text, or DER), followed by the intermediate
    CA certificates between it and the root if any. roots: installed
    ManufacturerRootCertificates (DER/PEM/Certificate list, or one PEM text
    holding several). now: Unix epoch seconds. alg: a der.ALG_* name; by
    default ECDSA for an EC key and PKCS#1 v1.5 for an RSA key. length: hash
    only the first length bytes (a signed file's trailer is not signed).
    Returns the root Certificate the signer chains to; raises VerifyError.
    """
    from firmware.crypto import der, pem, verify
    from firmware.crypto.sha import sha256_file_work
    try:
        # The signer first, then any intermediates (several PEM blocks, or DER back to back).
        chain = [der.parse_certificate(d) for d in der.split_certificates(signing_cert_pem)]
        cert = chain[0]
        if isinstance(roots, (str, bytes)):
            roots = pem.decode_all(roots)
        root = yield from verify.verify_chain_work(chain, roots, now)
        try:
            sig = binascii.a2b_base64(sig_b64)
        except Exception:
            raise VerifyError(BAD_SIGNATURE, "base64")
        if not sig:
            raise VerifyError(BAD_SIGNATURE, "empty")
        try:
            digest = yield from sha256_file_work(path, CHUNK, length)
        except OSError as e:
            raise VerifyError(SIZE_MISMATCH, "cannot read: %s" % errtext(e))
        try:
            # PSS salt = hash length; ECDSA in DER or raw r||s (both documented above).
            yield from verify.verify_signature_work(cert, alg or _sig_alg(cert), digest, sig, is_digest=True,
                                                    pss_salt=32, ecdsa_form=verify.ECDSA_ANY)
        except VerifyError as ex:
            if ex.reason == "malformed":
                raise VerifyError(BAD_SIGNATURE, str(ex))
            raise
        return root
    except VerifyError:
        raise
    except MemoryError:
        raise  # short of RAM is not a bad signature
    except Exception as ex:
        raise VerifyError("malformed", errtext(ex))


def _makedirs(d):
    cur = "/" if d.startswith("/") else ""
    for part in d.split("/"):
        if not part:
            continue
        cur = cur + part if (not cur or cur.endswith("/")) else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass  # exists (a real failure shows when the file is opened)


def write_plain(dest, chunks):
    # The default writer: create parent directories, write in place, one
    # yield per chunk written.
    i = dest.rfind("/")
    if i > 0:
        _makedirs(dest[:i])
    f = open(dest, "wb")
    try:
        for c in chunks:
            f.write(c)
            yield
    finally:
        f.close()


def extract(path, manifest, dest_dir, write_file=None, target=None):
    return run_sync(extract_work(path, manifest, dest_dir, write_file, target))


def extract_work(path, manifest, dest_dir, write_file=None, target=None):
    """Stream the bundle's files into dest_dir.

    With target, only "<target>/..." files are written, that prefix removed
    (dest_dir/firmware/crypto/der.mpy); without, every file at its bundle path.
    write_file(dest_path, chunks) writes one file from an iterator of
    bytes-like chunks (valid only until the next one); the iterator raises
    VerifyError(hash_mismatch/size_mismatch) after the last chunk if the file
    is bad, so an atomic writer (temp file, rename when the iterator is
    exhausted) never leaves a bad file in place. A write_file that returns a
    generator is work too: it is driven here, one yield per chunk it writes.
    Returns the paths written.
    """
    write_file = write_file or write_plain
    dest_dir = dest_dir.rstrip("/") or "/"
    out = []
    files = _walk(path, manifest, target)
    try:
        for e, chunks in files:
            p = e["path"]
            _check_path(p, manifest["targets"])  # again: manifest may have been edited since
            if target is not None:
                p = p[len(target) + 1:]
            dest = dest_dir + "/" + p if dest_dir != "/" else "/" + p
            w = write_file(dest, chunks)
            if hasattr(w, "send"):
                yield from w
            for _ in chunks:  # a writer that stopped early still gets the hash checked
                yield
            out.append(dest)
    finally:
        files.close()  # closes the bundle file at once, also when a writer fails
    return out

# Streaming SHA-256 so a whole firmware image never has to sit in RAM.
# hashed_chunks is the one way the firmware hashes a file: a generator
# (firmware/core/work.py) that reads into the caller's buffer and yields
# after each chunk, so the charger's loop runs between chunks. A bundle's
# file hash (firmware/ota/bundle.py), an installed slot's check
# (firmware/ota/slots.py) and a signed file's digest all go through it.
import hashlib

from firmware.core.work import run_sync


def hashed_chunks(f, mv, length=-1):
    # The next `length` bytes of the open file f (to its end if -1), read
    # into the preallocated memoryview mv: yields each chunk (a view into
    # mv, valid until the next), returns (digest, bytes read). Fewer bytes
    # than asked means the file ended early; the caller decides.
    h = hashlib.sha256()
    size = len(mv)
    n = 0
    while length:
        k = f.readinto(mv if length < 0 or length >= size else mv[:length])
        if not k:
            break
        chunk = mv[:k]
        h.update(chunk)
        n += k
        if length > 0:
            length -= k
        yield chunk
    return h.digest(), n


def sha256_file_work(path, chunk=1024, length=None):
    # length: hash only the first `length` bytes (a signed bundle's trailer
    # is not part of what was signed). Returns the digest.
    # One preallocated buffer reused for every read: no per-chunk allocation.
    mv = memoryview(bytearray(chunk))
    f = open(path, "rb")
    try:
        digest, _ = yield from hashed_chunks(f, mv, -1 if length is None else length)
    finally:
        f.close()
    return digest


def sha256_file(path, chunk=1024, length=None):
    return run_sync(sha256_file_work(path, chunk, length))


def sha256(data):
    return hashlib.sha256(data).digest()

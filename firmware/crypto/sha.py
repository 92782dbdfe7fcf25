# Streaming SHA-256 so a whole firmware image never has to sit in RAM.
# sha256_file_work is the shared core: a generator that yields after each
# chunk (firmware/core/work.py), so the charger's loop runs between chunks.
import hashlib

from firmware.core.work import run_sync


def sha256_file_work(path, chunk=1024, length=None):
    # length: hash only the first `length` bytes (a signed bundle's trailer
    # is not part of what was signed). Returns the digest.
    h = hashlib.sha256()
    # One preallocated buffer reused for every read: no per-chunk allocation.
    buf = bytearray(chunk)
    mv = memoryview(buf)
    f = open(path, "rb")
    left = -1 if length is None else length
    try:
        while left:
            n = f.readinto(buf if left < 0 or left >= chunk else mv[:left])
            if not n:
                break
            h.update(mv[:n])
            if left > 0:
                left -= n
            yield
    finally:
        f.close()
    return h.digest()


def sha256_file(path, chunk=1024, length=None):
    return run_sync(sha256_file_work(path, chunk, length))


def sha256(data):
    return hashlib.sha256(data).digest()


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

# Streaming SHA-256 so a whole firmware image never has to sit in RAM.
import hashlib


def sha256_file(path, chunk=1024):
    h = hashlib.sha256()
    # One preallocated buffer reused for every read: no per-chunk allocation.
    buf = bytearray(chunk)
    mv = memoryview(buf)
    f = open(path, "rb")
    try:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
    finally:
        f.close()
    return h.digest()


def sha256(data):
    return hashlib.sha256(data).digest()

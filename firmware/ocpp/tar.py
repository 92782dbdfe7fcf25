# A minimal ustar writer for diagnostics archives: any tar tool opens them.
# Files are streamed in chunks; nothing is held whole in RAM.


def _header(name, size, mtime):
    h = bytearray(512)

    def put(off, width, text):
        b = text.encode()[:width]
        h[off:off + len(b)] = b

    put(0, 100, name)
    put(100, 8, "0000644\0")
    put(108, 8, "0000000\0")
    put(116, 8, "0000000\0")
    put(124, 12, "%011o\0" % size)
    put(136, 12, "%011o\0" % mtime)
    put(148, 8, " " * 8)
    put(156, 1, "0")
    put(257, 6, "ustar\0")
    put(263, 2, "00")
    put(265, 32, "charger")
    put(297, 32, "charger")
    put(148, 8, "%06o\0 " % sum(h))
    return h


class TarWriter:
    def __init__(self, path, mtime=0):
        self.f = open(path, "wb")
        self.mtime = int(mtime)

    def add_bytes(self, name, data):
        self.f.write(_header(name, len(data), self.mtime))
        self.f.write(data)
        self._pad(len(data))

    def add_file(self, name, path):
        import os
        try:
            size = os.stat(path)[6]
        except OSError:
            return False
        self.f.write(_header(name, size, self.mtime))
        buf = bytearray(512)
        with open(path, "rb") as src:
            left = size
            while left:
                k = src.readinto(buf)
                if not k:
                    break
                self.f.write(buf[:k] if k < 512 else buf)
                left -= k
        self._pad(size)
        return True

    def _pad(self, n):
        if n % 512:
            self.f.write(bytes(512 - n % 512))

    def close(self):
        self.f.write(bytes(1024))
        self.f.close()

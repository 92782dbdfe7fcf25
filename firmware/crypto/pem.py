# PEM (RFC 7468) <-> DER: the one PEM decoder of the firmware, for
# certificates (updates, InstallCertificate, TLS), keys and CSRs.
import binascii

from firmware.crypto import VerifyError


def is_pem(data):
    # True if data (str or bytes) holds a PEM block rather than DER.
    if isinstance(data, str):
        return "-----BEGIN " in data
    return b"-----BEGIN " in bytes(data)


def decode_all(text, label="CERTIFICATE"):
    # DER of every block with this label, in order; label None takes every
    # block whatever its label. Text outside the blocks is ignored (comments
    # in a roots file); none is []; an unterminated block or bad base64 is
    # VerifyError("malformed").
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode()
    out = []
    pos = 0
    while True:
        a = text.find("-----BEGIN ", pos)
        if a < 0:
            break
        h = text.find("-----", a + 11)
        if h < 0:
            raise VerifyError("malformed", "PEM header")
        got = text[a + 11:h]
        endm = "-----END %s-----" % got
        b = text.find(endm, h + 5)
        if b < 0:
            raise VerifyError("malformed", "PEM block not ended")
        pos = b + len(endm)
        if label is not None and got != label:
            continue
        try:
            out.append(binascii.a2b_base64("".join(text[h + 5:b].split())))
        except Exception:
            raise VerifyError("malformed", "base64")
    return out


def decode(text, label="CERTIFICATE"):
    # DER of the first block with this label.
    out = decode_all(text, label)
    if not out:
        raise VerifyError("malformed", "no PEM block")
    return out[0]


def encode(label, der):
    # One block, 64 base64 characters a line.
    b = binascii.b2a_base64(der).decode().strip()
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)

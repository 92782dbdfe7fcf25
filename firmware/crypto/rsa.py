# RSA signature verification with SHA-256: PKCS#1 v1.5 and PSS (RFC 8017).
# Only the public operation is needed: s**e mod n on built-in big ints, by
# square-and-multiply that yields every few bits (ecdsa.pow_work): one
# 4096-bit modular product takes milliseconds on an MCU. The *_work
# generators are the shared core (firmware/core/work.py); verify_pkcs1v15 and
# verify_pss run them to the end at once.
import hashlib

from firmware.core.work import run_sync
from firmware.crypto import VerifyError
from firmware.crypto.ecdsa import bitlen

HLEN = 32
# DER DigestInfo header for SHA-256 (RFC 8017 9.2 note 1).
SHA256_DIGESTINFO = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"
MIN_BITS = 2048
MAX_BITS = 4096


RSA_STEP_BITS = 1  # exponent bits between yields: <= 2 products of up to 4096 bits


def _public_op(n, e, sig, k):
    # RSAVP1 with the size checks shared by both encodings; returns an int.
    bits = bitlen(n)
    if bits < MIN_BITS or bits > MAX_BITS:
        raise VerifyError("unsupported_key", "rsa %d bits" % bits)
    # Bounded exponent keeps pow() cheap on a hostile key; real keys use 65537.
    if e < 3 or not e & 1 or e >> 256:
        raise VerifyError("unsupported_key", "rsa exponent")
    if len(sig) != k:
        raise VerifyError("bad_signature", "length")
    s = int.from_bytes(bytes(sig), "big")
    if s >= n:
        raise VerifyError("bad_signature", "out of range")
    from firmware.crypto.ecdsa import pow_work
    m = yield from pow_work(s, e, n, RSA_STEP_BITS)
    return m, bits


def verify_pkcs1v15_work(n, e, digest, sig):
    k = (bitlen(n) + 7) // 8
    m, _ = yield from _public_op(n, e, sig, k)
    # Rebuild the one valid encoding and compare: no parsing of attacker-chosen padding.
    tlen = len(SHA256_DIGESTINFO) + HLEN
    expected = b"\x00\x01" + b"\xff" * (k - tlen - 3) + b"\x00" + SHA256_DIGESTINFO + digest
    if m.to_bytes(k, "big") != expected:
        raise VerifyError("bad_signature", "pkcs1")


def mgf1(seed, length):
    out = bytearray()
    c = 0
    while len(out) < length:
        out.extend(hashlib.sha256(seed + c.to_bytes(4, "big")).digest())
        c += 1
    return out[:length]


def verify_pss_work(n, e, digest, sig, salt_len=None):
    # salt_len None: recover the salt length from the padding (any length accepted).
    k = (bitlen(n) + 7) // 8
    m, bits = yield from _public_op(n, e, sig, k)
    em_bits = bits - 1
    em_len = (em_bits + 7) // 8
    if m >> (8 * em_len):
        raise VerifyError("bad_signature", "pss range")
    em = m.to_bytes(em_len, "big")
    if em_len < HLEN + 2 or em[-1] != 0xBC:
        raise VerifyError("bad_signature", "pss trailer")
    db_len = em_len - HLEN - 1
    masked = em[:db_len]
    h = em[db_len:db_len + HLEN]
    top_mask = 0xFF >> (8 * em_len - em_bits)
    if masked[0] & ~top_mask & 0xFF:
        raise VerifyError("bad_signature", "pss top bits")
    db = mgf1(h, db_len)
    for i in range(db_len):
        db[i] ^= masked[i]
    db[0] &= top_mask
    i = 0
    while i < db_len and db[i] == 0:
        i += 1
    if i >= db_len or db[i] != 1:
        raise VerifyError("bad_signature", "pss padding")
    salt = bytes(db[i + 1:])
    if salt_len is not None and len(salt) != salt_len:
        raise VerifyError("bad_signature", "pss salt length")
    if hashlib.sha256(b"\x00" * 8 + digest + salt).digest() != h:
        raise VerifyError("bad_signature", "pss hash")


def verify_pkcs1v15(n, e, digest, sig):
    run_sync(verify_pkcs1v15_work(n, e, digest, sig))


def verify_pss(n, e, digest, sig, salt_len=None):
    run_sync(verify_pss_work(n, e, digest, sig, salt_len))

# ECDSA P-256 / SHA-256 on built-in big ints: verification (updates,
# certificates), key generation and signing (the charge point's CSR).
# Jacobian coordinates avoid a field inversion per step; Shamir's trick
# computes u1*G + u2*Q in one pass of doublings.
#
# verify_work is the shared core, a generator (firmware/core/work.py) that
# yields every STEP_BITS bits of the scalar multiplication and of each
# modular inversion: one verify is 0.3-3 s on an MCU, far past the control
# loop's budget if done in one piece. verify runs it to the end at once.
# generate_key_work and sign_work are work units the same way; the names
# with a leading underscore are this package's own.
from firmware.core.work import run_sync
from firmware.crypto import VerifyError
from firmware.crypto import der

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5


def on_curve(x, y):
    if not (0 <= x < P and 0 <= y < P):
        return False
    return (y * y - (x * x * x - 3 * x + B)) % P == 0


def _double(X, Y, Z):
    # dbl-2001-b (a = -3).
    if Z == 0 or Y == 0:
        return 0, 1, 0
    delta = Z * Z % P
    gamma = Y * Y % P
    beta = X * gamma % P
    alpha = 3 * (X - delta) * (X + delta) % P
    X3 = (alpha * alpha - 8 * beta) % P
    Z3 = ((Y + Z) * (Y + Z) - gamma - delta) % P
    Y3 = (alpha * (4 * beta - X3) - 8 * gamma * gamma) % P
    return X3, Y3, Z3


def _add_affine(X1, Y1, Z1, x2, y2):
    # Jacobian + affine; handles the doubling and inverse cases.
    if Z1 == 0:
        return x2, y2, 1
    z1z1 = Z1 * Z1 % P
    u2 = x2 * z1z1 % P
    s2 = y2 * Z1 * z1z1 % P
    h = (u2 - X1) % P
    r = (s2 - Y1) % P
    if h == 0:
        if r == 0:
            return _double(X1, Y1, Z1)
        return 0, 1, 0
    hh = h * h % P
    hhh = h * hh % P
    v = X1 * hh % P
    X3 = (r * r - hhh - 2 * v) % P
    Y3 = (r * (v - X3) - Y1 * hhh) % P
    Z3 = Z1 * h % P
    return X3, Y3, Z3


STEP_BITS = 8  # bits of a scalar or exponent between two yields


def pow_work(b, e, m, step=STEP_BITS):
    # b**e % m by square-and-multiply (MSB first), yielding every `step` bits:
    # each unit is at most 2*step modular products. Shared with rsa.py.
    r = 1
    b %= m
    i = bitlen(e) - 1
    k = 0
    while i >= 0:
        r = r * r % m
        if (e >> i) & 1:
            r = r * b % m
        i -= 1
        k += 1
        if k == step:
            k = 0
            yield
    return r


def _to_affine_work(X, Y, Z):
    zi = yield from pow_work(Z, P - 2, P)
    zi2 = zi * zi % P
    return X * zi2 % P, Y * zi2 * zi % P


def _to_affine(X, Y, Z):
    return run_sync(_to_affine_work(X, Y, Z))


def bitlen(n):
    # int.bit_length() is missing on some MicroPython builds (shared by rsa, policy).
    b = 0
    while n >> (b + 32):
        b += 32
    while n >> b:
        b += 1
    return b


def decode_signature(sig):
    # (r, s) already decoded by the caller (verify.py: raw r || s where a
    # format carries it), else strict DER SEQUENCE { r INTEGER, s INTEGER }.
    if isinstance(sig, tuple):
        return sig
    return der.parse_ecdsa_signature(sig)


def verify_work(qx, qy, digest, sig):
    r, s = decode_signature(sig)
    if not (1 <= r < N and 1 <= s < N):
        raise VerifyError("bad_signature", "ecdsa r/s range")
    if not on_curve(qx, qy):
        raise VerifyError("bad_key", "point not on curve")
    # The digest is 256 bits, the size of N, so no truncation is needed.
    e = int.from_bytes(bytes(digest), "big")
    w = yield from pow_work(s, N - 2, N)
    u1 = e * w % N
    u2 = r * w % N
    # Precompute G + Q once (affine) for Shamir's trick.
    sx, sy, sz = _add_affine(GX, GY, 1, qx, qy)
    gq = (yield from _to_affine_work(sx, sy, sz)) if sz else None
    X, Y, Z = 0, 1, 0
    for i in range(max(bitlen(u1), bitlen(u2)) - 1, -1, -1):
        X, Y, Z = _double(X, Y, Z)
        b1 = (u1 >> i) & 1
        b2 = (u2 >> i) & 1
        if b1 and b2:
            if gq is not None:
                X, Y, Z = _add_affine(X, Y, Z, gq[0], gq[1])
        elif b1:
            X, Y, Z = _add_affine(X, Y, Z, GX, GY)
        elif b2:
            X, Y, Z = _add_affine(X, Y, Z, qx, qy)
        if not i % STEP_BITS:
            yield
    if Z == 0:
        raise VerifyError("bad_signature", "ecdsa infinity")
    x, _ = yield from _to_affine_work(X, Y, Z)
    if x % N != r:
        raise VerifyError("bad_signature", "ecdsa")


def verify(qx, qy, digest, sig):
    run_sync(verify_work(qx, qy, digest, sig))


# --- key generation and signing (the CSR for SignCertificate) ----------------
# rng(n) -> n random bytes: os.urandom on a board (the hardware generator).

def mul_g_work(k):
    # k*G in affine coordinates (x, y), double-and-add over 256 bits,
    # yielding every STEP_BITS bits. Not constant time: used for a key made on
    # the charger and for a nonce that never leaves it.
    X, Y, Z = 0, 1, 0
    for i in range(255, -1, -1):
        X, Y, Z = _double(X, Y, Z)
        if (k >> i) & 1:
            X, Y, Z = _add_affine(X, Y, Z, GX, GY)
        if not i % STEP_BITS:
            yield
    if Z == 0:
        raise VerifyError("bad_key", "scalar is a multiple of the order")
    return (yield from _to_affine_work(X, Y, Z))


def _scalar(b):
    # 32 random bytes -> 1 .. N-1
    return int.from_bytes(b, "big") % (N - 1) + 1


def generate_key_work(rng):
    # -> (d, x, y): a new private scalar and its public point.
    d = _scalar(rng(32))
    x, y = yield from mul_g_work(d)
    return d, x, y


def generate_key(rng):
    return run_sync(generate_key_work(rng))


def sign_work(digest, d, rng):
    # ECDSA signature (r, s) of a SHA-256 digest with private scalar d. A
    # hedged nonce: fresh randomness mixed with the key and the message, so a
    # weak random source alone does not give the nonce (and the key) away.
    import hashlib
    z = int.from_bytes(bytes(digest), "big")
    while True:
        k = _scalar(hashlib.sha256(d.to_bytes(32, "big") + bytes(digest) + rng(32)).digest())
        rx, _ = yield from mul_g_work(k)
        r = rx % N
        ki = yield from pow_work(k, N - 2, N)
        s = ki * (z + r * d) % N
        if r and s:
            return r, s


def sign(digest, d, rng):
    return run_sync(sign_work(digest, d, rng))


def encode_signature(r, s):
    # (r, s) -> DER SEQUENCE { r INTEGER, s INTEGER } (X.509, CSRs).
    return der.tlv(der.SEQUENCE, der.int_tlv(r) + der.int_tlv(s))

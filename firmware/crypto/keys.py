# Private keys (the charge point's TLS client key, the CSR key): PEM or DER
# PKCS#8, SEC1 EC and PKCS#1 RSA. public_of gives the public key as
# der.parse_spki does, so a certificate can be matched to its key.
from firmware.core.work import run_sync
from firmware.crypto import VerifyError
from firmware.crypto import der, pem

_OID_P256 = b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"


def public_of(key):
    # ("ec", x, y) / ("rsa", n, e); VerifyError("malformed") for anything else.
    try:
        return _public_of(key)
    except VerifyError:
        raise
    except MemoryError:
        raise
    except Exception as ex:
        raise VerifyError("malformed", "private key: %r" % ex)


def _public_of(key):
    if isinstance(key, (bytes, bytearray)) and bytes(key[:5]) != b"-----":
        d = bytes(key)
    else:
        text = key.decode() if isinstance(key, (bytes, bytearray)) else key
        label = "PRIVATE KEY"
        for lb in ("EC PRIVATE KEY", "RSA PRIVATE KEY"):
            if "BEGIN " + lb in text:
                label = lb
        d = pem.decode(text, label)
    buf = memoryview(d)
    s, e = der.expect(buf, 0, len(d), der.SEQUENCE)
    kids = der.children(buf, s, e)
    if len(kids) >= 3 and kids[1][0] == der.SEQUENCE and kids[2][0] == der.OCTET_STRING:
        # PKCS#8: AlgorithmIdentifier, then the inner key in an OCTET STRING
        oid = der.parse_oid(buf, *der.children(buf, kids[1][1], kids[1][2])[0][1:])
        inner = bytes(buf[kids[2][1]:kids[2][2]])
        if oid == der.OID_RSA:
            return _rsa_pub(inner)
        return _ec_pub(inner)
    if len(kids) >= 2 and kids[1][0] == der.OCTET_STRING:
        return _ec_pub(d)
    return _rsa_pub(d)


def _rsa_pub(d):
    buf = memoryview(d)
    s, e = der.expect(buf, 0, len(d), der.SEQUENCE)
    k = der.children(buf, s, e)
    return ("rsa", der.parse_int(buf, k[1][1], k[1][2]), der.parse_int(buf, k[2][1], k[2][2]))


def _ec_pub(d):
    # SEC1 ECPrivateKey: its optional [1] publicKey, else d*G.
    from firmware.crypto import ecdsa
    buf = memoryview(d)
    s, e = der.expect(buf, 0, len(d), der.SEQUENCE)
    kids = der.children(buf, s, e)
    for t, ks, ke in kids[2:]:
        if t == 0xA1:
            bs, be = der.expect(buf, ks, ke, der.BIT_STRING)
            bs, be = der.parse_bitstring(buf, bs, be)
            if be - bs == 65 and buf[bs] == 4:
                return ("ec", int.from_bytes(bytes(buf[bs + 1:bs + 33]), "big"),
                        int.from_bytes(bytes(buf[bs + 33:bs + 65]), "big"))
    n = int.from_bytes(bytes(buf[kids[1][1]:kids[1][2]]), "big")
    x, y = run_sync(ecdsa.mul_g_work(n))
    return ("ec", x, y)


def ec_point(x, y):
    # The uncompressed point as a BIT STRING's content (unused-bits 0, 04, x, y).
    return b"\x00\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def ec_private_der(d, x, y):
    # SEC1 ECPrivateKey (RFC 5915) of a P-256 key, its public point included.
    return der.tlv(der.SEQUENCE, der.int_tlv(1) + der.tlv(der.OCTET_STRING, d.to_bytes(32, "big"))
                   + der.tlv(0xA0, _OID_P256) + der.tlv(0xA1, der.tlv(der.BIT_STRING, ec_point(x, y))))

"""Certificates byte by byte, for the certificate-policy tests.

`cryptography` refuses to write most of what the firmware must refuse
(duplicate extensions, Feb 30, a v1 certificate with extensions, BER), so the
tbsCertificate is assembled here field by field and signed with
`cryptography`'s keys; every field can be replaced with arbitrary bytes.
"""
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID


def dlen(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, body):
    return bytes([tag]) + dlen(len(body)) + body


def seq(*parts):
    return tlv(0x30, b"".join(parts))


def integer(v):
    n = (v.bit_length() + 8) // 8 if v >= 0 else (v.bit_length() + 8) // 8
    return tlv(0x02, v.to_bytes(max(1, n), "big", signed=True))


def oid(dotted):
    p = [int(x) for x in dotted.split(".")]
    out = bytearray([40 * p[0] + p[1]])
    for v in p[2:]:
        enc = [v & 0x7F]
        v >>= 7
        while v:
            enc.append(0x80 | (v & 0x7F))
            v >>= 7
        out += bytes(reversed(enc))
    return tlv(0x06, bytes(out))


def boolean(v):
    return tlv(0x01, b"\xff" if v else b"\x00")


def utc(s):
    return tlv(0x17, s.encode())


def gen(s):
    return tlv(0x18, s.encode())


def name(cn, org="Test Maker", cn_tag=0x0C):
    # Name: O then CN, UTF8String unless told otherwise.
    def atv(o, v, tag):
        return tlv(0x31, seq(oid(o), tlv(tag, v.encode())))
    return seq(atv("2.5.4.10", org, 0x0C), atv("2.5.4.3", cn, cn_tag))


ALG_ECDSA = seq(oid("1.2.840.10045.4.3.2"))
ALG_RSA = seq(oid("1.2.840.113549.1.1.11"), b"\x05\x00")
ALG_RSA_NO_NULL = seq(oid("1.2.840.113549.1.1.11"))


def alg_pss(salt):
    sha = seq(oid("2.16.840.1.101.3.4.2.1"), b"\x05\x00")
    return seq(oid("1.2.840.113549.1.1.10"),
               seq(tlv(0xA0, sha), tlv(0xA1, seq(oid("1.2.840.113549.1.1.8"), sha)), tlv(0xA2, integer(salt))))


def ext(o, value, critical=None):
    # critical=False is the DEFAULT and left out (DER); explicit_false writes it anyway.
    return seq(oid(o), boolean(True) if critical else b"", tlv(0x04, value))


def bc(ca, path_len=None, critical=True, explicit_false=False):
    body = (boolean(True) if ca else (boolean(False) if explicit_false else b""))
    if path_len is not None:
        body += integer(path_len)
    return ext("2.5.29.19", seq(body), critical)


def ku(*bits, critical=True):
    # Named bit list, minimal: bit 0 is digitalSignature, 5 keyCertSign, 6 cRLSign.
    n = max(bits) + 1
    nbytes = (n + 7) // 8
    v = bytearray(nbytes)
    for b in bits:
        v[b // 8] |= 0x80 >> (b % 8)
    unused = nbytes * 8 - n
    return ext("2.5.29.15", tlv(0x03, bytes([unused]) + bytes(v)), critical)


DIGITAL_SIGNATURE, KEY_ENCIPHERMENT, KEY_CERT_SIGN, CRL_SIGN = 0, 2, 5, 6
CODE_SIGNING = "1.3.6.1.5.5.7.3.3"
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
ANY_EKU = "2.5.29.37.0"


def eku(*oids, critical=False):
    return ext("2.5.29.37", seq(*[oid(o) for o in oids]), critical)


def ski(key):
    return ext("2.5.29.14", tlv(0x04, x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest))


def spki(key):
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def alg_for(key):
    return ALG_ECDSA if isinstance(key, ec.EllipticCurvePrivateKey) else ALG_RSA


def sign(key, tbs, pss_salt=None):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    if pss_salt is not None:
        return key.sign(tbs, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=pss_salt), hashes.SHA256())
    return key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())


def tbs(subject, issuer, key, exts, alg, version=3, serial=4711, validity=None, extra=b""):
    v = tlv(0xA0, integer(version - 1)) if version is not None else b""
    validity = validity or seq(utc("260101000000Z"), utc("280101000000Z"))
    x = tlv(0xA3, seq(*exts)) if exts else b""
    return seq(v, integer(serial) if isinstance(serial, int) else serial, alg, issuer, validity, subject,
               spki(key), extra, x)


def cert(subject, issuer, key, issuer_key, exts, outer_alg=None, pss_salt=None, sig=None, **kw):
    alg = kw.pop("alg", None) or (alg_pss(pss_salt) if pss_salt is not None else alg_for(issuer_key))
    t = tbs(subject, issuer, key, exts, alg, **kw)
    s = sig if sig is not None else sign(issuer_key, t, pss_salt)
    return seq(t, outer_alg if outer_alg is not None else alg, tlv(0x03, b"\x00" + s))


def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key(bits=2048):
    return rsa.generate_private_key(65537, bits)


def ca_exts(key, path_len=None):
    return [bc(True, path_len), ku(KEY_CERT_SIGN, CRL_SIGN), ski(key)]


def signer_exts(key):
    return [bc(False), ku(DIGITAL_SIGNATURE), eku(CODE_SIGNING), ski(key)]


def raw_sig(der_sig):
    r, s = decode_dss_signature(der_sig)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def split(der):
    # (tbs TLV, outer alg TLV, signature BIT STRING TLV) of a certificate.
    def one(b, pos):
        ln = b[pos + 1]
        hdr = 2
        if ln & 0x80:
            nb = ln & 0x7F
            ln = int.from_bytes(b[pos + 2:pos + 2 + nb], "big")
            hdr += nb
        return pos + hdr, pos + hdr + ln
    s, e = one(der, 0)
    parts = []
    pos = s
    while pos < e:
        cs, ce = one(der, pos)
        parts.append(der[pos:ce])
        pos = ce
    return parts


def check(c):
    # Sanity: cryptography reads a certificate made here (the valid ones).
    return x509.load_der_x509_certificate(c)


UTC = datetime.timezone.utc
__all__ = ["NameOID"]

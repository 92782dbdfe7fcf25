# The extensions of an X.509 v3 certificate (RFC 5280 4.2), strict DER:
# basicConstraints, keyUsage and extendedKeyUsage are read into the
# der.Certificate; a duplicate is refused; other critical ones are listed in
# Certificate.unknown_critical for firmware/crypto/policy.py to refuse.
from firmware.crypto import VerifyError
from firmware.crypto import der

# Extensions the policy reads or knows to be irrelevant to a code-signing
# chain; any other extension marked critical is refused (RFC 5280 4.2).
OID_SKI = "2.5.29.14"
OID_AKI = "2.5.29.35"
OID_SAN = "2.5.29.17"
KNOWN_EXTENSIONS = (der.OID_BASIC_CONSTRAINTS, der.OID_KEY_USAGE, der.OID_EXT_KEY_USAGE, OID_SKI, OID_AKI, OID_SAN)

# keyUsage bits (RFC 5280 4.2.1.3), as Certificate.key_usage holds them.
KU_DIGITAL_SIGNATURE = 1 << 0
KU_KEY_CERT_SIGN = 1 << 5


def parse(cert, buf, s, e):
    # Fills the der.Certificate `cert` from its extensions [3] field.
    ss, se = der.expect_all(buf, s, e, der.SEQUENCE)
    exts = der.children(buf, ss, se)
    if not exts:
        raise der._bad("empty extensions")
    for t, xs, xe in exts:
        if t != der.SEQUENCE:
            raise der._bad("extension")
        ext = der.children(buf, xs, xe)
        if len(ext) not in (2, 3) or ext[0][0] != der.OID or ext[-1][0] != der.OCTET_STRING:
            raise der._bad("extension")
        critical = False
        if len(ext) == 3:
            if ext[1][0] != der.BOOLEAN:
                raise der._bad("extension critical")
            critical = der.parse_bool(buf, ext[1][1], ext[1][2])
            if not critical:
                raise VerifyError(der.DER_DEFAULT, "critical FALSE written out")
        oid = der.parse_oid(buf, ext[0][1], ext[0][2])
        # Two values for one extension leave its meaning to whichever a reader takes.
        if oid in cert.extension_oids:
            raise VerifyError(der.DUPLICATE_EXTENSION, oid)
        cert.extension_oids.append(oid)
        vs, ve = ext[-1][1], ext[-1][2]
        if oid == der.OID_BASIC_CONSTRAINTS:
            _basic_constraints(cert, buf, vs, ve)
        elif oid == der.OID_KEY_USAGE:
            _key_usage(cert, buf, vs, ve)
        elif oid == der.OID_EXT_KEY_USAGE:
            es, ee = der.expect_all(buf, vs, ve, der.SEQUENCE)
            purposes = der.children(buf, es, ee)
            if not purposes:
                raise der._bad("empty extendedKeyUsage")
            eku = []
            for t2, ps, pe in purposes:
                if t2 != der.OID:
                    raise der._bad("extendedKeyUsage")
                eku.append(der.parse_oid(buf, ps, pe))
            cert.ext_key_usage = eku
        elif critical and oid not in KNOWN_EXTENSIONS:
            cert.unknown_critical.append(oid)


def _basic_constraints(cert, buf, vs, ve):
    bs, be = der.expect_all(buf, vs, ve, der.SEQUENCE)
    kids = der.children(buf, bs, be)
    ca = False
    k = 0
    if k < len(kids) and kids[k][0] == der.BOOLEAN:
        ca = der.parse_bool(buf, kids[k][1], kids[k][2])
        if not ca:
            raise VerifyError(der.DER_DEFAULT, "cA FALSE written out")
        k += 1
    if k < len(kids) and kids[k][0] == der.INTEGER:
        cert.path_len = der.parse_int(buf, kids[k][1], kids[k][2])
        k += 1
    if k != len(kids):
        raise der._bad("basicConstraints")
    cert.is_ca = ca


def _key_usage(cert, buf, vs, ve):
    bs, be = der.expect_all(buf, vs, ve, der.BIT_STRING)
    # A named bit list: unused-bits count, then the bits, no trailing zero bits (DER).
    if be - bs < 2 or buf[bs] > 7:
        raise der._bad("keyUsage")
    unused = buf[bs]
    lastb = buf[be - 1]
    if lastb == 0 or lastb & ((1 << unused) - 1) or not lastb & (1 << unused):
        raise der._bad("keyUsage bits")
    mask = 0
    for i in range((be - bs - 1) * 8 - unused):
        if buf[bs + 1 + i // 8] & (0x80 >> (i % 8)):
            mask |= 1 << i
    cert.key_usage = mask

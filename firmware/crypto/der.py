# Strict DER reader and X.509 certificate parser.
# Works on offsets into one memoryview so a certificate is not copied piecewise;
# every read is bounds-checked. Only DER is accepted, never BER: a value has
# exactly one encoding, so a signed certificate cannot be re-encoded into a
# different byte string that still verifies (malleability). Refusals:
#   der_length    indefinite or non-minimal length
#   der_integer   empty INTEGER or one with a redundant leading 0x00 / 0xFF
#   der_boolean   BOOLEAN other than one byte 0x00 / 0xFF
#   der_trailing  bytes after a structure that should end there
#   der_default   a DEFAULT value written out (extension critical FALSE,
#                 basicConstraints cA FALSE, version v1)
#   bad_time      a validity date that is not a calendar date, or not the
#                 RFC 5280 form (UTCTime through 2049, GeneralizedTime from
#                 2050, YYMMDDHHMMSSZ / YYYYMMDDHHMMSSZ)
#   bad_version   a version other than v1..v3, or extensions / unique IDs
#                 where the version has none
#   sig_alg_mismatch  outer signatureAlgorithm differs from the tbs one
#   duplicate_extension  one extension OID twice
#   malformed     anything else structurally wrong (truncation, wrong tags)
# The policy over the parsed fields is in firmware/crypto/policy.py.
from firmware.core import timefmt
from firmware.crypto import VerifyError
from firmware.core.errtext import errtext  # an exception in words for a log line

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
BOOLEAN = 0x01
UTC_TIME = 0x17
GEN_TIME = 0x18

OID_RSA = "1.2.840.113549.1.1.1"
OID_RSA_SHA256 = "1.2.840.113549.1.1.11"
OID_RSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_EC_PUBKEY = "1.2.840.10045.2.1"
OID_P256 = "1.2.840.10045.3.1.7"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_CN = "2.5.4.3"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_KEY_USAGE = "2.5.29.15"
OID_EXT_KEY_USAGE = "2.5.29.37"

DER_LENGTH = "der_length"
DER_INTEGER = "der_integer"
DER_BOOLEAN = "der_boolean"
DER_TRAILING = "der_trailing"
DER_DEFAULT = "der_default"
BAD_TIME = "bad_time"
BAD_VERSION = "bad_version"
SIG_ALG_MISMATCH = "sig_alg_mismatch"
DUPLICATE_EXTENSION = "duplicate_extension"

# Signature algorithm names shared with verify.py.
ALG_RSA_PKCS1_SHA256 = "rsa-pkcs1-sha256"
ALG_RSA_PSS_SHA256 = "rsa-pss-sha256"
ALG_ECDSA_SHA256 = "ecdsa-sha256"


def _bad(detail):
    return VerifyError("malformed", detail)


def read_tlv(buf, pos, end):
    # Returns (tag, value_start, value_end); only single-byte tags and definite lengths (DER).
    if pos + 2 > end:
        raise _bad("truncated header")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise _bad("multi-byte tag")
    ln = buf[pos + 1]
    pos += 2
    if ln & 0x80:
        nb = ln & 0x7F
        # 0x80 is BER indefinite length; >4 length bytes cannot fit in any sane cert.
        if nb == 0:
            raise VerifyError(DER_LENGTH, "indefinite length")
        if nb > 4:
            raise _bad("bad length")
        if pos + nb > end:
            raise _bad("truncated length")
        if buf[pos] == 0:
            raise VerifyError(DER_LENGTH, "leading zero length byte")
        ln = 0
        for i in range(nb):
            ln = (ln << 8) | buf[pos + i]
        if ln < 0x80:
            raise VerifyError(DER_LENGTH, "long form for a short length")
        pos += nb
    if ln > end - pos:
        raise _bad("length overruns")
    return tag, pos, pos + ln


def expect(buf, pos, end, tag):
    t, s, e = read_tlv(buf, pos, end)
    if t != tag:
        raise _bad("expected tag 0x%02x got 0x%02x" % (tag, t))
    return s, e


def expect_all(buf, pos, end, tag):
    # One TLV of this tag that fills [pos, end) exactly.
    s, e = expect(buf, pos, end, tag)
    if e != end:
        raise VerifyError(DER_TRAILING, "after tag 0x%02x" % tag)
    return s, e


def children(buf, start, end):
    # List of (tag, start, end) for the TLVs filling [start, end) exactly.
    out = []
    pos = start
    while pos < end:
        t, s, e = read_tlv(buf, pos, end)
        out.append((t, s, e))
        pos = e
    return out


def parse_int(buf, s, e, unsigned=True):
    if s >= e:
        raise VerifyError(DER_INTEGER, "empty integer")
    # Minimal two's complement: the first 9 bits are never all equal.
    if e - s > 1 and ((buf[s] == 0 and not buf[s + 1] & 0x80) or (buf[s] == 0xFF and buf[s + 1] & 0x80)):
        raise VerifyError(DER_INTEGER, "redundant leading byte")
    if unsigned and buf[s] & 0x80:
        raise _bad("negative integer")
    v = int.from_bytes(bytes(buf[s:e]), "big")
    if buf[s] & 0x80:
        v -= 1 << (8 * (e - s))
    return v


def parse_oid(buf, s, e):
    if s >= e:
        raise _bad("empty oid")
    parts = []
    v = 0
    for i in range(s, e):
        b = buf[i]
        if b == 0x80 and v == 0:
            raise _bad("oid padding")  # a subidentifier never starts with 0x80 (X.690 8.19.2)
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(v)
            v = 0
    if buf[e - 1] & 0x80:
        raise _bad("truncated oid")
    first = parts[0]
    if first < 80:
        head = "%d.%d" % (first // 40, first % 40)
    else:
        head = "2.%d" % (first - 80)
    return ".".join([head] + [str(p) for p in parts[1:]])


def parse_bool(buf, s, e):
    if e - s != 1 or buf[s] not in (0, 0xFF):
        raise VerifyError(DER_BOOLEAN, "boolean")
    return buf[s] == 0xFF


def parse_ecdsa_signature(sig):
    # Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }, strict DER, nothing after it.
    sig = bytes(sig)
    try:
        s0, e0 = expect_all(sig, 0, len(sig), SEQUENCE)
        kids = children(sig, s0, e0)
        if len(kids) != 2 or kids[0][0] != INTEGER or kids[1][0] != INTEGER:
            raise _bad("ecdsa signature")
        return parse_int(sig, kids[0][1], kids[0][2]), parse_int(sig, kids[1][1], kids[1][2])
    except VerifyError as ex:
        raise VerifyError("bad_signature", "ecdsa encoding: %s" % ex)


def split_certificates(blob):
    # Certificates one after another (PEM blocks, or DER back to back: a signed
    # bundle's trailer) -> list of DER byte strings, signer first.
    if isinstance(blob, str) or bytes(blob[:5]) == b"-----" or b"-----BEGIN" in bytes(blob[:64]):
        from firmware.crypto import pem
        out = pem.decode_all(blob)
        if not out:
            raise _bad("no PEM block")
        return out
    blob = bytes(blob)
    out = []
    pos = 0
    while pos < len(blob):
        _, _, e = read_tlv(blob, pos, len(blob))
        out.append(blob[pos:e])
        pos = e
    if not out:
        raise _bad("no certificate")
    return out


def parse_bitstring(buf, s, e):
    # Keys and signatures are whole bytes: a non-zero unused-bits count is rejected.
    if s >= e or buf[s] != 0:
        raise _bad("bit string")
    return s + 1, e


def parse_time(buf, tag, s, e):
    txt = bytes(buf[s:e])
    if tag == UTC_TIME:
        if len(txt) != 13:
            raise VerifyError(BAD_TIME, "utctime")
        body = txt[:12]
    elif tag == GEN_TIME:
        if len(txt) != 15:
            raise VerifyError(BAD_TIME, "generalizedtime")
        body = txt[:14]
    else:
        raise _bad("time tag")
    if txt[-1] != 0x5A:  # 'Z': DER requires UTC
        raise VerifyError(BAD_TIME, "time zone")
    for c in body:
        if c < 0x30 or c > 0x39:
            raise VerifyError(BAD_TIME, "time digits")
    if tag == UTC_TIME:
        y = int(body[0:2])
        # RFC 5280: YY >= 50 means 19YY.
        y += 1900 if y >= 50 else 2000
        body = body[2:]
    else:
        y = int(body[0:4])
        body = body[4:]
        # RFC 5280 4.1.2.5: dates through 2049 are UTCTime.
        if 1950 <= y <= 2049:
            raise VerifyError(BAD_TIME, "GeneralizedTime before 2050")
    mo = int(body[0:2])
    d = int(body[2:4])
    hh = int(body[4:6])
    mi = int(body[6:8])
    ss = int(body[8:10])
    if not (1 <= mo <= 12 and 1 <= d <= timefmt.days_in_month(y, mo) and hh < 24 and mi < 60 and ss < 60):
        raise VerifyError(BAD_TIME, "not a calendar date")
    return ((timefmt.days_from_civil(y, mo, d) * 24 + hh) * 60 + mi) * 60 + ss


def _str_value(buf, tag, s, e):
    raw = bytes(buf[s:e])
    try:
        if tag == 0x1E:  # BMPString: UTF-16BE; keep the ASCII subset readable
            return "".join([chr(raw[i + 1]) if raw[i] == 0 else "?" for i in range(0, len(raw) - 1, 2)])
        return raw.decode("utf-8")
    except Exception:
        return "".join([chr(c) if 32 <= c < 127 else "?" for c in raw])


def parse_name_cn(buf, s, e):
    # Name ::= SEQUENCE OF SET OF AttributeTypeAndValue; returns the (last) CN or "".
    cn = ""
    for t, rs, re_ in children(buf, s, e):
        if t != SET:
            raise _bad("rdn")
        for t2, as_, ae in children(buf, rs, re_):
            if t2 != SEQUENCE:
                raise _bad("attribute")
            kids = children(buf, as_, ae)
            if len(kids) != 2 or kids[0][0] != OID:
                raise _bad("attribute")
            if parse_oid(buf, kids[0][1], kids[0][2]) == OID_CN:
                cn = _str_value(buf, kids[1][0], kids[1][1], kids[1][2])
    return cn


def _alg_oid(buf, s, e):
    kids = children(buf, s, e)
    if not kids or kids[0][0] != OID:
        raise _bad("algorithm identifier")
    return parse_oid(buf, kids[0][1], kids[0][2]), kids[1:]


def _hash_alg_is_sha256(buf, tlv):
    t, s, e = tlv
    if t != SEQUENCE:
        raise _bad("hash algorithm")
    return _alg_oid(buf, s, e)[0] == OID_SHA256


def parse_sig_alg(buf, s, e):
    # AlgorithmIdentifier of a signature -> (alg name, pss salt length or None).
    oid, params = _alg_oid(buf, s, e)
    if oid == OID_RSA_SHA256:
        # RFC 4055: parameters NULL (absent tolerated, as some CAs write it).
        if params and (len(params) != 1 or params[0][0] != NULL or params[0][1] != params[0][2]):
            raise _bad("rsa parameters")
        return ALG_RSA_PKCS1_SHA256, None
    if oid == OID_ECDSA_SHA256:
        if params:
            raise _bad("ecdsa parameters")  # RFC 5758: absent
        return ALG_ECDSA_SHA256, None
    if oid == OID_RSA_PSS:
        if len(params) != 1 or params[0][0] != SEQUENCE:
            # Absent parameters mean SHA-1 defaults, which we do not accept.
            raise VerifyError("unsupported_algorithm", "pss without sha256 params")
        hash_ok = mgf_ok = False
        salt = 20
        last = -1
        for t, ps, pe in children(buf, params[0][1], params[0][2]):
            inner = read_tlv(buf, ps, pe) if ps < pe else None
            if inner is None or inner[2] != pe or not 0xA0 <= t <= 0xA3 or t <= last:
                raise _bad("pss params")
            last = t
            if t == 0xA0:
                hash_ok = _hash_alg_is_sha256(buf, inner)
            elif t == 0xA1:
                if inner[0] != SEQUENCE:
                    raise _bad("mgf")
                moid, mparams = _alg_oid(buf, inner[1], inner[2])
                mgf_ok = moid == OID_MGF1 and len(mparams) == 1 and _hash_alg_is_sha256(buf, mparams[0])
            elif t == 0xA2:
                if inner[0] != INTEGER:
                    raise _bad("salt")
                salt = parse_int(buf, inner[1], inner[2])
            elif t == 0xA3:
                if inner[0] != INTEGER or parse_int(buf, inner[1], inner[2]) != 1:
                    raise _bad("trailer")
        if not (hash_ok and mgf_ok):
            raise VerifyError("unsupported_algorithm", "pss must use sha256/mgf1-sha256")
        return ALG_RSA_PSS_SHA256, salt
    raise VerifyError("unsupported_algorithm", oid)


def parse_spki(buf, s, e):
    # SubjectPublicKeyInfo -> ("rsa", n, e) or ("ec", x, y) (P-256 only).
    kids = children(buf, s, e)
    if len(kids) != 2 or kids[0][0] != SEQUENCE or kids[1][0] != BIT_STRING:
        raise _bad("spki")
    oid, params = _alg_oid(buf, kids[0][1], kids[0][2])
    ks, ke = parse_bitstring(buf, kids[1][1], kids[1][2])
    if oid == OID_RSA:
        # RFC 3279 2.3.1: the parameters are NULL.
        if len(params) != 1 or params[0][0] != NULL or params[0][1] != params[0][2]:
            raise _bad("rsa key parameters")
        ss, se = expect(buf, ks, ke, SEQUENCE)
        if se != ke:
            raise _bad("rsa key trailing")
        k = children(buf, ss, se)
        if len(k) != 2 or k[0][0] != INTEGER or k[1][0] != INTEGER:
            raise _bad("rsa key")
        n = parse_int(buf, k[0][1], k[0][2])
        ex = parse_int(buf, k[1][1], k[1][2])
        return ("rsa", n, ex)
    if oid == OID_EC_PUBKEY:
        if len(params) != 1 or params[0][0] != OID or parse_oid(buf, params[0][1], params[0][2]) != OID_P256:
            raise VerifyError("unsupported_algorithm", "ec curve")
        # Only the uncompressed form (0x04 || X || Y) is accepted.
        if ke - ks != 65 or buf[ks] != 4:
            raise _bad("ec point")
        x = int.from_bytes(bytes(buf[ks + 1:ks + 33]), "big")
        y = int.from_bytes(bytes(buf[ks + 33:ks + 65]), "big")
        return ("ec", x, y)
    raise VerifyError("unsupported_algorithm", oid)


class Certificate:
    # Parsed view of one X.509 certificate; byte fields are bytes copies of small parts.
    #   is_ca       None: no basicConstraints; else its cA
    #   path_len    basicConstraints pathLenConstraint or None
    #   key_usage   None: no keyUsage; else a bit mask (KU_*)
    #   ext_key_usage  None, or the list of purpose OIDs
    #   unknown_critical  OIDs of critical extensions this parser does not know
    def __init__(self, der):
        if isinstance(der, str) or bytes(der[:5]) == b"-----":
            from firmware.crypto import pem
            der = pem.decode(der)
        self.der = bytes(der)
        buf = memoryview(self.der)
        end = len(self.der)
        cs, ce = expect_all(buf, 0, end, SEQUENCE)
        top = children(buf, cs, ce)
        if len(top) != 3 or top[0][0] != SEQUENCE or top[1][0] != SEQUENCE or top[2][0] != BIT_STRING:
            raise _bad("certificate")
        # The signed bytes include the tbsCertificate's own tag and length.
        tbs_hdr = cs
        self.tbs = bytes(buf[tbs_hdr:top[0][2]])
        # The whole outer AlgorithmIdentifier TLV, to compare with the tbs one byte for byte.
        self._outer_alg = bytes(buf[top[0][2]:top[1][2]])
        self.sig_alg, self.pss_salt = parse_sig_alg(buf, top[1][1], top[1][2])
        ss, se = parse_bitstring(buf, top[2][1], top[2][2])
        self.signature = bytes(buf[ss:se])
        self._parse_tbs(buf, top[0][1], top[0][2])

    def _parse_tbs(self, buf, s, e):
        kids = children(buf, s, e)
        i = 0
        self.version = 1
        if kids and kids[0][0] == 0xA0:
            vs, ve = expect_all(buf, kids[0][1], kids[0][2], INTEGER)
            v = parse_int(buf, vs, ve, unsigned=False)
            # v1 is the DEFAULT: DER leaves it out, so an explicit 0 is not DER.
            if v == 0:
                raise VerifyError(DER_DEFAULT, "version v1 written out")
            if v not in (1, 2):
                raise VerifyError(BAD_VERSION, "version %d" % (v + 1))
            self.version = v + 1
            i = 1
        if len(kids) < i + 6:
            raise _bad("tbs fields")
        serial, inner_alg, issuer, validity, subject, spki = kids[i:i + 6]
        if serial[0] != INTEGER or inner_alg[0] != SEQUENCE or issuer[0] != SEQUENCE:
            raise _bad("tbs")
        if validity[0] != SEQUENCE or subject[0] != SEQUENCE or spki[0] != SEQUENCE:
            raise _bad("tbs")
        self.serial = parse_int(buf, serial[1], serial[2], unsigned=False)
        # RFC 5280 4.1.1.2: the inner algorithm equals the outer one, parameters
        # included (so the PSS parameters used are the signed ones).
        prev_end = serial[2]
        if bytes(buf[prev_end:inner_alg[2]]) != self._outer_alg:
            raise VerifyError(SIG_ALG_MISMATCH, "tbs and outer signature algorithms differ")
        self.issuer = bytes(buf[issuer[1]:issuer[2]])
        self.issuer_cn = parse_name_cn(buf, issuer[1], issuer[2])
        self.subject = bytes(buf[subject[1]:subject[2]])
        self.subject_cn = parse_name_cn(buf, subject[1], subject[2])
        times = children(buf, validity[1], validity[2])
        if len(times) != 2:
            raise _bad("validity")
        self.not_before = parse_time(buf, times[0][0], times[0][1], times[0][2])
        self.not_after = parse_time(buf, times[1][0], times[1][1], times[1][2])
        self.public_key = parse_spki(buf, spki[1], spki[2])
        self.is_ca = None  # None: no basicConstraints extension present
        self.path_len = None
        self.key_usage = None
        self.ext_key_usage = None
        self.unknown_critical = []
        self.extension_oids = []
        # Optional fields in their order, each once: issuerUniqueID [1],
        # subjectUniqueID [2] (v2 and v3 only), extensions [3] (v3 only).
        last = 0
        for t, xs, xe in kids[i + 6:]:
            n = {0x81: 1, 0xA1: 1, 0x82: 2, 0xA2: 2, 0xA3: 3}.get(t)
            if n is None or n <= last:
                raise _bad("tbs field 0x%02x" % t)
            last = n
            if n == 3:
                if self.version != 3:
                    raise VerifyError(BAD_VERSION, "extensions in a v%d certificate" % self.version)
                from firmware.crypto import x509ext  # its own module: keeps der.py small to compile
                x509ext.parse(self, buf, xs, xe)
            elif self.version < 2:
                raise VerifyError(BAD_VERSION, "unique identifier in a v1 certificate")


# --- encoding (the CSR and its key, firmware/ocpp/certs.py) ------------------

def _len_bytes(n):
    if n < 128:
        return bytes((n,))
    b = b""
    while n:
        b = bytes((n & 255,)) + b
        n >>= 8
    return bytes((0x80 | len(b),)) + b


def tlv(tag, body):
    # One TLV with a minimal (DER) length.
    return bytes((tag,)) + _len_bytes(len(body)) + body


def int_tlv(v):
    # A non-negative INTEGER, minimal: a leading zero only before a high bit.
    # (No int.bit_length on MicroPython: the hex digits give the size.)
    b = v.to_bytes(1 + (len("%x" % v) + 1) // 2, "big")
    i = 0
    while i < len(b) - 1 and b[i] == 0 and b[i + 1] < 0x80:
        i += 1
    return tlv(INTEGER, b[i:])


def parse_certificate(data):
    # Never raises anything but VerifyError, whatever the input (or MemoryError).
    try:
        return Certificate(data)
    except VerifyError:
        raise
    except MemoryError:
        raise  # short of RAM is not a bad signature
    except Exception as ex:
        raise VerifyError("malformed", errtext(ex))

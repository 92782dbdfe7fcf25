# The certificate policy for firmware signing (RFC 5280 path rules, narrowed to
# what a code-signing chain under a manufacturer root needs, as OCPP's
# security whitepaper expects). verify.py builds the chain and checks the
# signatures; this module says which certificate may take which place in it.
#
# Chain: installed root -> at most two intermediates -> signing certificate,
# at most MAX_CHAIN certificates counting the root. Names match byte for byte
# (the issuer's DER-encoded subject Name equals the certificate's issuer Name;
# no RFC 5280 case folding or string-type conversion).
#
# Refusal reasons (VerifyError.reason), besides der.py's encoding ones:
#   signer_is_ca          the signing certificate is a CA (an intermediate or a root)
#   signer_key_usage      its keyUsage lacks digitalSignature
#   signer_ext_key_usage  its extendedKeyUsage lacks id-kp-codeSigning
#   bad_key               a key outside RSA 2048..4096 (odd exponent 3..2^256) or P-256 on the curve
#   issuer_not_ca         an issuer (intermediate or root) without basicConstraints cA TRUE
#   issuer_key_usage      an issuer whose keyUsage lacks keyCertSign
#   path_len_exceeded     more CAs below an issuer than its pathLenConstraint allows
#   unknown_critical_extension  a critical extension this firmware does not know
#   chain_too_long        no root reached within MAX_CHAIN certificates
from firmware.crypto import VerifyError
from firmware.crypto import der
from firmware.crypto import x509ext
from firmware.crypto.ecdsa import bitlen

MAX_CHAIN = 4
OID_CODE_SIGNING = "1.3.6.1.5.5.7.3.3"

SIGNER_IS_CA = "signer_is_ca"
SIGNER_KEY_USAGE = "signer_key_usage"
SIGNER_EXT_KEY_USAGE = "signer_ext_key_usage"
BAD_KEY = "bad_key"
ISSUER_NOT_CA = "issuer_not_ca"
ISSUER_KEY_USAGE = "issuer_key_usage"
PATH_LEN_EXCEEDED = "path_len_exceeded"
UNKNOWN_CRITICAL_EXTENSION = "unknown_critical_extension"
CHAIN_TOO_LONG = "chain_too_long"

# Every reason a certificate or signature check can give (update.py maps
# them all to an invalid signature / signing certificate).
REASONS = (SIGNER_IS_CA, SIGNER_KEY_USAGE, SIGNER_EXT_KEY_USAGE, BAD_KEY, ISSUER_NOT_CA, ISSUER_KEY_USAGE,
           PATH_LEN_EXCEEDED, UNKNOWN_CRITICAL_EXTENSION, CHAIN_TOO_LONG,
           der.DER_LENGTH, der.DER_INTEGER, der.DER_BOOLEAN, der.DER_TRAILING, der.DER_DEFAULT, der.BAD_TIME,
           der.BAD_VERSION, der.SIG_ALG_MISMATCH, der.DUPLICATE_EXTENSION,
           "bad_signature", "unknown_root", "cert_expired", "cert_not_yet_valid", "issuer_mismatch",
           "malformed", "unsupported_algorithm", "unsupported_key", "key_algorithm_mismatch")


def check_extensions(c):
    if c.unknown_critical:
        raise VerifyError(UNKNOWN_CRITICAL_EXTENSION, "%s in %s" % (c.unknown_critical[0], c.subject_cn))


def check_key(c):
    k = c.public_key
    if k[0] == "rsa":
        bits = bitlen(k[1])
        e = k[2]
        if not 2048 <= bits <= 4096 or e < 3 or not e & 1 or e >> 256:
            raise VerifyError(BAD_KEY, "rsa %d bits in %s" % (bits, c.subject_cn))
        return
    from firmware.crypto import ecdsa
    if k[0] != "ec" or not ecdsa.on_curve(k[1], k[2]):
        raise VerifyError(BAD_KEY, "ec point not on P-256 in %s" % c.subject_cn)


def check_signer(c):
    """The certificate whose key signs the firmware: an end entity meant for code signing."""
    check_extensions(c)
    if c.is_ca is True:
        raise VerifyError(SIGNER_IS_CA, c.subject_cn)
    if c.key_usage is not None and not c.key_usage & x509ext.KU_DIGITAL_SIGNATURE:
        raise VerifyError(SIGNER_KEY_USAGE, c.subject_cn)
    if c.ext_key_usage is not None and OID_CODE_SIGNING not in c.ext_key_usage:
        raise VerifyError(SIGNER_EXT_KEY_USAGE, c.subject_cn)
    check_key(c)


def check_issuer(c, below=0):
    """A certificate that issued another one in the chain; below: the number of
    non-self-issued intermediate CAs under it (RFC 5280 6.1.4 (l), (m))."""
    check_extensions(c)
    if c.is_ca is not True:
        raise VerifyError(ISSUER_NOT_CA, c.subject_cn)
    if c.key_usage is not None and not c.key_usage & x509ext.KU_KEY_CERT_SIGN:
        raise VerifyError(ISSUER_KEY_USAGE, c.subject_cn)
    if c.path_len is not None and below > c.path_len:
        raise VerifyError(PATH_LEN_EXCEEDED, "%s allows %d below it, has %d" % (c.subject_cn, c.path_len, below))
    check_key(c)


def check_dates(c, now, what=""):
    if now < c.not_before:
        raise VerifyError("cert_not_yet_valid", what + c.subject_cn)
    if now > c.not_after:
        raise VerifyError("cert_expired", what + c.subject_cn)

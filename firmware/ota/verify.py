# Signature and certificate-chain checks for signed firmware.
# Every public function either returns normally or raises VerifyError(reason);
# unexpected exceptions from malformed input are converted, never propagated.
# The *_work generators are the shared core: they yield inside the big-integer
# loops (firmware/core/work.py), so a task can drive them in bounded slices;
# the plain functions run the same work to the end at once.
import hashlib

from firmware.core.work import run_sync
from firmware.ota import VerifyError
from firmware.ota import der

# Reasons verify_cert / verify_chain report (VerifyError.reason).
BAD_SIGNATURE = "bad_signature"
CERT_EXPIRED = "cert_expired"
CERT_NOT_YET_VALID = "cert_not_yet_valid"
ISSUER_MISMATCH = "issuer_mismatch"
ISSUER_NOT_CA = "issuer_not_ca"
UNKNOWN_ROOT = "unknown_root"
MALFORMED = "malformed"


def _verify(pubkey, sig_alg, digest, signature, pss_salt):
    kind = pubkey[0]
    if sig_alg == der.ALG_ECDSA_SHA256:
        if kind != "ec":
            raise VerifyError("key_algorithm_mismatch", "ecdsa needs an ec key")
        from firmware.ota import ecdsa
        yield from ecdsa.verify_work(pubkey[1], pubkey[2], digest, signature)
        return
    if sig_alg in (der.ALG_RSA_PKCS1_SHA256, der.ALG_RSA_PSS_SHA256):
        if kind != "rsa":
            raise VerifyError("key_algorithm_mismatch", "rsa signature needs an rsa key")
        from firmware.ota import rsa
        if sig_alg == der.ALG_RSA_PKCS1_SHA256:
            yield from rsa.verify_pkcs1v15_work(pubkey[1], pubkey[2], digest, signature)
        else:
            yield from rsa.verify_pss_work(pubkey[1], pubkey[2], digest, signature, pss_salt)
        return
    raise VerifyError("unsupported_algorithm", str(sig_alg))


def verify_signature(pubkey, sig_alg, digest_or_data, signature, is_digest=False, pss_salt=None):
    return run_sync(verify_signature_work(pubkey, sig_alg, digest_or_data, signature, is_digest, pss_salt))


def verify_signature_work(pubkey, sig_alg, digest_or_data, signature, is_digest=False, pss_salt=None):
    """Verify a SHA-256 signature.

    pubkey: ("rsa", n, e) / ("ec", x, y) or a der.Certificate (its key is used).
    sig_alg: der.ALG_ECDSA_SHA256, der.ALG_RSA_PKCS1_SHA256 or der.ALG_RSA_PSS_SHA256.
    digest_or_data: the signed bytes, or their 32-byte SHA-256 if is_digest (e.g. sha256_file()).
    pss_salt: required PSS salt length; None recovers any length.
    Returns True or raises VerifyError.
    """
    try:
        if isinstance(pubkey, der.Certificate):
            pubkey = pubkey.public_key
        if is_digest:
            digest = bytes(digest_or_data)
            if len(digest) != 32:
                raise VerifyError(MALFORMED, "digest length")
        else:
            digest = hashlib.sha256(digest_or_data).digest()
        yield from _verify(pubkey, sig_alg, digest, signature, pss_salt)
        return True
    except VerifyError:
        raise
    except MemoryError:
        raise  # short of RAM is not a bad signature
    except Exception as ex:
        raise VerifyError(MALFORMED, repr(ex))


def _cert(c):
    if isinstance(c, der.Certificate):
        return c
    return der.parse_certificate(c)


def verify_cert(cert, issuer_cert, now):
    return run_sync(verify_cert_work(cert, issuer_cert, now))


def verify_cert_work(cert, issuer_cert, now):
    """Check cert was issued by issuer_cert and is valid at now (Unix epoch seconds).

    Checks, in order: issuer name, issuer CA flag, signature, validity dates.
    Accepts Certificate objects, DER bytes or PEM text. Returns the parsed cert.
    """
    try:
        cert = _cert(cert)
        issuer_cert = _cert(issuer_cert)
        if cert.issuer != issuer_cert.subject:
            raise VerifyError(ISSUER_MISMATCH, cert.issuer_cn)
        # A root without basicConstraints CA:TRUE must not issue certificates.
        if issuer_cert.is_ca is not True:
            raise VerifyError(ISSUER_NOT_CA, issuer_cert.subject_cn)
        try:
            yield from verify_signature_work(issuer_cert.public_key, cert.sig_alg, cert.tbs, cert.signature,
                                             pss_salt=cert.pss_salt)
        except VerifyError as ex:
            raise VerifyError(BAD_SIGNATURE, str(ex))
        if now < cert.not_before:
            raise VerifyError(CERT_NOT_YET_VALID, cert.subject_cn)
        if now > cert.not_after:
            raise VerifyError(CERT_EXPIRED, cert.subject_cn)
        return cert
    except VerifyError:
        raise
    except MemoryError:
        raise  # short of RAM is not a bad signature
    except Exception as ex:
        raise VerifyError(MALFORMED, repr(ex))


def _check_root_work(root, now):
    # An installed trust anchor: must be a CA and in its validity period; a
    # self-issued one must also carry a good self-signature (catches corruption).
    if root.is_ca is not True:
        raise VerifyError(ISSUER_NOT_CA, root.subject_cn)
    if root.issuer == root.subject:
        yield from verify_cert_work(root, root, now)
    elif now < root.not_before:
        raise VerifyError(CERT_NOT_YET_VALID, "root " + root.subject_cn)
    elif now > root.not_after:
        raise VerifyError(CERT_EXPIRED, "root " + root.subject_cn)


def verify_chain(signing_cert, roots, now):
    return run_sync(verify_chain_work(signing_cert, roots, now))


def verify_chain_work(signing_cert, roots, now):
    """signing_cert issued directly by one of roots (one level).

    Returns the root Certificate it chains to; raises VerifyError with the reason
    of the failing check. A root whose subject does not match is skipped; with no
    matching root at all the reason is UNKNOWN_ROOT. Roots are checked for their
    own CA flag, validity dates and (if self-issued) self-signature too.
    """
    try:
        signing_cert = _cert(signing_cert)
        last = None
        for r in roots:
            try:
                root = _cert(r)
            except VerifyError:
                continue  # one broken installed root must not hide the others
            if root.subject != signing_cert.issuer:
                continue
            try:
                yield from _check_root_work(root, now)
                yield from verify_cert_work(signing_cert, root, now)
                return root
            except VerifyError as ex:
                # Same name but a different key (or expired root): keep looking.
                last = ex
        if last is not None:
            raise last
        raise VerifyError(UNKNOWN_ROOT, signing_cert.issuer_cn)
    except VerifyError:
        raise
    except MemoryError:
        raise  # short of RAM is not a bad signature
    except Exception as ex:
        raise VerifyError(MALFORMED, repr(ex))

# Signature and certificate-chain checks for signed firmware.
# Every public function either returns normally or raises VerifyError(reason);
# unexpected exceptions from malformed input are converted, never propagated.
# The *_work generators are the shared core: they yield inside the big-integer
# loops (firmware/core/work.py), so a task can drive them in bounded slices;
# the plain functions run the same work to the end at once.
import hashlib

from firmware.core.work import run_sync
from firmware.crypto import VerifyError
from firmware.core.errtext import errtext  # an exception in words for a log line
from firmware.crypto import der
from firmware.crypto import policy

# Reasons verify_cert / verify_chain report (VerifyError.reason).
BAD_SIGNATURE = "bad_signature"
CERT_EXPIRED = "cert_expired"
CERT_NOT_YET_VALID = "cert_not_yet_valid"
ISSUER_MISMATCH = "issuer_mismatch"
ISSUER_NOT_CA = "issuer_not_ca"
UNKNOWN_ROOT = "unknown_root"
MALFORMED = "malformed"


# How an ECDSA signature may be written: DER only (X.509, the default), raw
# 64-byte r || s only (IEEE P1363), or either (a bundle's own signature).
ECDSA_DER = "der"
ECDSA_RAW = "raw"
ECDSA_ANY = "any"


def _ecdsa_sig(signature, form):
    if form != ECDSA_RAW:
        try:
            return der.parse_ecdsa_signature(signature)
        except VerifyError:
            if form == ECDSA_DER or len(signature) != 64:
                raise
    if len(signature) != 64:
        raise VerifyError(BAD_SIGNATURE, "raw r||s is 64 bytes")
    sig = bytes(signature)
    return int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")


def _verify(pubkey, sig_alg, digest, signature, pss_salt, ecdsa_form=ECDSA_DER):
    kind = pubkey[0]
    if sig_alg == der.ALG_ECDSA_SHA256:
        if kind != "ec":
            raise VerifyError("key_algorithm_mismatch", "ecdsa needs an ec key")
        from firmware.crypto import ecdsa
        yield from ecdsa.verify_work(pubkey[1], pubkey[2], digest, _ecdsa_sig(signature, ecdsa_form))
        return
    if sig_alg in (der.ALG_RSA_PKCS1_SHA256, der.ALG_RSA_PSS_SHA256):
        if kind != "rsa":
            raise VerifyError("key_algorithm_mismatch", "rsa signature needs an rsa key")
        from firmware.crypto import rsa
        if sig_alg == der.ALG_RSA_PKCS1_SHA256:
            yield from rsa.verify_pkcs1v15_work(pubkey[1], pubkey[2], digest, signature)
        else:
            yield from rsa.verify_pss_work(pubkey[1], pubkey[2], digest, signature, pss_salt)
        return
    raise VerifyError("unsupported_algorithm", str(sig_alg))


def verify_signature(pubkey, sig_alg, digest_or_data, signature, is_digest=False, pss_salt=None,
                     ecdsa_form=ECDSA_DER):
    return run_sync(verify_signature_work(pubkey, sig_alg, digest_or_data, signature, is_digest, pss_salt,
                                          ecdsa_form))


def verify_signature_work(pubkey, sig_alg, digest_or_data, signature, is_digest=False, pss_salt=None,
                          ecdsa_form=ECDSA_DER):
    """Verify a SHA-256 signature.

    pubkey: ("rsa", n, e) / ("ec", x, y) or a der.Certificate (its key is used).
    sig_alg: der.ALG_ECDSA_SHA256, der.ALG_RSA_PKCS1_SHA256 or der.ALG_RSA_PSS_SHA256.
    digest_or_data: the signed bytes, or their 32-byte SHA-256 if is_digest (e.g. sha256_file()).
    pss_salt: required PSS salt length; None recovers any length.
    ecdsa_form: ECDSA_DER (strict DER, the default), ECDSA_RAW or ECDSA_ANY.
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
        yield from _verify(pubkey, sig_alg, digest, signature, pss_salt, ecdsa_form)
        return True
    except VerifyError:
        raise
    except MemoryError:
        raise  # short of RAM is not a bad signature
    except Exception as ex:
        raise VerifyError(MALFORMED, errtext(ex))


def _cert(c):
    if isinstance(c, der.Certificate):
        return c
    return der.parse_certificate(c)


def verify_cert(cert, issuer_cert, now, below=0):
    return run_sync(verify_cert_work(cert, issuer_cert, now, below))


def verify_cert_work(cert, issuer_cert, now, below=0):
    """Check cert was issued by issuer_cert and is valid at now (Unix epoch seconds).

    Checks, in order: issuer name (byte-exact), the issuer rules of policy.py
    (CA, keyCertSign, known critical extensions, key; pathLen is the chain's
    business: below), signature, validity dates, the certificate's own
    critical extensions. Accepts Certificate objects, DER bytes or PEM text.
    Returns the parsed cert.
    """
    try:
        cert = _cert(cert)
        issuer_cert = _cert(issuer_cert)
        if cert.issuer != issuer_cert.subject:
            raise VerifyError(ISSUER_MISMATCH, cert.issuer_cn)
        # A root without basicConstraints CA:TRUE must not issue certificates.
        policy.check_issuer(issuer_cert, below)
        try:
            yield from verify_signature_work(issuer_cert.public_key, cert.sig_alg, cert.tbs, cert.signature,
                                             pss_salt=cert.pss_salt)
        except VerifyError as ex:
            raise VerifyError(BAD_SIGNATURE, str(ex))
        policy.check_dates(cert, now)
        policy.check_extensions(cert)
        return cert
    except VerifyError:
        raise
    except MemoryError:
        raise  # short of RAM is not a bad signature
    except Exception as ex:
        raise VerifyError(MALFORMED, errtext(ex))


def _chain_certs(signing_cert, intermediates):
    # -> (signer, [intermediates]): signing_cert may be a list (signer first),
    # or PEM text / back-to-back DER holding the signer then its intermediates.
    if isinstance(signing_cert, (list, tuple)):
        certs = [_cert(c) for c in signing_cert]
    elif isinstance(signing_cert, der.Certificate):
        certs = [signing_cert]
    else:
        certs = [der.parse_certificate(d) for d in der.split_certificates(signing_cert)]
    if not certs:
        raise VerifyError(MALFORMED, "no signing certificate")
    return certs[0], certs[1:] + [_cert(c) for c in intermediates]


def check_anchor_work(root, now):
    # An installed root (ManufacturerRootCertificate, CentralSystemRootCertificate)
    # by the issuer rules, in its validity period, its self-signature good
    # (catches a corrupted or doctored copy). Work units: the self-signature is an
    # ECDSA/RSA verify, which must yield like the rest of the chain.
    policy.check_issuer(root)
    if root.issuer == root.subject:
        yield from verify_cert_work(root, root, now)
    else:
        policy.check_dates(root, now, "root ")


def verify_chain(signing_cert, roots, now, intermediates=()):
    return run_sync(verify_chain_work(signing_cert, roots, now, intermediates))


def verify_chain_work(signing_cert, roots, now, intermediates=()):
    """signing_cert -> [intermediates] -> one of roots, at most policy.MAX_CHAIN
    certificates counting the root.

    signing_cert: a Certificate, DER, or PEM text (several PEM blocks or DER
    certificates back to back: the signer first, then intermediates in any
    order), or a list of those. The signer must pass policy.check_signer,
    every issuer policy.check_issuer (pathLen counted), every link its
    signature and dates, the root check_anchor_work.
    Returns the root Certificate it chains to; raises VerifyError with the
    reason of the failing check. A root or intermediate whose subject does not
    match is skipped; one that matches but fails is remembered and the next
    candidate tried (key rollover: two CAs of one name). With no match at all
    the reason is UNKNOWN_ROOT, or CHAIN_TOO_LONG if only a longer chain could
    reach a root.
    """
    try:
        signer, inters = _chain_certs(signing_cert, intermediates)
        # More than a whole chain's worth (the root may come along) only costs
        # signature checks: the search below tries each candidate issuer.
        if 1 + len(inters) > policy.MAX_CHAIN:
            raise VerifyError(policy.CHAIN_TOO_LONG, "%d certificates carried" % (1 + len(inters)))
        policy.check_signer(signer)
        anchors = []
        for r in roots:
            try:
                anchors.append(_cert(r))
            except VerifyError:
                continue  # one broken installed root must not hide the others
        state = [None, False]  # last refusal, a longer chain was needed

        def below(path):
            # Non-self-issued intermediates under the next issuer (not the signer).
            return len([c for c in path[1:] if c.issuer != c.subject])

        def extend(path):  # a generator: returns the root, or None
            cur = path[-1]
            for root in anchors:
                if root.subject != cur.issuer:
                    continue
                try:
                    yield from check_anchor_work(root, now)
                    yield from verify_cert_work(cur, root, now, below(path))
                    return root
                except VerifyError as ex:
                    state[0] = ex  # same name, other key or expired: keep looking
            for c in inters:
                if c.subject != cur.issuer or c in path:
                    continue
                if len(path) + 1 >= policy.MAX_CHAIN:
                    state[1] = True
                    continue
                try:
                    yield from verify_cert_work(cur, c, now, below(path))
                except VerifyError as ex:
                    state[0] = ex
                    continue
                r = yield from extend(path + [c])
                if r is not None:
                    return r
            return None

        root = yield from extend([signer])
        if root is not None:
            return root
        if state[0] is not None:
            raise state[0]
        if state[1]:
            raise VerifyError(policy.CHAIN_TOO_LONG, "more than %d certificates" % policy.MAX_CHAIN)
        raise VerifyError(UNKNOWN_ROOT, signer.issuer_cn if not inters else "no installed root for the chain")
    except VerifyError:
        raise
    except MemoryError:
        raise  # short of RAM is not a bad signature
    except Exception as ex:
        raise VerifyError(MALFORMED, errtext(ex))

"""The firmware-signing certificate policy (firmware/crypto/policy.py, strict DER
in der.py / x509ext.py), one table row per rule, each with the reason code it
must produce, run on the MicroPython Unix port through verify.verify_chain.
Then a mutation fuzz: mutated signer certificates, of which only a
DER-identical one may verify.

The certificates are written field by field with host_tests/certkit.py (and
signed with `cryptography`'s keys) so that each row breaks exactly one rule.
"""
import datetime
import json
import os
import random

import pytest
from cryptography import x509

import certkit as K
from mp import run_mp

NOW = int(datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc).timestamp())

DRIVER = r"""
import binascii, json
from firmware.crypto import VerifyError, verify
f = open(%r)
for line in f:
    c = json.loads(line)
    roots = [binascii.unhexlify(r) for r in c['roots']]
    out = []
    for chain in c['chains']:
        try:
            r = verify.verify_chain([binascii.unhexlify(x) for x in chain], roots, c['now'])
            out.append('ok')
        except VerifyError as e:
            out.append(e.reason)
        except Exception as e:
            out.append('CRASH ' + repr(e))
    print('BATCH ' + json.dumps(out))
f.close()
print('DONE')
"""


def run_batches(tmp_path, batches):
    # batches: [(roots, [chain, ...])] -> [[reason or 'ok', ...], ...]; one interpreter.
    path = tmp_path / ("chains%d.jsonl" % random.randrange(1 << 30))
    lines = []
    with open(path, "w") as f:
        for i, (roots, chains) in enumerate(batches):
            for j in range(0, len(chains), 50):  # at most 50 chains a line: a small heap per batch
                f.write(json.dumps({"roots": [r.hex() for r in roots], "now": NOW,
                                    "chains": [[c.hex() for c in ch] for ch in chains[j:j + 50]]}) + "\n")
                lines.append(i)
    p = run_mp(DRIVER % str(path), timeout=600)
    assert p.returncode == 0 and "DONE" in p.stdout, p.stdout[-2000:] + p.stderr
    out = [[] for _ in batches]
    res = [json.loads(ln[6:]) for ln in p.stdout.splitlines() if ln.startswith("BATCH ")]
    assert len(res) == len(lines)
    for i, r in zip(lines, res):
        out[i] += r
    return out


class PKI:
    """A manufacturer PKI: root -> intermediate(s) -> signer, all valid."""

    def __init__(self):
        self.k_root = K.ec_key()
        self.k_i1 = K.ec_key()
        self.k_i2 = K.rsa_key(2048)
        self.k_sig = K.ec_key()
        self.n_root, self.n_i1, self.n_i2, self.n_sig = (K.name("Root"), K.name("Intermediate 1"),
                                                         K.name("Intermediate 2"), K.name("Signer"))
        self.root = K.cert(self.n_root, self.n_root, self.k_root, self.k_root, K.ca_exts(self.k_root))
        self.i1 = K.cert(self.n_i1, self.n_root, self.k_i1, self.k_root, K.ca_exts(self.k_i1))
        self.i2 = K.cert(self.n_i2, self.n_i1, self.k_i2, self.k_i1, K.ca_exts(self.k_i2))

    def signer(self, issuer="root", exts=None, key=None, subject=None, **kw):
        iname, ikey = {"root": (self.n_root, self.k_root), "i1": (self.n_i1, self.k_i1),
                       "i2": (self.n_i2, self.k_i2)}[issuer]
        key = key or self.k_sig
        return K.cert(subject or self.n_sig, iname, key, ikey, K.signer_exts(key) if exts is None else exts, **kw)

    def inter(self, n, issuer_name, issuer_key, key, exts, **kw):
        return K.cert(K.name(n), issuer_name, key, issuer_key, exts, **kw)


def rows(p):
    """(label, chain signer-first, roots, expected reason or 'ok')."""
    R = [p.root]
    k = p.k_sig
    out = []

    def row(label, chain, want, roots=None):
        out.append((label, chain, roots if roots is not None else R, want))

    # --- what must pass
    row("valid 2-level chain (root -> signer)", [p.signer()], "ok")
    row("valid 3-level chain (root -> intermediate -> signer)", [p.signer("i1"), p.i1], "ok")
    row("valid 4-level chain (root -> 2 intermediates -> signer, RSA intermediate)",
        [p.signer("i2"), p.i2, p.i1], "ok")
    row("valid 4-level chain, intermediates in the other order", [p.signer("i2"), p.i1, p.i2], "ok")
    row("valid: signer without keyUsage / extendedKeyUsage", [p.signer(exts=[K.bc(False)])], "ok")
    row("valid: signer without any extension (v3)", [p.signer(exts=[])], "ok")
    row("valid: codeSigning among other purposes", [p.signer(exts=[K.eku(K.SERVER_AUTH, K.CODE_SIGNING)])], "ok")
    row("valid: unknown non-critical extension", [p.signer(exts=K.signer_exts(k) + [
        K.ext("1.3.6.1.4.1.55555.1", K.tlv(0x05, b""), critical=False)])], "ok")
    row("valid: RSA-2048 signer key", [p.signer(key=K.rsa_key(2048))], "ok")
    row("valid: Feb 29 of a leap year (2028) as notAfter", [p.signer(
        validity=K.seq(K.utc("260101000000Z"), K.utc("280229235959Z")))], "ok")
    row("valid: GeneralizedTime from 2050", [p.signer(
        validity=K.seq(K.utc("260101000000Z"), K.gen("20500101000000Z")))], "ok")
    # --- the signing certificate
    row("TLS-server-only signer (extendedKeyUsage serverAuth)",
        [p.signer(exts=[K.bc(False), K.ku(K.DIGITAL_SIGNATURE), K.eku(K.SERVER_AUTH)])], "signer_ext_key_usage")
    row("anyExtendedKeyUsage alone is not codeSigning", [p.signer(exts=[K.eku(K.ANY_EKU)])], "signer_ext_key_usage")
    row("signer keyUsage without digitalSignature", [p.signer(exts=[K.bc(False), K.ku(K.KEY_ENCIPHERMENT)])],
        "signer_key_usage")
    row("intermediate used as signer", [p.i1], "signer_is_ca")
    row("root used as signer", [p.root], "signer_is_ca")
    row("signer key RSA-1024", [p.signer(key=K.rsa_key(1024))], "bad_key")
    # --- every issuer
    i_noksign = p.inter("Intermediate 1", p.n_root, p.k_root, p.k_i1,
                        [K.bc(True), K.ku(K.DIGITAL_SIGNATURE, K.CRL_SIGN)])
    row("keyCertSign missing on an intermediate", [p.signer("i1"), i_noksign], "issuer_key_usage")
    root_noksign = K.cert(p.n_root, p.n_root, p.k_root, p.k_root, [K.bc(True), K.ku(K.CRL_SIGN)])
    row("keyCertSign missing on the root", [p.signer()], "issuer_key_usage", roots=[root_noksign])
    i_notca = p.inter("Intermediate 1", p.n_root, p.k_root, p.k_i1, [K.bc(False), K.ku(K.KEY_CERT_SIGN)])
    row("intermediate with cA FALSE", [p.signer("i1"), i_notca], "issuer_not_ca")
    i_nobc = p.inter("Intermediate 1", p.n_root, p.k_root, p.k_i1, [K.ku(K.KEY_CERT_SIGN)])
    row("intermediate without basicConstraints", [p.signer("i1"), i_nobc], "issuer_not_ca")
    i1_len0 = p.inter("Intermediate 1", p.n_root, p.k_root, p.k_i1, K.ca_exts(p.k_i1, path_len=0))
    row("pathLen exceeded: intermediate pathLen 0 above another CA", [p.signer("i2"), p.i2, i1_len0],
        "path_len_exceeded")
    row("pathLen 0 on the last intermediate is fine", [p.signer("i1"), i1_len0], "ok")
    root_len0 = K.cert(p.n_root, p.n_root, p.k_root, p.k_root, K.ca_exts(p.k_root, path_len=0))
    row("pathLen exceeded: root pathLen 0 above an intermediate", [p.signer("i1"), p.i1], "path_len_exceeded",
        roots=[root_len0])
    row("root pathLen 1 above two intermediates", [p.signer("i2"), p.i2, p.i1], "path_len_exceeded",
        roots=[K.cert(p.n_root, p.n_root, p.k_root, p.k_root, K.ca_exts(p.k_root, path_len=1))])
    # --- extensions
    crit = K.ext("1.3.6.1.4.1.55555.1", K.tlv(0x05, b""), critical=True)
    row("critical unknown extension on the signer", [p.signer(exts=K.signer_exts(k) + [crit])],
        "unknown_critical_extension")
    row("critical unknown extension on an intermediate",
        [p.signer("i1"), p.inter("Intermediate 1", p.n_root, p.k_root, p.k_i1, K.ca_exts(p.k_i1) + [crit])],
        "unknown_critical_extension")
    row("critical nameConstraints (not processed) on the root", [p.signer()], "unknown_critical_extension",
        roots=[K.cert(p.n_root, p.n_root, p.k_root, p.k_root, K.ca_exts(p.k_root) + [
            K.ext("2.5.29.30", K.seq(K.tlv(0xA0, K.seq(K.tlv(0x82, b"example.com")))), critical=True)])])
    dup_bc = p.inter("Intermediate 1", p.n_root, p.k_root, p.k_i1,
                     [K.bc(False), K.bc(True), K.ku(K.KEY_CERT_SIGN)])
    row("duplicate basicConstraints (CA:FALSE then CA:TRUE) on an intermediate", [p.signer("i1"), dup_bc],
        "duplicate_extension")
    row("duplicate extendedKeyUsage on the signer",
        [p.signer(exts=[K.eku(K.SERVER_AUTH), K.eku(K.CODE_SIGNING)])], "duplicate_extension")
    row("extensions in a v1 certificate", [p.signer(version=None)], "bad_version")
    row("extensions in a v2 certificate", [p.signer(version=2)], "bad_version")
    row("version 4", [p.signer(version=4)], "bad_version")
    row("v1 written out explicitly (a DEFAULT, not DER)", [p.signer(version=1, exts=[])], "der_default")
    row("extension critical FALSE written out", [p.signer(exts=[K.seq(K.oid("2.5.29.19"), K.boolean(False),
                                                                      K.tlv(0x04, K.seq()))])], "der_default")
    row("basicConstraints cA FALSE written out", [p.signer(exts=[K.bc(False, explicit_false=True)])],
        "der_default")
    row("v1 signer without extensions, implicit version", [p.signer(version=None, exts=[])], "ok")
    # --- chains and names
    k0 = K.ec_key()
    i0 = K.cert(K.name("Intermediate 0"), p.n_root, k0, p.k_root, K.ca_exts(k0))
    i1_under_i0 = K.cert(p.n_i1, K.name("Intermediate 0"), p.k_i1, k0, K.ca_exts(p.k_i1))
    row("chain of 5 certificates (root -> 3 intermediates -> signer)",
        [p.signer("i2"), p.i2, i1_under_i0, i0], "chain_too_long")
    row("5 certificates carried (a valid path among them)",
        [p.signer("i1"), i_nobc, i_notca, i1_len0, p.i1], "chain_too_long")
    row("the root carried along with a 4-level chain", [p.signer("i2"), p.i2, p.i1, p.root], "ok")
    row("intermediate missing from the request", [p.signer("i1")], "unknown_root")
    row("unknown root", [p.signer()], "unknown_root", roots=[K.cert(K.name("Other"), K.name("Other"), p.k_i1,
                                                                    p.k_i1, K.ca_exts(p.k_i1))])
    row("signer signed by another key under the root's name", [K.cert(p.n_sig, p.n_root, k, p.k_i1,
                                                                       K.signer_exts(k))], "bad_signature")
    row("issuer name differs in case only (byte-exact matching)", [p.signer(
        alg=None, **{})] and [K.cert(p.n_sig, K.name("ROOT"), k, p.k_root, K.signer_exts(k))], "unknown_root")
    row("issuer name as PrintableString, root's UTF8String (byte-exact matching)",
        [K.cert(p.n_sig, K.name("Root", cn_tag=0x13), k, p.k_root, K.signer_exts(k))], "unknown_root")
    # --- dates
    row("notAfter Feb 30", [p.signer(validity=K.seq(K.utc("260101000000Z"), K.utc("270230000000Z")))], "bad_time")
    row("notBefore Apr 31", [p.signer(validity=K.seq(K.utc("260431000000Z"), K.utc("280101000000Z")))], "bad_time")
    row("Feb 29 of a common year (2027)", [p.signer(validity=K.seq(K.utc("260101000000Z"),
                                                                   K.utc("270229000000Z")))], "bad_time")
    row("GeneralizedTime before 2050", [p.signer(validity=K.seq(K.utc("260101000000Z"),
                                                                K.gen("20300101000000Z")))], "bad_time")
    row("UTCTime with seconds missing", [p.signer(validity=K.seq(K.utc("260101000000Z"), K.utc("2801010000Z")))],
        "bad_time")
    row("UTCTime with a time zone offset", [p.signer(validity=K.seq(K.utc("260101000000Z"),
                                                                    K.tlv(0x17, b"280101000000+0100")))],
        "bad_time")
    row("expired signer", [p.signer(validity=K.seq(K.utc("250101000000Z"), K.utc("260501000000Z")))],
        "cert_expired")
    row("signer not yet valid", [p.signer(validity=K.seq(K.utc("260701000000Z"), K.utc("280101000000Z")))],
        "cert_not_yet_valid")
    row("expired intermediate", [p.signer("i1"), p.inter("Intermediate 1", p.n_root, p.k_root, p.k_i1,
                                                          K.ca_exts(p.k_i1), validity=K.seq(
                                                              K.utc("250101000000Z"), K.utc("260501000000Z")))],
        "cert_expired")
    # --- algorithms
    row("tbs/outer algorithm mismatch (outer without the NULL)",
        [K.cert(p.n_sig, p.n_i2, k, p.k_i2, K.signer_exts(k), outer_alg=K.ALG_RSA_NO_NULL), p.i2, p.i1],
        "sig_alg_mismatch")
    row("tbs/outer algorithm mismatch (ECDSA tbs, RSA outer)",
        [K.cert(p.n_sig, p.n_root, k, p.k_root, K.signer_exts(k), outer_alg=K.ALG_RSA)], "sig_alg_mismatch")
    row("PSS signer certificate, salt 32", [K.cert(p.n_sig, p.n_i2, k, p.k_i2, K.signer_exts(k), pss_salt=32),
                                            p.i2, p.i1], "ok")
    row("PSS parameters: tbs says salt 32, outer salt 20",
        [K.cert(p.n_sig, p.n_i2, k, p.k_i2, K.signer_exts(k), pss_salt=32, outer_alg=K.alg_pss(20)), p.i2, p.i1],
        "sig_alg_mismatch")
    # --- strict DER
    good = p.signer()
    t, a, s = K.split(good)
    row("BER length in the outer certificate (long form for a short length)",
        [b"\x30\x83\x00" + len(t + a + s).to_bytes(2, "big") + t + a + s], "der_length")
    row("BER indefinite length in the outer certificate", [b"\x30\x80" + t + a + s + b"\x00\x00"], "der_length")
    row("BER length of the signature BIT STRING",
        [K.seq(t, a, b"\x03\x81" + bytes([len(s) - 2]) + s[2:])], "der_length")
    row("trailing byte after the certificate", [good + b"\x00"], "der_trailing")
    row("non-minimal serial INTEGER (leading 00)", [p.signer(serial=b"\x02\x03\x00\x12\x67")], "der_integer")
    row("negative-looking padding (leading FF before a set top bit)",
        [p.signer(serial=b"\x02\x03\xff\x92\x67")], "der_integer")
    row("BOOLEAN critical as 0x01", [p.signer(exts=[K.seq(K.oid("2.5.29.19"), b"\x01\x01\x01",
                                                          K.tlv(0x04, K.seq()))])], "der_boolean")
    row("trailing bytes inside an extension value",
        [p.signer(exts=[K.ext("2.5.29.19", K.seq() + b"\x05\x00", True)])], "der_trailing")
    sig_der = s[3:] if s[1] & 0x80 == 0 else None
    inner = s[3:]  # the ECDSA-Sig-Value after the BIT STRING header and unused-bits byte
    r_s = K.split(inner)
    row("zero prepended to r in the signature", [K.seq(t, a, K.tlv(0x03, b"\x00" + K.seq(
        K.tlv(0x02, b"\x00" + r_s[0][2:]), r_s[1])))], "bad_signature")
    row("BER length inside the ECDSA signature", [K.seq(t, a, K.tlv(0x03, b"\x00\x30\x81" + bytes(
        [len(inner) - 2]) + inner[2:]))], "bad_signature")
    row("raw r||s as a certificate signature", [K.seq(t, a, K.tlv(0x03, b"\x00" + K.raw_sig(inner)))],
        "bad_signature")
    assert sig_der is not None
    return out


@pytest.fixture(scope="module")
def pki():
    return PKI()


def test_policy_table(tmp_path, pki):
    table = rows(pki)
    # The valid rows are certificates `cryptography` reads too.
    for label, chain, roots, want in table:
        if want == "ok":
            for c in chain + roots:
                x509.load_der_x509_certificate(c)
    batches = [(roots, [chain]) for _, chain, roots, _ in table]
    out = run_batches(tmp_path, batches)
    bad = []
    print("\n[certificate policy] %d rows" % len(table))
    for (label, _, _, want), res in zip(table, out):
        got = res[0]
        print("  %-28s %s" % (got, label))
        if got != want:
            bad.append((label, want, got))
    assert not bad, bad
    # The rows the issue names are all here.
    labels = " | ".join(r[0] for r in table)
    for must in ("TLS-server-only", "intermediate used as signer", "root used as signer", "keyCertSign missing",
                 "critical unknown extension", "pathLen exceeded", "valid 3-level", "duplicate basicConstraints",
                 "Feb 30", "tbs/outer algorithm mismatch", "BER length in the outer"):
        assert must in labels, must


# --- mutation fuzz ----------------------------------------------------------------

def _tlvs(b):
    # Offsets of every TLV header in a DER blob: (pos, header length, value end).
    out = []

    def walk(s, e):
        pos = s
        while pos < e:
            ln = b[pos + 1]
            hdr = 2
            if ln & 0x80:
                nb = ln & 0x7F
                ln = int.from_bytes(b[pos + 2:pos + 2 + nb], "big")
                hdr += nb
            out.append((pos, hdr, pos + hdr + ln))
            if b[pos] & 0x20:  # constructed: walk inside
                walk(pos + hdr, pos + hdr + ln)
            pos += hdr + ln
    walk(0, len(b))
    return out


def mutate(rnd, blob, tlvs):
    b = bytearray(blob)
    kind = rnd.randrange(8)
    if kind == 0:  # flip one bit
        i = rnd.randrange(len(b))
        b[i] ^= 1 << rnd.randrange(8)
    elif kind == 1:  # replace one byte (may leave it as it was)
        b[rnd.randrange(len(b))] = rnd.randrange(256)
    elif kind == 2:  # delete a few bytes
        i = rnd.randrange(len(b))
        del b[i:i + rnd.randrange(1, 4)]
    elif kind == 3:  # insert a few bytes
        i = rnd.randrange(len(b) + 1)
        b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 4)))
    elif kind == 4:  # re-encode one TLV's length in a longer (BER) form, lengths above fixed
        pos, hdr, end = rnd.choice(tlvs)
        ln = end - pos - hdr
        b = bytearray(_reencode(blob, pos, hdr, ln, tlvs))
    elif kind == 5:  # a zero byte prepended to an INTEGER's value
        ints = [t for t in tlvs if blob[t[0]] == 0x02]
        pos, hdr, end = rnd.choice(ints)
        b = bytearray(_reencode(blob, pos, hdr, end - pos - hdr, tlvs, pad=True))
    elif kind == 6:  # truncate
        del b[rnd.randrange(len(b)):]
    else:  # append
        b += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 3)))
    return bytes(b)


def _reencode(blob, pos, hdr, ln, tlvs, pad=False):
    # The blob with the TLV at pos rewritten (long-form length, or a 00 before
    # the value) and every enclosing length grown to match (minimal encodings).
    extra_val = b"\x00" if pad else b""
    new_len = ln + len(extra_val)
    if pad:
        new_hdr = bytes([blob[pos]]) + K.dlen(new_len)
    else:
        nb = max(1, (new_len.bit_length() + 7) // 8) + 1
        new_hdr = bytes([blob[pos], 0x80 | nb]) + new_len.to_bytes(nb, "big")
    body = blob[:pos] + new_hdr + extra_val + blob[pos + hdr:]
    grow = len(new_hdr) + len(extra_val) - hdr
    # Enclosing TLVs, innermost last in document order: rewrite from inside out.
    encl = sorted([t for t in tlvs if t[0] < pos and t[2] >= pos + hdr + ln], key=lambda t: -t[0])
    for p, h, e in encl:
        ln2 = e - p - h + grow
        nh = bytes([body[p]]) + K.dlen(ln2)
        body = body[:p] + nh + body[p + h:]
        grow += len(nh) - h
    return body


def test_mutated_signer_certificates_never_verify(tmp_path, pki):
    n = int(os.environ.get("CERT_FUZZ", "1200"))
    seed = 20261202 if os.environ.get("CI") else random.randrange(1 << 32)
    print("\n[cert fuzz] seed %d (CI=true fixes it), %d mutants" % (seed, n))
    rnd = random.Random(seed)
    # An EC chain (root -> signer) and an RSA one (root -> i1 -> i2 -> signer).
    targets = [([pki.signer()], [pki.root]), ([pki.signer("i2"), pki.i2, pki.i1], [pki.root])]
    batches, mutants = [], []
    for chain, roots in targets:
        signer = chain[0]
        tl = _tlvs(signer)
        ms = [mutate(rnd, signer, tl) for _ in range(n // len(targets))]
        mutants.append((signer, ms))
        batches.append((roots, [[signer] + chain[1:]] + [[m] + chain[1:] for m in ms]))
    out = run_batches(tmp_path, batches)
    total = same = 0
    for (signer, ms), res in zip(mutants, out):
        assert res[0] == "ok", res[0]
        for m, r in zip(ms, res[1:]):
            total += 1
            assert not r.startswith("CRASH"), (m.hex(), r)
            if m == signer:
                same += 1
                assert r == "ok"
            else:
                assert r != "ok", ("a mutated certificate verified", m.hex())
    print("[cert fuzz] %d mutants refused (%d byte-identical ones verified)" % (total - same, same))
    assert total >= 1000

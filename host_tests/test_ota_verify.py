"""firmware/ota verification (issue 4 part 1) on the MicroPython Unix port.

Keys, certificates and signatures are made here with `cryptography`; the checks
run in MicroPython through a small driver that reads cases from a JSON file and
prints one JSON result line, so each test costs one interpreter start.
"""
import datetime
import json
import os
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from mp import run_mp

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
NOW_TS = int(NOW.timestamp())
DAY = datetime.timedelta(days=1)

# The MicroPython side: run every case, catch VerifyError as a reason and any
# other exception as a crash (which the tests forbid).
DRIVER = r"""
import json, time
from firmware.ota import VerifyError
from firmware.crypto import der, pem, verify, sha
cases = json.load(open(%r))
def rd(p):
    f = open(p, 'rb'); d = f.read(); f.close(); return d
out = []
for c in cases:
    op = c['op']
    t0 = time.ticks_us()
    try:
        if op == 'sig':
            cert = der.parse_certificate(rd(c['cert']))
            digest = sha.sha256_file(c['data'])
            verify.verify_signature(cert.public_key, c['alg'], digest, rd(c['sig']), is_digest=True, ecdsa_form='any')
            res = 'ok'
        elif op == 'sigdata':
            cert = der.parse_certificate(rd(c['cert']))
            verify.verify_signature(cert, c['alg'], rd(c['data']), rd(c['sig']))
            res = 'ok'
        elif op == 'chain':
            roots = [rd(p) for p in c['roots']]
            r = verify.verify_chain(rd(c['cert']), roots, c['now'])
            res = 'ok:' + r.subject_cn
        elif op == 'parse':
            cert = der.parse_certificate(rd(c['cert']))
            res = {'cn': cert.subject_cn, 'icn': cert.issuer_cn, 'nb': cert.not_before, 'na': cert.not_after,
                   'serial': cert.serial, 'ca': cert.is_ca, 'alg': cert.sig_alg, 'key': cert.public_key[0],
                   'k1': str(cert.public_key[1]), 'k2': str(cert.public_key[2]), 'tbs': len(cert.tbs)}
        elif op == 'bench':
            # Parse and verify timed apart, best of n runs (verify on a precomputed digest).
            blob = rd(c['cert']); sig = rd(c['sig'])
            digest = sha.sha256_file(c['data'])
            tp = tv = 1 << 30
            for _ in range(c['n']):
                t = time.ticks_us(); cert = der.parse_certificate(blob); tp = min(tp, time.ticks_diff(time.ticks_us(), t))
                t = time.ticks_us(); verify.verify_signature(cert, c['alg'], digest, sig, is_digest=True)
                tv = min(tv, time.ticks_diff(time.ticks_us(), t))
            t = time.ticks_us()
            try:
                verify.verify_chain(blob, [rd(p) for p in c['roots']], c['now'])
                ch = time.ticks_diff(time.ticks_us(), t)
            except VerifyError:
                ch = None  # a root as the signer: refused (signer_is_ca), nothing to time
            res = {'parse': tp, 'verify': tv, 'chain': ch}
        elif op == 'pem':
            cert = der.parse_certificate(pem.decode(rd(c['cert'])))
            res = 'ok:' + cert.subject_cn
        elif op == 'sha':
            import binascii
            res = binascii.hexlify(sha.sha256_file(c['data'])).decode()
        elif op == 'fuzz':
            blob = rd(c['cert'])
            res = []
            for cut in c['cuts']:
                b = blob[:cut[0]] + blob[cut[1]:] if len(cut) == 2 else blob
                if len(cut) == 3:
                    b = bytearray(blob); b[cut[0]] ^= cut[2]; b = bytes(b)
                try:
                    verify.verify_chain(b, [rd(p) for p in c['roots']], c['now'])
                    res.append('ok')
                except VerifyError as e:
                    res.append(e.reason)
                except Exception as e:
                    res.append('CRASH ' + repr(e))
        else:
            res = 'unknown op'
    except VerifyError as e:
        res = 'err:' + e.reason
    except Exception as e:
        res = 'CRASH ' + repr(e)
    out.append({'res': res, 'us': time.ticks_diff(time.ticks_us(), t0)})
print('RESULT ' + json.dumps(out))
"""


def mp_cases(tmp_path, cases):
    path = tmp_path / ("cases%d.json" % random.randrange(1 << 30))
    path.write_text(json.dumps(cases))
    p = run_mp(DRIVER % str(path), timeout=600)
    assert p.returncode == 0, p.stderr + p.stdout
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, p.stdout + p.stderr
    return json.loads(line[0][7:])


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Maker"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(subject_cn, key, issuer_cn, issuer_key, ca, nb=NOW - 30 * DAY, na=NOW + 365 * DAY, pss=False,
              serial=None):
    b = (x509.CertificateBuilder().subject_name(name(subject_cn)).issuer_name(name(issuer_cn))
         .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    kw = {}
    if pss:
        kw["rsa_padding"] = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    return b.sign(issuer_key, hashes.SHA256(), **kw)


def der_bytes(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def pss(salt=32):
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("ota")
    k = {}
    k["ec_root"] = ec.generate_private_key(ec.SECP256R1())
    k["ec_sign"] = ec.generate_private_key(ec.SECP256R1())
    k["rsa_root"] = rsa.generate_private_key(65537, 3072)
    k["rsa_sign"] = rsa.generate_private_key(65537, 3072)
    k["other_root"] = ec.generate_private_key(ec.SECP256R1())
    k["rsa2048"] = rsa.generate_private_key(65537, 2048)
    k["rsa4096"] = rsa.generate_private_key(65537, 4096)
    certs = {
        "ec_root": make_cert("EC Root", k["ec_root"], "EC Root", k["ec_root"], True),
        "ec_sign": make_cert("EC Signer", k["ec_sign"], "EC Root", k["ec_root"], False, serial=123456789),
        "rsa_root": make_cert("RSA Root", k["rsa_root"], "RSA Root", k["rsa_root"], True),
        "rsa_sign": make_cert("RSA Signer", k["rsa_sign"], "RSA Root", k["rsa_root"], False),
        "rsa_sign_pss": make_cert("RSA PSS Signer", k["rsa_sign"], "RSA Root", k["rsa_root"], False, pss=True),
        "expired": make_cert("Old Signer", k["ec_sign"], "EC Root", k["ec_root"], False,
                             nb=NOW - 400 * DAY, na=NOW - DAY),
        "future": make_cert("Future Signer", k["ec_sign"], "EC Root", k["ec_root"], False,
                            nb=NOW + DAY, na=NOW + 400 * DAY),
        "other_root": make_cert("Other Root", k["other_root"], "Other Root", k["other_root"], True),
        "foreign": make_cert("Foreign Signer", k["ec_sign"], "Other Root", k["other_root"], False),
        # Same issuer name as the installed root but signed by another key.
        "impostor": make_cert("Impostor Signer", k["ec_sign"], "EC Root", k["other_root"], False),
        # Issued by a non-CA certificate.
        "by_leaf": make_cert("Leaf Child", k["ec_sign"], "EC Signer", k["ec_sign"], False),
        "gen_time": make_cert("Long Signer", k["ec_sign"], "EC Root", k["ec_root"], False,
                              na=datetime.datetime(2051, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)),
        "rsa2048": make_cert("RSA2048", k["rsa2048"], "RSA2048", k["rsa2048"], True),
        "rsa4096": make_cert("RSA4096", k["rsa4096"], "RSA4096", k["rsa4096"], True, pss=True),
    }
    paths = {"dir": d}
    for n, c in certs.items():
        p = d / (n + ".der")
        p.write_bytes(der_bytes(c))
        paths[n] = str(p)
    (d / "ec_sign.pem").write_bytes(certs["ec_sign"].public_bytes(serialization.Encoding.PEM))
    paths["ec_sign_pem"] = str(d / "ec_sign.pem")
    data = os.urandom(1 << 20)  # a 1 MiB "image"
    (d / "image.bin").write_bytes(data)
    paths["data"] = str(d / "image.bin")
    sigs = {
        "ec": k["ec_sign"].sign(data, ec.ECDSA(hashes.SHA256())),
        "rsa_pkcs1": k["rsa_sign"].sign(data, padding.PKCS1v15(), hashes.SHA256()),
        "rsa_pss": k["rsa_sign"].sign(data, pss(32), hashes.SHA256()),
        "rsa_pss_max": k["rsa_sign"].sign(data, pss(padding.PSS.MAX_LENGTH), hashes.SHA256()),
        "rsa_pss_0": k["rsa_sign"].sign(data, pss(0), hashes.SHA256()),
        "rsa2048": k["rsa2048"].sign(data, padding.PKCS1v15(), hashes.SHA256()),
        "rsa4096": k["rsa4096"].sign(data, pss(32), hashes.SHA256()),
    }
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    r, s = decode_dss_signature(sigs["ec"])
    sigs["ec_raw"] = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    for n, s in sigs.items():
        p = d / (n + ".sig")
        p.write_bytes(s)
        paths["sig_" + n] = str(p)
    return {"paths": paths, "certs": certs, "keys": k, "data": data, "sigs": sigs}


def write(pki, fname, blob):
    p = pki["paths"]["dir"] / fname
    p.write_bytes(blob)
    return str(p)


GOOD = [("ec_sign", "ecdsa-sha256", "ec"), ("ec_sign", "ecdsa-sha256", "ec_raw"),
        ("rsa_sign", "rsa-pkcs1-sha256", "rsa_pkcs1"), ("rsa_sign", "rsa-pss-sha256", "rsa_pss"),
        ("rsa_sign", "rsa-pss-sha256", "rsa_pss_max"), ("rsa_sign", "rsa-pss-sha256", "rsa_pss_0"),
        ("rsa2048", "rsa-pkcs1-sha256", "rsa2048"), ("rsa4096", "rsa-pss-sha256", "rsa4096")]


def test_good_signatures_and_timings(tmp_path, pki):
    P = pki["paths"]
    cases = [{"op": "sha", "data": P["data"]}]
    cases += [{"op": "sig", "cert": P[c], "alg": a, "data": P["data"], "sig": P["sig_" + s]} for c, a, s in GOOD]
    # Same signatures once more to time the verify alone on a small input.
    small = write(pki, "small.bin", b"hello")
    ec_small = pki["keys"]["ec_sign"].sign(b"hello", ec.ECDSA(hashes.SHA256()))
    rsa_small = pki["keys"]["rsa_sign"].sign(b"hello", padding.PKCS1v15(), hashes.SHA256())
    rsa_pss_small = pki["keys"]["rsa_sign"].sign(b"hello", pss(), hashes.SHA256())
    cases += [{"op": "sigdata", "cert": P["ec_sign"], "alg": "ecdsa-sha256", "data": small,
               "sig": write(pki, "ecs.sig", ec_small)},
              {"op": "sigdata", "cert": P["rsa_sign"], "alg": "rsa-pkcs1-sha256", "data": small,
               "sig": write(pki, "rsas.sig", rsa_small)},
              {"op": "sigdata", "cert": P["rsa_sign"], "alg": "rsa-pss-sha256", "data": small,
               "sig": write(pki, "rsap.sig", rsa_pss_small)}]
    out = mp_cases(tmp_path, cases)
    import hashlib
    assert out[0]["res"] == hashlib.sha256(pki["data"]).hexdigest()
    for (c, a, s), o in zip(GOOD, out[1:]):
        assert o["res"] == "ok", (c, a, s, o)
    for o in out[1 + len(GOOD):]:
        assert o["res"] == "ok", o
    print("\n[ota timings, Unix port]")
    print("  sha256 of 1 MiB file (1 KiB chunks): %.1f ms" % (out[0]["us"] / 1000))
    for (c, a, s), o in zip(GOOD, out[1:]):
        print("  parse cert + sha256 1 MiB + %-18s %-12s: %.1f ms" % (a, s, o["us"] / 1000))
    names = ["ECDSA P-256", "RSA-3072 PKCS#1 v1.5", "RSA-3072 PSS"]
    for n, o in zip(names, out[1 + len(GOOD):]):
        print("  parse cert + verify %-22s (5-byte data): %.1f ms" % (n, o["us"] / 1000))
    roots = [P["ec_root"], P["rsa_root"], P["rsa2048"], P["rsa4096"]]
    bench = [("ECDSA P-256", "ec_sign", "ecdsa-sha256", "ec"),
             ("RSA-2048 PKCS#1 v1.5", "rsa2048", "rsa-pkcs1-sha256", "rsa2048"),
             ("RSA-3072 PKCS#1 v1.5", "rsa_sign", "rsa-pkcs1-sha256", "rsa_pkcs1"),
             ("RSA-3072 PSS", "rsa_sign", "rsa-pss-sha256", "rsa_pss"),
             ("RSA-4096 PSS", "rsa4096", "rsa-pss-sha256", "rsa4096")]
    out = mp_cases(tmp_path, [{"op": "bench", "cert": P[c], "alg": a, "sig": P["sig_" + s], "data": P["data"],
                               "roots": roots, "now": NOW_TS, "n": 5} for _, c, a, s in bench])
    print("  best of 5 (parse signing cert / verify on a digest / whole verify_chain incl. root self-check):")
    for (n, c, _, _), o in zip(bench, out):
        r = o["res"]
        assert isinstance(r, dict), o
        print("    %-22s parse %.2f ms  verify %.2f ms  chain(%s) %s"
              % (n, r["parse"] / 1000, r["verify"] / 1000, c,
                 "refused: a root as signer" if r["chain"] is None else "%.2f ms" % (r["chain"] / 1000)))


def flip(blob, pos, mask=0x01):
    b = bytearray(blob)
    b[pos] ^= mask
    return bytes(b)


def test_flipped_data_and_signature_fail(tmp_path, pki):
    P = pki["paths"]
    data = pki["data"]
    cases, labels = [], []
    for c, a, s in [GOOD[0], GOOD[1], GOOD[2], GOOD[3]]:
        for pos in (0, 1000, len(data) // 2, len(data) - 1):
            cases.append({"op": "sig", "cert": P[c], "alg": a, "sig": P["sig_" + s],
                          "data": write(pki, "fd_%s_%d.bin" % (s, pos), flip(data, pos))})
            labels.append(("data", s, pos))
        sig = pki["sigs"][s]
        for pos in (0, 1, 7, len(sig) // 2, len(sig) - 1):
            cases.append({"op": "sig", "cert": P[c], "alg": a, "data": P["data"],
                          "sig": write(pki, "fs_%s_%d.sig" % (s, pos), flip(sig, pos, 0x40))})
            labels.append(("sig", s, pos))
        # Truncated and extended signatures.
        cases.append({"op": "sig", "cert": P[c], "alg": a, "data": P["data"],
                      "sig": write(pki, "ft_%s.sig" % s, sig[:-1])})
        labels.append(("trunc", s, 0))
        cases.append({"op": "sig", "cert": P[c], "alg": a, "data": P["data"],
                      "sig": write(pki, "fe_%s.sig" % s, sig + b"\0")})
        labels.append(("ext", s, 0))
    # Wrong algorithm for the key, and a PKCS#1 signature checked as PSS.
    cases.append({"op": "sig", "cert": P["ec_sign"], "alg": "rsa-pkcs1-sha256", "data": P["data"],
                  "sig": P["sig_rsa_pkcs1"]})
    labels.append(("alg", "ec-as-rsa", 0))
    cases.append({"op": "sig", "cert": P["rsa_sign"], "alg": "rsa-pss-sha256", "data": P["data"],
                  "sig": P["sig_rsa_pkcs1"]})
    labels.append(("alg", "pkcs1-as-pss", 0))
    out = mp_cases(tmp_path, cases)
    for lab, o in zip(labels, out):
        assert o["res"].startswith("err:"), (lab, o)
        assert o["res"] in ("err:bad_signature", "err:key_algorithm_mismatch"), (lab, o)


def test_chains(tmp_path, pki):
    P = pki["paths"]
    roots = [P["rsa_root"], P["ec_root"]]
    expect = [
        ("ec_sign", roots, "ok:EC Root"),
        ("rsa_sign", roots, "ok:RSA Root"),
        ("rsa_sign_pss", roots, "ok:RSA Root"),
        ("gen_time", roots, "ok:EC Root"),
        ("expired", roots, "err:cert_expired"),
        ("future", roots, "err:cert_not_yet_valid"),
        ("foreign", roots, "err:unknown_root"),
        ("impostor", roots, "err:bad_signature"),
        ("by_leaf", roots + [P["ec_sign"]], "err:issuer_not_ca"),
        ("ec_sign", [P["rsa_root"]], "err:unknown_root"),
        ("ec_sign", [], "err:unknown_root"),
        ("foreign", roots + [P["other_root"]], "ok:Other Root"),
    ]
    cases = [{"op": "chain", "cert": P[c], "roots": r, "now": NOW_TS} for c, r, _ in expect]
    # The root itself expired by then.
    cases.append({"op": "chain", "cert": P["gen_time"], "roots": roots, "now": NOW_TS + 3 * 365 * 86400})
    cases.append({"op": "pem", "cert": P["ec_sign_pem"]})
    for n in ("ec_sign", "rsa_sign_pss", "gen_time", "rsa4096"):
        cases.append({"op": "parse", "cert": P[n]})
    out = mp_cases(tmp_path, cases)
    for (c, r, want), o in zip(expect, out):
        assert o["res"] == want, (c, o)
    assert out[len(expect)]["res"] == "err:cert_expired"
    assert out[len(expect) + 1]["res"] == "ok:EC Signer"
    parsed = out[len(expect) + 2:]
    for n, o in zip(("ec_sign", "rsa_sign_pss", "gen_time", "rsa4096"), parsed):
        c = pki["certs"][n]
        r = o["res"]
        assert r["cn"] == c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert r["icn"] == c.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert r["nb"] == int(c.not_valid_before_utc.timestamp())
        assert r["na"] == int(c.not_valid_after_utc.timestamp())
        assert r["serial"] == c.serial_number
        assert r["tbs"] == len(c.tbs_certificate_bytes)
        pub = c.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            assert r["key"] == "rsa" and int(r["k1"]) == pub.public_numbers().n and int(r["k2"]) == 65537
        else:
            assert r["key"] == "ec" and int(r["k1"]) == pub.public_numbers().x and int(r["k2"]) == pub.public_numbers().y
    assert parsed[0]["res"]["ca"] is False and parsed[3]["res"]["ca"] is True
    assert parsed[1]["res"]["alg"] == "rsa-pss-sha256" and parsed[0]["res"]["alg"] == "ecdsa-sha256"


def test_flipped_certificate_fails(tmp_path, pki):
    P = pki["paths"]
    roots = [P["ec_root"], P["rsa_root"]]
    rnd = random.Random(4)
    cases = []
    for n in ("ec_sign", "rsa_sign", "rsa_sign_pss"):
        blob = der_bytes(pki["certs"][n])
        positions = sorted(set([0, 1, 4, 10, 40, len(blob) // 2, len(blob) - 1] +
                               [rnd.randrange(len(blob)) for _ in range(60)]))
        cuts = [[p, None, m] for p in positions for m in (0x01, 0x80)]
        cases.append({"op": "fuzz", "cert": P[n], "roots": roots, "now": NOW_TS, "cuts": cuts})
    out = mp_cases(tmp_path, cases)
    for o in out:
        assert all(not r.startswith("CRASH") for r in o["res"]), o
        # A single flipped bit anywhere in a certificate must never verify.
        assert "ok" not in o["res"], o


def test_malformed_der_only_verifyerror(tmp_path, pki):
    P = pki["paths"]
    roots = [P["ec_root"], P["rsa_root"]]
    rnd = random.Random(7)
    cases = []
    for n in ("ec_sign", "rsa_sign_pss"):
        blob = der_bytes(pki["certs"][n])
        # Every truncation, chopped middles, and random byte replacements.
        cuts = [[t, len(blob)] for t in range(0, len(blob))]
        cuts += [[a, a + rnd.randrange(1, 40)] for a in (rnd.randrange(len(blob)) for _ in range(150))]
        cuts += [[rnd.randrange(len(blob)), None, rnd.randrange(1, 256)] for _ in range(400)]
        cases.append({"op": "fuzz", "cert": P[n], "roots": roots, "now": NOW_TS, "cuts": cuts})
    # Random garbage and crafted headers as the certificate.
    garbage = [os.urandom(rnd.randrange(0, 300)) for _ in range(30)] + [
        b"", b"\x30", b"\x30\x80", b"\x30\x84\xff\xff\xff\xff", b"\x30\x03\x30\x01", b"\x1f\x01\x00",
        b"\x30\x06\x30\x00\x30\x00\x03\x00", b"\x30\x08\x30\x02\xa0\x00\x30\x00\x03\x00"]
    for i, g in enumerate(garbage):
        cases.append({"op": "fuzz", "cert": write(pki, "garbage%d.der" % i, g), "roots": roots,
                      "now": NOW_TS, "cuts": [[0, 0]]})
    # Malformed roots must not break a good chain either.
    cases.append({"op": "chain", "cert": P["ec_sign"], "now": NOW_TS,
                  "roots": [write(pki, "g_root.der", b"\x30\x82\x01"), P["ec_root"]]})
    # Malformed signatures for every algorithm.
    for c, a, _ in GOOD[:4]:
        for g in (b"", b"\x30\x00", b"\x30\x06\x02\x01\x00\x02\x01\x00", b"\x30\x06\x02\x01\x01\x02\x01\x01",
                  b"\xff" * 64, b"\0" * 64, b"\xff" * 384, b"\0" * 384):
            cases.append({"op": "sig", "cert": P[c], "alg": a, "data": P["data"],
                          "sig": write(pki, "gsig%d.sig" % rnd.randrange(1 << 30), g)})
    out = mp_cases(tmp_path, cases)
    n_checked = 0
    for o in out:
        res = o["res"] if isinstance(o["res"], list) else [o["res"]]
        for r in res:
            n_checked += 1
            assert not r.startswith("CRASH"), o
    assert out[len(out) - 1 - 4 * 8]["res"] == "ok:EC Root"
    for o in out[-4 * 8:]:
        assert o["res"].startswith("err:"), o
    print("\n[ota fuzz] %d malformed inputs, all rejected or verified without a crash" % n_checked)


def test_random_rsa_signatures_never_crash(tmp_path, pki):
    # Values below n decode to arbitrary EM blocks: the padding checks must reject them cleanly.
    P = pki["paths"]
    n = pki["keys"]["rsa_sign"].public_key().public_numbers().n
    rnd = random.Random(11)
    cases = []
    for i in range(40):
        sig = rnd.randrange(n).to_bytes(384, "big")
        alg = "rsa-pss-sha256" if i % 2 else "rsa-pkcs1-sha256"
        cases.append({"op": "sig", "cert": P["rsa_sign"], "alg": alg, "data": P["data"],
                      "sig": write(pki, "rnd%d.sig" % i, sig)})
    for i in range(20):
        sig = os.urandom(64)
        cases.append({"op": "sig", "cert": P["ec_sign"], "alg": "ecdsa-sha256", "data": P["data"],
                      "sig": write(pki, "rnde%d.sig" % i, sig)})
    for o in mp_cases(tmp_path, cases):
        assert o["res"] == "err:bad_signature", o


def test_small_heap(tmp_path, pki):
    # The whole check (1 MiB hash, chain, ECDSA and RSA-4096 verify) fits a 96 KiB heap on the 64-bit Unix port,
    # compiling the .py modules included (boards run them frozen).
    P = pki["paths"]
    code = """
import gc
from firmware.crypto import der, verify, sha
def rd(p):
    f = open(p, 'rb'); d = f.read(); f.close(); return d

d = sha.sha256_file(%r)
verify.verify_chain(rd(%r), [rd(%r), rd(%r)], %d)
verify.verify_signature(der.parse_certificate(rd(%r)), 'ecdsa-sha256', d, rd(%r), is_digest=True)
verify.verify_signature(der.parse_certificate(rd(%r)), 'rsa-pss-sha256', d, rd(%r), is_digest=True)
print('SMALLHEAP OK')
""" % (P["data"], P["ec_sign"], P["rsa_root"], P["ec_root"], NOW_TS, P["ec_sign"], P["sig_ec"],
       P["rsa4096"], P["sig_rsa4096"])
    p = run_mp(code, heapsize="96k")
    assert "SMALLHEAP OK" in p.stdout, p.stdout + p.stderr

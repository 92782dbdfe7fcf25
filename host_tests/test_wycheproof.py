"""Every Project Wycheproof vector the update verifier supports, run on the
MicroPython Unix port through firmware.crypto.verify.verify_signature.

The vector files are copied unchanged into host_tests/data/wycheproof/ (origin,
licence and the decisions on `acceptable` cases in its README.md). One
interpreter runs them all: the host turns each test group into one line
(key, algorithm, signature form, PSS salt, the tests' message and signature in
hex) and the MicroPython side reads the lines one by one (a batch per group, so
the heap never holds a whole file) and prints one verdict per test.

Pass: 0 false accepts (an invalid vector verifies), 0 false rejects (a valid
one is refused), and every `acceptable` vector gets the documented decision.
"""
import json
import os
import time

from mp import run_mp

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "wycheproof")

# The decision for each `acceptable` vector (README.md in DATA says why).
ACCEPTABLE = {
    # PKCS#1 v1.5 DigestInfo without the NULL parameters: refused; the verifier
    # rebuilds the one encoding RFC 8017 gives (with NULL) and compares.
    ("rsa_signature_2048_sha256_test.json", 8): False,
    ("rsa_signature_3072_sha256_test.json", 8): False,
    ("rsa_signature_4096_sha256_test.json", 8): False,
}

FILES = {
    "ecdsa_secp256r1_sha256_test.json": ("ecdsa-sha256", "der"),
    "ecdsa_secp256r1_sha256_p1363_test.json": ("ecdsa-sha256", "raw"),
    "rsa_signature_2048_sha256_test.json": ("rsa-pkcs1-sha256", None),
    "rsa_signature_3072_sha256_test.json": ("rsa-pkcs1-sha256", None),
    "rsa_signature_4096_sha256_test.json": ("rsa-pkcs1-sha256", None),
    "rsa_pss_2048_sha256_mgf1_0_test.json": ("rsa-pss-sha256", None),
    "rsa_pss_2048_sha256_mgf1_32_test.json": ("rsa-pss-sha256", None),
    "rsa_pss_3072_sha256_mgf1_32_test.json": ("rsa-pss-sha256", None),
    "rsa_pss_4096_sha256_mgf1_32_test.json": ("rsa-pss-sha256", None),
    "rsa_pss_misc_test.json": ("rsa-pss-sha256", None),
}

DRIVER = r"""
import binascii, json
from firmware.crypto import VerifyError, verify
f = open(%r)
for line in f:
    g = json.loads(line)
    k = g['key']
    key = (k[0], int(k[1], 16), int(k[2], 16))
    out = []
    for msg, sig in g['tests']:
        try:
            verify.verify_signature(key, g['alg'], binascii.unhexlify(msg), binascii.unhexlify(sig),
                                    pss_salt=g['salt'], ecdsa_form=g['form'] or 'der')
            out.append('ok')
        except VerifyError as e:
            out.append(e.reason)
        except Exception as e:
            out.append('CRASH ' + repr(e))
    print('GROUP ' + json.dumps(out))
f.close()
print('DONE')
"""


def groups():
    # -> [(file, group line dict, [(tcId, result, comment)])]
    out = []
    for fname, (alg, form) in sorted(FILES.items()):
        with open(os.path.join(DATA, fname)) as f:
            d = json.load(f)
        for g in d["testGroups"]:
            if "RSASSA-PSS" in d["algorithm"] and (g["sha"] != "SHA-256" or g["mgfSha"] != "SHA-256"):
                continue  # the miscellany's other hashes: not what the firmware supports
            pk = g["publicKey"]
            if alg == "ecdsa-sha256":
                assert pk["curve"] == "secp256r1"
                key = ["ec", pk["wx"], pk["wy"]]
            else:
                key = ["rsa", pk["modulus"], pk["publicExponent"]]
            line = {"key": key, "alg": alg, "form": form, "salt": g.get("sLen"),
                    "tests": [[t["msg"], t["sig"]] for t in g["tests"]]}
            out.append((fname, line, [(t["tcId"], t["result"], t["comment"]) for t in g["tests"]]))
    return out


def test_every_wycheproof_vector(tmp_path):
    gs = groups()
    path = tmp_path / "wycheproof.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for _, line, _ in gs))
    t0 = time.time()
    p = run_mp(DRIVER % str(path), timeout=300)
    took = time.time() - t0
    assert p.returncode == 0 and "DONE" in p.stdout, p.stdout[-2000:] + p.stderr
    results = [json.loads(ln[6:]) for ln in p.stdout.splitlines() if ln.startswith("GROUP ")]
    assert len(results) == len(gs)
    n = 0
    false_accept, false_reject, crashes, undecided = [], [], [], []
    per_file = {}
    for (fname, _, tests), res in zip(gs, results):
        assert len(res) == len(tests)
        for (tc, want, comment), got in zip(tests, res):
            n += 1
            per_file[fname] = per_file.get(fname, 0) + 1
            ok = got == "ok"
            if got.startswith("CRASH"):
                crashes.append((fname, tc, got))
            if want == "valid" and not ok:
                false_reject.append((fname, tc, comment, got))
            elif want == "invalid" and ok:
                false_accept.append((fname, tc, comment))
            elif want == "acceptable":
                if (fname, tc) not in ACCEPTABLE:
                    undecided.append((fname, tc, comment, got))
                elif ACCEPTABLE[(fname, tc)] != ok:
                    false_accept.append((fname, tc, comment, "decided otherwise"))
    print("\n[wycheproof] %d vectors in %d groups, %.1f s on the Unix port" % (n, len(gs), took))
    for f, c in sorted(per_file.items()):
        print("  %-42s %4d" % (f, c))
    assert not crashes, crashes
    assert not false_accept, false_accept
    assert not false_reject, false_reject
    assert not undecided, undecided
    # Every file, every vector (the PSS miscellany: its SHA-256/MGF1-SHA-256 groups only).
    assert set(per_file) == set(FILES)
    assert took < 60

"""firmware/crypto is the one home of the cryptographic primitives (issue 10, 1).

- Nothing outside firmware/crypto uses a private name (leading underscore) of
  a crypto module: OCPP's CSR used ecdsa._double / _add_affine / _to_affine.
- firmware/ocpp, firmware/net and firmware/core take their cryptography from
  firmware.crypto, never from firmware.ota (OCPP may drive an update).
- One PEM decoder, one way to hash a file, one days-from-civil in the firmware.
- The public API is enough for a CSR: a P-256 key made and a digest signed on
  the Unix port verify with `cryptography`, and make_csr's request too.
"""
import ast
import json
import os
import re

import pytest

from fwproc import ROOT
from mp import run_mp

# The primitives' modules, wherever they are imported from (before issue 10
# they lived in firmware/ota).
CRYPTO_MODULES = {"sha", "pem", "der", "x509ext", "rsa", "ecdsa", "verify", "policy", "keys"}
FIRMWARE = ("firmware", "boards")


def sources(tops=FIRMWARE + ("tools",)):
    for top in tops:
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    p = os.path.join(d, f)
                    yield os.path.relpath(p, ROOT), open(p, encoding="utf-8").read()


def _is_crypto_home(mod):
    return mod in ("firmware.crypto", "firmware.ota")


def private_uses(rel, text):
    # -> ["file:line name"] for every private name of a crypto module used here.
    tree = ast.parse(text, rel)
    aliases = set()
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if _is_crypto_home(node.module):
                for a in node.names:
                    if a.name in CRYPTO_MODULES:
                        aliases.add(a.asname or a.name)
            elif len(parts) == 3 and _is_crypto_home(".".join(parts[:2])) and parts[2] in CRYPTO_MODULES:
                for a in node.names:
                    if a.name.startswith("_"):
                        bad.append("%s:%d %s.%s" % (rel, node.lineno, node.module, a.name))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append("%s:%d %s.%s" % (rel, node.lineno, node.value.id, node.attr))
    return bad


def test_no_private_crypto_name_is_used_outside_crypto():
    bad = []
    for rel, text in sources():
        if not rel.startswith("firmware/crypto/"):
            bad += private_uses(rel, text)
    assert bad == []


def test_the_private_name_check_finds_a_use():
    # What OCPP's CSR did before: the check must see it.
    text = "def f(k):\n    from firmware.ota import ecdsa\n    return ecdsa._double(1, 2, 3)\n"
    assert private_uses("x.py", text) == ["x.py:3 ecdsa._double"]
    assert private_uses("y.py", "from firmware.crypto.ecdsa import _to_affine\n") == \
        ["y.py:1 firmware.crypto.ecdsa._to_affine"]


def _ota_imports(text):
    # Names imported from firmware.ota (a module or firmware.ota itself).
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("firmware.ota"):
            out += ["%s:%s" % (node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("firmware.ota")]
    return out


def test_ocpp_net_core_take_crypto_from_crypto_not_ota():
    # OCPP may start an update (firmware.ota.update); its certificates, CSR and
    # TLS material come from firmware.crypto.
    bad = []
    for rel, text in sources(("firmware/ocpp", "firmware/net", "firmware/core", "firmware/crypto")):
        allowed = {"firmware.ota:update"} if rel.startswith("firmware/ocpp/") else set()
        bad += ["%s %s" % (rel, i) for i in _ota_imports(text) if i not in allowed]
    assert bad == []
    # and the primitives are not in ota any more
    assert not [m for m in CRYPTO_MODULES if os.path.exists(os.path.join(ROOT, "firmware", "ota", m + ".py"))]


def _where(pattern, tops=FIRMWARE):
    rx = re.compile(pattern)
    return sorted({rel for rel, text in sources(tops) if rx.search(text)})


def test_one_pem_decoder():
    # Decoding PEM means finding the END line: only firmware/crypto/pem.py does.
    assert _where(r"-----END") == ["firmware/crypto/pem.py"]
    assert _where(r"a2b_base64\(") and "firmware/crypto/der.py" not in _where(r"a2b_base64\(")


def test_one_way_to_hash_a_file():
    # Hashing a file = SHA-256 over chunks read into a buffer: only
    # firmware/crypto/sha.py (hashed_chunks) does it; the rest call it.
    assert _where(r"hashlib\.sha256\((?s:.)*\.readinto\(|\.readinto\((?s:.)*hashlib\.sha256\(") == \
        ["firmware/crypto/sha.py"]


def test_one_days_from_civil():
    # Howard Hinnant's days_from_civil ends in "- 719468" (the days from
    # 0000-03-01 to 1970-01-01); firmware/core/timefmt.py has the one copy.
    assert _where(r"-\s*719468\b") == ["firmware/core/timefmt.py"]


def test_generate_key_and_sign_with_the_public_api():
    # A P-256 key and an ECDSA signature made on the Unix port with
    # firmware.crypto's public API verify with `cryptography`; so does a CSR
    # from make_csr, whose key file matches the request's key.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    p = run_mp(r"""
import asyncio, hashlib, json, os
from firmware.core.work import run_sync
from firmware.crypto import ecdsa, keys, pem, verify
from firmware.ocpp import certs
d, x, y = run_sync(ecdsa.generate_key_work(os.urandom))
msg = b"charge point 42"
r, s = run_sync(ecdsa.sign_work(hashlib.sha256(msg).digest(), d, os.urandom))
sig = ecdsa.encode_signature(r, s)
verify.verify_signature(("ec", x, y), "ecdsa-sha256", msg, sig)
key_pem = pem.encode("EC PRIVATE KEY", keys.ec_private_der(d, x, y))
assert keys.public_of(key_pem) == ("ec", x, y)
csr, csr_key = asyncio.run(certs.make_csr("CP42", "ACME"))
print(json.dumps({"x": x, "y": y, "sig": sig.hex(), "key": key_pem, "csr": csr, "csr_key": csr_key}))
""")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    pub = ec.EllipticCurvePublicNumbers(out["x"], out["y"], ec.SECP256R1()).public_key()
    pub.verify(bytes.fromhex(out["sig"]), b"charge point 42", ec.ECDSA(hashes.SHA256()))
    priv = serialization.load_pem_private_key(out["key"].encode(), None)
    assert priv.public_key().public_numbers() == pub.public_numbers()
    req = x509.load_pem_x509_csr(out["csr"].encode())
    assert req.is_signature_valid
    assert req.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "CP42"
    csr_priv = serialization.load_pem_private_key(out["csr_key"].encode(), None)
    assert csr_priv.public_key().public_numbers() == req.public_key().public_numbers()


@pytest.mark.parametrize("text, label, n", [
    ("junk\n-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n", "CERTIFICATE", 1),
    ("-----BEGIN EC PRIVATE KEY-----\nAQID\n-----END EC PRIVATE KEY-----\n"
     "-----BEGIN CERTIFICATE-----\nBAU=\n-----END CERTIFICATE-----\n", None, 2),
    ("-----BEGIN EC PRIVATE KEY-----\nAQID\n-----END EC PRIVATE KEY-----\n", "CERTIFICATE", 0),
])
def test_pem_decoder_labels(text, label, n):
    p = run_mp("from firmware.crypto import pem\nprint(len(pem.decode_all(%r, %r)))" % (text, label))
    assert p.returncode == 0, p.stderr
    assert int(p.stdout.split()[-1]) == n


def test_pem_decoder_refuses_an_unterminated_block():
    p = run_mp("from firmware.crypto import pem, VerifyError\n"
               "try:\n    pem.decode_all('-----BEGIN CERTIFICATE-----\\nAQID\\n')\n"
               "except VerifyError as e:\n    print('REFUSED', e.reason)\n")
    assert "REFUSED malformed" in p.stdout, p.stdout + p.stderr

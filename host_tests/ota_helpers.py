"""Shared set-up for the firmware-update tests: manufacturer keys and real
update bundles of this repository's firmware, built with tools/release.py
once per test session, and the helpers to run an update through the dev CSMS.

The charger's factory image is the source tree (firmware/version.py says
0.1.0); bundles carry newer (or older) versions of the same code, so after
an update the charger really runs the .mpy files from its slot and reports
the bundle's version."""
import base64
import os
import shutil
import subprocess
import sys

import pytest

from fwproc import ROOT
from ocpp_helpers import CP, iso_in

sys.path.insert(0, ROOT)
from tools import release  # noqa: E402

FACTORY_VERSION = "0.1.0"


class Kit:
    """Keys and bundles: kit.signed(name) / kit.bundle(name) / kit.sig(name)."""

    def __init__(self, d):
        self.dir = d
        self.keys = d / "keys"
        release.make_keys(str(self.keys))
        self.other = d / "other-keys"  # a manufacturer we do not trust
        release.make_keys(str(self.other), root_cn="Somebody Else Root")
        self.files = {}

    def build(self, name, version, min_version="0.1.0", targets="unix", src=None, allow_downgrade=False,
              keys=None):
        out = self.dir / (name + ".bundle")
        release.make_bundle(version, targets, min_version, str(out), src or os.path.join(ROOT, "firmware"),
                            allow_downgrade)
        keys = keys or self.keys
        sig = self.dir / (name + ".sig")
        snippet, _ = release.sign_bundle(str(out), str(keys / "signing.key"), str(keys / "signing.pem"), str(sig))
        signed = self.dir / (name + ".signed")
        release.sign_bundle(str(out), str(keys / "signing.key"), str(keys / "signing.pem"), str(signed), embed=True)
        self.files[name] = {"bundle": out, "signed": signed, "signature": snippet["signature"],
                            "cert": snippet["signingCertificate"], "version": version}
        return self.files[name]

    def broken_source(self, patch):
        """A copy of the firmware source with `patch(dir)` applied (a bad release)."""
        d = self.dir / ("src-%d" % len(self.files))
        shutil.copytree(os.path.join(ROOT, "firmware"), d / "firmware",
                        ignore=shutil.ignore_patterns("__pycache__"))
        patch(d / "firmware")
        return str(d / "firmware")

    def root(self):
        return str(self.keys / "root.pem")

    def sign_with_cert(self, name, days_from, days_to):
        """Sign bundle `name` with a fresh key whose certificate our root
        issued for [now+days_from, now+days_to]: (signature b64, cert PEM)."""
        import datetime
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, utils
        root_key = serialization.load_pem_private_key((self.keys / "root.key").read_bytes(), None)
        root = x509.load_pem_x509_certificate((self.keys / "root.pem").read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(
                    x509.oid.NameOID.COMMON_NAME, "Signing %+d..%+d" % (days_from, days_to))]))
                .issuer_name(root.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now + datetime.timedelta(days=days_from))
                .not_valid_after(now + datetime.timedelta(days=days_to))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(root_key, hashes.SHA256()))
        digest = bytes.fromhex(release._sha256_file(str(self.files[name]["bundle"])))
        sig = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        return base64.b64encode(sig).decode(), cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="session")
def kit(tmp_path_factory):
    k = Kit(tmp_path_factory.mktemp("ota"))
    k.build("good", "0.2.0")
    return k


def fw_sets(kit, csms, extra=()):
    return ["csms_url=ws://127.0.0.1:%d" % csms.port, "fw_root=" + kit.root(), "ota_confirm_s=30"] + list(extra)


def signed_request(csms, fw, url, f, request_id=1, retrieve_in=0, install_in=None, retries=1, cert=None,
                   signature=None):
    fwobj = {"location": url, "retrieveDateTime": iso_in(fw, retrieve_in),
             "signingCertificate": cert or f["cert"], "signature": signature or f["signature"]}
    if install_in is not None:
        fwobj["installDateTime"] = iso_in(fw, install_in)
    return csms.call_sync(CP, "SignedUpdateFirmware", {"requestId": request_id, "retries": retries,
                                                       "retryInterval": 5, "firmware": fwobj})


def signed_statuses(csms, request_id=None):
    return [m.payload["status"] for m in csms.messages(cp=CP, action="SignedFirmwareStatusNotification",
                                                       direction="in")
            if request_id is None or m.payload.get("requestId") == request_id]


def security_events(csms, after=0):
    return [m.payload for m in csms.messages(cp=CP, action="SecurityEventNotification", direction="in",
                                             after=after)]


def advance_until(fw, pred, limit_ms=600_000, step=1000):
    t = 0
    while t < limit_ms:
        if pred():
            return True
        fw.advance(step)
        t += step
    return pred()


def flip(data, pos):
    b = bytearray(data)
    b[pos] ^= 0x40
    return bytes(b)


def b64flip(sig_b64, pos):
    raw = base64.b64decode(sig_b64)
    return base64.b64encode(flip(raw, pos % len(raw))).decode()


def slot_of(fw):
    s = fw.status()
    return s["slot"], s["version"]


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


# ---------------------------------------------------------------- signing PKIs for the policy tests

def issue(subject_cn, issuer, issuer_key, key=None, ca=False, path_len=None, key_usage=None, eku=None,
          extra=(), days=(-1, 365)):
    """A certificate from `issuer` (None: self-signed) with the extensions the
    certificate policy reads. key_usage: set of names ("digital_signature",
    "key_cert_sign", "crl_sign", "key_encipherment"); eku: list of OIDs;
    extra: [(extension, critical)]. Returns (certificate, its private key)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subj = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, subject_cn)])
    b = (x509.CertificateBuilder().subject_name(subj).issuer_name(issuer.subject if issuer else subj)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=days[0]))
         .not_valid_after(now + datetime.timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len if ca else None), critical=True))
    if key_usage is not None:
        names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                 "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
        b = b.add_extension(x509.KeyUsage(**{n: n in key_usage for n in names}), critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    return b.sign(issuer_key if issuer else key, hashes.SHA256()), key


CODE_SIGNING = "1.3.6.1.5.5.7.3.3"
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"


def signer_kinds(root, root_key):
    """The signers the OCPP and USB tests try under `root`, a CA whose
    pathLen allows one intermediate: name -> (signing key, [certificate, then
    intermediates], the reason the charger must give or None)."""
    from cryptography import x509
    from cryptography.x509.oid import ObjectIdentifier
    eku = lambda *o: [ObjectIdentifier(x) for x in o]  # noqa: E731
    inter, ikey = issue("Maker Intermediate CA", root, root_key, ca=True, path_len=0,
                        key_usage={"key_cert_sign", "crl_sign"})
    out = {}
    c, k = issue("Code Signer via Intermediate", inter, ikey, key_usage={"digital_signature"},
                 eku=eku(CODE_SIGNING))
    out["three_level"] = (k, [c, inter], None)
    out["intermediate_missing"] = (k, [c], "unknown_root")
    c, k = issue("TLS Server", root, root_key, key_usage={"digital_signature", "key_encipherment"},
                 eku=eku(SERVER_AUTH))
    out["tls_server"] = (k, [c], "signer_ext_key_usage")
    out["intermediate_as_signer"] = (ikey, [inter], "signer_is_ca")
    out["root_as_signer"] = (root_key, [root], "signer_is_ca")
    odd = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.7"), b"\x05\x00")
    c, k = issue("Signer with a critical extension", root, root_key, key_usage={"digital_signature"},
                 eku=eku(CODE_SIGNING), extra=[(odd, True)])
    out["unknown_critical"] = (k, [c], "unknown_critical_extension")
    noks, nkey = issue("CA without keyCertSign", root, root_key, ca=True, path_len=0, key_usage={"crl_sign"})
    c, k = issue("Signer under it", noks, nkey, key_usage={"digital_signature"}, eku=eku(CODE_SIGNING))
    out["issuer_without_keycertsign"] = (k, [c, noks], "issuer_key_usage")
    return out


def sign_digest(key, digest):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    return key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def ber_signature(sig):
    """The same ECDSA signature with a zero byte prepended to r (BER, not DER)."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    r, s = decode_dss_signature(sig)

    def i(v, pad=b""):
        b = pad + v.to_bytes((v.bit_length() + 8) // 8, "big")
        return b"\x02" + bytes([len(b)]) + b
    body = i(r, b"\x00") + i(s)
    return b"\x30" + bytes([len(body)]) + body


def pem_chain(certs):
    from cryptography.hazmat.primitives import serialization
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)

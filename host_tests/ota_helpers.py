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

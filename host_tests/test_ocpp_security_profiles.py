"""OCPP 1.6 security whitepaper: installed certificates and security profiles
1-3 (OCTT test cases 073, 075-078, 083-087), the firmware on the Unix port
against the dev CSMS over real TLS with a throw-away test PKI.

Hash data is checked against what `cryptography` computes for an OCSP
CertID (SHA-256 of the issuer's DER Name and of its public key bits)."""
import base64
import datetime
import io
import json
import tarfile

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from ocpp_b import CP, call, calls, get_config, pump, until, wait_status
from tools.csms.tls import make_test_pki

PASSWORD = "correct-horse-battery-1"
NEW_PASSWORD = "another-secret-0123456"


# ---------------------------------------------------------------- helpers

@pytest.fixture
def pki(tmp_path):
    return make_test_pki(tmp_path / "pki", clients=(CP,))


def pem(path):
    with open(path) as f:
        return f.read()


def expected_hash(pem_text):
    # A root is its own issuer: the OCSP CertID of (cert, cert).
    cert = x509.load_pem_x509_certificate(pem_text.encode())
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, cert, hashes.SHA256()).build()
    return {"hashAlgorithm": "SHA256", "issuerNameHash": req.issuer_name_hash.hex(),
            "issuerKeyHash": req.issuer_key_hash.hex(), "serialNumber": format(req.serial_number, "x")}


def sec_events(csms, kind=None, after=None):
    return [p for p in calls(csms, "SecurityEventNotification", after)
            if kind is None or p["type"] == kind]


def connects(csms, after=None):
    return [e.payload for e in csms.events(cp=CP, type="CONNECT", after=after)]


def boots(csms, after=None):
    return calls(csms, "BootNotification", after)


def online(make_csms, make_fw, sets=(), csms_kw=None, url=None):
    csms = make_csms(ping_interval=None, **(csms_kw or {}))
    fw = make_fw(sets=["csms_url=" + (url or "ws://127.0.0.1:%d" % csms.port)] + list(sets))
    until(fw, lambda: boots(csms), limit_ms=30000, what="BootNotification")
    wait_status(fw, csms, 1, "Available")
    return csms, fw


def config_value(fw, csms, key):
    known, _ = get_config(fw, csms, key)
    return known[key]["value"]


def self_signed(name, ca=True, days=(-1, 30), key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(n).issuer_name(n).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days[0]))
            .not_valid_after(now + datetime.timedelta(days=days[1]))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def install(fw, csms, kind, text):
    return call(fw, csms, "InstallCertificate", {"certificateType": kind, "certificate": text})["status"]


def installed(fw, csms, kind):
    r = call(fw, csms, "GetInstalledCertificateIds", {"certificateType": kind})
    return r["status"], r.get("certificateHashData", [])


def wait_tls_connect(fw, csms, mark, limit_ms=60000):
    return until(fw, lambda: [c for c in connects(csms, mark) if c["tls"]], limit_ms=limit_ms,
                 what="a wss:// connection")


# ---------------------------------------------------------------- certificates

def test_tc_075_1_install_manufacturer_root(make_csms, make_fw, tmp_path):
    csms, fw = online(make_csms, make_fw)
    mf = make_test_pki(tmp_path / "mf", ca_name="Manufacturer Root", clients=())
    assert installed(fw, csms, "ManufacturerRootCertificate") == ("NotFound", [])
    assert install(fw, csms, "ManufacturerRootCertificate", pem(mf["ca"])) == "Accepted"
    status, ids = installed(fw, csms, "ManufacturerRootCertificate")
    assert status == "Accepted" and ids == [expected_hash(pem(mf["ca"]))]
    # the other kind is still empty, and the store survives a power cut
    assert installed(fw, csms, "CentralSystemRootCertificate")[0] == "NotFound"
    mark = csms.mark()
    fw.powercut()
    fw.start()
    until(fw, lambda: boots(csms, mark), what="boot after the power cut")
    assert installed(fw, csms, "ManufacturerRootCertificate") == ("Accepted", ids)


def test_tc_075_2_install_central_system_root(make_csms, make_fw, pki):
    csms, fw = online(make_csms, make_fw)
    assert install(fw, csms, "CentralSystemRootCertificate", pem(pki["ca"])) == "Accepted"
    # the same one again: still one entry
    assert install(fw, csms, "CentralSystemRootCertificate", pem(pki["ca"])) == "Accepted"
    assert installed(fw, csms, "CentralSystemRootCertificate") == ("Accepted", [expected_hash(pem(pki["ca"]))])
    assert installed(fw, csms, "ManufacturerRootCertificate")[0] == "NotFound"


def test_initial_provisioning_from_configuration(make_csms, make_fw, pki, tmp_path):
    mf = make_test_pki(tmp_path / "mf", ca_name="Manufacturer Root", clients=())
    csms, fw = online(make_csms, make_fw, ["csms_ca=" + pki["ca"], "fw_root=" + mf["ca"]])
    assert installed(fw, csms, "CentralSystemRootCertificate") == ("Accepted", [expected_hash(pem(pki["ca"]))])
    assert installed(fw, csms, "ManufacturerRootCertificate") == ("Accepted", [expected_hash(pem(mf["ca"]))])


def test_tc_076_delete_certificate(make_csms, make_fw, pki, tmp_path):
    csms, fw = online(make_csms, make_fw)
    other = make_test_pki(tmp_path / "other", ca_name="Second CSMS root", clients=())
    for p in (pki["ca"], other["ca"]):
        assert install(fw, csms, "CentralSystemRootCertificate", pem(p)) == "Accepted"
    h = expected_hash(pem(other["ca"]))
    assert call(fw, csms, "DeleteCertificate", {"certificateHashData": h}) == {"status": "Accepted"}
    assert installed(fw, csms, "CentralSystemRootCertificate") == ("Accepted", [expected_hash(pem(pki["ca"]))])
    assert call(fw, csms, "DeleteCertificate", {"certificateHashData": h}) == {"status": "NotFound"}
    # case in the hex digits does not matter; a hash this charger does not compute finds nothing
    h = expected_hash(pem(pki["ca"]))
    assert call(fw, csms, "DeleteCertificate", {"certificateHashData": dict(h, hashAlgorithm="SHA512")}) == \
        {"status": "NotFound"}
    up = dict(h, issuerNameHash=h["issuerNameHash"].upper(), issuerKeyHash=h["issuerKeyHash"].upper())
    assert call(fw, csms, "DeleteCertificate", {"certificateHashData": up}) == {"status": "Accepted"}
    assert installed(fw, csms, "CentralSystemRootCertificate")[0] == "NotFound"


def test_certificate_store_is_bounded(make_csms, make_fw, tmp_path):
    csms, fw = online(make_csms, make_fw)
    n = int(config_value(fw, csms, "CertificateStoreMaxLength"))
    for i in range(n):
        assert install(fw, csms, "ManufacturerRootCertificate", self_signed("Root %d" % i)) == "Accepted"
    assert install(fw, csms, "CentralSystemRootCertificate", self_signed("One more")) == "Failed"


def test_tc_078_invalid_central_system_certificate_event(make_csms, make_fw, pki, tmp_path):
    csms, fw = online(make_csms, make_fw)
    mark = csms.mark()
    expired = self_signed("Expired root", days=(-60, -1))
    assert install(fw, csms, "CentralSystemRootCertificate", expired) == "Rejected"
    # a leaf (not a CA) is no root either
    assert install(fw, csms, "CentralSystemRootCertificate", pem(pki["server_cert"])) == "Rejected"
    ev = until(fw, lambda: len(sec_events(csms, "InvalidCentralSystemCertificate", mark)) >= 2 and
               sec_events(csms, "InvalidCentralSystemCertificate", mark), what="security events")
    assert "CentralSystemRootCertificate" in ev[0]["techInfo"]
    # an invalid manufacturer root: the same event, its techInfo names the kind
    mark = csms.mark()
    assert install(fw, csms, "ManufacturerRootCertificate", expired) == "Rejected"
    ev = until(fw, lambda: sec_events(csms, "InvalidCentralSystemCertificate", mark), what="event")
    assert "ManufacturerRootCertificate" in ev[0]["techInfo"]
    assert installed(fw, csms, "CentralSystemRootCertificate")[0] == "NotFound"
    assert installed(fw, csms, "ManufacturerRootCertificate")[0] == "NotFound"


def test_tc_078_invalid_server_certificate_event(make_csms, make_fw, pki, tmp_path):
    # OCTT TC_078 for a charge point: the CSMS drops the link and shows an
    # invalid server certificate; once it shows the valid one again the
    # charger reconnects and reports InvalidCentralSystemCertificate.
    csms = make_csms(ping_interval=None, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                     passwords={CP: PASSWORD}, auth_required=True)
    fw = make_fw(sets=["csms_url=wss://localhost:%d" % csms.port, "csms_ca=" + pki["ca"], "auth_key=" + PASSWORD])
    until(fw, lambda: boots(csms), what="BootNotification over wss://")
    rogue = make_test_pki(tmp_path / "rogue", ca_name="Rogue CA", clients=())
    csms.set_tls_cert(rogue["server_cert"], rogue["server_key"])
    mark = csms.mark()
    csms.drop_sync(CP)
    pump(fw, 15000)
    assert not connects(csms, mark)
    csms.set_tls_cert(pki["server_cert"], pki["server_key"])
    ev = until(fw, lambda: sec_events(csms, "InvalidCentralSystemCertificate", mark), limit_ms=200000,
               step=1000, what="InvalidCentralSystemCertificate")
    assert "signed" in ev[0]["techInfo"] or "certificate" in ev[0]["techInfo"].lower()
    pump(fw, 3000)
    assert len(sec_events(csms, "InvalidCentralSystemCertificate", mark)) == 1  # one per failure streak
    assert len(sec_events(csms, "CentralSystemFailedToAuthenticate", mark)) == 1


def test_malformed_certificates_are_rejected(make_csms, make_fw, pki):
    csms, fw = online(make_csms, make_fw)
    good = pem(pki["ca"])
    body = "".join(good.strip().splitlines()[1:-1])
    der = base64.b64decode(body)
    truncated = base64.b64encode(der[:len(der) // 2]).decode()
    bad = ["garbage", "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
           "-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n" % truncated,
           "-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n" % base64.b64encode(b"\x30\x03\x02\x01").decode(),
           good.replace("-----END CERTIFICATE-----", ""),
           good + good, "\u00e9" * 100]
    for text in bad:
        for kind in ("CentralSystemRootCertificate", "ManufacturerRootCertificate"):
            assert install(fw, csms, kind, text) == "Rejected", text[:60]
    for chain in bad:
        assert call(fw, csms, "CertificateSigned", {"certificateChain": chain}) == {"status": "Rejected"}
    # still answering, nothing installed
    assert installed(fw, csms, "CentralSystemRootCertificate")[0] == "NotFound"
    assert fw.status()["ocpp"]["state"] == "accepted"


def sign_csr(csr_pem, pki, days=30, key=None):
    """The CSMS's CA signs a CSR (or, with key=, a certificate for another key)."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    ca = x509.load_pem_x509_certificate(open(pki["ca"], "rb").read())
    ca_key = serialization.load_pem_private_key(open(pki["ca_key"], "rb").read(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.subject)
            .public_key(key.public_key() if key else csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=max(1, 1 - days)))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert.serial_number


def profile3(make_csms, make_fw, pki):
    cert, key = pki["clients"][CP]
    csms = make_csms(ping_interval=None, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                     tls_client_ca=pki["ca"])
    fw = make_fw(sets=["csms_url=wss://localhost:%d" % csms.port, "csms_ca=" + pki["ca"],
                       "cp_cert=" + cert, "cp_key=" + key])
    until(fw, lambda: boots(csms), what="BootNotification over mutual TLS")
    wait_status(fw, csms, 1, "Available")
    return csms, fw


def request_csr(fw, csms, mark):
    assert call(fw, csms, "ExtendedTriggerMessage", {"requestedMessage": "SignChargePointCertificate"}) == \
        {"status": "Accepted"}
    return until(fw, lambda: calls(csms, "SignCertificate", mark), what="SignCertificate")[-1]["csr"]


def peer_serial(c):
    """The serial number of the client certificate a CSMS connection saw."""
    return int(c["tls_serial"], 16) if c.get("tls_serial") else None


def test_tc_077_invalid_charge_point_certificate_event(make_csms, make_fw, pki, tmp_path):
    # OCTT: SignChargePointCertificate, SignCertificate, then a certificate the
    # charger must refuse (not for the key it made).
    csms, fw = profile3(make_csms, make_fw, pki)
    first = connects(csms)[-1]["tls_serial"]
    mark = csms.mark()
    csr = request_csr(fw, csms, mark)
    wrong, _ = sign_csr(csr, pki, key=ec.generate_private_key(ec.SECP256R1()))
    assert call(fw, csms, "CertificateSigned", {"certificateChain": wrong}) == {"status": "Rejected"}
    ev = until(fw, lambda: sec_events(csms, "InvalidChargePointCertificate", mark), what="event")
    assert "key" in ev[0]["techInfo"]
    # a chain whose CA did not sign the leaf; an expired one
    other = make_test_pki(tmp_path / "other", ca_name="Somebody else", clients=())
    good, _ = sign_csr(csr, pki)
    assert call(fw, csms, "CertificateSigned", {"certificateChain": good + pem(other["ca"])}) == \
        {"status": "Rejected"}
    old, _ = sign_csr(csr, pki, days=-1)
    assert call(fw, csms, "CertificateSigned", {"certificateChain": old}) == {"status": "Rejected"}
    pump(fw, 3000)
    assert connects(csms)[-1]["tls_serial"] == first  # still on the old certificate
    assert len(sec_events(csms, "InvalidChargePointCertificate", mark)) == 3


def test_tc_074_update_charge_point_certificate(make_csms, make_fw, pki):
    csms, fw = profile3(make_csms, make_fw, pki)
    assert peer_serial(connects(csms)[-1]) == \
        x509.load_pem_x509_certificate(open(pki["clients"][CP][0], "rb").read()).serial_number
    assert call(fw, csms, "ChangeConfiguration", {"key": "CpoName", "value": "ACME Charging"}) == {"status": "Accepted"}
    mark = csms.mark()
    csr = request_csr(fw, csms, mark)
    req = x509.load_pem_x509_csr(csr.encode())
    assert req.is_signature_valid  # ECDSA P-256 signature made in MicroPython
    assert req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CP
    assert req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "ACME Charging"
    assert isinstance(req.public_key(), ec.EllipticCurvePublicKey) and req.public_key().curve.name == "secp256r1"
    chain, serial = sign_csr(csr, pki)
    assert call(fw, csms, "CertificateSigned", {"certificateChain": chain}) == {"status": "Accepted"}
    # it reconnects with the new certificate
    c = until(fw, lambda: [c for c in connects(csms, mark) if peer_serial(c) == serial],
              what="a connection with the new certificate")[-1]
    assert c["tls_peer"]["commonName"] == CP
    until(fw, lambda: boots(csms, mark), what="BootNotification with the new certificate")
    # and keeps it over a power cut
    mark = csms.mark()
    fw.powercut()
    fw.start()
    until(fw, lambda: boots(csms, mark), what="boot after the power cut")
    assert peer_serial(connects(csms, mark)[-1]) == serial


def test_certificate_signed_for_the_configured_key(make_csms, make_fw, pki, tmp_path):
    other = make_test_pki(tmp_path / "other", ca_name="Somebody else", clients=(CP,))
    cert, key = pki["clients"][CP]
    csms, fw = online(make_csms, make_fw, ["cp_key=" + key])
    mark = csms.mark()
    # a certificate for another key than the charger's
    assert call(fw, csms, "CertificateSigned", {"certificateChain": pem(other["clients"][CP][0])}) == \
        {"status": "Rejected"}
    until(fw, lambda: sec_events(csms, "InvalidChargePointCertificate", mark), what="event")
    # one issued for our key, with its CA: accepted
    assert call(fw, csms, "CertificateSigned", {"certificateChain": pem(cert) + pem(pki["ca"])}) == \
        {"status": "Accepted"}


# ---------------------------------------------------------------- profiles and keys

def test_tc_084_downgrade_security_profile_rejected(make_csms, make_fw):
    csms, fw = online(make_csms, make_fw, ["auth_key=" + PASSWORD],
                      csms_kw={"passwords": {CP: PASSWORD}, "auth_required": True})
    assert config_value(fw, csms, "SecurityProfile") == "1"
    mark = csms.mark()
    assert call(fw, csms, "ChangeConfiguration", {"key": "SecurityProfile", "value": "0"}) == {"status": "Rejected"}
    # raising needs what the profile needs: no CentralSystemRootCertificate, no client certificate
    for v in ("2", "3"):
        assert call(fw, csms, "ChangeConfiguration", {"key": "SecurityProfile", "value": v}) == \
            {"status": "Rejected"}
    assert config_value(fw, csms, "SecurityProfile") == "1"
    pump(fw, 5000)
    assert not connects(csms, mark)  # the connection stayed as it was
    assert not sec_events(csms, "ReconfigurationOfSecurityParameters")


def test_tc_073_update_basic_auth_password(make_csms, make_fw, tmp_path):
    csms, fw = online(make_csms, make_fw, ["auth_key=" + PASSWORD],
                      csms_kw={"passwords": {CP: PASSWORD}, "auth_required": True, "http_port": 0})
    mark = csms.mark()
    assert call(fw, csms, "ChangeConfiguration", {"key": "AuthorizationKey", "value": NEW_PASSWORD}) == \
        {"status": "Accepted"}
    csms.set_password(CP, NEW_PASSWORD)
    # the charger closes the connection and comes back with the new password
    until(fw, lambda: connects(csms, mark), what="reconnect")
    until(fw, lambda: boots(csms, mark), what="BootNotification after the reconnect")
    assert not csms.events(cp=CP, type="REFUSED", after=mark)
    # the new key outlives a reboot
    mark = csms.mark()
    fw.powercut()
    fw.start()
    until(fw, lambda: boots(csms, mark), what="boot after the power cut")
    assert not csms.events(cp=CP, type="REFUSED", after=mark)
    # too short: Rejected
    assert call(fw, csms, "ChangeConfiguration", {"key": "AuthorizationKey", "value": "short"}) == \
        {"status": "Rejected"}
    # the key is never disclosed: configuration, log, status, diagnostics
    known, unknown = get_config(fw, csms, "AuthorizationKey")
    assert "AuthorizationKey" not in known and unknown == ["AuthorizationKey"]
    everything, _ = get_config(fw, csms)
    assert NEW_PASSWORD not in json.dumps(everything)
    for secret in (NEW_PASSWORD, PASSWORD):  # the OCPP key and the configured one
        assert secret not in json.dumps(fw.log(n=500))
        assert secret not in json.dumps(fw.status())
    r = csms.call_sync(CP, "GetDiagnostics", {"location": csms.upload_url("")})
    until(fw, lambda: [p for p in calls(csms, "DiagnosticsStatusNotification") if p["status"] == "Uploaded"],
          what="diagnostics uploaded")
    up = csms.files.wait_for_upload(r["fileName"], timeout=10)
    with open(up["path"], "rb") as f:
        blob = f.read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        for m in t.getmembers():
            assert NEW_PASSWORD.encode() not in t.extractfile(m).read(), m.name
    assert NEW_PASSWORD.encode() not in blob and PASSWORD.encode() not in blob
    # and the security log, which has a line for the change
    r = csms.call_sync(CP, "GetLog", {"logType": "SecurityLog", "requestId": 7,
                                      "log": {"remoteLocation": csms.upload_url("")}})
    assert r["status"] == "Accepted"
    until(fw, lambda: [p for p in calls(csms, "LogStatusNotification") if p["status"] == "Uploaded"],
          what="security log uploaded")
    up = csms.files.wait_for_upload(r["filename"], timeout=10)
    with open(up["path"], "rb") as f:
        seclog = f.read()
    assert b"AuthorizationKey changed" in seclog
    assert NEW_PASSWORD.encode() not in seclog and PASSWORD.encode() not in seclog


def test_tc_085_basic_authentication(make_csms, make_fw):
    csms = make_csms(ping_interval=None, passwords={CP: PASSWORD}, auth_required=True)
    fw = make_fw(sets=["csms_url=ws://127.0.0.1:%d" % csms.port, "auth_key=wrong-password-00000"])
    pump(fw, 20000)
    assert len(csms.events(cp=CP, type="REFUSED")) >= 2  # it kept trying
    assert not boots(csms)
    assert any("401" in e["msg"] for e in fw.log())
    # the CSMS now takes that password: the charger gets in and reports the
    # failed authentication, once for the whole streak of refusals
    csms.set_password(CP, "wrong-password-00000")
    until(fw, lambda: sec_events(csms, "FailedToAuthenticateAtCentralSystem"), limit_ms=200000, step=1000,
          what="FailedToAuthenticateAtCentralSystem")
    pump(fw, 5000)
    assert len(sec_events(csms, "FailedToAuthenticateAtCentralSystem")) == 1
    assert connects(csms)[-1]["user"] == CP  # Basic user = the charge point id
    # a later connection with the accepted password raises nothing new
    mark = csms.mark()
    csms.drop_sync(CP)
    until(fw, lambda: boots(csms, mark), what="reconnect")
    pump(fw, 3000)
    assert not sec_events(csms, "FailedToAuthenticateAtCentralSystem", mark)


def test_tc_083_upgrade_security_profile(make_csms, make_fw, pki):
    # The dev CSMS serves ws:// and wss:// at once; the charger knows both URLs.
    csms = make_csms(ping_interval=None, passwords={CP: PASSWORD}, auth_required=True,
                     tls_cert=pki["server_cert"], tls_key=pki["server_key"], tls_port=0)
    fw = make_fw(sets=["csms_url=ws://127.0.0.1:%d" % csms.port, "csms_tls_url=wss://localhost:%d" % csms.tls_port,
                       "auth_key=" + PASSWORD, "csms_ca=" + pki["ca"]])
    until(fw, lambda: boots(csms), what="BootNotification")
    # started at profile 1: ws:// with Basic
    assert config_value(fw, csms, "SecurityProfile") == "1"
    assert connects(csms)[-1]["tls"] is False
    mark = csms.mark()
    assert call(fw, csms, "ChangeConfiguration", {"key": "SecurityProfile", "value": "2"}) == {"status": "Accepted"}
    # it drops the ws:// link and comes back over wss://, Basic still (profile 2)
    c = wait_tls_connect(fw, csms, mark)[-1]
    assert c["user"] == CP
    until(fw, lambda: boots(csms, mark), what="BootNotification over wss://")
    ev = until(fw, lambda: sec_events(csms, "ReconfigurationOfSecurityParameters", mark), what="event")
    assert "1 -> 2" in ev[0]["techInfo"]
    # the profile survives a power cut, and only goes up
    mark = csms.mark()
    fw.powercut()
    fw.start()
    wait_tls_connect(fw, csms, mark)
    until(fw, lambda: boots(csms, mark), what="boot after the power cut")
    assert all(c["tls"] for c in connects(csms, mark))
    assert config_value(fw, csms, "SecurityProfile") == "2"
    assert call(fw, csms, "ChangeConfiguration", {"key": "SecurityProfile", "value": "1"}) == {"status": "Rejected"}
    # the last CentralSystemRootCertificate cannot be deleted under profile 2
    h = expected_hash(pem(pki["ca"]))
    assert call(fw, csms, "DeleteCertificate", {"certificateHashData": h}) == {"status": "Failed"}
    assert installed(fw, csms, "CentralSystemRootCertificate")[0] == "Accepted"


# ---------------------------------------------------------------- TLS

def test_tc_086_tls_server_certificate(make_csms, make_fw, pki, tmp_path):
    # valid: profile 2 over wss://, server certificate from the installed root
    csms = make_csms(ping_interval=None, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                     passwords={CP: PASSWORD}, auth_required=True)
    fw = make_fw(sets=["csms_url=wss://localhost:%d" % csms.port, "csms_ca=" + pki["ca"], "auth_key=" + PASSWORD])
    until(fw, lambda: boots(csms), what="BootNotification over wss://")
    assert connects(csms)[-1]["tls"] is True
    assert config_value(fw, csms, "SecurityProfile") == "2"
    fw.close()
    # invalid: a server certificate from another CA, and one from the trusted
    # CA for another host name
    rogue = make_test_pki(tmp_path / "rogue", ca_name="Rogue CA", clients=())
    for name, (cert, key) in (("untrusted", (rogue["server_cert"], rogue["server_key"])),
                              ("hostname", server_cert_for(pki, "otherhost", tmp_path))):
        bad_csms = make_csms(ping_interval=None, tls_cert=cert, tls_key=key)
        fw = make_fw(sets=["csms_url=wss://localhost:%d" % bad_csms.port, "csms_ca=" + pki["ca"],
                           "auth_key=" + PASSWORD], name="fw-" + name)
        pump(fw, 20000, 500)
        assert not boots(bad_csms) and not connects(bad_csms), name
        logged = [e["msg"] for e in fw.log() if "InvalidCentralSystemCertificate" in e["msg"]]
        assert len(logged) == 1, (name, [e["msg"] for e in fw.log()][-8:])  # once for the streak
        fw.close()


def server_cert_for(pki, host, tmp_path):
    """A server certificate and key for `host`, signed by the test CA the charger trusts."""
    ca = x509.load_pem_x509_certificate(open(pki["ca"], "rb").read())
    ca_key = serialization.load_pem_private_key(open(pki["ca_key"], "rb").read(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cp, kp = tmp_path / (host + ".pem"), tmp_path / (host + ".key")
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return str(cp), str(kp)


def test_tc_087_tls_client_certificate(make_csms, make_fw, pki, tmp_path):
    cert, key = pki["clients"][CP]
    csms = make_csms(ping_interval=None, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                     tls_client_ca=pki["ca"])
    fw = make_fw(sets=["csms_url=wss://localhost:%d" % csms.port, "csms_ca=" + pki["ca"],
                       "cp_cert=" + cert, "cp_key=" + key, "auth_key=" + PASSWORD])
    until(fw, lambda: boots(csms), what="BootNotification over mutual TLS")
    c = connects(csms)[-1]
    assert c["tls"] is True and c["tls_peer"]["commonName"] == CP
    assert c["user"] is None  # profile 3: the certificate is the credential, no Basic password
    assert config_value(fw, csms, "SecurityProfile") == "3"
    fw.close()
    # a client certificate from another CA is refused by the CSMS
    other = make_test_pki(tmp_path / "other", ca_name="Somebody else", clients=(CP,))
    ocert, okey = other["clients"][CP]
    fw = make_fw(sets=["csms_url=wss://localhost:%d" % csms.port, "csms_ca=" + pki["ca"],
                       "cp_cert=" + ocert, "cp_key=" + okey], name="fw-other")
    mark = csms.mark()
    pump(fw, 20000, 500)
    assert not connects(csms, mark) and not boots(csms, mark)
    logged = [e["msg"] for e in fw.log() if "FailedToAuthenticateAtCentralSystem" in e["msg"]]
    assert len(logged) == 1, [e["msg"] for e in fw.log()][-8:]


CLASSIFY = r"""
from firmware.ocpp import profile
from firmware.net.ws import WsTlsError, WsHandshakeError, WsConnectError, WsTimeout

class Keys:
    def __init__(self, p):
        self.p = p
    def get(self, name):
        return self.p

class Sec:
    def __init__(self):
        self.ev = []
    def event(self, kind, tech=None):
        self.ev.append(kind)

class Certs:
    def __init__(self):
        self.fail_streak = []

class Cl:
    def __init__(self, p):
        self.keys = Keys(p)
        self.security = Sec()
        self.certs = Certs()

H = "TLS handshake with csms:443 failed: "
cases = [
    (2, WsHandshakeError("HTTP 401 Unauthorized", 401), "FailedToAuthenticateAtCentralSystem"),
    (1, WsHandshakeError("HTTP 403 Forbidden", 403), "FailedToAuthenticateAtCentralSystem"),
    (1, WsHandshakeError("HTTP 404 Not Found", 404), None),
    (2, WsTlsError(H + "The certificate is not correctly signed by the trusted CA"), "InvalidCentralSystemCertificate"),
    (2, WsTlsError(H + "The certificate validity has expired"), "InvalidCentralSystemCertificate"),
    (2, WsTlsError(H + "The certificate Common Name (CN) does not match with the expected CN"),
     "InvalidCentralSystemCertificate"),
    (2, WsTlsError(H + "-29312 MBEDTLS_ERR_SSL_BAD_PROTOCOL_VERSION"), "InvalidTLSVersion"),
    (2, WsTlsError(H + "-30592 MBEDTLS_ERR_SSL_NO_CIPHER_CHOSEN"), "InvalidTLSCipherSuite"),
    (2, WsTlsError(H + "-30592 MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE"), None),
    (3, WsTlsError(H + "-30592 MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE"), "FailedToAuthenticateAtCentralSystem"),
    (2, WsTlsError("wss:// needs ca= (the CA that signed the server certificate)"), None),
    (2, WsConnectError("cannot connect: connection refused"), None),
    (2, WsTimeout("no websocket within 10000 ms"), None),
]
bad = []
for p, e, want in cases:
    got = profile.classify(Cl(p), e)
    if (got[0] if got else None) != want:
        bad.append((str(e), got, want))
# the same failure on every retry: one event per streak; a new streak after a connection
cl = Cl(2)
e = WsTlsError(H + "The certificate is not correctly signed by the trusted CA")
for _ in range(5):
    profile.connect_failed(cl, e)
profile.connect_failed(cl, WsHandshakeError("HTTP 401", 401))
profile.connect_failed(cl, e)
profile.connected(cl)
profile.connect_failed(cl, e)
print("BAD", bad)
print("EV", cl.security.ev)
"""


def test_connect_failures_classified():
    from mp import run_mp
    p = run_mp(CLASSIFY)
    assert p.returncode == 0, p.stderr
    assert [l for l in p.stdout.splitlines() if l.startswith("BAD")][-1] == "BAD []"
    assert [l for l in p.stdout.splitlines() if l.startswith("EV")][-1] == "EV %s" % [
        "InvalidCentralSystemCertificate", "CentralSystemFailedToAuthenticate", "FailedToAuthenticateAtCentralSystem",
        "InvalidCentralSystemCertificate", "CentralSystemFailedToAuthenticate"]


LINK = r"""
from firmware.ocpp import profile

class Keys:
    def __init__(self, p, key=""):
        self.v = {"SecurityProfile": p, "AuthorizationKey": key}
    def get(self, name):
        return self.v[name]

class Certs:
    def ca_pem(self):
        return "CA-PEM"
    def client_pair(self):
        return ("CERT", "KEY")

class Cl:
    def __init__(self, p, url, tls_url="", key="", auth_key="cfgpass-0123456789"):
        self.keys = Keys(p, key)
        self.certs = Certs()
        self.opts = {"url": url, "tls_url": tls_url, "id": "CP7", "auth_key": auth_key}

def show(cl):
    a = profile.link_args(cl)
    return [a["url"], a["basic"], a["ca"], a.get("cert"), a.get("key")]

U = "ws://csms.example:9000/ocpp/CP7"
print("R0", show(Cl(0, U, auth_key="")))
print("R1", show(Cl(1, U)))
print("R1k", show(Cl(1, U, key="ocppkey-0123456789")))
print("R2", show(Cl(2, U)))
print("R2t", show(Cl(2, U, tls_url="wss://tls.example/ocpp/CP7")))
print("R3", show(Cl(3, U)))
print("I", [profile.initial(Cl(0, u, auth_key=k)) for u, k in
            ((U, ""), (U, "x" * 16), ("wss://h/CP7", ""), ("wss://h/CP7", "x" * 16))])
"""


def test_link_arguments_per_profile():
    from mp import run_mp
    p = run_mp(LINK)
    assert p.returncode == 0, p.stderr
    out = {l.split(" ", 1)[0]: l.split(" ", 1)[1] for l in p.stdout.splitlines() if " " in l}
    U = "ws://csms.example:9000/ocpp/CP7"
    W = "wss://csms.example:9000/ocpp/CP7"  # profile >= 2 without csms_tls_url: same host:port, wss://
    assert out["R0"] == str([U, None, None, None, None])
    assert out["R1"] == str([U, ("CP7", "cfgpass-0123456789"), None, None, None])
    assert out["R1k"] == str([U, ("CP7", "ocppkey-0123456789"), None, None, None])  # the OCPP key wins
    assert out["R2"] == str([W, ("CP7", "cfgpass-0123456789"), "CA-PEM", None, None])
    assert out["R2t"] == str(["wss://tls.example/ocpp/CP7", ("CP7", "cfgpass-0123456789"), "CA-PEM", None, None])
    assert out["R3"] == str([W, None, "CA-PEM", "CERT", "KEY"])  # the certificate, no password
    assert out["I"] == str([0, 1, 2, 2])


def test_install_certificate_applies_the_certificate_policy(make_csms, make_fw):
    """InstallCertificate holds a root to the firmware-signing policy's issuer
    rules (firmware/crypto/policy.py): a critical extension the charger does not
    know, a keyUsage without keyCertSign, a duplicated basicConstraints,
    BER lengths, Feb 30: Rejected, and the InvalidCentralSystemCertificate
    event's techInfo names the reason code. A proper root is accepted."""
    import certkit as K
    from ota_helpers import issue
    csms, fw = online(make_csms, make_fw)

    def pem_of(c):
        der = c if isinstance(c, bytes) else c.public_bytes(serialization.Encoding.DER)
        b = base64.b64encode(der).decode()
        return "-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n" % "\n".join(
            b[i:i + 64] for i in range(0, len(b), 64))

    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.7"), b"\x05\x00")
    k = K.ec_key()
    n = K.name("Doubled Root")
    now = datetime.datetime.now(datetime.timezone.utc)
    validity = K.seq(K.utc((now - datetime.timedelta(days=1)).strftime("%y%m%d%H%M%SZ")),
                     K.utc((now + datetime.timedelta(days=300)).strftime("%y%m%d%H%M%SZ")))
    good_raw = K.cert(n, n, k, k, K.ca_exts(k), validity=validity)
    t, a, s = K.split(good_raw)
    feb30 = K.seq(K.utc((now - datetime.timedelta(days=1)).strftime("%y%m%d%H%M%SZ")),
                  K.utc("%02d0230000000Z" % ((now.year + 1) % 100)))
    cases = [
        ("unknown_critical_extension", issue("Odd Root", None, None, ca=True, key_usage={"key_cert_sign"},
                                             extra=[(odd, True)])[0]),
        ("issuer_key_usage", issue("No keyCertSign Root", None, None, ca=True, key_usage={"crl_sign"})[0]),
        ("duplicate_extension", K.cert(n, n, k, k, [K.bc(False), K.bc(True), K.ku(K.KEY_CERT_SIGN)],
                                       validity=validity)),
        ("der_length", b"\x30\x83\x00" + len(t + a + s).to_bytes(2, "big") + t + a + s),
        ("bad_time", K.cert(n, n, k, k, K.ca_exts(k), validity=feb30)),
    ]
    for reason, c in cases:
        for kind in ("ManufacturerRootCertificate", "CentralSystemRootCertificate"):
            mark = csms.mark()
            assert install(fw, csms, kind, pem_of(c)) == "Rejected", (reason, kind)
            ev = until(fw, lambda: sec_events(csms, "InvalidCentralSystemCertificate", mark), what="event")
            assert reason in ev[0]["techInfo"] and kind in ev[0]["techInfo"], (reason, ev)
    assert installed(fw, csms, "ManufacturerRootCertificate")[0] == "NotFound"
    assert install(fw, csms, "ManufacturerRootCertificate", pem_of(good_raw)) == "Accepted"

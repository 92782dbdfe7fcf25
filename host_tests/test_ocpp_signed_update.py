"""Secure firmware update through OCPP (1.6 security extension) against the
dev CSMS: SignedUpdateFirmware with a real signed bundle of this firmware,
the whole status sequence, the reboot into the new image on trial, its
confirmation, and what happens to bad images: refused with the specified
status and security event, the running slot untouched."""
import pytest

from ocpp_helpers import CP, iso_in
from ota_helpers import (FACTORY_VERSION, advance_until, fw_sets, kit, security_events,  # noqa: F401
                         signed_request, signed_statuses, slot_of)


@pytest.fixture
def online(make_csms, make_fw, kit):  # noqa: F811
    csms = make_csms(ping_interval=None, http_port=0)
    fw = make_fw(sets=fw_sets(kit, csms))
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10)
    fw.advance(2000)
    return csms, fw


def put(csms, kit, name, data=None, key="bundle"):  # noqa: F811
    f = kit.files[name]
    csms.files.add_firmware(name + ".bin", data if data is not None else f[key].read_bytes())
    return csms.file_url(name + ".bin")


def final(csms, rid):
    s = signed_statuses(csms, rid)
    return s and s[-1] in ("Installed", "InstallationFailed", "InvalidSignature", "InstallVerificationFailed",
                           "DownloadFailed")


def test_tc_080_secure_firmware_update(online, kit):  # noqa: F811
    csms, fw = online
    assert slot_of(fw) == ("F", FACTORY_VERSION)
    mark = csms.mark()
    r = signed_request(csms, fw, put(csms, kit, "good"), kit.files["good"], request_id=80)
    assert r["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, 80))
    assert signed_statuses(csms, 80) == ["Downloading", "Downloaded", "SignatureVerified", "Installing",
                                         "InstallRebooting", "Installed"]
    # It rebooted into the new image, which says its version at boot.
    boots = csms.messages(cp=CP, action="BootNotification", direction="in", after=mark)
    assert [b.payload["firmwareVersion"] for b in boots] == ["0.2.0"]
    assert slot_of(fw) == ("A", "0.2.0")
    updated = lambda: [e for e in security_events(csms, mark) if e["type"] == "FirmwareUpdated"]  # noqa: E731
    assert advance_until(fw, updated, limit_ms=10_000)
    assert "0.2.0" in updated()[0]["techInfo"]
    # Confirmed: another reboot stays on it (no trial left to count).
    fw.reboot()
    fw.advance(5000)
    assert slot_of(fw) == ("A", "0.2.0")


def test_tc_081_invalid_signature(online, kit):  # noqa: F811
    csms, fw = online
    f = kit.files["good"]
    data = bytearray(f["bundle"].read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of the image after signing
    mark = csms.mark()
    r = signed_request(csms, fw, put(csms, kit, "good", bytes(data)), f, request_id=81)
    assert r["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, 81))
    assert signed_statuses(csms, 81) == ["Downloading", "Downloaded", "InvalidSignature"]
    types = [e["type"] for e in security_events(csms, mark)]
    assert "InvalidFirmwareSignature" in types and "FirmwareUpdated" not in types
    assert not csms.messages(cp=CP, action="BootNotification", direction="in", after=mark)
    assert slot_of(fw) == ("F", FACTORY_VERSION)


def _never_healthy(src):
    # A release whose charger never gets healthy: it must not confirm itself.
    p = src / "station.py"
    s = p.read_text()
    s = s.replace('        if not self.running:\n            return "stopped"',
                  '        if self.running:\n            return "broken on purpose"')
    assert "broken on purpose" in s
    p.write_text(s)


def _crashes_at_start(src):
    p = src / "station.py"
    p.write_text("raise RuntimeError('this build cannot start')\n" + p.read_text())


@pytest.mark.parametrize("patch,version", [(_never_healthy, "0.3.0"), (_crashes_at_start, "0.3.1")],
                         ids=["never-healthy", "crashes-at-start"])
def test_a_bad_release_is_rolled_back_by_itself(make_csms, make_fw, kit, patch, version):  # noqa: F811
    f = kit.build("bad-" + version, version, src=kit.broken_source(patch))
    csms = make_csms(ping_interval=None, http_port=0)
    fw = make_fw(sets=fw_sets(kit, csms, ["ota_trial_s=60"]))
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10)
    fw.advance(2000)
    mark = csms.mark()
    csms.files.add_firmware("bad.bin", f["bundle"].read_bytes())
    assert signed_request(csms, fw, csms.file_url("bad.bin"), f, request_id=7)["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, 7), limit_ms=900_000)
    assert signed_statuses(csms, 7) == ["Downloading", "Downloaded", "SignatureVerified", "Installing",
                                        "InstallRebooting", "InstallationFailed"]
    # Back on the factory image by itself, and it says so.
    assert slot_of(fw) == ("F", FACTORY_VERSION)
    boots = [b.payload["firmwareVersion"] for b in
             csms.messages(cp=CP, action="BootNotification", direction="in", after=mark)]
    assert boots[-1] == FACTORY_VERSION
    updated = lambda: [e for e in security_events(csms, mark) if e["type"] == "FirmwareUpdated"]  # noqa: E731
    assert advance_until(fw, updated, limit_ms=10_000)
    ev = updated()
    assert len(ev) == 1 and "rolled back" in ev[0]["techInfo"], security_events(csms, mark)
    assert any("rolled back" in e["msg"] for e in fw.log(n=500))
    # The good release still installs afterwards.
    csms.files.add_firmware("good.bin", kit.files["good"]["bundle"].read_bytes())
    assert signed_request(csms, fw, csms.file_url("good.bin"), kit.files["good"], request_id=8)["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, 8))
    assert signed_statuses(csms, 8)[-1] == "Installed"
    assert slot_of(fw)[1] == "0.2.0"


def _slot_files(fw, slot):
    import hashlib
    import os
    d = os.path.join(fw.dir, "flash", "slots", slot)
    out = {}
    for base, _, names in os.walk(d):
        for n in names:
            p = os.path.join(base, n)
            out[os.path.relpath(p, d)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _pem_flip(pem, pos):
    import base64 as b64
    body = "".join(pem.strip().splitlines()[1:-1])
    der = bytearray(b64.b64decode(body))
    der[pos % len(der)] ^= 0x10
    enc = b64.b64encode(bytes(der)).decode()
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(enc[i:i + 64] for i in range(0, len(enc), 64)) + \
        "\n-----END CERTIFICATE-----\n"


def test_tampered_images_are_refused_and_the_running_slot_stays(make_csms, make_fw, kit):  # noqa: F811
    """Flipped bytes all over the image, the signature and the certificate; a
    foreign root, an expired or not yet valid certificate, a truncated file, a
    wrong hardware target, a downgrade: each refused with its status and
    security event, and the running slot (A, 0.2.0) never touched."""
    from ota_helpers import b64flip, flip
    kit.build("old", "0.1.5")
    kit.build("esp32only", "0.4.0", targets="esp32")
    kit.build("foreign", "0.4.1", keys=kit.other)
    csms = make_csms(ping_interval=None, http_port=0)
    fw = make_fw(sets=fw_sets(kit, csms))
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10)
    fw.advance(2000)
    good = kit.files["good"]
    assert signed_request(csms, fw, put(csms, kit, "good"), good, request_id=1)["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, 1)) and signed_statuses(csms, 1)[-1] == "Installed"
    before = _slot_files(fw, "A")
    assert slot_of(fw) == ("A", "0.2.0") and before
    image = good["bundle"].read_bytes()
    sig_raw_len = len(__import__("base64").b64decode(good["signature"]))
    cases = []  # (name, data, signature, cert, answer, statuses, event)
    bad_sig = ["Downloading", "Downloaded", "InvalidSignature"]
    for pos in (0, 5, 10, 14, 20, 100, 400, len(image) // 3, len(image) // 2, len(image) - 4096, len(image) - 1):
        cases.append(("image@%d" % pos, flip(image, pos), None, None, "Accepted", bad_sig, "InvalidFirmwareSignature"))
    for pos in (0, 3, 8, sig_raw_len // 2, sig_raw_len - 1):
        cases.append(("signature@%d" % pos, image, b64flip(good["signature"], pos), None, "Accepted", bad_sig,
                      "InvalidFirmwareSignature"))
    for pos in (5, 60, 120, 200, -40, -3):
        cases.append(("certificate@%d" % pos, image, None, _pem_flip(good["cert"], pos), "InvalidCertificate", [],
                      "InvalidFirmwareSigningCertificate"))
    f = kit.files["foreign"]
    cases.append(("foreign root", f["bundle"].read_bytes(), f["signature"], f["cert"], "InvalidCertificate", [],
                  "InvalidFirmwareSigningCertificate"))
    sig, cert = kit.sign_with_cert("good", -30, -1)
    cases.append(("expired certificate", image, sig, cert, "InvalidCertificate", [],
                  "InvalidFirmwareSigningCertificate"))
    sig, cert = kit.sign_with_cert("good", 2, 30)
    cases.append(("certificate not yet valid", image, sig, cert, "InvalidCertificate", [],
                  "InvalidFirmwareSigningCertificate"))
    cases.append(("truncated", image[:len(image) - 1000], None, None, "Accepted", bad_sig, "InvalidFirmwareSignature"))
    cases.append(("empty file", b"", None, None, "Accepted", bad_sig, "InvalidFirmwareSignature"))
    for name in ("esp32only", "old"):
        f = kit.files[name]
        cases.append((name, f["bundle"].read_bytes(), f["signature"], f["cert"], "Accepted",
                      ["Downloading", "Downloaded", "SignatureVerified", "InstallVerificationFailed"], None))
    rid = 100
    for name, data, sig, cert, answer, want, event in cases:
        rid += 1
        mark = csms.mark()
        csms.files.add_firmware("t%d.bin" % rid, data)
        r = signed_request(csms, fw, csms.file_url("t%d.bin" % rid), good, request_id=rid, signature=sig, cert=cert)
        assert r["status"] == answer, name
        if want:
            assert advance_until(fw, lambda: final(csms, rid), limit_ms=60_000), name
        else:
            fw.advance(3000)
        assert signed_statuses(csms, rid) == want, name
        types = [e["type"] for e in security_events(csms, mark)]
        assert (event in types) if event else ("FirmwareUpdated" not in types), (name, types)
        assert slot_of(fw) == ("A", "0.2.0"), name
    assert not csms.messages(cp=CP, action="BootNotification", direction="in", after=mark)
    assert _slot_files(fw, "A") == before


def test_scheduled_download_and_install_wait_for_their_times_and_the_transaction(online, kit):  # noqa: F811
    csms, fw = online
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag="CARD1")
    fw.advance(3000)
    assert fw.conn()["status"] == "Charging"
    r = signed_request(csms, fw, put(csms, kit, "good"), kit.files["good"], request_id=5, retrieve_in=120,
                       install_in=600)
    assert r["status"] == "Accepted"
    fw.advance(60_000)
    assert signed_statuses(csms, 5) == ["DownloadScheduled"]
    assert advance_until(fw, lambda: "SignatureVerified" in signed_statuses(csms, 5), limit_ms=120_000)
    fw.advance(10_000)
    assert signed_statuses(csms, 5)[-1] == "InstallScheduled"
    fw.advance(700_000)  # installDateTime has passed, the transaction still runs
    assert signed_statuses(csms, 5)[-1] == "InstallScheduled"
    assert fw.conn()["status"] == "Charging"
    fw.cmd("unplug")
    assert advance_until(fw, lambda: final(csms, 5))
    assert signed_statuses(csms, 5) == ["DownloadScheduled", "Downloading", "Downloaded", "SignatureVerified",
                                        "InstallScheduled", "Installing", "InstallRebooting", "Installed"]
    stop = csms.messages(cp=CP, action="StopTransaction", direction="in")
    assert stop and stop[0].payload["reason"] == "EVDisconnected"  # the update never cut the session


def test_a_new_request_cancels_the_one_in_progress(online, kit):  # noqa: F811
    csms, fw = online
    url = put(csms, kit, "good")
    assert signed_request(csms, fw, url, kit.files["good"], request_id=1, retrieve_in=3600)["status"] == "Accepted"
    fw.advance(2000)
    assert signed_request(csms, fw, url, kit.files["good"], request_id=2)["status"] == "AcceptedCanceled"
    assert advance_until(fw, lambda: final(csms, 2))
    assert signed_statuses(csms, 1) == ["DownloadScheduled"]
    assert signed_statuses(csms, 2)[-1] == "Installed"


def test_download_resumes_after_a_dropped_connection_and_a_power_cut(online, kit):  # noqa: F811
    csms, fw = online
    url = put(csms, kit, "good")
    size = kit.files["good"]["bundle"].stat().st_size
    csms.files.drop_after = size // 3  # every response stops a third of the way
    assert signed_request(csms, fw, url, kit.files["good"], request_id=9, retries=5)["status"] == "Accepted"
    assert advance_until(fw, lambda: signed_statuses(csms, 9).count("Downloading") >= 2, limit_ms=30_000)
    fw.powercut()
    csms.files.drop_after = None
    fw.start()
    assert advance_until(fw, lambda: final(csms, 9))
    assert signed_statuses(csms, 9)[-1] == "Installed"
    assert slot_of(fw) == ("A", "0.2.0")
    # Range requests carried on from what had arrived, instead of starting over.
    assert csms.files.counters["range_requests"] >= 2
    assert csms.files.counters["download_bytes"] < 2 * size


def test_no_manufacturer_root_means_no_signed_update(make_csms, make_fw, kit):  # noqa: F811
    csms = make_csms(ping_interval=None, http_port=0)
    fw = make_fw(sets=["csms_url=ws://127.0.0.1:%d" % csms.port])
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10)
    fw.advance(2000)
    r = signed_request(csms, fw, put(csms, kit, "good"), kit.files["good"], request_id=3)
    assert r["status"] == "InvalidCertificate"
    fw.advance(2000)
    assert "InvalidFirmwareSigningCertificate" in [e["type"] for e in security_events(csms)]


def test_whole_update_cycle_over_wss_with_security_profile_2(make_csms, make_fw, kit, tmp_path):  # noqa: F811
    """The release tool's keys and bundle, the dev CSMS over wss:// with Basic
    auth (security profile 2: server certificate checked against the
    installed CentralSystemRootCertificate), the image over https://."""
    from tools.csms.tls import make_test_pki
    pki = make_test_pki(tmp_path / "pki", clients=())
    csms = make_csms(ping_interval=None, http_port=0, http_tls=True, tls_cert=pki["server_cert"],
                     tls_key=pki["server_key"], passwords={CP: "correct-horse-battery"}, auth_required=True)
    fw = make_fw(sets=["csms_url=wss://localhost:%d" % csms.port, "csms_ca=" + pki["ca"],
                       "auth_key=correct-horse-battery", "fw_root=" + kit.root(), "ota_confirm_s=10"])
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=20)
    conf = csms.call_sync(CP, "GetConfiguration", {"key": ["SecurityProfile"]})
    assert conf["configurationKey"][0]["value"] == "2"
    fw.advance(2000)
    f = kit.files["good"]
    csms.files.add_firmware("wss.bin", f["bundle"].read_bytes())
    url = csms.file_url("wss.bin").replace("127.0.0.1", "localhost")
    assert url.startswith("https://")
    mark = csms.mark()
    assert signed_request(csms, fw, url, f, request_id=22)["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, 22), limit_ms=300_000, step=2000)
    assert signed_statuses(csms, 22) == ["Downloading", "Downloaded", "SignatureVerified", "Installing",
                                         "InstallRebooting", "Installed"]
    boots = csms.messages(cp=CP, action="BootNotification", direction="in", after=mark)
    assert [b.payload["firmwareVersion"] for b in boots] == ["0.2.0"]
    connects = csms.events(cp=CP, type="CONNECT")
    assert len(connects) == 2  # the factory image, then the new one after the reboot
    assert all(e.payload["tls"] and e.payload["user"] == CP for e in connects)
    assert slot_of(fw) == ("A", "0.2.0")


def test_downgrade_only_when_the_bundle_allows_it_and_the_csms_asks(online, kit):  # noqa: F811
    csms, fw = online
    old = kit.build("older-ok", "0.1.5", allow_downgrade=True)
    assert signed_request(csms, fw, put(csms, kit, "good"), kit.files["good"], request_id=1)["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, 1)) and slot_of(fw) == ("A", "0.2.0")
    url = put(csms, kit, "older-ok")
    # The bundle allows it, but the CSMS did not ask: refused.
    assert signed_request(csms, fw, url, old, request_id=2)["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, 2))
    assert signed_statuses(csms, 2)[-1] == "InstallVerificationFailed" and slot_of(fw) == ("A", "0.2.0")
    # The CSMS asks (vendor key AllowFirmwareDowngrade), for this one update.
    assert csms.call_sync(CP, "ChangeConfiguration", {"key": "AllowFirmwareDowngrade", "value": "true"})[
        "status"] == "Accepted"
    assert signed_request(csms, fw, url, old, request_id=3)["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, 3))
    assert signed_statuses(csms, 3)[-1] == "Installed" and slot_of(fw) == ("B", "0.1.5")
    conf = csms.call_sync(CP, "GetConfiguration", {"key": ["AllowFirmwareDowngrade"]})
    assert conf["configurationKey"][0]["value"] == "false"
    # A bundle that does not allow it stays refused even when asked.
    if "older" not in kit.files:
        kit.build("older", "0.1.2")
    csms.call_sync(CP, "ChangeConfiguration", {"key": "AllowFirmwareDowngrade", "value": "true"})
    assert signed_request(csms, fw, put(csms, kit, "older"), kit.files["older"], request_id=4)["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, 4))
    assert signed_statuses(csms, 4)[-1] == "InstallVerificationFailed" and slot_of(fw) == ("B", "0.1.5")


def test_certificate_policy_refusals_over_ocpp(make_csms, make_fw, kit, tmp_path):  # noqa: F811
    """The firmware-signing certificate policy end to end: a TLS server
    certificate, an intermediate or the root as signer, a critical unknown
    extension, an issuer without keyCertSign, a missing intermediate: each
    answered InvalidCertificate with an InvalidFirmwareSigningCertificate
    event naming its reason code, nothing downloaded, the running slot kept.
    A BER-encoded signature is InvalidSignature (reason bad_signature). A
    valid 3-level chain (the intermediate as a second PEM block of
    signingCertificate) installs."""
    import base64
    import hashlib
    from cryptography.hazmat.primitives import serialization
    from ota_helpers import ber_signature, issue, pem_chain, sign_digest, signer_kinds
    root, root_key = issue("Policy Test Root", None, None, ca=True, path_len=1,
                           key_usage={"key_cert_sign", "crl_sign"}, days=(-1, 3650))
    rp = tmp_path / "policy-root.pem"
    rp.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    csms = make_csms(ping_interval=None, http_port=0)
    fw = make_fw(sets=["csms_url=ws://127.0.0.1:%d" % csms.port, "fw_root=" + str(rp), "ota_confirm_s=30"])
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10)
    fw.advance(2000)
    good = kit.files["good"]
    image = good["bundle"].read_bytes()
    digest = hashlib.sha256(image).digest()
    kinds = signer_kinds(root, root_key)
    url = put(csms, kit, "good")
    rid = 200
    for name, (key, certs, reason) in kinds.items():
        if reason is None:
            continue
        rid += 1
        mark = csms.mark()
        sig = base64.b64encode(sign_digest(key, digest)).decode()
        r = signed_request(csms, fw, url, good, request_id=rid, signature=sig, cert=pem_chain(certs))
        assert r["status"] == "InvalidCertificate", name
        fw.advance(3000)
        ev = [e for e in security_events(csms, mark) if e["type"] == "InvalidFirmwareSigningCertificate"]
        assert ev and reason in ev[0]["techInfo"], (name, ev)
        assert signed_statuses(csms, rid) == [], name
        assert slot_of(fw) == ("F", FACTORY_VERSION), name
    # A BER signature by the valid chain's signer: downloaded, then refused.
    key, certs, _ = kinds["three_level"]
    rid += 1
    mark = csms.mark()
    sig = base64.b64encode(ber_signature(sign_digest(key, digest))).decode()
    r = signed_request(csms, fw, url, good, request_id=rid, signature=sig, cert=pem_chain(certs))
    assert r["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, rid), limit_ms=60_000)
    assert signed_statuses(csms, rid) == ["Downloading", "Downloaded", "InvalidSignature"]
    ev = [e for e in security_events(csms, mark) if e["type"] == "InvalidFirmwareSignature"]
    assert ev and "bad_signature" in ev[0]["techInfo"], ev
    assert slot_of(fw) == ("F", FACTORY_VERSION)
    # The valid 3-level chain installs.
    rid += 1
    sig = base64.b64encode(sign_digest(key, digest)).decode()
    r = signed_request(csms, fw, url, good, request_id=rid, signature=sig, cert=pem_chain(certs))
    assert r["status"] == "Accepted"
    assert advance_until(fw, lambda: final(csms, rid))
    assert signed_statuses(csms, rid)[-1] == "Installed", signed_statuses(csms, rid)
    assert slot_of(fw) == ("A", "0.2.0")

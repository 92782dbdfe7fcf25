"""Throw-away test PKI for wss:// tests, made with the `cryptography` package.

`make_pki(directory)` writes (PEM) and returns the paths of:
  ca, ca_key          the test root CA
  server, server_key  a server certificate for localhost / 127.0.0.1 signed by ca
  other, other_key    a server certificate for "otherhost" only, signed by ca
  client, client_key  a client certificate (charge point, security profile 3) signed by ca
  rogue_ca            an unrelated CA that signed none of the above
EC P-256 keys keep generation fast and are what mbedTLS handles cheaply on a board.
"""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _times():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)


def _ca(cn):
    key = _key()
    nb, na = _times()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, encipher_only=False, decipher_only=False),
            critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca, ca_key, cn, dns=(), ips=(), client=False):
    key = _key()
    nb, na = _times()
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    alt = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if alt:
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def _write(directory, name, cert=None, key=None):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        if cert is not None:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        else:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return path


def make_pki(directory):
    directory = str(directory)
    os.makedirs(directory, exist_ok=True)
    ca, ca_key = _ca("EVSE Test Root CA")
    rogue, _ = _ca("Unrelated Test CA")
    server, server_key = _leaf(ca, ca_key, "localhost", dns=("localhost",), ips=("127.0.0.1",))
    other, other_key = _leaf(ca, ca_key, "otherhost", dns=("otherhost",))
    client, client_key = _leaf(ca, ca_key, "SIM0001", client=True)
    out = {}
    for name, c, k in (("ca", ca, ca_key), ("server", server, server_key), ("other", other, other_key),
                       ("client", client, client_key)):
        out[name] = _write(directory, name + ".pem", cert=c)
        out[name + "_key"] = _write(directory, name + "_key.pem", key=k)
    out["rogue_ca"] = _write(directory, "rogue_ca.pem", cert=rogue)
    out["ca_der"] = os.path.join(directory, "ca.der")
    with open(out["ca_der"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.DER))
    return out

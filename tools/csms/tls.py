"""TLS for the CSMS (security profiles 2 and 3) and a throwaway test PKI.

`server_context` builds the server side. `make_test_pki` writes a CA, a
server certificate for localhost/127.0.0.1 and client certificates, PEM
files in a directory, for tests and for trying wss:// at the bench.
"""

import datetime
import ipaddress
import ssl
from pathlib import Path


def server_context(cert, key, client_ca=None):
    """TLS >= 1.2 server context; with client_ca, a client certificate that
    chains to it is required (security profile 3)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(client_ca))
    return ctx


def peer_subject(transport):
    """The verified client certificate's subject as {field: value}, or None."""
    try:
        cert = transport.get_extra_info("peercert")
    except Exception:
        return None
    if not cert:
        return None
    return {k: v for rdn in cert.get("subject", ()) for k, v in rdn}


def make_test_pki(directory, server_names=("localhost", "127.0.0.1"), clients=("CP1",),
                  ca_name="CSMS test CA", days=30):
    """Write ca.pem/ca.key, server.pem/server.key and <client>.pem/.key; return
    a dict of their paths ({"ca", "ca_key", "server_cert", "server_key",
    "clients": {name: (cert, key)}}). Needs the `cryptography` package."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=days)

    def name(cn, org="Dev CSMS"):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])

    def write(stem, cert, key):
        cp, kp = d / (stem + ".pem"), d / (stem + ".key")
        cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        return str(cp), str(kp)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name(ca_name)).issuer_name(name(ca_name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn, sans, usage):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now).not_valid_after(until)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 ca_key.public_key()), critical=False))
        if sans:
            alt = []
            for s in sans:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(s)))
                except ValueError:
                    alt.append(x509.DNSName(s))
            b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return b.sign(ca_key, hashes.SHA256()), key

    out = {}
    out["ca"], out["ca_key"] = write("ca", ca, ca_key)
    out["server_cert"], out["server_key"] = write(
        "server", *leaf(server_names[0], server_names, ExtendedKeyUsageOID.SERVER_AUTH))
    out["clients"] = {c: write(c, *leaf(c, (), ExtendedKeyUsageOID.CLIENT_AUTH)) for c in clients}
    return out

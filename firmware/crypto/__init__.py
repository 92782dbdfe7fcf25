# The charger's cryptographic primitives, shared by firmware updates
# (firmware/ota), OCPP certificates and the CSR (firmware/ocpp/certs.py) and
# TLS material (firmware/net/ws.py):
#   sha      SHA-256 of data and of files (streamed, in work units)
#   pem      PEM <-> DER, the one decoder
#   der      strict DER; X.509 certificates and public keys (x509ext: extensions);
#            tlv / int_tlv to encode (the CSR)
#   keys     private keys (PKCS#8, SEC1, PKCS#1) -> public key; SEC1 encoding
#   rsa      PKCS#1 v1.5 and PSS verification
#   ecdsa    P-256: verification, key generation and signing (the CSR)
#   verify   signatures and certificate chains to an installed root
#   policy   who may sign what: the certificate rules every chain is held to
#            (firmware signing, InstallCertificate roots, TLS where the code is ours)
# Long operations are generators (firmware/core/work.py). Every failure
# surfaces as VerifyError(reason); callers never see other exceptions.
# A name with a leading underscore is private to this package (a test checks it).


class VerifyError(Exception):
    # reason is a short stable code (e.g. "cert_expired") callers can map to OCPP statuses.
    def __init__(self, reason, detail=None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail

    def __str__(self):
        if self.detail:
            return "%s: %s" % (self.reason, self.detail)
        return self.reason

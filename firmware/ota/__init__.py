# Firmware-update verification: SHA-256, X.509 (DER) parsing, RSA and ECDSA P-256.
# Every failure surfaces as VerifyError(reason); callers never see other exceptions.


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

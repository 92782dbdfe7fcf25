# Installed certificates (OCPP 1.6 security: InstallCertificate,
# GetInstalledCertificateIds, DeleteCertificate). (Seam; filled in by the
# certificates / security-profile work.)
#
#   cl.certs.roots(kind) -> list of DER bytes
#       kind "ManufacturerRootCertificate" (firmware signatures) or
#       "CentralSystemRootCertificate" (the CSMS's TLS server certificate).


class Certificates:
    def __init__(self, cl):
        self.cl = cl

    def roots(self, kind):
        return []


def install(cl):
    pass

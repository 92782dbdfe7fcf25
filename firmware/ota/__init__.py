# Firmware updates: signed bundles (bundle), the two slots (slots), the
# OCPP-driven update (update) and the USB one (local). The cryptography they
# use is firmware/crypto's; VerifyError is re-exported here for callers that
# only deal with updates.
from firmware.crypto import VerifyError  # noqa: F401

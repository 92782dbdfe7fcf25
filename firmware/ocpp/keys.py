# OCPP 1.6 configuration keys: the standard keys this charger supports, their
# type, access and whether a change needs a reboot; values persist in the
# store. ChangeConfiguration answers Accepted / RebootRequired / Rejected /
# NotSupported as the spec says; GetConfiguration lists known keys and names
# unknown ones. AuthorizationKey is write-only and never logged.
from micropython import const

BOOL = const(0)
INT = const(1)
CSL = const(2)  # comma-separated list
STR = const(3)

R = const(0)  # read-only
RW = const(1)
W = const(2)  # write-only (secrets)

MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Voltage",
              "Temperature", "Current.Offered", "SoC")
PROFILES = "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger"

# name: (type, default, access, reboot, lo, hi / allowed list items)
TABLE = {
    "AllowOfflineTxForUnknownId": (BOOL, False, RW, False, 0, 0),
    "AuthorizationCacheEnabled": (BOOL, True, RW, False, 0, 0),
    "AuthorizeRemoteTxRequests": (BOOL, True, RW, False, 0, 0),
    "ClockAlignedDataInterval": (INT, 0, RW, False, 0, 86400),
    "ConnectionTimeOut": (INT, 60, RW, False, 1, 3600),
    "ConnectorPhaseRotation": (STR, "0.RST", RW, False, 0, 500),
    "GetConfigurationMaxKeys": (INT, 50, R, False, 0, 0),
    "HeartbeatInterval": (INT, 300, RW, False, 0, 86400),
    "LocalAuthorizeOffline": (BOOL, True, RW, False, 0, 0),
    "LocalPreAuthorize": (BOOL, False, RW, False, 0, 0),
    "MeterValuesAlignedData": (CSL, "Energy.Active.Import.Register", RW, False, 0, MEASURANDS),
    "MeterValuesAlignedDataMaxLength": (INT, 7, R, False, 0, 0),
    "MeterValuesSampledData": (CSL, "Energy.Active.Import.Register,Power.Active.Import", RW, False, 0, MEASURANDS),
    "MeterValuesSampledDataMaxLength": (INT, 7, R, False, 0, 0),
    "MeterValueSampleInterval": (INT, 60, RW, False, 0, 86400),
    "NumberOfConnectors": (INT, 1, R, False, 0, 0),
    "ResetRetries": (INT, 1, RW, False, 0, 10),
    "StopTransactionOnEVSideDisconnect": (BOOL, True, RW, False, 0, 0),
    "StopTransactionOnInvalidId": (BOOL, True, RW, False, 0, 0),
    "StopTxnAlignedData": (CSL, "", RW, False, 0, MEASURANDS),
    "StopTxnAlignedDataMaxLength": (INT, 7, R, False, 0, 0),
    "StopTxnSampledData": (CSL, "", RW, False, 0, MEASURANDS),
    "StopTxnSampledDataMaxLength": (INT, 7, R, False, 0, 0),
    "SupportedFeatureProfiles": (CSL, PROFILES, R, False, 0, None),
    "TransactionMessageAttempts": (INT, 3, RW, False, 0, 100),
    "TransactionMessageRetryInterval": (INT, 60, RW, False, 0, 86400),
    "UnlockConnectorOnEVSideDisconnect": (BOOL, True, RW, False, 0, 0),
    "WebSocketPingInterval": (INT, 60, RW, True, 0, 3600),
    "LocalAuthListEnabled": (BOOL, True, RW, False, 0, 0),
    "LocalAuthListMaxLength": (INT, 500, R, False, 0, 0),
    "SendLocalListMaxLength": (INT, 100, R, False, 0, 0),
    "ReserveConnectorZeroSupported": (BOOL, True, R, False, 0, 0),
    "ChargeProfileMaxStackLevel": (INT, 8, R, False, 0, 0),
    "ChargingScheduleAllowedChargingRateUnit": (CSL, "Current,Power", R, False, 0, None),
    "ChargingScheduleMaxPeriods": (INT, 24, R, False, 0, 0),
    "MaxChargingProfilesInstalled": (INT, 16, R, False, 0, 0),
    # Security extension (whitepaper). AuthorizationKey applies on the next
    # connection (the charger reconnects at once, profile.py), no reboot.
    # SecurityProfile's default here is a placeholder: the first value comes
    # from the configuration (profile.initial) and it may only be raised.
    "AuthorizationKey": (STR, "", W, False, 16, 40),
    "SecurityProfile": (INT, 0, RW, False, 0, 3),
    "CpoName": (STR, "", RW, False, 0, 50),
    # Vendor key: the CSMS asks for a downgrade by setting it before the
    # SignedUpdateFirmware; it also takes a bundle built --allow-downgrade, and
    # it is cleared again when that update ends, whatever the outcome.
    "AllowFirmwareDowngrade": (BOOL, False, RW, False, 0, 0),
    "CertificateStoreMaxLength": (INT, 10, R, False, 0, 0),
    "CertificateSignedMaxChainSize": (INT, 10000, R, False, 0, 0),
    "AdditionalRootCertificateCheck": (BOOL, False, R, False, 0, 0),
}


def _text(kind, v):
    if kind == BOOL:
        return "true" if v else "false"
    return str(v)


def _saved_ok(r):
    # ocpp_keys.json: every known key holds a value of its type (unknown ones are left alone;
    # no range check: the CSMS's BootNotification interval is stored as it came).
    for k, v in r.items():
        t = TABLE.get(k)
        if t is None or t[2] == R:
            continue
        if type(v) is not type(t[1]):  # what _save writes always has the table's type
            return False
    return True


class Keys:
    def __init__(self, store, connectors=1, log=None):
        self.store = store
        self.log = log
        self.values = {k: t[1] for k, t in TABLE.items()}
        self.values["NumberOfConnectors"] = connectors
        self.saved = set()  # names set from the store or by ChangeConfiguration
        saved = store.read("ocpp_keys.json", {}, check=_saved_ok) if store else {}
        for k, v in saved.items():
            t = TABLE.get(k)
            if t is not None and t[2] != R:
                self.values[k] = v
                self.saved.add(k)
        self.pending_reboot = False
        # Set by the security work (profile.install): guard(name, value) ->
        # a status that refuses the change, or None; changed(name, value)
        # after an accepted change is stored.
        self.guard = None
        self.changed = None

    def get(self, name):
        return self.values[name]

    def list(self, name):
        v = self.values[name]
        return [x for x in v.split(",") if x] if v else []

    def change(self, name, text):
        # -> "Accepted" | "RebootRequired" | "Rejected" | "NotSupported"
        t = TABLE.get(name)
        if t is None:
            return "NotSupported"
        kind, _, access, reboot, lo, hi = t
        if access == R:
            return "Rejected"
        if kind == BOOL:
            low = text.lower()
            if low not in ("true", "false"):
                return "Rejected"
            v = low == "true"
        elif kind == INT:
            try:
                v = int(text)
            except ValueError:
                return "Rejected"
            if not lo <= v <= hi:
                return "Rejected"
        elif kind == CSL:
            items = [x.strip() for x in text.split(",") if x.strip()]
            if hi and any(x not in hi for x in items):
                return "Rejected"
            if len(items) > 7:
                return "Rejected"
            v = ",".join(items)
        else:
            if not lo <= len(text) <= hi:
                return "Rejected"
            v = text
        if self.guard:
            refused = self.guard(name, v)
            if refused:
                return refused
        self.values[name] = v
        self.saved.add(name)
        self._save()
        if self.log:
            self.log.info("ocpp", "configuration %s changed%s" % (
                name, "" if access == W else " to %s" % _text(kind, v)))
        if self.changed:
            self.changed(name, v)
        if reboot:
            self.pending_reboot = True
            return "RebootRequired"
        return "Accepted"

    def _save(self):
        if self.store:
            self.store.write("ocpp_keys.json", {k: v for k, v in self.values.items()
                                                if TABLE[k][2] != R and v != TABLE[k][1]})

    def report(self, names=None):
        # GetConfiguration: (configurationKey list, unknownKey list).
        known, unknown = [], []
        for k in (names if names else TABLE):
            t = TABLE.get(k)
            if t is None or t[2] == W:
                if names:
                    unknown.append(k)  # a secret is not readable: unknown to a reader
                continue
            known.append({"key": k, "readonly": t[2] == R, "value": _text(t[0], self.values[k])})
        return known, unknown

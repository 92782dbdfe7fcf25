# OCPP 1.6 security extensions: security events and the audit trail.
# (Seam; filled in by the security-events work.)
#
#   cl.security.event(kind, tech_info=None, who="charger")
#       a SecurityEventNotification of `kind` (REFERENCE.md's list); always
#       written to the security log; critical kinds are queued persistently
#       and reach the CSMS even after an offline period.
#   cl.security.audit(who, what)
#       a security-log line only (who: "CSMS", "bench", "usb", "charger").
from firmware.ocpp import timefmt

CRITICAL = ("FirmwareUpdated", "StartupOfTheDevice", "ResetOrReboot", "SettingSystemTime",
            "SecurityLogWasCleared", "MemoryExhaustion", "TamperDetectionActivated")


class Security:
    def __init__(self, cl):
        self.cl = cl

    def event(self, kind, tech_info=None, who="charger"):
        cl = self.cl
        p = {"type": kind, "timestamp": timefmt.format(cl.clock.wall())}
        if tech_info:
            p["techInfo"] = tech_info[:255]
        cl.log.warn("security", "%s %s" % (kind, tech_info or ""))
        cl.queue.push("SecurityEventNotification", p)
        cl.wake.set()

    def audit(self, who, what):
        self.cl.log.info("security", "%s: %s" % (who, what))

    def after_boot(self):
        pass


def install(cl):
    pass

# Firmware Management, the OCPP side: SignedUpdateFirmware (security
# extension), legacy UpdateFirmware and GetDiagnostics, with their status
# notifications.
#
# An update is a job persisted in the store, so a reboot or a power cut at
# any point resumes it where it stood (a partial download continues with a
# Range request) and its final status still reaches the CSMS:
#   download  wait for retrieveDateTime (DownloadScheduled), download with
#             `retries` more attempts `retryInterval` apart (Downloading,
#             Downloaded / DownloadFailed)
#   verify    signature over the whole file by the signing certificate, which
#             must chain to an installed ManufacturerRootCertificate
#             (SignatureVerified / InvalidSignature + security event), then
#             the image: target, version, every file's hash
#             (InstallVerificationFailed)
#   install   wait for installDateTime and for every transaction to end
#             (InstallScheduled); new sessions are held off; verified again,
#             extracted into the inactive slot, armed for a trial boot
#             (Installing / InstallationFailed)
#             Hashing, signature checks and the install run in the station's
#             bounded work slices (station.work): charging goes on meanwhile.
#   reboot    InstallRebooting, reboot into the trial image; it confirms
#             itself once healthy and accepted by the CSMS (Installed +
#             FirmwareUpdated), or the boot loader rolls it back
#             (InstallationFailed + FirmwareUpdated naming the rollback).
# A legacy UpdateFirmware has no signature field: the image must carry its
# own (tools/release.py sign --embed); unsigned images are never installed.
# Its notifications use the legacy subset of statuses.
#
# GetDiagnostics: a tar of the logs, the status and the configuration (no
# secrets), uploaded by HTTP PUT (or POST for locations ending in a form
# handler) with retries.
import asyncio
import json
from firmware.core import timefmt
from firmware.core.store import is_int, is_num
from firmware.ocpp.tar import TarWriter
from firmware.net.http import download, upload, HttpError
from firmware.crypto import VerifyError
from firmware.ota import update as ota_update
from firmware.core.errtext import errtext  # an exception in words for a log line

FW_FILE = "fw_download.bin"
DIAG_FILE = "diagnostics.tar"
STATE = "ocpp_fwupdate.json"


def _job_ok(j):
    # The update job record as _start() writes it; every field _run() reads.
    return (j["stage"] in ("download", "verify", "install", "reboot") and (j["id"] is None or is_int(j["id"]))
            and isinstance(j["location"], str) and is_num(j["retrieve"]) and is_num(j["install"])
            and is_int(j["retries"]) and is_int(j["interval"])
            and (j["sig"] is None or isinstance(j["sig"], str)) and (j["cert"] is None or isinstance(j["cert"], str))
            and (j.get("slot") is None or isinstance(j["slot"], str))
            and (j.get("version") is None or isinstance(j["version"], str)))
MANUFACTURER_ROOT = "ManufacturerRootCertificate"

# Signed statuses a legacy FirmwareStatusNotification can say (None: silent).
LEGACY = {"Downloading": "Downloading", "Downloaded": "Downloaded", "DownloadFailed": "DownloadFailed",
          "Installing": "Installing", "Installed": "Installed", "InstallationFailed": "InstallationFailed",
          "InvalidSignature": "InstallationFailed", "InstallVerificationFailed": "InstallationFailed",
          "Idle": "Idle"}


class FirmwareManagement:
    def __init__(self, cl):
        self.cl = cl
        self.status = "Idle"  # the update's last status (signed vocabulary)
        self.fw_status = "Idle"  # the same in the legacy vocabulary
        self.diag_status = "Idle"
        self.job = None
        self._task = None
        self._held = []  # connectors we made unavailable for the install
        cl.rpc.handlers["SignedUpdateFirmware"] = self._signed_update

    def _notify(self, action, status):
        # Queued: a status the CSMS must hear even if we are offline now.
        if action == "DiagnosticsStatusNotification":
            self.diag_status = status
        self.cl.log.info("ocpp", "%s %s" % (action, status))
        self.cl.queue.push(action, {"status": status})
        self.cl.wake.set()

    def _fw(self, status):
        job = self.job
        self.status = status
        legacy = LEGACY.get(status)
        if legacy:
            self.fw_status = legacy
        if job is not None and job.get("id") is not None:
            self.cl.log.info("ocpp", "SignedFirmwareStatusNotification %s (request %d)" % (status, job["id"]))
            self.cl.queue.push("SignedFirmwareStatusNotification", {"status": status, "requestId": job["id"]})
            self.cl.wake.set()
        elif legacy:
            self._notify("FirmwareStatusNotification", legacy)

    def signed_status(self):
        """The current SignedFirmwareStatusNotification payload (ExtendedTriggerMessage)."""
        job = self.job
        p = {"status": self.status if job is not None and job.get("id") is not None else "Idle"}
        if job is not None and job.get("id") is not None:
            p["requestId"] = job["id"]
        return p

    def _save(self):
        self.cl.store.write(STATE, self.job)

    def _end(self, status=None):
        if status:
            self._fw(status)
        if self.job is not None and self.job.get("downgrade"):
            self.cl.keys.change("AllowFirmwareDowngrade", "false")  # asked for this one update only
        self.job = None
        self.cl.store.remove(STATE)
        self.cl.store.remove(FW_FILE)
        self._release()

    def _release(self):
        for c in self._held:
            c.set_available(True)
        self._held = []

    def _audit(self, what):
        self.cl.security.audit("CSMS", what)

    # --- requests ---------------------------------------------------------------
    def update(self, p):
        # Legacy UpdateFirmware (its answer is empty whatever happens).
        job = {"id": None, "location": p["location"], "retrieve": timefmt.parse(p["retrieveDate"]) or 0,
               "install": 0, "retries": p.get("retries", 0), "interval": p.get("retryInterval", 60),
               "sig": None, "cert": None, "stage": "download"}
        self._audit("UpdateFirmware from %s" % p["location"])
        self._start(job)

    async def _signed_update(self, p):
        cl = self.cl
        fw = p["firmware"]
        if cl.station.updater is None:
            return {"status": "Rejected"}  # no slots on this board: nowhere to install
        try:
            await ota_update.check_signer_async(fw["signingCertificate"], cl.certs.roots(MANUFACTURER_ROOT),
                                                cl.clock.wall(), cl.station.work)
        except VerifyError as e:
            self._audit("SignedUpdateFirmware %d refused: signing certificate %s" % (p["requestId"], e))
            cl.security.event("InvalidFirmwareSigningCertificate", "request %d: %s" % (p["requestId"], e))
            return {"status": "InvalidCertificate"}
        busy = self._task is not None and not self._task.done()
        job = {"id": p["requestId"], "location": fw["location"], "retrieve": timefmt.parse(fw["retrieveDateTime"]) or 0,
               "install": timefmt.parse(fw.get("installDateTime")) or 0,
               "retries": p.get("retries", 0), "interval": p.get("retryInterval", 60),
               "sig": fw["signature"], "cert": fw["signingCertificate"], "stage": "download",
               "downgrade": cl.keys.get("AllowFirmwareDowngrade")}
        self._audit("SignedUpdateFirmware %d from %s%s" % (p["requestId"], fw["location"],
                                                            ", replacing the update in progress" if busy else ""))
        self._start(job)
        return {"status": "AcceptedCanceled" if busy else "Accepted"}

    def _start(self, job):
        if self._task is not None and not self._task.done():
            self.cl.log.warn("ocpp", "firmware update replaces the one in progress")
            self._task.cancel()
            self._release()
        self.cl.store.remove(FW_FILE)
        self.job = job
        self._save()
        self._task = self.cl.tasks.spawn(self._run(), "firmware update")

    # --- after a reboot -----------------------------------------------------------
    def after_boot(self):
        cl = self.cl
        job = cl.store.read(STATE, None, check=_job_ok)
        bi = cl.station.boot_info
        rb = bi.get("rolled_back")
        if not isinstance(job, dict) or job.get("stage") not in ("download", "verify", "install", "reboot"):
            if job is not None:
                cl.store.remove(STATE)
            if rb:  # e.g. a USB update whose trial failed: no request to answer, still said
                cl.security.event("FirmwareUpdated", "rolled back from slot %s: %s" % (rb["from"], rb["why"]))
            return
        self.job = job
        if job["stage"] == "install" and bi.get("trial"):
            # Cut after the trial was armed, before the job said so.
            job["stage"] = "reboot"
            job["slot"] = bi["slot"]
        if job["stage"] != "reboot":
            self._task = self.cl.tasks.spawn(self._run(), "firmware update")  # resume where power failed
            return
        if rb and rb["from"] == job.get("slot"):
            cl.log.error("ocpp", "firmware %s rolled back: %s" % (job.get("version"), rb["why"]))
            cl.security.event("FirmwareUpdated", "rolled back from %s (slot %s): %s" % (
                job.get("version"), rb["from"], rb["why"]))
            self._end("InstallationFailed")
        elif bi.get("slot") == job.get("slot") and bi.get("trial"):
            cl.station.on_confirmed.append(self._confirmed)  # Installed once healthy
        elif bi.get("slot") == job.get("slot"):
            self._confirmed()  # confirmed before the power went: say it now
        else:
            cl.log.error("ocpp", "firmware %s is not running after the update" % job.get("version"))
            self._end("InstallationFailed")

    def _confirmed(self):
        job = self.job
        self.cl.security.event("FirmwareUpdated", "firmware %s running in slot %s" % (
            job.get("version"), job.get("slot")))
        self._end("Installed")

    # --- the job ------------------------------------------------------------------
    async def _sleep_until(self, t):
        clock = self.cl.clock
        while clock.wall() < t:
            await clock.sleep_ms(min(60000, (t - clock.wall()) * 1000))

    async def _run(self):
        job = self.job
        try:
            if job["stage"] == "download":
                if not await self._download(job):
                    return
                job["stage"] = "verify"
                self._save()
            if job["stage"] == "verify":
                # A legacy update has no SignatureVerified to say: it checks
                # once, as part of Installing.
                if job["id"] is not None:
                    if await self._verify(job, "signature") is None:
                        return
                    self._fw("SignatureVerified")
                    if await self._verify(job, "image") is None:
                        return
                job["stage"] = "install"
                self._save()
            if job["stage"] == "install":
                await self._install(job)
        except asyncio.CancelledError:
            raise
        except MemoryError:
            self.cl.security.event("MemoryExhaustion", "firmware update: out of memory")
            self._end("InstallationFailed")
        except Exception as e:  # a bug must end the job with a status, not silently
            self.cl.log.error("ocpp", "firmware update failed: %s" % errtext(e))
            self._end("InstallationFailed")

    async def _download(self, job):
        cl = self.cl
        if cl.clock.wall() < job["retrieve"]:
            self._fw("DownloadScheduled")
            await self._sleep_until(job["retrieve"])
        path = cl.store.path(FW_FILE)
        retries = max(0, job["retries"])
        for attempt in range(retries + 1):
            self._fw("Downloading")
            try:
                # https:// is checked against the installed CentralSystemRootCertificates.
                size = await download(job["location"], path, ca=cl.certs.ca_pem() or cl.opts.get("ca"),
                                      on_flush=lambda n: cl.store.boundary())
                cl.log.info("ocpp", "firmware image downloaded: %d bytes" % size)
                self._fw("Downloaded")
                return True
            except (HttpError, OSError) as e:
                cl.log.warn("ocpp", "firmware download attempt %d failed: %s" % (attempt + 1, e))
                if attempt < retries:
                    await cl.clock.sleep_ms(max(1, job["interval"]) * 1000)
        self._audit("firmware download from %s failed after %d attempts" % (job["location"], retries + 1))
        self._end("DownloadFailed")
        return False

    async def _verify(self, job, what="all"):
        # -> the manifest (True for the signature alone), or None after
        # reporting why the image is refused.
        cl = self.cl
        up = cl.station.updater
        sl = cl.station.work
        path = cl.store.path(FW_FILE)
        try:
            if what == "image":  # signed requests only: the file is the bare bundle
                m, _ = await up.check_async(path, None, job.get("downgrade", False), sl)
            elif what == "signature":
                await up.verify_signature_async(path, cl.certs.roots(MANUFACTURER_ROOT), cl.clock.wall(),
                                                job["sig"], job["cert"], sl=sl)
                return True
            else:
                m, _ = await up.verify_async(path, cl.certs.roots(MANUFACTURER_ROOT), cl.clock.wall(), job["sig"],
                                             job["cert"], job.get("downgrade", False), sl)
            job["version"] = m["version"]
            return m
        except VerifyError as e:
            what = "firmware from %s refused: %s" % (job["location"], e)
            cl.log.error("ocpp", what)
            self._audit(what)
            if ota_update.is_signature_reason(e.reason):
                cl.security.event("InvalidFirmwareSignature", what)
                self._end("InvalidSignature")
            else:
                self._end("InstallVerificationFailed")
            return None

    def _busy(self):
        return any(c.session is not None for c in self.cl.station.connectors)

    async def _install(self, job):
        cl = self.cl
        if cl.clock.wall() < job["install"] or self._busy():
            self._fw("InstallScheduled")
            await self._sleep_until(job["install"])
            while self._busy():  # never under a running transaction
                await cl.clock.sleep_ms(1000)
        # No new session may start now: the reboot would cut it short.
        self._held = [c for c in cl.station.connectors if c.available]
        for c in self._held:
            c.set_available(False)
        legacy = job["id"] is None
        if legacy:
            self._fw("Installing")
        m = await self._verify(job)  # (again: the file sat on flash meanwhile)
        if m is None:
            return
        if not legacy:
            self._fw("Installing")
        try:
            slot = await cl.station.updater.install_async(cl.store.path(FW_FILE), m, job.get("downgrade", False),
                                                          cl.station.work)
        except VerifyError as e:
            what = "firmware %s installation failed: %s" % (m["version"], e)
            cl.log.error("ocpp", what)
            self._audit(what)
            self._end("InstallationFailed")
            return
        job["stage"] = "reboot"
        job["slot"] = slot
        self._save()
        cl.store.remove(FW_FILE)
        self._audit("firmware %s installed in slot %s; rebooting into it on trial" % (m["version"], slot))
        if job["id"] is not None:
            self._fw("InstallRebooting")
        await cl.flush_now()  # the statuses reach the CSMS before we go
        if cl.station.reboot:
            cl.station.reboot()

    # --- GetDiagnostics ------------------------------------------------------------
    def diagnostics(self, p):
        name = "diagnostics-%s-%s.tar" % (self.cl.opts["id"], timefmt.format(self.cl.clock.wall())
                                           .replace(":", "").replace("-", ""))
        self.cl.tasks.spawn(self._diagnostics(p["location"], name, p.get("retries", 0), p.get("retryInterval", 60)),
                            "diagnostics")
        return name

    def _archive(self, path):
        st = self.cl.station
        st.log.flush(st.store)  # what the RAM ring holds goes in too
        t = TarWriter(path, self.cl.clock.wall())
        t.add_file("log.txt.1", st.store.path("log.txt.1"))
        t.add_file("log.txt", st.store.path("log.txt"))
        t.add_bytes("status.json", json.dumps(st.status()).encode())
        cfg = dict(st.cfg)
        for k in ("auth_key", "wifi_pass"):
            if cfg.get(k):
                cfg[k] = "(set)"  # secrets stay on the charger
        t.add_bytes("config.json", json.dumps(cfg).encode())
        keys, _ = self.cl.keys.report()
        t.add_bytes("ocpp_keys.json", json.dumps(keys).encode())
        t.close()

    async def _diagnostics(self, location, name, retries, interval):
        cl = self.cl
        path = cl.store.path(DIAG_FILE)
        try:
            self._archive(path)
        except OSError as e:
            cl.log.error("ocpp", "diagnostics archive failed: %s" % errtext(e))
            self._notify("DiagnosticsStatusNotification", "UploadFailed")
            return
        for attempt in range(max(0, retries) + 1):
            self._notify("DiagnosticsStatusNotification", "Uploading")
            try:
                await upload(location, path, name, ca=cl.opts.get("ca"))
                self._notify("DiagnosticsStatusNotification", "Uploaded")
                cl.store.remove(DIAG_FILE)
                return
            except (HttpError, OSError) as e:
                cl.log.warn("ocpp", "diagnostics upload attempt %d failed: %s" % (attempt + 1, e))
                if attempt < retries:
                    await cl.clock.sleep_ms(max(1, interval) * 1000)
        self._notify("DiagnosticsStatusNotification", "UploadFailed")

# Firmware Management, the OCPP side: UpdateFirmware and GetDiagnostics with
# their status notifications.
#
# UpdateFirmware: at retrieveDate the image is downloaded (resuming a partial
# file, `retries` more times `retryInterval` apart), then handed to the
# board's installer once no transaction runs. The installer is the seam to
# the update machinery (verification, slots): `await installer(path)` returns
# None when the image is taken (the board then reboots into it) or the reason
# it was refused. The state is kept in the store, so the Installed
# notification goes out after the reboot.
#
# GetDiagnostics: a tar of the logs, the status and the configuration (no
# secrets), uploaded by HTTP PUT (or POST for locations ending in a form
# handler) with retries.
import asyncio
import json
from firmware.ocpp import timefmt
from firmware.ocpp.tar import TarWriter
from firmware.net.http import download, upload, HttpError

FW_FILE = "fw_download.bin"
DIAG_FILE = "diagnostics.tar"
STATE = "ocpp_fwupdate.json"


class FirmwareManagement:
    def __init__(self, cl, installer=None):
        self.cl = cl
        self.installer = installer
        self.fw_status = "Idle"
        self.diag_status = "Idle"
        self._task = None

    def _notify(self, action, status):
        # Queued: a status the CSMS must hear even if we are offline now.
        if action == "FirmwareStatusNotification":
            self.fw_status = status
        else:
            self.diag_status = status
        self.cl.log.info("ocpp", "%s %s" % (action, status))
        self.cl.queue.push(action, {"status": status})
        self.cl.wake.set()

    def after_boot(self):
        rec = self.cl.store.read(STATE, None)
        if isinstance(rec, dict) and rec.get("stage") == "installing":
            self.cl.store.remove(STATE)
            self.cl.store.remove(FW_FILE)
            self._notify("FirmwareStatusNotification", "Installed")

    # --- UpdateFirmware ----------------------------------------------------------
    def update(self, p):
        if self._task is not None and not self._task.done():
            self.cl.log.warn("ocpp", "firmware update replaces the one in progress")
            self._task.cancel()
        self._task = asyncio.create_task(self._update(p["location"], timefmt.parse(p["retrieveDate"]),
                                                      p.get("retries", 0), p.get("retryInterval", 60)))

    async def _sleep_until(self, t):
        clock = self.cl.clock
        while clock.wall() < t:
            await clock.sleep_ms(min(60000, (t - clock.wall()) * 1000))

    async def _update(self, location, retrieve, retries, interval):
        cl = self.cl
        await self._sleep_until(retrieve or 0)
        path = cl.store.path(FW_FILE)
        cl.store.remove(FW_FILE)
        for attempt in range(max(0, retries) + 1):
            self._notify("FirmwareStatusNotification", "Downloading")
            try:
                size = await download(location, path, ca=cl.opts.get("ca"))
                self._notify("FirmwareStatusNotification", "Downloaded")
                cl.log.info("ocpp", "firmware image downloaded: %d bytes" % size)
                break
            except (HttpError, OSError) as e:
                cl.log.warn("ocpp", "firmware download attempt %d failed: %s" % (attempt + 1, e))
                if attempt < retries:
                    await cl.clock.sleep_ms(max(1, interval) * 1000)
        else:
            self._notify("FirmwareStatusNotification", "DownloadFailed")
            return
        # Never under a running transaction.
        while any(c.session is not None for c in cl.station.connectors):
            await cl.clock.sleep_ms(1000)
        self._notify("FirmwareStatusNotification", "Installing")
        why = "no installer on this board" if self.installer is None else await self.installer(path)
        if why is not None:
            cl.log.error("ocpp", "firmware installation failed: %s" % why)
            cl.store.remove(FW_FILE)
            self._notify("FirmwareStatusNotification", "InstallationFailed")
            return
        cl.store.write(STATE, {"stage": "installing", "location": location})
        await cl.flush_now()  # Installing reaches the CSMS before we go
        if cl.station.reboot:
            cl.station.reboot()

    # --- GetDiagnostics ------------------------------------------------------------
    def diagnostics(self, p):
        name = "diagnostics-%s-%s.tar" % (self.cl.opts["id"], timefmt.format(self.cl.clock.wall())
                                           .replace(":", "").replace("-", ""))
        asyncio.create_task(self._diagnostics(p["location"], name, p.get("retries", 0), p.get("retryInterval", 60)))
        return name

    def _archive(self, path):
        st = self.cl.station
        st.log.flush(st.store)  # what the RAM ring holds goes in too
        t = TarWriter(path, self.cl.clock.wall())
        t.add_file("log.txt.1", st.store.path("log.txt.1"))
        t.add_file("log.txt", st.store.path("log.txt"))
        t.add_bytes("status.json", json.dumps(st.status()).encode())
        cfg = dict(st.cfg)
        if cfg.get("auth_key"):
            cfg["auth_key"] = "(set)"  # secrets stay on the charger
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
            cl.log.error("ocpp", "diagnostics archive failed: %r" % e)
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

# The OCPP 1.6J charge point: it sits above the station and translates.
#
# One task keeps a WebSocket to the CSMS (reconnecting with capped, jittered
# backoff) and, once connected, boots (BootNotification until Accepted, at
# the interval the CSMS gives), then loops: queued transaction messages go
# out in order, status changes are reported, heartbeats and meter values are
# sent when due. The station's connectors never wait for any of this: their
# session events are noted in RAM by the control loop, and a bookkeeping task
# writes them to the persistent queue at once, whatever the link is doing.
#
# Stopping: the station's stop() calls shutdown(), which ends open
# transactions with the stop's reason (queued and written at once), and
# closes the WebSocket with a close frame (1001, going away). A Reset does
# more first, from the session loop: the stop's StopTransaction is sent and
# answered (if online, bounded) and the close handshake completes.
import asyncio
from firmware.ocpp.rpc import Rpc, CallError, RpcTimeout, NotConnected
from firmware.ocpp.queue import TxQueue
from firmware.ocpp.keys import Keys
from firmware.ocpp.auth import AuthCache, LocalList
from firmware.ocpp.reserve import Reservations
from firmware.ocpp.smart import Profiles
from firmware.ocpp.fwmgmt import FirmwareManagement
from firmware.core import timefmt
from firmware.ocpp import handlers as core_handlers
from firmware.ocpp import security as security_mod
from firmware.ocpp import certs as certs_mod
from firmware.ocpp import profile
from firmware.net.backoff import Backoff
from firmware.net.ws import WsError, keepalive
from firmware.core.sched import Tasks
from firmware.core.rng import Rng
from firmware.core.store import dict_of, is_int, is_num

BOOT_RETRY_S = 30  # when the CSMS gives no usable interval
LOOP_MS = 1000  # the session loop's longest sleep
RECONNECT_BASE_MS = 1000
RECONNECT_CAP_MS = 120000  # and never above the heartbeat interval (_reconnect_cap)
TX_STATUSES = ("Charging", "SuspendedEV", "SuspendedEVSE")  # only with a transaction the CSMS knows
RESET = "ocpp_reset.json"  # the Reset handler's {"reason":} until the next boot
RESET_FLUSH_MS = 5000  # how long a Reset waits (real time) for the queue to go out


# Shapes of the client's records (Store.read checks them; a bad one is set aside).
def _is_bool(v):
    return isinstance(v, bool)


def _cid_ok(k):
    return int(k) >= 0  # a connector id as text; int() of anything else raises


def _tx_ok(t):
    # {"tx": local or remote id, "tag": idTag, "start_wh": meter at start, ...}
    return is_int(t["tx"]) and (t["tag"] is None or isinstance(t["tag"], str)) and is_num(t["start_wh"])


def _reset_ok(r):
    return isinstance(r.get("reason", ""), str)


class OcppClient:
    def __init__(self, station, opts, connect):
        # opts: url, id, basic (user, password) or None, ca (bytes) or None,
        # vendor, model, serial. connect: firmware.net.ws.connect (or a fake).
        self.station = station
        self.clock = station.clock
        self.log = station.log
        self.store = station.store
        self.opts = opts
        self.connect = connect
        n = len(station.connectors)
        self.keys = Keys(self.store, n, self.log)
        # Tasks: the station's group (cancelled with it); a bare one when a
        # test builds a client on a stand-in station.
        self.tasks = getattr(station, "tasks", None) or Tasks(self.log)
        self.rpc = Rpc(self.clock, self.log)
        self.rpc.tasks = self.tasks
        self.rpc.on_invalid = self._invalid
        self.rpc.on_detach = self._link_lost
        self.rpc.on_bug = self._internal_error
        self.queue = TxQueue(self.store, self.log, tasks=self.tasks)
        self.security = security_mod.Security(self)
        self.certs = certs_mod.Certificates(self)
        self.auth = AuthCache(self.store, self.log)
        self.auth.enabled = self.keys.get("AuthorizationCacheEnabled")
        self.local = LocalList(self.store, self.log, self.keys.get("LocalAuthListMaxLength"))
        self.reservations = Reservations(self.store, self.log)
        self.phases = station.cfg["phases"]
        self.profiles = Profiles(self.store, self.log, station.cfg["voltage_v"], self.phases)
        self.pending_profiles = {}  # connector id -> TxProfile from RemoteStartTransaction
        self.fw = FirmwareManagement(self)
        self.apply_keys()
        self.tx_reservation = {}  # connector id -> reservationId for the next StartTransaction
        self.state = "offline"  # offline, connecting, booting, pending, rejected, accepted
        self.registered = False
        self.accepted_once = False
        self.reported = {}  # connector id -> (status, errorCode) last sent
        self.events = []  # connector events noted by the control loop, handled here
        self.wake = asyncio.Event()  # the sender: something to send
        self.book_ev = asyncio.Event()  # the bookkeeper: a connector event to persist
        self.last_heartbeat = None
        self.next_sample = {}
        self.next_aligned = None
        self.connections = 0
        self.ws = None
        self.txs = {}  # connector id -> {"tx": local or remote id, "tag":, "start_wh":}
        self.pending_reset = None
        self.stopped = False  # set by the station when it stops (reboot): the task ends
        self.time_synced = False
        self.stop_tags = {}  # connector id -> idTag that stopped its session
        self.scheduled_unavailable = set()
        self._restore_txs()
        avail = self.store.read("ocpp_availability.json", {}, check=lambda r: dict_of(r, _is_bool))
        if avail:  # ChangeAvailability survives a reboot
            for c in station.connectors:
                if avail.get(str(c.id)) is False:
                    c.set_available(False)
        for c in station.connectors:
            c.listeners.append(self._on_connector_event)
        core_handlers.install(self)
        security_mod.install(self)
        certs_mod.install(self)
        station.ocpp = self

    # --- from the control loop: note only, no I/O ---------------------------
    def _on_connector_event(self, conn, event, detail):
        self.events.append((conn.id, event, detail, self.clock.wall()))
        self.book_ev.set()
        self.wake.set()

    # --- transactions ----------------------------------------------------------
    def _restore_txs(self):
        rec = self.store.read("ocpp_txs.json", {}, check=lambda r: dict_of(r, _tx_ok, _cid_ok))
        for k, v in rec.items():
            self.txs[int(k)] = v

    def _save_txs(self):
        self.store.write("ocpp_txs.json", {str(k): v for k, v in self.txs.items()})

    def _process_events(self):
        while self.events:
            cid, event, s, wall = self.events.pop(0)
            if event == "session_start":
                self._start_tx(cid, s, wall)
            elif event == "session_end":
                self._stop_tx(cid, s, wall, s.get("reason") or "Local")
                if cid in self.scheduled_unavailable:
                    self.scheduled_unavailable.discard(cid)
                    self.station.connectors[cid - 1].set_available(False)

    def _start_tx(self, cid, s, wall):
        tx = self.queue.new_tx()
        self.txs[cid] = {"tx": tx, "tag": s["id_tag"], "start_wh": s["start_wh"], "t0": wall}
        self._save_txs()
        p = {"connectorId": cid, "idTag": s["id_tag"], "meterStart": s["start_wh"],
             "timestamp": timefmt.format(wall)}
        rid = self.tx_reservation.pop(cid, None)
        if rid is not None:
            p["reservationId"] = rid
            self.reservations.cancel(rid, "used by its transaction")
        self.queue.push("StartTransaction", p, tx)
        self.next_sample[cid] = None

    def _stop_tx(self, cid, s, wall, reason, meter_wh=None):
        t = self.txs.pop(cid, None)
        if t is None:
            return
        self._save_txs()
        tx = t["tx"]
        self.profiles.end_tx(self.queue.remote_id(tx))
        self.profiles.end_tx(tx)
        stop_wh = meter_wh if meter_wh is not None else s["start_wh"] + s.get("wh", 0)
        payload = {"transactionId": self.queue.remote_id(tx) or tx, "meterStop": stop_wh,
                   "timestamp": timefmt.format(wall), "reason": reason}
        stopper = self.stop_tags.pop(cid, None)  # the card that ended it, if one did
        if stopper or (reason == "EVDisconnected" and s.get("id_tag")):
            payload["idTag"] = stopper or s["id_tag"]
        data = self._stop_data(cid, stop_wh, wall)
        if data:
            payload["transactionData"] = data
        self.queue.push("StopTransaction", payload, tx)

    def recover_after_boot(self):
        # Transactions still open at boot: the session did not survive the
        # restart. An orderly stop ends them itself (shutdown), so these were
        # ended by a power cut (PowerLoss) or, if the stop could not finish,
        # by the reset or stop that was under way. A power cut's stop carries
        # the last time the charger knew it had power (the energy register's
        # save time, at most meter_save_s + 1 s before the cut), not the
        # restart time: the outage is not billed.
        if not self.txs:
            return
        rec = self.store.read(RESET, {}, check=_reset_ok)
        last = getattr(self.station, "last_stop", None)
        reason = "PowerLoss"
        if isinstance(rec, dict) and isinstance(rec.get("reason"), str):
            reason = rec["reason"]
        elif last is not None:
            reason = last["reason"]
        self.store.remove(RESET)
        now = self.clock.wall()
        for cid in list(self.txs):
            t = self.txs[cid]
            c = self.station.connectors[cid - 1] if 0 < cid <= len(self.station.connectors) else None
            wh = c.energy.wh if c is not None else t["start_wh"]
            at = now
            if reason == "PowerLoss":
                # the later of: the transaction's start, the register's last
                # save. Both were taken while powered; the clock now may not
                # be set yet (a board without a battery-backed clock).
                w = c.energy.saved_wall if c is not None else None
                t0 = t.get("t0")
                seen = [x for x in (w, t0) if isinstance(x, (int, float))]
                if seen:
                    at = max(seen)
            elif last is not None and isinstance(last.get("wall"), (int, float)):
                at = last["wall"]
            self.log.warn("ocpp", "transaction on connector %d ended by %s at %s"
                          % (cid, reason, timefmt.format(at)))
            self._stop_tx(cid, {"id_tag": t["tag"], "start_wh": t["start_wh"]}, at, reason, wh)

    def end_transactions(self, reason):
        # The orderly stop's part: every open transaction ends now with this
        # reason and the meter as it stands; the StopTransaction is in the
        # persistent queue when this returns.
        self._process_events()  # session ends the control loop noted first
        wall = self.clock.wall()
        for cid in list(self.txs):
            t = self.txs[cid]
            c = self.station.connectors[cid - 1] if 0 < cid <= len(self.station.connectors) else None
            wh = c.energy.wh if c is not None else t["start_wh"]
            self.log.warn("ocpp", "transaction on connector %d ended by %s" % (cid, reason))
            self._stop_tx(cid, {"id_tag": t["tag"], "start_wh": t["start_wh"]}, wall, reason, wh)

    def shutdown(self, reason, who="charger", why=None):
        # Called by Station.stop(): synchronous (after Ctrl-C there is no
        # event loop). A pending Reset's reason wins over the stop's; returns
        # the reason used.
        if self.stopped:
            return None
        rec = self.store.read(RESET, None, check=_reset_ok)
        if isinstance(rec, dict) and isinstance(rec.get("reason"), str):
            reason = rec["reason"]
        try:
            self.end_transactions(reason)
        finally:
            self.security.before_reboot(who, why or reason)
            self.stopped = True
            ws = self.ws
            if ws is not None:
                ws.close_now(1001, reason)  # the CSMS sees going-away, not a lost link
        return reason

    def tx_of(self, cid):
        t = self.txs.get(cid)
        return None if t is None else self.queue.remote_id(t["tx"])

    # --- meter values ------------------------------------------------------------
    def _sample(self, c, measurands, context):
        out = []
        for m in measurands:
            if m == "Energy.Active.Import.Register":
                out.append({"value": str(c.energy.wh), "measurand": m, "unit": "Wh", "context": context})
            elif m == "Power.Active.Import":
                out.append({"value": str(c.energy.power_w), "measurand": m, "unit": "W", "context": context})
            elif m == "Current.Import":
                a = "%.1f" % (c.energy.current_ma / 1000)
                out.append({"value": a, "measurand": m, "unit": "A", "context": context})
                if self.phases == 3:  # the meter reads each phase (the simulated one: balanced)
                    for ph in ("L1", "L2", "L3"):
                        out.append({"value": a, "measurand": m, "unit": "A", "context": context, "phase": ph})
            elif m == "Current.Offered":
                out.append({"value": "%.1f" % (c.offered_ma / 1000), "measurand": m, "unit": "A",
                            "context": context})
            elif m == "Voltage":
                v = "%.1f" % (c.energy.voltage_mv / 1000)
                out.append({"value": v, "measurand": m, "unit": "V", "context": context})
                if self.phases == 3:
                    for ph in ("L1-N", "L2-N", "L3-N"):
                        out.append({"value": v, "measurand": m, "unit": "V", "context": context, "phase": ph})
            elif m == "Temperature" and self.station.temp_dc is not None:
                out.append({"value": "%.1f" % (self.station.temp_dc / 10), "measurand": m, "unit": "Celsius",
                            "context": context})
        return out

    def _stop_data(self, cid, wh, wall):
        names = self.keys.list("StopTxnSampledData")
        if not names:
            return None
        c = self.station.connectors[cid - 1]
        return [{"timestamp": timefmt.format(wall), "sampledValue": self._sample(c, names, "Transaction.End")}]

    def _meter_values(self, now):
        wall = self.clock.wall()
        interval = self.keys.get("MeterValueSampleInterval") * 1000
        if interval > 0:
            # Sampling runs on the monotonic clock: setting the time from the
            # CSMS must not stretch or squeeze the intervals.
            names = self.keys.list("MeterValuesSampledData")
            for cid, t in self.txs.items():
                due = self.next_sample.get(cid)
                late = None if due is None else self.clock.ticks_diff(now, due)
                if late is None or -late > interval:  # new, or the interval was just shortened
                    self.next_sample[cid] = self.clock.ticks_add(now, interval)
                elif late >= 0 and names:
                    self.next_sample[cid] = self.clock.ticks_add(due if late < interval else now, interval)
                    c = self.station.connectors[cid - 1]
                    self.queue.push("MeterValues", {
                        "connectorId": cid, "transactionId": self.queue.remote_id(t["tx"]) or t["tx"],
                        "meterValue": [{"timestamp": timefmt.format(wall),
                                        "sampledValue": self._sample(c, names, "Sample.Periodic")}]}, t["tx"])
        aligned = self.keys.get("ClockAlignedDataInterval")
        if aligned > 0:
            nxt = (wall // aligned + 1) * aligned
            if self.next_aligned is None:
                self.next_aligned = nxt
            elif wall >= self.next_aligned:
                self.next_aligned = nxt
                names = self.keys.list("MeterValuesAlignedData")
                for c in self.station.connectors:
                    if not names:
                        break
                    mv = {"connectorId": c.id, "meterValue": [{"timestamp": timefmt.format(wall),
                                                               "sampledValue": self._sample(c, names,
                                                                                            "Sample.Clock")}]}
                    t = self.txs.get(c.id)
                    if t is not None:
                        mv["transactionId"] = self.queue.remote_id(t["tx"]) or t["tx"]
                        self.queue.push("MeterValues", mv, t["tx"])
                    elif self.registered:
                        self.tasks.spawn(self._try("MeterValues", mv), "MeterValues")

    # --- the connection --------------------------------------------------------
    def _invalid(self, count, why):
        # Repeated garbage from the CSMS is a security event (InvalidMessages).
        if count % 10 == 0:
            self.log.error("ocpp", "%d frames from the CSMS could not be answered (%s)" % (count, why))
            self.security.event("InvalidMessages", "%d unanswerable frames, last: %s" % (count, why), "CSMS")

    def _link_lost(self):
        self.registered = False  # decide offline from now on, not at the next send
        self.wake.set()

    async def _try(self, action, payload):
        try:
            return await self.rpc.call(action, payload)
        except (CallError, RpcTimeout, NotConnected) as e:
            self.log.warn("ocpp", "%s failed: %r" % (action, e))
            return None

    async def flush_now(self, limit_ms=5000):
        # Let the session loop (the only sender) drain the queue, if we are
        # connected: used before a reboot.
        waited = 0
        while self.registered and len(self.queue) and waited < limit_ms:
            self.wake.set()
            await self.clock.sleep_ms(100)
            waited += 100

    async def run(self):
        self.recover_after_boot()
        self.security.after_boot()
        self.fw.after_boot()
        book = self.tasks.spawn(self._bookkeeping(), "ocpp bookkeeping")
        try:
            await self._connect_loop()
        finally:
            book.cancel()

    def _reconnect_cap(self):
        # A charger that waits longer than a heartbeat interval to reconnect
        # looks dead to the CSMS after a short outage: the cap follows the
        # interval (jitter spreads a fleet below it, firmware/net/backoff.py).
        hb = self.keys.get("HeartbeatInterval") * 1000
        return min(RECONNECT_CAP_MS, hb) if hb > 0 else RECONNECT_CAP_MS

    def _internal_error(self, what):
        fn = getattr(self.station, "internal_error", None)
        if fn is not None:
            fn("ocpp", what)
        else:
            self.log.error("ocpp", "internal error: %s" % what)

    async def _connect_loop(self):
        backoff = Backoff(base_ms=RECONNECT_BASE_MS, cap_ms=RECONNECT_CAP_MS, rng=Rng(self.clock.ticks_ms() + 7))
        while not self.stopped:
            self.state = "connecting"
            backoff.set_cap(self._reconnect_cap())
            try:
                link = profile.link_args(self)
                url = link.pop("url")
                ws = await self.connect(url, **link)
            except (WsError, OSError, asyncio.TimeoutError) as e:  # refused, TLS, 401, timeout: retry later
                self.state = "offline"
                ms = backoff.next_ms()
                self.log.warn("ocpp", "connect failed (%s); retry in %d ms" % (e, ms))
                profile.connect_failed(self, e)  # a security event, once per failure streak
                await self.clock.sleep_ms(ms)
                continue
            except Exception as e:  # a bug, not the network: seen and counted, then retried
                self.state = "offline"
                ms = backoff.next_ms()
                self._internal_error("connecting raised %r; retry in %d ms" % (e, ms))
                await self.clock.sleep_ms(ms)
                continue
            profile.connected(self)
            backoff.reset()
            self.connections += 1
            self.ws = ws
            self.log.info("ocpp", "connected to %s" % url)
            self.rpc.attach(ws)  # before the reader runs: boot may call at once
            reader = self.tasks.spawn(self.rpc.run(ws), "ocpp reader")
            ping = self.keys.get("WebSocketPingInterval") * 1000
            # A dead link is found by pings in real time; with a simulated clock
            # pongs travel in real time while simulated time jumps, so there
            # the CSMS's own pings and our call timeouts do that job.
            pinger = self.tasks.spawn(keepalive(ws, ping, tasks=self.tasks), "ocpp keepalive") \
                if ping and not self.clock.simulated else None
            try:
                await self._session(reader)
            except (CallError, RpcTimeout, NotConnected, WsError, OSError) as e:
                if not self.stopped:
                    self.log.warn("ocpp", "connection ended: %r" % e)
            except Exception as e:  # a bug in the session loop: seen and counted; reconnect
                self._internal_error("session loop raised %r" % e)
            finally:
                self.ws = None
                self.state = "offline"
                self.registered = False
                reader.cancel()
                if pinger:
                    pinger.cancel()
                try:
                    await ws.close()
                except (WsError, OSError) as e:
                    self.log.info("ocpp", "close: %r" % e)
            if not self.stopped:
                backoff.set_cap(self._reconnect_cap())
                await self.clock.sleep_ms(backoff.next_ms())

    def apply_keys(self):
        for c in self.station.connectors:
            c.stop_on_ev_disconnect = self.keys.get("StopTransactionOnEVSideDisconnect")
            c.unlock_on_ev_disconnect = self.keys.get("UnlockConnectorOnEVSideDisconnect")

    def apply_profiles(self):
        # The charging profiles' limit for each connector, now. Also offline:
        # a schedule keeps running without the CSMS.
        t = self.clock.wall()
        active = [c for c in self.station.connectors if c.session is not None]
        for c in self.station.connectors:
            tx = self.txs.get(c.id)
            lim = self.profiles.limit(c.id, t, self.tx_of(c.id), tx.get("t0") if tx else None, max(1, len(active)))
            if lim != c.limits[4]:
                c.set_limit("smart", lim)
                self.log.info("ocpp", "connector %d: charging profile limit %s" % (
                    c.id, "none" if lim is None else "%d mA" % lim))

    async def _bookkeeping(self):
        # Whatever the link does (connecting, backing off, waiting on a CSMS
        # that is slow to answer), connector events are written to the queue
        # at once and meter values are sampled on time: a power cut can then
        # only lose what happened in the last moment, never a session.
        while not self.stopped:
            n = len(self.queue)
            self.reservations.expire(self.clock.wall())
            self._process_events()
            self._meter_values(self.clock.ticks_ms())
            self.apply_profiles()
            if len(self.queue) != n:
                self.wake.set()
            self.book_ev.clear()
            t = self.tasks.spawn(self._set_after(self.book_ev, LOOP_MS), "ocpp timer")
            await self.book_ev.wait()
            t.cancel()

    async def _set_after(self, ev, ms):
        await self.clock.sleep_ms(ms)
        ev.set()

    def boot_payload(self):
        o = self.opts
        payload = {"chargePointVendor": o.get("vendor", "MicroCharge"), "chargePointModel": o.get("model", "SIM-1"),
                   "firmwareVersion": self.station.version}
        if o.get("serial"):
            payload["chargePointSerialNumber"] = o["serial"]
        return payload

    async def _boot(self, reader):
        payload = self.boot_payload()
        while True:
            self.state = "booting"
            r = await self.rpc.call("BootNotification", payload)
            self._sync_clock(r.get("currentTime"))
            interval = r.get("interval", 0)
            if r["status"] == "Accepted":
                if interval > 0:
                    self.keys.values["HeartbeatInterval"] = interval
                self.state = "accepted"
                self.registered = True
                self.accepted_once = True  # a trial image's proof that it reaches the CSMS
                self.log.info("ocpp", "boot accepted, heartbeat %d s" % self.keys.get("HeartbeatInterval"))
                return
            self.state = "pending" if r["status"] == "Pending" else "rejected"
            # Pending: the CSMS may configure us meanwhile; Rejected: we stay
            # quiet until the interval passes.
            self.rpc.quiet = self.state == "rejected"
            wait = (interval if interval > 0 else BOOT_RETRY_S) * 1000
            self.log.warn("ocpp", "boot %s; again in %d s" % (r["status"], wait // 1000))
            await self._sleep_or_drop(wait, reader)
            self.rpc.quiet = False

    async def _sleep_or_drop(self, ms, reader):
        c = self.clock
        end = c.ticks_add(c.ticks_ms(), ms)
        while c.ticks_diff(end, c.ticks_ms()) > 0:
            if reader is not None and reader.done():
                raise NotConnected("connection lost")
            await c.sleep_ms(min(LOOP_MS, c.ticks_diff(end, c.ticks_ms())))

    def _sync_clock(self, stamp):
        # A simulated clock takes the CSMS's time once: after that simulated
        # time runs on its own (the CSMS's clock runs in real time).
        if self.clock.simulated and self.time_synced:
            return
        t = timefmt.parse(stamp) if stamp else None
        if t is not None:
            self.time_synced = True
        if t is not None and abs(t - self.clock.wall()) > 2:
            was = timefmt.format(self.clock.wall())
            self.clock.set_wall(t)
            self.next_aligned = None  # re-anchor clock-aligned values to the new time
            self.log.info("ocpp", "clock set to %s from the CSMS" % stamp)
            self.security.event("SettingSystemTime", "clock set from %s to %s" % (was, stamp[:40]), "CSMS")

    async def _session(self, reader):
        await self._boot(reader)
        self.reported = {}
        self.last_heartbeat = self.clock.ticks_ms()
        while not self.stopped:
            self._process_events()  # usually done already by the bookkeeper
            now = self.clock.ticks_ms()
            await self._flush_queue()  # transaction messages before the statuses they explain
            await self._report_status()
            hb = self.keys.get("HeartbeatInterval") * 1000
            if hb and self.clock.ticks_diff(now, self.last_heartbeat) >= hb:
                try:
                    r = await self.rpc.call("Heartbeat", {})
                    self._sync_clock(r.get("currentTime"))
                except CallError as e:  # a bad answer is the CSMS's problem, not a reason to reconnect
                    self.log.warn("ocpp", "Heartbeat answer refused: %s" % e.code)
                self.last_heartbeat = now
            if self.pending_reset:
                await self._do_reset()
            self.wake.clear()
            if not self.events and not len(self.queue):
                await self._wait(LOOP_MS)
            if reader.done():
                raise NotConnected("connection lost")

    async def _wait(self, ms):
        # Sleep up to ms on the charger's clock, or until woken.
        t = self.tasks.spawn(self._set_after(self.wake, ms), "ocpp timer")
        await self.wake.wait()
        t.cancel()

    async def _report_status(self):
        if self.clock.ticks_diff(self.clock.ticks_ms(), self.station.booted_at) < 200:
            return  # the pilots are not filtered yet: no status from before we looked
        c0 = "Unavailable" if all(not c.available for c in self.station.connectors) else "Available"
        items = [(0, c0, "NoError")] + [(c.id, self.status_of(c), c.faults.ocpp_error())
                                        for c in self.station.connectors]
        for cid, status, err in items:
            if self.reported.get(cid) != (status, err):
                try:
                    await self.rpc.call("StatusNotification", {"connectorId": cid, "status": status,
                                                               "errorCode": err,
                                                               "timestamp": timefmt.format(self.clock.wall())})
                except CallError as e:
                    self.log.warn("ocpp", "StatusNotification refused: %s" % e.code)
                self.reported[cid] = (status, err)

    def status_of(self, c):
        s = c.status_name()
        if s in TX_STATUSES and not self._tx_known(c.id):
            # The connector runs a session the CSMS has not heard of yet (the
            # plug is still locking, or its StartTransaction is not answered):
            # a transaction status now would name a transaction that is not
            # open. Preparing until the StartTransaction is confirmed.
            return "Preparing"
        if s in ("Available", "Preparing") and c.session is None and (
                self.reservations.on(c.id) or (self.reservations.any() and self._last_free(c))):
            return "Reserved"
        return s

    def _tx_known(self, cid):
        t = self.txs.get(cid)
        return t is not None and self.queue.remote_id(t["tx"]) is not None

    def _last_free(self, c):
        # A connector-0 reservation holds the last connector nobody uses.
        free = [x for x in self.station.connectors if x.session is None and not x.authorized and x.available]
        return len(free) == 1 and free[0] is c

    def reserved_for_other(self, c, tag):
        # Does a reservation keep this connector from `tag`? Remembers which
        # reservation a holder uses, for its StartTransaction.
        parent = self.local.parent(tag) or self.auth.parent(tag)
        r = self.reservations.on(c.id)
        if r is None and self.reservations.any() and self._last_free(c):
            r = self.reservations.any()
        if r is None:
            return False
        if self.reservations.holds(r[1], tag, parent):
            self.tx_reservation[c.id] = r[0]
            return False
        return True

    async def _flush_queue(self):
        q = self.queue
        while True:
            it = q.head()
            if it is None:
                return
            seq, action, payload, tx, attempts = it
            if tx is not None and tx < 0 and action != "StartTransaction":
                rid = q.remote_id(tx)
                if rid is None:
                    # Its StartTransaction is ahead of it in the queue; if it
                    # was dropped after all attempts the CSMS has no id for it.
                    self.log.warn("ocpp", "%s for unconfirmed transaction %d dropped" % (action, tx))
                    q.pop(seq)
                    continue
                payload["transactionId"] = rid
            try:
                r = await self.rpc.call(action, payload)
            except CallError as e:
                n = q.attempt(seq)
                if n >= max(1, self.keys.get("TransactionMessageAttempts")):
                    self.log.error("ocpp", "%s given up after %d attempts: %s" % (action, n, e.code))
                    q.pop(seq)
                    continue
                await self._sleep_or_drop(self.keys.get("TransactionMessageRetryInterval") * 1000 * n, None)
                continue
            if action == "StartTransaction":
                q.resolve(tx, r["transactionId"])
                prof = self.pending_profiles.pop(payload["connectorId"], None)
                if prof is not None:  # the TxProfile a RemoteStartTransaction brought
                    self.profiles.add(payload["connectorId"], prof, r["transactionId"])
                for it in self.profiles.items:  # set while the id was still local
                    if it[1]["tx"] == tx:
                        it[1]["tx"] = r["transactionId"]
                info = r.get("idTagInfo", {})
                self.auth.remember(payload["idTag"], info)
                if info.get("status") != "Accepted":
                    cid = payload["connectorId"]
                    c = self.station.connectors[cid - 1]
                    if c.session is not None and self.txs.get(cid, {}).get("tx") == tx:
                        if self.keys.get("StopTransactionOnInvalidId"):
                            c.stop("DeAuthorized")
                        else:
                            c.suspend(True)  # the transaction goes on, the energy does not
            elif action == "StopTransaction" and r.get("idTagInfo") and payload.get("idTag"):
                self.auth.remember(payload["idTag"], r["idTagInfo"])
            q.pop(seq)

    async def _do_reset(self):
        kind = self.pending_reset
        self.pending_reset = None
        reason = "HardReset" if kind == "Hard" else "SoftReset"
        for c in self.station.connectors:
            if c.session is not None:
                c.stop(reason)
        # Give the stop its EVSE-initiated sequence (soft) before rebooting.
        if kind == "Soft":
            for _ in range(70):
                if all(c.session is None for c in self.station.connectors):
                    break
                await self.clock.sleep_ms(100)
        # What is still open ends now with the reset's reason (a hard reset
        # does not wait for the sessions); then sent, since we are the session
        # loop (the only sender), and the link closed with a close handshake.
        self.end_transactions(reason)
        try:
            await asyncio.wait_for_ms(self._flush_queue(), RESET_FLUSH_MS)
        except (asyncio.TimeoutError, RpcTimeout, NotConnected, WsError, OSError) as e:
            # what is left stays queued on flash and goes out after the boot
            self.log.warn("ocpp", "queue not sent before the reset: %r" % e)
        self.log.warn("ocpp", "%s reset" % kind.lower())
        ws = self.ws
        if ws is not None:
            try:
                await ws.close(1001, "%s reset" % kind)
            except (WsError, OSError) as e:
                self.log.info("ocpp", "close before reset: %r" % e)
        reboot = self.station.reboot
        if reboot:
            reboot()  # stops this station (and so this client) and boots a new one

    # --- what the station, the bench and handlers ask -------------------------
    def local_status(self, tag):
        # What the charger knows by itself: the local list first, then the cache.
        now = self.clock.wall()
        if self.keys.get("LocalAuthListEnabled"):
            s = self.local.status(tag, now)
            if s is not None:
                return s
        if self.keys.get("AuthorizationCacheEnabled"):
            return self.auth.status(tag, now)
        return None

    async def authorize(self, tag):
        # -> idTagInfo status. Online: ask the CSMS (unless LocalPreAuthorize
        # and the tag is known good); offline or failing: the local list and
        # cache (LocalAuthorizeOffline) or AllowOfflineTxForUnknownId.
        known = self.local_status(tag)
        online = self.registered and self.rpc.ws is not None
        if online and not (self.keys.get("LocalPreAuthorize") and known == "Accepted"):
            try:
                r = await self.rpc.call("Authorize", {"idTag": tag})
                info = r["idTagInfo"]
                self.auth.remember(tag, info)
                return info.get("status", "Invalid")
            except (RpcTimeout, NotConnected):
                online = False  # the CSMS did not answer: decide as offline
            except CallError:
                return "Invalid"
        if known == "Accepted":
            return "Accepted" if online or self.keys.get("LocalAuthorizeOffline") else "Invalid"
        if known is None and not online and self.keys.get("AllowOfflineTxForUnknownId"):
            return "Accepted"
        return known or "Invalid"

    async def present_token(self, cid, tag):
        c = self.station.connectors[cid - 1]
        if c.session is not None:
            t = self.txs.get(cid)
            same = c.session["id_tag"] == tag
            # Another card may stop the session only if it shares the session
            # card's parentIdTag: ask about it only when that group is known.
            if not same and t is not None and (self.local.parent(t["tag"]) or self.auth.parent(t["tag"])):
                if await self.authorize(tag) == "Accepted":
                    same = self._same_parent(tag, t["tag"])
            if same:
                self.stop_tags[cid] = tag
                c.stop("Local")
                return "stopping"
            return "busy"
        status = await self.authorize(tag)
        if status != "Accepted":
            self.log.warn("ocpp", "token %s not authorized: %s" % (tag, status))
            return status
        if self.reserved_for_other(c, tag):
            self.log.warn("ocpp", "connector %d is reserved for another idTag" % cid)
            return "Reserved"
        c.authorize(tag)
        self.tasks.spawn(self._connection_timeout(c, tag), "ConnectionTimeOut")
        self.wake.set()
        return "Accepted"

    def _same_parent(self, a, b):
        pa = self.local.parent(a) or self.auth.parent(a)
        pb = self.local.parent(b) or self.auth.parent(b)
        return pa is not None and pa == pb

    async def _connection_timeout(self, c, tag):
        await self.clock.sleep_ms(self.keys.get("ConnectionTimeOut") * 1000)
        if c.session is None and c.authorized and c.id_tag == tag:
            c.cancel_authorization()

    def status(self):
        return {"state": self.state, "url": self.opts["url"], "queued": len(self.queue),
                "connections": self.connections, "txs": {str(k): self.tx_of(k) for k in self.txs},
                "reported": {str(k): v[0] for k, v in self.reported.items()}}

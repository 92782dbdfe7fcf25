# Core profile: what the CSMS may ask of the charger, translated into the
# station's commands. Payloads arrive validated against the 1.6 schemas;
# each handler answers with the 1.6 result payload.
from firmware.core import timefmt


DIAG_BUSY = ("Uploading",)  # DiagnosticsStatusNotification statuses of work in progress
FW_BUSY = ("Downloading", "Downloaded", "Installing")  # the same for FirmwareStatusNotification


def _conn(cl, cid):
    cs = cl.station.connectors
    return cs[cid - 1] if 0 < cid <= len(cs) else None


def install(cl):
    h = cl.rpc.handlers

    async def reset(p):
        # Answer first, then stop transactions and reboot (client._do_reset).
        kind = p["type"]
        cl.store.write("ocpp_reset.json", {"reason": "HardReset" if kind == "Hard" else "SoftReset"})
        cl.security.audit("CSMS", "Reset %s" % kind)
        cl.pending_reset = kind
        cl.wake.set()
        return {"status": "Accepted"}

    async def remote_start(p):
        tag = p["idTag"]
        cid = p.get("connectorId")
        if cid is None:
            cands = [c for c in cl.station.connectors if c.session is None and c.available
                     and not c.faults.blocking() and not c.authorized]
            c = cands[0] if cands else None
        elif cid == 0:
            return {"status": "Rejected"}  # a transaction needs a connector
        else:
            c = _conn(cl, cid)
        if c is None or c.session is not None or not c.available or c.faults.blocking():
            return {"status": "Rejected"}
        if cl.reserved_for_other(c, tag):
            return {"status": "Rejected"}
        prof = p.get("chargingProfile")
        if prof is not None:
            if prof["chargingProfilePurpose"] != "TxProfile":
                return {"status": "Rejected"}
            cl.pending_profiles[c.id] = prof
        if cl.keys.get("AuthorizeRemoteTxRequests"):
            cl.tasks.spawn(_remote_authorize(cl, c, tag), "remote authorize")
        else:
            c.authorize(tag)
            cl.tasks.spawn(cl._connection_timeout(c, tag), "ConnectionTimeOut")
        cl.wake.set()
        return {"status": "Accepted"}

    async def remote_stop(p):
        for c in cl.station.connectors:
            if c.session is not None and cl.tx_of(c.id) == p["transactionId"]:
                c.stop("Remote")
                cl.wake.set()
                return {"status": "Accepted"}
        return {"status": "Rejected"}

    async def change_configuration(p):
        status = cl.keys.change(p["key"], p["value"])
        # The audit trail names the key, never the value (it may be a secret).
        cl.security.audit("CSMS", "ChangeConfiguration %s: %s" % (p["key"][:50], status))
        if status == "Accepted":
            cl.auth.enabled = cl.keys.get("AuthorizationCacheEnabled")
            cl.apply_keys()
        return {"status": status}

    async def get_configuration(p):
        known, unknown = cl.keys.report(p.get("key"))
        r = {"configurationKey": known}
        if unknown:
            r["unknownKey"] = unknown
        return r

    async def change_availability(p):
        cid = p["connectorId"]
        on = p["type"] == "Operative"
        targets = cl.station.connectors if cid == 0 else [_conn(cl, cid)]
        if None in targets:
            return {"status": "Rejected"}
        scheduled = False
        for c in targets:
            if not on and c.session is not None:
                scheduled = True
                cl.scheduled_unavailable.add(c.id)  # applied when the transaction ends
            else:
                cl.scheduled_unavailable.discard(c.id)
                c.set_available(on)
        cl.store.write("ocpp_availability.json", {str(c.id): c.available for c in cl.station.connectors})
        cl.wake.set()
        return {"status": "Scheduled" if scheduled else "Accepted"}

    async def clear_cache(p):
        cl.auth.clear()
        cl.security.audit("CSMS", "ClearCache")
        return {"status": "Accepted"}

    async def unlock(p):
        c = _conn(cl, p["connectorId"])
        if c is None:
            return {"status": "NotSupported"}
        if not c.socket:
            return {"status": "NotSupported"}  # a tethered cable has no lock
        if c.session is not None:
            c.stop("UnlockCommand")
            cl.wake.set()
        c.unlock()
        # The lock opens once the session has ended and the contacts are open,
        # and its feedback must say so.
        for _ in range(80):
            if not c.lock_cmd and not c.hw.locked[c.idx]:
                break
            await cl.clock.sleep_ms(100)
        return {"status": "UnlockFailed" if c.lock_cmd or c.hw.locked[c.idx] else "Unlocked"}

    async def data_transfer(p):
        return {"status": "UnknownVendorId"}  # no vendor extensions in this firmware

    async def trigger(p):
        what = p["requestedMessage"]
        cid = p.get("connectorId")
        if cid is not None and (cid < 0 or cid > len(cl.station.connectors)):
            return {"status": "Rejected"}
        # OCPP 1.6 (TriggerMessage): Idle unless an upload or an update is
        # under way; the last final status (UploadFailed, Installed...) is not
        # "what the charger is doing now".
        if what == "DiagnosticsStatusNotification":
            st = cl.fw.diag_status if cl.fw.diag_status in DIAG_BUSY else "Idle"
            cl.tasks.spawn(cl._try("DiagnosticsStatusNotification", {"status": st}), "trigger")
        elif what == "FirmwareStatusNotification":
            st = cl.fw.fw_status if cl.fw.fw_status in FW_BUSY else "Idle"
            cl.tasks.spawn(cl._try("FirmwareStatusNotification", {"status": st}), "trigger")
        else:
            return {"status": trigger_core(cl, what, cid)}
        cl.wake.set()
        return {"status": "Accepted"}

    async def send_local_list(p):
        entries = p.get("localAuthorizationList") or []
        if len(entries) > cl.keys.get("SendLocalListMaxLength"):
            return {"status": "Failed"}
        status = cl.local.update(p["listVersion"], entries, p["updateType"] == "Full")
        cl.security.audit("CSMS", "SendLocalList %s version %d, %d entries: %s" % (
            p["updateType"], p["listVersion"], len(entries), status))
        return {"status": status}

    async def get_local_list_version(p):
        return {"listVersion": cl.local.version}

    async def reserve_now(p):
        cid = p["connectorId"]
        expiry = timefmt.parse(p["expiryDate"])
        if cid == 0:
            if not cl.keys.get("ReserveConnectorZeroSupported"):
                return {"status": "Rejected"}
            targets = cl.station.connectors
        else:
            c = _conn(cl, cid)
            if c is None:
                return {"status": "Rejected"}
            targets = [c]
        rid = p["reservationId"]
        mine = cl.reservations.by_id.get(str(rid))
        if all(c.faults.blocking() for c in targets):
            return {"status": "Faulted"}
        if all(not c.available for c in targets):
            return {"status": "Unavailable"}
        if cid != 0:
            c = targets[0]
            held = cl.reservations.on(cid)
            busy = c.session is not None or c.authorized or c.pilot.state != 0
            if busy or (held is not None and held[0] != rid):
                return {"status": "Occupied"}
        elif not any(c.session is None and not c.authorized and c.available for c in targets):
            return {"status": "Occupied"}
        if expiry is None or expiry <= cl.clock.wall():
            return {"status": "Rejected"}
        if mine is not None:
            cl.reservations.cancel(rid, "replaced")
        cl.reservations.add(rid, cid, p["idTag"], p.get("parentIdTag"), expiry)
        cl.wake.set()
        return {"status": "Accepted"}

    async def cancel_reservation(p):
        ok = cl.reservations.cancel(p["reservationId"], "cancelled by the CSMS")
        cl.wake.set()
        return {"status": "Accepted" if ok else "Rejected"}

    async def set_profile(p):
        cid = p["connectorId"]
        if cid < 0 or cid > len(cl.station.connectors):
            return {"status": "Rejected"}
        tx = cl.tx_of(cid) if cid else None
        if tx is None and cid and cid in cl.txs:
            tx = cl.txs[cid]["tx"]  # started offline: the local id until the CSMS names it
        status = cl.profiles.add(cid, p["csChargingProfiles"], tx)
        cl.apply_profiles()
        return {"status": status}

    async def clear_profile(p):
        n = cl.profiles.clear(p.get("id"), p.get("connectorId"), p.get("chargingProfilePurpose"), p.get("stackLevel"))
        cl.apply_profiles()
        return {"status": "Accepted" if n else "Unknown"}

    async def composite(p):
        cid = p["connectorId"]
        if cid < 0 or cid > len(cl.station.connectors):
            return {"status": "Rejected"}
        unit = p.get("chargingRateUnit", "A")
        t0 = cl.clock.wall()
        tx = cl.txs.get(cid)
        periods = cl.profiles.composite(cid, t0, p["duration"], unit, cl.tx_of(cid), tx.get("t0") if tx else None)
        if not periods:
            return {"status": "Rejected"}  # nothing limits this connector then
        return {"status": "Accepted", "connectorId": cid, "scheduleStart": timefmt.format(t0),
                "chargingSchedule": {"duration": p["duration"], "startSchedule": timefmt.format(t0),
                                     "chargingRateUnit": unit, "chargingSchedulePeriod": periods}}

    async def update_firmware(p):
        cl.fw.update(p)
        return {}

    async def get_diagnostics(p):
        if not (p["location"].startswith("http://") or p["location"].startswith("https://")):
            cl.log.warn("ocpp", "diagnostics location %s: only http(s) uploads" % p["location"][:60])
            # Still answered with a file name: the upload will fail and say so.
        return {"fileName": cl.fw.diagnostics(p)}

    h["UpdateFirmware"] = update_firmware
    h["GetDiagnostics"] = get_diagnostics
    h["SetChargingProfile"] = set_profile
    h["ClearChargingProfile"] = clear_profile
    h["GetCompositeSchedule"] = composite
    h["ReserveNow"] = reserve_now
    h["CancelReservation"] = cancel_reservation
    h["SendLocalList"] = send_local_list
    h["GetLocalListVersion"] = get_local_list_version
    h["Reset"] = reset
    h["RemoteStartTransaction"] = remote_start
    h["RemoteStopTransaction"] = remote_stop
    h["ChangeConfiguration"] = change_configuration
    h["GetConfiguration"] = get_configuration
    h["ChangeAvailability"] = change_availability
    h["ClearCache"] = clear_cache
    h["UnlockConnector"] = unlock
    h["DataTransfer"] = data_transfer
    h["TriggerMessage"] = trigger


def trigger_core(cl, what, cid):
    # The messages TriggerMessage and ExtendedTriggerMessage share: sent after
    # our answer (a task), connectorId already checked. -> response status.
    if what == "BootNotification":
        cl.tasks.spawn(cl._try("BootNotification", cl.boot_payload()), "trigger")
    elif what == "Heartbeat":
        cl.tasks.spawn(cl._try("Heartbeat", {}), "trigger")
    elif what == "StatusNotification":
        if cid is None:
            cl.reported = {}
        else:
            cl.reported.pop(cid, None)
    elif what == "MeterValues":
        for c in cl.station.connectors:
            if cid in (None, 0, c.id):
                mv = {"connectorId": c.id, "meterValue": [{"timestamp": _now(cl), "sampledValue": cl._sample(
                    c, cl.keys.list("MeterValuesSampledData") or ["Energy.Active.Import.Register"], "Trigger")}]}
                tx = cl.tx_of(c.id)
                if tx is not None:
                    mv["transactionId"] = tx
                cl.tasks.spawn(cl._try("MeterValues", mv), "trigger")
    else:
        return "NotImplemented"
    cl.wake.set()
    return "Accepted"


def _now(cl):
    return timefmt.format(cl.clock.wall())


async def _remote_authorize(cl, c, tag):
    status = await cl.authorize(tag)
    if status == "Accepted" and c.session is None:
        c.authorize(tag)
        await cl._connection_timeout(c, tag)

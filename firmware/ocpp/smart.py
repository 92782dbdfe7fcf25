# Smart charging (OCPP 1.6): charging profiles from the CSMS turned into a
# current limit per connector, which the connector combines with its own
# limits (config, cable, derate) and the pilot duty then offers.
#
# Per connector the limit at time t is the minimum of
#   - the TxProfile of its running transaction, or else its TxDefaultProfile
#     (a connector's own beats connector 0's), highest stackLevel whose
#     schedule covers t;
#   - the ChargePointMaxProfile (connector 0), shared out evenly over the
#     connectors that charge.
# Schedules start at startSchedule (Absolute), its last daily/weekly repeat
# (Recurring) or the transaction start (Relative). Limits in W become amps
# per phase with the nominal voltage and the period's numberPhases (3 if not
# given, never more than are wired). Profiles persist across reboots; TxProfiles end with their
# transaction.
from firmware.core import timefmt
from firmware.core.store import is_int, is_num, list_of

MAX_STACK = 8
MAX_PERIODS = 24
MAX_PROFILES = 16
DAY = 86400



def _opt_num(x):
    return x is None or is_num(x)


def _stored_ok(i):
    # One stored profile, [cid, q] as add() builds it: every field the limit
    # computation reads, with its type, so a bad record cannot stop it later.
    cid, q = i
    if not (is_int(cid) and isinstance(q, dict) and is_int(q["id"]) and is_int(q["stack"])):
        return False
    if q["purpose"] not in ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"):
        return False
    if q["kind"] not in ("Absolute", "Recurring", "Relative") or q["unit"] not in ("A", "W"):
        return False
    return (_opt_num(q["from"]) and _opt_num(q["to"]) and _opt_num(q["duration"]) and _opt_num(q["start"])
            and len(q["periods"]) > 0 and list_of(q["periods"], lambda x: len(x) == 3 and is_num(x[0])
                                                  and is_num(x[1]) and is_int(x[2])))


class Profiles:
    def __init__(self, store, log, voltage_v=230, phases=3, name="ocpp_profiles.json"):
        self.store = store
        self.log = log
        self.voltage = voltage_v
        self.phases = phases  # wired phases: what a W limit is spread over unless numberPhases says
        self.name = name
        # [connectorId, profile dict] with startSchedule/validFrom/validTo parsed to epoch
        self.items = store.read(name, [], check=lambda r: list_of(r, _stored_ok))

    def _save(self):
        self.store.write(self.name, self.items)

    # --- SetChargingProfile / ClearChargingProfile -----------------------------
    def add(self, cid, p, tx_id):
        # -> "Accepted" | "Rejected"
        purpose = p["chargingProfilePurpose"]
        sch = p["chargingSchedule"]
        periods = sch["chargingSchedulePeriod"]
        if purpose == "ChargePointMaxProfile" and cid != 0:
            return "Rejected"
        if purpose == "TxProfile":
            if cid == 0 or tx_id is None or p.get("transactionId", tx_id) != tx_id:
                return "Rejected"
        if not 0 <= p["stackLevel"] <= MAX_STACK or not 0 < len(periods) <= MAX_PERIODS:
            return "Rejected"
        if periods[0]["startPeriod"] != 0 or any(
                periods[k]["startPeriod"] <= periods[k - 1]["startPeriod"] for k in range(1, len(periods))):
            return "Rejected"
        if any(x["limit"] < 0 for x in periods):
            return "Rejected"
        kind = p["chargingProfileKind"]
        if kind in ("Absolute", "Recurring") and "startSchedule" not in sch:
            return "Rejected"
        if kind == "Recurring" and p.get("recurrencyKind") not in ("Daily", "Weekly"):
            return "Rejected"
        q = {"id": p["chargingProfileId"], "stack": p["stackLevel"], "purpose": purpose, "kind": kind,
             "recur": p.get("recurrencyKind"), "from": _t(p.get("validFrom")), "to": _t(p.get("validTo")),
             "tx": tx_id if purpose == "TxProfile" else None, "unit": sch["chargingRateUnit"],
             "start": _t(sch.get("startSchedule")), "duration": sch.get("duration"),
             "periods": [[x["startPeriod"], x["limit"], min(self.phases, x.get("numberPhases", 3))]
                        for x in periods]}
        # The same id, or the same purpose and stack level on the connector, is replaced.
        self.items = [i for i in self.items if not (
            i[1]["id"] == q["id"] or (i[0] == cid and i[1]["purpose"] == purpose and i[1]["stack"] == q["stack"]))]
        if len(self.items) >= MAX_PROFILES:
            return "Rejected"
        self.items.append([cid, q])
        self._save()
        self.log.info("ocpp", "charging profile %d (%s, stack %d) on connector %d" % (q["id"], purpose, q["stack"], cid))
        return "Accepted"

    def clear(self, pid=None, cid=None, purpose=None, stack=None):
        keep = []
        gone = 0
        for i in self.items:
            if pid is not None:
                match = i[1]["id"] == pid
            else:
                match = ((cid is None or i[0] == cid) and (purpose is None or i[1]["purpose"] == purpose)
                         and (stack is None or i[1]["stack"] == stack))
            if match:
                gone += 1
            else:
                keep.append(i)
        if gone:
            self.items = keep
            self._save()
        return gone

    def end_tx(self, tx_id):
        n = len(self.items)
        self.items = [i for i in self.items if not (i[1]["purpose"] == "TxProfile" and i[1]["tx"] == tx_id)]
        if len(self.items) != n:
            self._save()

    # --- evaluation ------------------------------------------------------------
    def _ma(self, q, limit, phases):
        if q["unit"] == "A":
            return int(limit * 1000)
        return int(limit * 1000 / (self.voltage * (phases or 3)))  # W -> mA per phase

    def _at(self, q, t, tx_start):
        # The profile's limit (mA) at epoch t, or None if it does not apply.
        if (q["from"] is not None and t < q["from"]) or (q["to"] is not None and t >= q["to"]):
            return None
        kind = q["kind"]
        if kind == "Relative":
            if tx_start is None:
                return None
            start = tx_start
        else:
            start = q["start"]
            if kind == "Recurring":
                span = DAY if q["recur"] == "Daily" else 7 * DAY
                if t >= start:
                    start += (t - start) // span * span
                else:
                    return None
        off = t - start
        if off < 0 or (q["duration"] is not None and off >= q["duration"]):
            return None
        lim = None
        for sp, limit, phases in q["periods"]:
            if sp <= off:
                lim = self._ma(q, limit, phases)
        return lim

    def _best(self, purpose, cids, t, tx_start, tx_id=None):
        best, lvl = None, -1
        for cid, q in self.items:
            if cid in cids and q["purpose"] == purpose and q["stack"] > lvl:
                if purpose == "TxProfile" and q["tx"] != tx_id:
                    continue
                v = self._at(q, t, tx_start)
                if v is not None:
                    best, lvl = v, q["stack"]
        return best

    def limit(self, cid, t, tx_id, tx_start, sharing=1):
        # mA for connector cid at epoch t, or None without an applicable profile.
        lim = None
        if tx_id is not None:
            lim = self._best("TxProfile", (cid,), t, tx_start, tx_id)
        if lim is None:
            lim = self._best("TxDefaultProfile", (cid,), t, tx_start)
        if lim is None:
            lim = self._best("TxDefaultProfile", (0,), t, tx_start)
        cpmax = self._best("ChargePointMaxProfile", (0,), t, tx_start)
        if cpmax is not None:
            cpmax //= max(1, sharing)
            lim = cpmax if lim is None else min(lim, cpmax)
        return lim

    def boundaries(self, t0, t1, tx_start):
        # Times in [t0, t1) where some profile's limit may change.
        out = {t0}
        for _, q in self.items:
            starts = []
            if q["kind"] == "Relative":
                if tx_start is not None:
                    starts.append(tx_start)
            elif q["kind"] == "Absolute":
                starts.append(q["start"])
            else:
                span = DAY if q["recur"] == "Daily" else 7 * DAY
                s = q["start"]
                if s < t0:
                    s += (t0 - s) // span * span
                while s < t1:
                    starts.append(s)
                    s += span
            for s in starts:
                for sp, _, _ in q["periods"]:
                    out.add(s + sp)
                if q["duration"] is not None:
                    out.add(s + q["duration"])
            for edge in (q["from"], q["to"]):
                if edge is not None:
                    out.add(edge)
        return sorted(x for x in out if t0 <= x < t1)

    def composite(self, cid, t0, duration, unit, tx_id, tx_start):
        # GetCompositeSchedule: the periods of the resulting limit, merged.
        periods = []
        last = -1
        for b in self.boundaries(t0, t0 + duration, tx_start):
            if cid == 0:
                ma = self._best("ChargePointMaxProfile", (0,), b, tx_start)
            else:
                ma = self.limit(cid, b, tx_id, tx_start)
            if ma is None or ma == last:
                continue
            last = ma
            v = ma / 1000 if unit == "A" else ma * self.voltage * 3 / 1000
            periods.append({"startPeriod": b - t0, "limit": round(v, 1)})
        return periods


def _t(stamp):
    return None if stamp is None else timefmt.parse(stamp)

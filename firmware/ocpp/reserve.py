# Reservations (ReserveNow / CancelReservation): a connector, or any one
# connector (connectorId 0), is held for an idTag (or its parentIdTag) until
# the expiry date; kept across reboots. The holder's transaction carries the
# reservationId and ends the reservation.
from firmware.core.store import dict_of, is_int, is_num


def _held_ok(r):
    return (is_int(r["connector"]) and isinstance(r["tag"], str) and is_num(r["expiry"])
            and (r.get("parent") is None or isinstance(r["parent"], str)))


class Reservations:
    def __init__(self, store, log, name="ocpp_reservations.json"):
        self.store = store
        self.log = log
        self.name = name
        # str(id) -> {connector, tag, parent, expiry}
        self.by_id = store.read(name, {}, check=lambda r: dict_of(r, _held_ok, lambda k: int(k) >= 0))

    def _save(self):
        self.store.write(self.name, self.by_id)

    def add(self, rid, cid, tag, parent, expiry):
        self.by_id[str(rid)] = {"connector": cid, "tag": tag, "parent": parent, "expiry": expiry}
        self._save()
        self.log.info("ocpp", "reservation %d: connector %d for %s" % (rid, cid, tag))

    def cancel(self, rid, why):
        r = self.by_id.pop(str(rid), None)
        if r is not None:
            self._save()
            self.log.info("ocpp", "reservation %s ended: %s" % (rid, why))
        return r is not None

    def on(self, cid):
        # The reservation holding this connector (not connector 0), as (id, r).
        for k, r in self.by_id.items():
            if r["connector"] == cid:
                return int(k), r
        return None

    def any(self):
        for k, r in self.by_id.items():
            if r["connector"] == 0:
                return int(k), r
        return None

    def expire(self, now):
        gone = [k for k, r in self.by_id.items() if now >= r["expiry"]]
        for k in gone:
            self.cancel(k, "expired")
        return gone

    def holds(self, r, tag, parent):
        return tag == r["tag"] or (r.get("parent") is not None and parent == r["parent"])

# Authorization cache: what the CSMS said about an idTag (Authorize,
# StartTransaction, StopTransaction answers), kept across reboots, so a
# charger that is offline can still let known cards charge
# (LocalAuthorizeOffline) and match a parentIdTag when a card stops a session
# it did not start.
MAX_TAGS = 200


class AuthCache:
    def __init__(self, store, log, name="ocpp_auth.json"):
        self.store = store
        self.log = log
        self.name = name
        self.enabled = True
        rec = store.read(name, {})
        self.tags = rec if isinstance(rec, dict) else {}

    def remember(self, tag, info):
        if not self.enabled or not isinstance(info, dict):
            return
        e = {"status": info.get("status", "Invalid")}
        if info.get("parentIdTag"):
            e["parent"] = info["parentIdTag"]
        if info.get("expiryDate"):
            e["expiry"] = info["expiryDate"]
        if self.tags.get(tag) == e:
            return
        if tag not in self.tags and len(self.tags) >= MAX_TAGS:
            del self.tags[next(iter(self.tags))]  # oldest entry makes room
        self.tags[tag] = e
        self.store.write(self.name, self.tags)

    def status(self, tag, now=None):
        e = self.tags.get(tag)
        if e is None:
            return None
        if now is not None and e.get("expiry"):
            from firmware.ocpp import timefmt
            t = timefmt.parse(e["expiry"])
            if t is not None and now > t:
                return "Expired"
        return e["status"]

    def same_parent(self, a, b):
        pa = self.tags.get(a, {}).get("parent")
        pb = self.tags.get(b, {}).get("parent")
        return pa is not None and pa == pb

    def clear(self):
        self.tags = {}
        self.store.write(self.name, self.tags)

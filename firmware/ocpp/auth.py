# Authorization cache: what the CSMS said about an idTag (Authorize,
# StartTransaction, StopTransaction answers), kept across reboots, so a
# charger that is offline can still let known cards charge
# (LocalAuthorizeOffline) and match a parentIdTag when a card stops a session
# it did not start.
from firmware.core import timefmt
from firmware.core.store import dict_of, is_int

MAX_TAGS = 200


def _is_str(x):
    return isinstance(x, str)


def _opt_str(d, k):
    return d.get(k) is None or isinstance(d[k], str)


def _cached_ok(e):
    # A cache entry: {"status":, "parent"?:, "expiry"?:}, all text.
    return isinstance(e["status"], str) and _opt_str(e, "parent") and _opt_str(e, "expiry")


def _info_ok(i):
    # An idTagInfo as SendLocalList gave it.
    return isinstance(i, dict) and _opt_str(i, "status") and _opt_str(i, "parentIdTag") and _opt_str(i, "expiryDate")


def _list_ok(r):
    return is_int(r.get("version", 0)) and dict_of(r.get("tags", {}), _info_ok, _is_str)


def _expired(stamp, now):
    # An idTagInfo expiryDate (RFC 3339) that lies before `now` (epoch s).
    if now is None or not stamp:
        return False
    t = timefmt.parse(stamp)
    return t is not None and now > t


class AuthCache:
    def __init__(self, store, log, name="ocpp_auth.json"):
        self.store = store
        self.log = log
        self.name = name
        self.enabled = True
        self.tags = store.read(name, {}, check=lambda r: dict_of(r, _cached_ok, _is_str), max_bytes=32768)

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
        return "Expired" if _expired(e.get("expiry"), now) else e["status"]

    def parent(self, tag):
        return self.tags.get(tag, {}).get("parent")

    def clear(self):
        self.tags = {}
        self.store.write(self.name, self.tags)


class LocalList:
    # The CSMS-managed Local Authorization List (SendLocalList): a versioned
    # set of idTags with their idTagInfo, kept across reboots. It takes
    # precedence over the cache when the charger decides without the CSMS.
    def __init__(self, store, log, max_len=500, name="ocpp_locallist.json"):
        self.store = store
        self.log = log
        self.name = name
        self.max_len = max_len
        rec = store.read(name, {}, check=_list_ok, max_bytes=131072)  # up to 500 tags
        self.version = rec.get("version", 0)
        self.tags = rec.get("tags", {})

    def update(self, version, entries, full):
        # -> "Accepted" | "Failed" | "VersionMismatch"
        if not full and version <= self.version:
            return "VersionMismatch"
        tags = {} if full else dict(self.tags)
        for e in entries:
            info = e.get("idTagInfo")
            if info is None:
                if full:
                    return "Failed"  # a full list names every tag with its info
                tags.pop(e["idTag"], None)
            else:
                tags[e["idTag"]] = info
        if len(tags) > self.max_len:
            return "Failed"
        self.tags = tags
        self.version = version
        self.store.write(self.name, {"version": version, "tags": tags})
        self.log.info("ocpp", "local list version %d: %d tag(s)" % (version, len(tags)))
        return "Accepted"

    def status(self, tag, now=None):
        info = self.tags.get(tag)
        if info is None:
            return None
        return "Expired" if _expired(info.get("expiryDate"), now) else info.get("status", "Invalid")

    def parent(self, tag):
        return self.tags.get(tag, {}).get("parentIdTag")

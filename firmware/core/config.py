# Charger configuration: defaults, validation, loading from the store.
#
# Every key has a type and a range. A bad value is reported with its key and
# replaced by the safe choice (ON_ERROR's value where the default is not the
# safe one; free vend is off whenever a CSMS is configured); a bad charger id
# refuses start, since a charger that announces itself under the wrong name
# is worse than one that stays off. Unknown keys are reported with the nearest
# known key (a typo must not silently leave a limit at its default) and ignored.
# The README's configuration table lists every key's fallback; keep it in step.
import json

# key: (kind, default, lo, hi, help)
SCHEMA = {
    "id": ("id", "SIM0001", 1, 48, "charge point id"),
    "connectors": ("int", 1, 1, 4, "number of connectors"),
    "max_current_a": ("num", 32, 6, 80, "configured maximum current per connector (A)"),
    "phases": ("int", 3, 1, 3, "phases wired (1 or 3)"),
    "voltage_v": ("int", 230, 100, 480, "nominal phase voltage (V)"),
    "cable_a": ("int", 0, 0, 80, "tethered cable rating (A); 0 = socket, read PP"),
    "ventilation": ("bool", False, 0, 0, "allow charging in state D"),
    "free_vend": ("bool", True, 0, 0, "authorize every plugged-in EV"),
    "close_delay_ms": ("int", 500, 0, 2500, "stable C before the contactor closes (ms)"),
    "stop_force_ms": ("int", 6000, 3000, 6000, "force open after PWM off in C (ms)"),
    "rcd_retry_s": ("int", 300, 10, 3600, "wait before retrying after an RCD trip (s)"),
    "rcd_retries": ("int", 6, 0, 20, "RCD retries before a hard fault"),
    "period_ms": ("int", 10, 1, 10, "control loop period (ms)"),
    "meter_save_s": ("int", 60, 1, 3600, "energy register save interval (s)"),
    "derate": ("derate", None, 0, 0, "thermal derating curve"),
    "pins": ("dict", None, 0, 0, "board pin map overrides"),
    "log_level": ("int", 20, 10, 40, "log level (10 debug .. 40 error)"),
    "log_json": ("bool", False, 0, 0, "log lines as JSON objects, one a line, for machines (console and log.txt)"),
    "ota_confirm_s": ("int", 60, 1, 3600, "a trial firmware image confirms itself after running healthy "
                      "this long (and BootNotification Accepted, with a CSMS)"),
    "ota_trial_s": ("int", 600, 10, 86400, "a trial image not confirmed by then reboots (a failed trial boot)"),
    "csms_url": ("str", "", 0, 512, "OCPP 1.6J CSMS URL ws://host:port/path (the id is appended); empty = free vend"),
    "auth_key": ("str", "", 0, 40, "HTTP Basic password toward the CSMS (security profile 1/2)"),
    "csms_ca": ("str", "", 0, 200, "CA certificate file (PEM or DER) that signs the CSMS's, for wss://"),
    # Security profiles (OCPP 1.6 security whitepaper); see firmware/ocpp/profile.py.
    "csms_tls_url": ("str", "", 0, 512, "wss:// URL for security profile 2/3 when csms_url is ws:// "
                     "(empty: csms_url's host:port with wss://)"),
    "security_profile": ("int", -1, -1, 3, "security profile at first boot, 0-3 (the CSMS may only "
                         "raise it); -1: from the URL and credentials"),
    "cp_cert": ("str", "", 0, 200, "charge point certificate file (PEM or DER), security profile 3"),
    "cp_key": ("str", "", 0, 200, "its private key file (PEM or DER)"),
    "fw_root": ("str", "", 0, 200, "manufacturer root certificate file (PEM or DER) for signed firmware, "
                "installed at first boot"),
    "wifi_ssid": ("str", "", 0, 32, "WiFi network the ESP32 / Pico W joins (station mode); empty: no WiFi"),
    "wifi_pass": ("str", "", 0, 63, "its WPA2 passphrase (empty: an open network); never shown"),
}
SECRETS = ("auth_key", "wifi_pass")  # never in a log line, a status or an archive

# What a present but bad value falls back to, where the default is not the
# safe choice: a garbled current limit must not give the installation's
# circuit more than the least a charger can offer; garbled RCD settings wait
# longest and do not retry (the next trip is a hard fault, service needed).
# free_vend is decided in validate(): off when a CSMS is configured.
ON_ERROR = {"max_current_a": 6, "rcd_retry_s": 3600, "rcd_retries": 0}
MAX_CONFIG_BYTES = 16384  # config.json read at most this big (a real one is under 2 kB)

# Defaults after OpenEVSE's ambient-sensor policy: half current at 65 C, a
# quarter at 68 C, shutdown at 71 C. Steps back up need the temperature
# hysteresis_c below the point and min_interval_s since the last change;
# after a shutdown the charger resumes at resume_c on the lowest step.
DERATE = {
    "points": ((65, 50), (68, 25)),
    "hysteresis_c": 3,
    "shutdown_c": 71,
    "resume_c": 62,
    "min_interval_s": 30,
}


class ConfigError(Exception):
    pass


def _id_ok(v):
    if not isinstance(v, str) or not 1 <= len(v) <= 48:
        return False
    for ch in v:
        if not (ch.isalpha() or ch.isdigit() or ch in "-_.:"):
            return False
    return True


def _default_derate():
    # A fresh copy per charger: the module's table stays untouched.
    d = dict(DERATE)
    d["points"] = [list(p) for p in DERATE["points"]]
    return d


def _check_derate(v, errors):
    d = _default_derate()
    if v is None:
        return d
    if not isinstance(v, dict):
        errors.append("derate: must be an object; using defaults")
        return d
    for k in v:
        if k not in DERATE:
            errors.append(_unknown("derate.", k, DERATE))
    pts = v.get("points", d["points"])
    good = isinstance(pts, list) and len(pts) > 0
    last_t, last_p = -100, 101
    if good:
        for p in pts:
            if not (isinstance(p, list) and len(p) == 2 and _isnum(p[0]) and _isnum(p[1])
                    and p[0] > last_t and 0 <= p[1] < last_p):
                good = False
                break
            last_t, last_p = p[0], p[1]
    if good:
        d["points"] = [list(p) for p in pts]
    else:
        errors.append("derate.points: must be [[temp_c, percent], ...] with rising temperature "
                      "and falling percent; using %s" % d["points"])
    for k, lo, hi in (("hysteresis_c", 0, 20), ("shutdown_c", 30, 120), ("resume_c", 0, 110),
                      ("min_interval_s", 0, 600)):
        if k in v:
            x = v[k]
            if _isnum(x) and lo <= x <= hi:
                d[k] = x
            else:
                errors.append("derate.%s: must be a number %s..%s, got %r; using %s" % (k, lo, hi, x, d[k]))
    if d["resume_c"] >= d["shutdown_c"] or d["points"][-1][0] >= d["shutdown_c"]:
        errors.append("derate: need points < shutdown_c and resume_c < shutdown_c; using defaults")
        d = _default_derate()
    return d


def _isnum(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def distance(a, b):
    # Edit distance (insert, delete, substitute), two rows; names are cut at
    # 64 characters so a giant key costs little.
    a, b = a[:64], b[:64]
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return prev[-1]


def nearest(key, known):
    # The known key closest to key (ties: the first in sorted order).
    best, bd = None, 1 << 30
    for k in sorted(known):
        d = distance(str(key), k)
        if d < bd:
            best, bd = k, d
    return best


def _unknown(where, key, known):
    return "%s%s: unknown key, ignored; did you mean %s?" % (where, str(key)[:64], nearest(key, known))


def validate(raw):
    # Return (config dict, list of error lines). Raises ConfigError when the
    # charger must not start.
    cfg = {}
    errors = []
    if not isinstance(raw, dict):
        errors.append("config: must be a JSON object; using defaults")
        raw = {}
    for k in raw:
        if k not in SCHEMA:
            errors.append(_unknown("", k, SCHEMA))
    # Configured at all (even garbled): the back office authorizes, so free
    # vend is off unless it is set on explicitly.
    csms = raw.get("csms_url") not in (None, "")
    for k, (kind, default, lo, hi, _) in SCHEMA.items():
        if k == "free_vend":
            default = not csms
        present = k in raw
        v = raw.get(k, default)
        if kind == "derate":
            cfg[k] = _check_derate(v, errors)
            continue
        if kind == "dict":
            if v is None or isinstance(v, dict):
                cfg[k] = dict(v or {})
            else:
                errors.append("%s: must be an object, got %r; ignored" % (k, v))
                cfg[k] = {}
            continue
        ok = True
        if kind == "id":
            if not _id_ok(v):
                raise ConfigError("%s: must be 1..48 letters, digits or -_.:, got %r" % (k, v))
        elif kind == "bool":
            ok = isinstance(v, bool)
        elif kind == "int":
            ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        elif kind == "num":
            ok = _isnum(v) and lo <= v <= hi
        elif kind == "str":
            ok = isinstance(v, str) and lo <= len(v) <= hi
        if k == "phases" and v == 2:
            ok = False
        if not ok:
            fallback = ON_ERROR.get(k, default)
            if present:
                want = "true or false" if kind == "bool" else "%s %s..%s" % (kind, lo, hi)
                errors.append("%s: must be %s, got %s; using %r%s" % (
                    k, want, "a secret of %d characters" % len(v) if k in SECRETS and isinstance(v, str)
                    else repr(v), fallback, " (a CSMS is configured)" if k == "free_vend" and csms else ""))
            v = fallback
        cfg[k] = v
    return cfg, errors


def parse_value(text):
    # Command-line values: JSON when they parse (numbers, true, lists), else text.
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_override(raw, assignment):
    # "key=value" or "derate.shutdown_c=75"; returns an error line or None.
    if "=" not in assignment:
        return "override %r: expected key=value" % assignment
    key, text = assignment.split("=", 1)
    parts = key.split(".")
    if parts[0] not in SCHEMA:
        return _unknown("override ", parts[0], SCHEMA)
    if len(parts) > 1 and parts[0] == "derate" and parts[1] not in DERATE:
        return _unknown("override derate.", parts[1], DERATE)
    node = raw
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    # An id stays text even when it looks like a number ("0042").
    node[parts[-1]] = text if key == "id" else parse_value(text)
    return None


def load(store, overrides=()):
    # Read config.json from the store, apply overrides, validate.
    # A bad file (too big, too deep, not a JSON object, a wrong CRC) is set
    # aside by the store, logged by name, and the defaults apply.
    raw = store.read("config.json", {}, plain=True, check=lambda r: isinstance(r, dict),
                     max_bytes=MAX_CONFIG_BYTES)
    errors = []
    for o in overrides:
        e = apply_override(raw, o)
        if e:
            errors.append(e)
    cfg, more = validate(raw)
    return cfg, errors + more

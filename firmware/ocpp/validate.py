# Strict validation of what the CSMS sends, against the tables generated from
# the official schemas (firmware/ocpp/schema16.py). Returns None when the
# payload is good, else (CallError code, description) in 1.6 spelling:
#   wrong JSON type             TypeConstraintViolation
#   missing required field,
#   too few array items         OccurenceConstraintViolation (sic, 1.6)
#   bad enum, too long,
#   malformed date-time         PropertyConstraintViolation
#   field the schema forbids,
#   payload not an object       FormationViolation
from micropython import const
from firmware.core import timefmt

OBJ = const(0)
STR = const(1)
ENUM = const(2)
INT = const(3)
NUM = const(4)
BOOL = const(5)
ARR = const(6)
TIME = const(7)
URI = const(8)

_TYPE = ("object", "string", "string", "integer", "number", "boolean", "array", "date-time string", "URI string")


def _isint(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check(node, v, path):
    k = node[0]
    if k == OBJ:
        if not isinstance(v, dict):
            return ("TypeConstraintViolation", "%s must be an object" % path)
        props = node[1]
        for name in node[2]:
            if name not in v:
                return ("OccurenceConstraintViolation", "%s.%s is required" % (path, name))
        for key in v:
            sub = None
            for name, n in props:
                if name == key:
                    sub = n
                    break
            if sub is None:
                if node[3]:
                    return ("FormationViolation", "%s.%s is not allowed" % (path, key))
                continue
            e = check(sub, v[key], path + "." + key)
            if e:
                return e
        return None
    if k == INT:
        return None if _isint(v) else ("TypeConstraintViolation", "%s must be an integer" % path)
    if k == NUM:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        return None if ok else ("TypeConstraintViolation", "%s must be a number" % path)
    if k == BOOL:
        return None if isinstance(v, bool) else ("TypeConstraintViolation", "%s must be a boolean" % path)
    if k == ARR:
        if not isinstance(v, list):
            return ("TypeConstraintViolation", "%s must be an array" % path)
        if len(v) < node[2]:
            return ("OccurenceConstraintViolation", "%s needs at least %d item(s)" % (path, node[2]))
        for i, item in enumerate(v):
            e = check(node[1], item, "%s[%d]" % (path, i))
            if e:
                return e
        return None
    if not isinstance(v, str):
        return ("TypeConstraintViolation", "%s must be a %s" % (path, _TYPE[k]))
    if k == ENUM:
        return None if v in node[1] else ("PropertyConstraintViolation", "%s: %r is not one of %s" % (
            path, v, ", ".join(node[1])))
    if k == TIME:
        return None if timefmt.parse(v) is not None else (
            "PropertyConstraintViolation", "%s: %r is not an RFC 3339 date-time" % (path, v))
    if (k == STR or k == URI) and node[1] and len(v) > node[1]:
        return ("PropertyConstraintViolation", "%s is longer than %d characters" % (path, node[1]))
    if k == URI and ":" not in v:
        return ("PropertyConstraintViolation", "%s: %r is not a URI" % (path, v))
    return None


def payload(node, v):
    # The top level: anything but an object is a malformed PDU.
    if not isinstance(v, dict):
        return ("FormationViolation", "payload must be a JSON object")
    return check(node, v, "payload")

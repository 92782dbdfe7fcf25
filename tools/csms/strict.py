"""Checks the `ocpp` package leaves out.

Its JSON schema validator runs without a format checker, so the schemas'
"format": "date-time" fields accept any string. A CSMS that tests firmware
should not: here they must be RFC 3339 (2025-01-02T03:04:05Z, fractions and
offsets allowed).
"""

import datetime
import json
import re
from pathlib import Path

import ocpp
from jsonschema import Draft4Validator, FormatChecker
from ocpp.exceptions import FormatViolationError

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.I)
_FORMATS = FormatChecker(formats=())
_format_validators = {}


@_FORMATS.checks("date-time")
def _is_datetime(value):
    if not isinstance(value, str) or not _DATETIME.match(value):
        return False
    try:
        datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def datetime_errors(action, payload, response=False):
    """What the `ocpp` package leaves out: the schemas' "format": "date-time"
    (RFC 3339, e.g. 2025-01-02T03:04:05Z). A list of error texts."""
    key = (action, response)
    v = _format_validators.get(key)
    if v is None:
        path = Path(ocpp.__file__).parent / "v16" / "schemas" / (
            action + ("Response" if response else "") + ".json")
        try:
            schema = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError):
            return []
        v = _format_validators[key] = Draft4Validator(schema, format_checker=_FORMATS)
    try:
        return ["%s: %s" % ("/".join(map(str, e.absolute_path)), e.message)
                for e in v.iter_errors(payload) if e.validator == "format"]
    except Exception:
        return []


def check_datetimes(action, payload, response=False):
    errors = datetime_errors(action, payload, response)
    if errors:
        raise FormatViolationError(description="bad date-time", details={"cause": errors})

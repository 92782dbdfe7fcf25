# RFC 3339 date-times as OCPP uses them ("2026-11-21T10:00:00Z",
# "2026-11-21T10:00:00.123+01:00") <-> seconds since 1970-01-01 UTC.
# Done by hand: the ports differ in their epoch and not all have mktime.


def _days(y, m, d):
    # Days since 1970-01-01 (civil calendar, proleptic Gregorian).
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _digits(s, i, n):
    v = 0
    for k in range(i, i + n):
        c = ord(s[k]) - 48
        if not 0 <= c <= 9:
            raise ValueError
        v = v * 10 + c
    return v


def parse(s):
    # Epoch seconds (int), or None if s is not an RFC 3339 date-time.
    try:
        if not isinstance(s, str) or len(s) < 20 or s[4] != "-" or s[7] != "-" or s[10] not in "Tt" \
                or s[13] != ":" or s[16] != ":":
            return None
        y, mo, d = _digits(s, 0, 4), _digits(s, 5, 2), _digits(s, 8, 2)
        h, mi, se = _digits(s, 11, 2), _digits(s, 14, 2), _digits(s, 17, 2)
        if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and se <= 60):
            return None
        i = 19
        if s[i] == ".":
            i += 1
            j = i
            while i < len(s) and "0" <= s[i] <= "9":
                i += 1
            if i == j:
                return None
        z = s[i:]
        if z in ("Z", "z"):
            ofs = 0
        elif len(z) == 6 and z[0] in "+-" and z[3] == ":":
            ofs = (_digits(z, 1, 2) * 60 + _digits(z, 4, 2)) * 60
            if z[0] == "+":
                ofs = -ofs
        else:
            return None
        return _days(y, mo, d) * 86400 + h * 3600 + mi * 60 + se + ofs
    except (ValueError, IndexError):
        return None


def format(t):
    # Epoch seconds -> "YYYY-MM-DDTHH:MM:SSZ".
    t = int(t)
    days, rem = divmod(t, 86400)
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    y = yoe + era * 400 + (m <= 2)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, rem // 3600, rem // 60 % 60, rem % 60)

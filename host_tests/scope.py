"""Reading the plant's scope and the charger's faults, shared by the tests.

fw.trace(since) gives the plant's switching events [t_ms, connector, what,
value], what in duty / coil / contacts / locked / ev / rcd.
"""


def scope(fw, since=0, what=None, value=None):
    """(t, value) of the scope events since a time, optionally of one kind (and value)."""
    return [(t, v) for t, c, w, v in fw.trace(since)
            if (what is None or w == what) and (value is None or v == value)]


def first(fw, since, what, value=None):
    """Time of the first `what` event (with `value`) at or after `since`."""
    ev = scope(fw, since, what, value)
    assert ev, "no %s=%r on the scope since %d: %s" % (what, value, since, fw.trace(since))
    return ev[0][0]


def fault(st, code):
    """The connector status's fault with this code, or None."""
    for f in st["faults"]:
        if f["code"] == code:
            return f
    return None


def charge(fw, amps=32, settle=3000):
    """Plug in, request energy, wait until the contacts are closed; returns when they closed."""
    t0 = fw.now()
    fw.charging(amps, settle=settle)
    return first(fw, t0, "contacts", True)

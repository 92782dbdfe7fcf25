"""Safety rules that must hold on every path (README "Safety"), driven through
the control channel as a bench tool would, checked on the plant's scope.

1. Close conditions: no contactor close until the aux contact has read open
   with the coil off since power-up (and since the last opening); closed
   contacts with the coil off at power-up are a weld, latched at once. A
   latched fault is on flash in the tick that raised it, so a power cut a
   moment later does not forget it.
2. Cable rating (PP): read on every entry into a plugged state, E and F
   included, and whenever it changes; while it is unknown nothing is offered.
3. Lock: released only once the aux contact has read open, plus a margin, on
   every path (unplug, stop, fault, reset, Ctrl-C, power cut, service).

Times are compared only as differences (tdiff): the simulated clock may start
anywhere, close to a wrap of the boards' 2^30 ms tick counter too.
"""
import json
import os
import signal

import pytest
from scope import fault

TICK_MS = 10
AUX_MS = 1000  # a contactor still closed this long after opening is welded
UNLOCK_MARGIN_MS = 100  # lock released this long after the aux contact reads open
LOCK_TRAVEL_MS = 50  # the simulated lock motor's travel time (plant)
UNLOCK_FAULT_MS = 5000
PERIOD = 1 << 30  # ticks_ms period of the boards


def tdiff(a, b):
    """a - b on the boards' wrapping tick counter."""
    return ((a - b + PERIOD // 2) % PERIOD) - PERIOD // 2


def scope(fw, since=0, what=None, value=None):
    """(t, value) of the scope's events at or after `since` (compared on the
    wrapping tick counter), optionally of one kind (and value)."""
    return [(t, v) for t, c, w, v in events(fw, since)
            if (what is None or w == what) and (value is None or v == value)]


def events(fw, since=0):
    return [e for e in fw.trace(0) if tdiff(e[0], since) >= 0]


def coil_closes(fw):
    return scope(fw, booted_at(fw), "coil", True)


def booted_at(fw):
    s = fw.status()
    return (s["t"] - s["uptime_ms"]) % PERIOD


def latched_on_flash(fw, c=1):
    """The latched-fault record as it is on flash now (the CRC line dropped)."""
    try:
        with open(os.path.join(fw.dir, "flash", "latched%d.json" % c)) as f:
            return [r["code"] for r in json.loads(f.read().rsplit("\n", 2)[0])]
    except OSError:
        return []


def restart_after_powercut(fw):
    fw.powercut()
    fw.start()


# --- 1. close conditions and latched faults ---------------------------------------------


def test_weld_while_charging_is_latched_at_once_after_a_power_cut(fw):
    # The contacts weld while charging; the power goes before the charger ever
    # opened. Back on, the aux contact reads closed with the coil off.
    fw.charging(32)
    fw.cmd("fault", name="weld")
    fw.advance(100)
    restart_after_powercut(fw)
    c = fw.conn()
    w = fault(c, "weld")
    assert w and w["severity"] == "latched", c["faults"]
    assert tdiff(w["since"], booted_at(fw)) <= TICK_MS, "weld not latched at power-up"
    assert c["status"] == "Faulted" and c["error_code"] == "PowerSwitchFailure"
    assert "weld" in latched_on_flash(fw)
    fw.advance(5000)
    assert coil_closes(fw) == [], "coil commanded on with welded contacts"
    assert fault(fw.conn(), "weld")


@pytest.mark.parametrize("cut_after_ms", [30, 100])
def test_weld_just_detected_survives_a_power_cut(fw, cut_after_ms):
    # The weld is found 1 s after opening, then the power goes 30-100 ms later.
    # The contacts are freed before power returns, so only the record on flash
    # can tell the charger (the boot check sees them open).
    fw.charging(32)
    fw.cmd("fault", name="weld")
    fw.cmd("ev", state="B")
    fw.advance(AUX_MS - 50)
    for _ in range(30):
        if fault(fw.conn(), "weld"):
            break
        fw.advance(TICK_MS)
    assert fault(fw.conn(), "weld")
    # On flash the moment it is reported: not waiting for the store task.
    assert "weld" in latched_on_flash(fw)
    fw.advance(cut_after_ms)
    fw.cmd("clear", name="weld")
    restart_after_powercut(fw)
    assert not fw.conn()["aux"]
    fw.cmd("ev", state="C")
    fw.advance(5000)
    c = fw.conn()
    assert fault(c, "weld") and not c["contactor"], c
    assert coil_closes(fw) == []


@pytest.mark.parametrize("cut_after_ms", [20, 60, 500, 900])
def test_power_cut_between_opening_and_the_aux_check_keeps_the_weld(fw, cut_after_ms):
    fw.charging(32)
    fw.cmd("fault", name="weld")
    fw.cmd("ev", state="B")
    fw.advance(cut_after_ms)  # the coil is off, the aux check (1 s) not yet due
    restart_after_powercut(fw)
    fw.cmd("ev", state="C")
    fw.advance(5000)
    c = fw.conn()
    assert fault(c, "weld") and not c["contactor"], c
    assert coil_closes(fw) == []


def test_weld_after_a_reboot_is_latched_at_once_and_never_closed(fw):
    fw.charging(32)
    fw.cmd("fault", name="weld")
    fw.advance(100)
    fw.reboot()
    t = fw.now()
    c = fw.conn()
    assert fault(c, "weld"), c["faults"]
    fw.advance(5000)
    assert scope(fw, t, "coil", True) == []


def test_service_cleared_weld_is_cleared_on_flash_too(fw):
    fw.charging(32)
    fw.cmd("fault", name="weld")
    fw.cmd("ev", state="B")
    fw.advance(2000)
    fw.cmd("clear", name="weld")
    fw.advance(500)
    assert fw.cmd("service")["cleared"] == ["weld"]
    assert latched_on_flash(fw) == []
    restart_after_powercut(fw)
    assert not fw.conn()["faults"]


# --- 2. cable rating (PP) -----------------------------------------------------------------


@pytest.mark.parametrize("via", ["E", "F"])
def test_pp_is_read_when_the_plug_in_passes_through_e_or_f(fw, via):
    fw.cmd("plug", amps=13)
    fw.cmd("ev", state=via)
    fw.advance(1000)
    fw.cmd("ev", state="C")
    fw.advance(300)
    fw.cmd("token", tag="CARD1")
    fw.advance(3000)
    c = fw.conn()
    assert c["limits"]["cable"] == 13000, c["limits"]
    assert c["offered_ma"] <= 13000, c
    assert c["current_ma"] <= 13000 * 11 // 10, c
    assert all(v == 1000 or v <= 13000 // 60 for t, v in scope(fw, booted_at(fw), "duty")), scope(fw, booted_at(fw), "duty")


def test_cable_rating_unknown_offers_nothing(fw):
    # Before PP is read (nothing plugged) the cable's limit is unknown, not absent.
    c = fw.conn()
    assert c["limits"]["cable"] == "unknown" and c["limit_ma"] == 0 and c["limited_by"] == "cable", c
    fw.charging(20)
    assert fw.conn()["limits"]["cable"] == 20000
    fw.cmd("unplug")
    fw.advance(200)
    assert fw.conn()["limits"]["cable"] == "unknown"


def test_pp_read_again_when_the_cable_changes_without_an_unplug(fw):
    # A cable swapped faster than the pilot filter sees A (or a PP that
    # changes under a plug): the new, lower rating applies at once.
    fw.charging(32)
    t = fw.now()
    fw.cmd("plug", amps=13)
    fw.advance(3000)
    c = fw.conn()
    assert c["limits"]["cable"] == 13000 and c["offered_ma"] <= 13000, c
    assert all(v == 1000 or v <= 13000 // 60 for x, v in scope(fw, t + TICK_MS, "duty")), scope(fw, t, "duty")


def test_broken_pp_while_charging_stops_at_once(fw):
    fw.charging(32)
    fw.cmd("fault", name="pp")
    fw.advance(200)
    c = fw.conn()
    assert fault(c, "cable") and not c["contactor"] and c["offered_ma"] == 0, c


@pytest.mark.parametrize("how", ["reboot", "powercut"])
def test_pp_read_after_a_restart_with_the_plug_in(fw, how):
    fw.charging(20)
    if how == "reboot":
        fw.reboot()
    else:
        restart_after_powercut(fw)
    c = fw.conn()
    assert c["offered_ma"] == 0 and c["limits"]["cable"] in ("unknown", 20000), c
    fw.advance(3000)
    c = fw.conn()
    assert c["contactor"] and c["limits"]["cable"] == 20000 and c["offered_ma"] == 20000, c


# --- 3. the lock is released only after the contacts are proven open ----------------------


def assert_unlocks_after_open(fw, since, closed, boot=None):
    """Every lock release on the scope since `since` was commanded (the event
    less the motor's travel) at least UNLOCK_MARGIN_MS after the contacts
    were seen open with the coil off. `closed`: the contacts at `since`;
    `boot`: the firmware started then (its first aux reading)."""
    coil = contacts = closed
    open_at = None if closed else (boot if boot is not None else since)
    releases = 0
    for t, c, what, v in events(fw, since):
        if what == "coil":
            coil = v
        elif what == "contacts":
            contacts = v
        elif what == "locked" and v is False:
            releases += 1
            cmd = t - LOCK_TRAVEL_MS
            assert open_at is not None and not contacts and not coil, \
                "lock released at %d with the contacts closed: %s" % (t, events(fw, since))
            assert tdiff(cmd, open_at) >= UNLOCK_MARGIN_MS, \
                "unlock commanded %d ms after the contacts opened: %s" % (tdiff(cmd, open_at), events(fw, since))
            continue
        else:
            continue
        if coil or contacts:
            open_at = None
        elif open_at is None:
            open_at = t
    return releases


def _charge_card(fw):
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.advance(300)
    fw.cmd("token", tag="CARD1")
    fw.advance(3000)
    c = fw.conn()
    assert c["contactor"] and c["locked"], c
    return fw.now()


def _unplug(fw):
    t = _charge_card(fw)
    fw.cmd("unplug")
    fw.advance(2000)
    return t, None


def _stop(fw):
    t = _charge_card(fw)
    fw.cmd("stop")
    fw.advance(8000)
    return t, None


def _token(fw):
    t = _charge_card(fw)
    fw.cmd("token", tag="CARD1")
    fw.advance(8000)
    return t, None


def _fault(fw):
    t = _charge_card(fw)
    fw.cmd("fault", name="rcd")
    fw.advance(UNLOCK_FAULT_MS + 1000)
    return t, None


def _unavailable(fw):
    t = _charge_card(fw)
    fw.cmd("available", on=False)
    fw.advance(8000)
    return t, None


def _reboot(fw):
    t = _charge_card(fw)
    fw.reboot()
    fw.advance(2000)
    return t, None


def _powercut(fw):
    _charge_card(fw)
    restart_after_powercut(fw)
    fw.advance(2000)
    return None, booted_at(fw)


def _ctrl_c(fw):
    _charge_card(fw)
    fw.proc.send_signal(signal.SIGINT)
    assert fw.proc.wait(timeout=10) == 0
    fw.close()
    fw.start()
    fw.advance(2000)
    return None, booted_at(fw)


def _service(fw):
    # A weld keeps the plug locked past the 5 s fault unlock; the technician
    # frees the contacts (the plug is released once they read open), then
    # clears the latched fault.
    t = _charge_card(fw)
    fw.cmd("fault", name="weld")
    fw.cmd("ev", state="B")
    fw.advance(UNLOCK_FAULT_MS + AUX_MS + 1000)
    c = fw.conn()
    assert fault(c, "weld") and c["locked"], c
    fw.cmd("clear", name="weld")
    fw.advance(1000)
    assert fw.cmd("service")["cleared"] == ["weld"]
    fw.cmd("unplug")
    fw.advance(1000)
    return t, None


PATHS = {"unplug": _unplug, "stop": _stop, "token": _token, "fault": _fault, "unavailable": _unavailable,
         "reboot": _reboot, "powercut": _powercut, "ctrl_c": _ctrl_c, "service": _service}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_lock_released_only_after_the_contacts_are_open(make_fw, path):
    fw = make_fw(sets=["free_vend=false"])
    since, boot = PATHS[path](fw)
    if since is None:  # a new process: its scope starts at boot, contacts open
        n = assert_unlocks_after_open(fw, boot, False, boot)
    else:
        n = assert_unlocks_after_open(fw, since, True)
    assert n >= 1, "the lock was never released on %s: %s" % (path, fw.trace(0))
    assert fw.conn()["locked"] is False


def test_unplug_under_load_unlocks_after_the_contacts_open(fw):
    # The trace: coil off at +0, lock released at +50, contacts apart at +102.
    fw.charging(32)
    t = fw.now()
    fw.cmd("unplug")
    fw.advance(1000)
    apart = scope(fw, t, "contacts", False)[0][0]
    unlocked = scope(fw, t, "locked", False)[0][0]
    assert tdiff(unlocked - LOCK_TRAVEL_MS, apart) >= UNLOCK_MARGIN_MS, events(fw, t)


def test_welded_contacts_keep_the_plug_locked_after_a_power_cut(fw):
    fw.charging(32)
    fw.cmd("fault", name="weld")
    fw.cmd("unplug")  # the EV leaves; the plug stays in the socket's lock
    fw.advance(100)
    restart_after_powercut(fw)
    fw.advance(UNLOCK_FAULT_MS + 2000)
    c = fw.conn()
    assert fault(c, "weld") and c["aux"] and c["locked"] is True, c
    assert scope(fw, booted_at(fw), "locked", False) == []

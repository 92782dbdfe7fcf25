"""Protection (docs/reference.md "Protection", "OCPP 1.6 ChargePointErrorCode from device faults").

RCD retry policy, overcurrent, meter / temperature sensor / lock failures, the
latched welded contactor across reboot and power cut, the OCPP error code of every
fault and its log entry. All in simulated time; the plant's scope is fw.trace().
"""
import pytest
from scope import charge, fault, first, scope

TICK_MS = 10  # control period
RCD_RETRY_MS = 300_000  # config rcd_retry_s = 300: retry 5 min after a trip
RCD_RETRIES = 6  # config rcd_retries: then a hard fault
OC_WINDOW_MS = 7000  # EV above (offered + 0.5 A) * 1.1 for 7 s -> overcurrent
OC_OPEN_MS = 1000  # after the overcurrent PWM stop, open 1 s later
HOLD_F_MS = 300
FORCE_OPEN_MS = 6000  # EVSE-initiated stop: force open at 6 s
LOCK_MS = 1000  # the lock must report locked within this
CLOSE_MAX_MS = 3000

# docs/reference.md "OCPP 1.6 ChargePointErrorCode from device faults".
OCPP = {
    "rcd": "GroundFailure",  # RCD / GFCI
    "ground": "GroundFailure",  # no ground
    "diode": "GroundFailure",  # diode
    "pilot_short": "EVCommunicationError",  # pilot faults
    "pilot": "EVCommunicationError",
    "weld": "PowerSwitchFailure",  # welded contactor
    "switch": "PowerSwitchFailure",  # failed contactor
    "meter": "PowerMeterFailure",
    "lock": "ConnectorLockFailure",
    "overcurrent": "OverCurrentFailure",
    "overtemp": "HighTemperature",  # thermal shutdown
    # A failed temperature sensor has no code of its own: OtherError, with the
    # fault code as the vendor error code.
    "temp_sensor": "OtherError",
}


# --- helpers ------------------------------------------------------------------


def assert_charging(fw):
    st = fw.conn()
    assert st["contactor"] and st["aux"] and st["pwm"] and st["status"] == "Charging", st
    assert not [f for f in st["faults"] if f["severity"] != "derate"], st["faults"]


def assert_stopped_the_evse_way(fw, t_fault):
    """PWM off at once (F hold, then +12 V), the EV stops by itself (C->B),
    the contactor opens on the EV's C->B, not at once and not later than 6 s."""
    d = scope(fw, t_fault, "duty")
    assert d and d[0][0] - t_fault <= TICK_MS and not (0 < d[0][1] < 1000), d
    t_ev = first(fw, t_fault, "ev", "B")
    t_coil = first(fw, t_fault, "coil", False)
    assert t_coil >= t_ev, "opened before the EV stopped: not the EVSE way"
    assert t_coil - t_fault > HOLD_F_MS and t_coil - t_fault <= FORCE_OPEN_MS


# --- RCD retry policy ------------------------------------------------------------
def test_rcd_trip_retries_after_5_min_and_charges_again_when_the_cause_is_gone(fw):
    charge(fw)
    fw.advance(5000)
    fw.cmd("fault", name="rcd")
    fw.advance(100)
    st = fw.conn()
    r = fault(st, "rcd")
    assert r and r["severity"] == "recoverable" and not r["hard"] and st["rcd_trips"] == 1
    assert not st["contactor"] and st["status"] == "Faulted"
    fw.cmd("clear", name="rcd")  # residual current gone; the RCD stays tripped
    fw.advance(r["since"] + RCD_RETRY_MS - 100 - fw.now())
    assert fault(fw.conn(), "rcd"), "retried before %d s" % (RCD_RETRY_MS // 1000)
    fw.advance(100 + TICK_MS)
    st = fw.conn()
    assert not fault(st, "rcd"), "no retry after %d s" % (RCD_RETRY_MS // 1000)
    fw.advance(CLOSE_MAX_MS)
    assert_charging(fw)
    assert any("cleared rcd: retry 1 of 6" in e["msg"] for e in fw.log())


def test_rcd_at_most_6_retries_then_hard_fault_unplug_clears(fw):
    charge(fw)
    fw.advance(5000)
    fw.cmd("fault", name="rcd")  # the residual current stays: every retry trips again
    fw.advance(100)
    r = fault(fw.conn(), "rcd")
    for retry in range(1, RCD_RETRIES + 1):
        fw.advance(r["since"] + RCD_RETRY_MS - 100 - fw.now())
        st = fw.conn()
        assert fault(st, "rcd")["since"] == r["since"] and st["rcd_trips"] == retry
        fw.advance(200)
        st = fw.conn()
        nxt = fault(st, "rcd")
        assert nxt and st["rcd_trips"] == retry + 1
        assert 0 <= nxt["since"] - (r["since"] + RCD_RETRY_MS) <= 2 * TICK_MS
        r = nxt
    # The trip after the 6th retry is hard: no more retries.
    assert r["hard"], r
    fw.advance(3 * RCD_RETRY_MS)
    st = fw.conn()
    assert fault(st, "rcd")["since"] == r["since"] and st["rcd_trips"] == RCD_RETRIES + 1
    assert not st["contactor"] and st["status"] == "Faulted"
    # Unplugging clears the fault and the counter.
    fw.cmd("clear", name="rcd")
    fw.cmd("unplug")
    fw.advance(500)
    st = fw.conn()
    assert not fault(st, "rcd") and st["rcd_trips"] == 0 and st["status"] == "Available"
    charge(fw)
    assert_charging(fw)


# --- overcurrent ---------------------------------------------------------------------
def test_overcurrent_after_7s_pwm_off_then_open_1s_later(fw):
    offered_a = 16
    threshold_ma = (offered_a * 1000 + 500) * 11 // 10  # (offered + 0.5 A) * 1.1
    fw.cmd("limit", amps=offered_a)
    fw.cmd("evopt", greedy=True, obey=False)  # draws its 32 A demand whatever the duty
    fw.cmd("demand", amps=32)
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    t_over = fw.until(lambda s: s["connectors"][0]["current_ma"] > threshold_ma, step=TICK_MS, limit=10_000)
    fw.advance(t_over + OC_WINDOW_MS - 100 - fw.now())
    st = fw.conn()
    assert not fault(st, "overcurrent") and st["contactor"], "overcurrent before 7 s"
    fw.advance(100 + 2000)
    st = fw.conn()
    oc = fault(st, "overcurrent")
    assert oc, st["faults"]
    assert OC_WINDOW_MS <= oc["since"] - t_over <= OC_WINDOW_MS + TICK_MS
    assert oc["ocpp"] == "OverCurrentFailure" and st["error_code"] == "OverCurrentFailure"
    # Pilot to F / +12 V at once (no PWM), then open 1 s later.
    d = scope(fw, oc["since"], "duty")
    assert d[0][0] == oc["since"] and not (0 < d[0][1] < 1000), d
    t_coil = first(fw, oc["since"], "coil", False)
    assert OC_OPEN_MS <= t_coil - oc["since"] <= OC_OPEN_MS + TICK_MS
    assert not st["contactor"] and st["status"] == "Faulted"


def test_ev_just_below_the_overcurrent_threshold_is_no_fault(fw):
    fw.cmd("limit", amps=16)
    fw.cmd("evopt", greedy=True)
    fw.cmd("demand", amps=18)  # 18.0 A < (16 + 0.5) * 1.1 = 18.15 A
    charge(fw)
    fw.advance(60_000)
    st = fw.conn()
    assert st["current_ma"] == 18_000 and not st["faults"] and st["contactor"], st


# --- meter and temperature sensor ---------------------------------------------------------
def test_meter_failure_stops_the_evse_way_and_clears_when_the_meter_answers(fw):
    charge(fw)
    fw.advance(5000)
    t_f = fw.now()
    fw.cmd("fault", name="meter")
    fw.advance(FORCE_OPEN_MS + 1000)
    st = fw.conn()
    m = fault(st, "meter")
    assert m and m["since"] == t_f and st["error_code"] == "PowerMeterFailure" and st["status"] == "Faulted"
    assert_stopped_the_evse_way(fw, t_f)
    fw.cmd("clear", name="meter")
    fw.advance(CLOSE_MAX_MS)
    assert not fault(fw.conn(), "meter")
    assert_charging(fw)


def test_temperature_sensor_failure_stops_and_clears_when_the_sensor_answers(fw):
    charge(fw)
    fw.advance(5000)
    t_f = fw.now()
    fw.cmd("fault", name="temp_sensor")
    fw.advance(FORCE_OPEN_MS + 1000)
    st = fw.conn()
    ts = fault(st, "temp_sensor")
    assert ts and ts["since"] == t_f and st["status"] == "Faulted"
    assert st["error_code"] == OCPP["temp_sensor"]
    assert_stopped_the_evse_way(fw, t_f)
    fw.cmd("clear", name="temp_sensor")  # the sensor answers again, at 25 C
    fw.advance(CLOSE_MAX_MS)
    st = fw.conn()
    assert not fault(st, "temp_sensor"), st["faults"]
    assert_charging(fw)


def test_ev_plugged_in_during_a_fault_charges_once_it_clears(fw):
    # Free vend: an EV that was plugged in while the charger was faulted (here
    # the meter did not answer) charges once the fault is gone, without
    # having to be unplugged and plugged in again.
    fw.cmd("fault", name="meter")
    fw.advance(1000)
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.advance(2000)
    st = fw.conn()
    assert fault(st, "meter") and not st["contactor"] and st["status"] == "Faulted"
    fw.cmd("clear", name="meter")
    fw.advance(CLOSE_MAX_MS)
    assert_charging(fw)


# --- welded contactor: latched ------------------------------------------------------------
def weld(fw):
    charge(fw)
    fw.cmd("fault", name="weld")
    fw.cmd("ev", state="B")
    fw.advance(2000)  # aux check 1 s after opening, then the store saves it (1 s)
    st = fw.conn()
    w = fault(st, "weld")
    assert w and w["severity"] == "latched" and st["error_code"] == "PowerSwitchFailure"
    return w


def assert_welded(fw):
    st = fw.conn()
    assert fault(st, "weld"), st["faults"]
    assert st["status"] == "Faulted" and st["error_code"] == "PowerSwitchFailure"
    assert not st["contactor"]


def test_weld_survives_reboot_and_powercut_until_service(fw):
    weld(fw)
    # The cause is still there: reboot, power cut, unplug, service change nothing.
    fw.reboot()
    fw.advance(1000)
    assert_welded(fw)
    fw.powercut()
    fw.start()
    fw.advance(1000)
    assert_welded(fw)
    r = fw.request({"op": "service"})
    assert not r["ok"], "service cleared a weld whose contacts are still closed"
    assert_welded(fw)
    # The technician frees the contacts; the fault stays latched ...
    fw.cmd("clear", name="weld")
    fw.advance(2000)
    assert not fw.conn()["aux"]
    assert_welded(fw)
    fw.cmd("unplug")
    fw.advance(1000)
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.advance(3000)
    assert_welded(fw)
    assert scope(fw, 0, "coil", True) == [], "closed with a latched weld"
    # ... across a reboot and a power cut with the cause gone ...
    fw.reboot()
    fw.advance(1000)
    assert_welded(fw)
    fw.powercut()
    fw.start()
    fw.advance(1000)
    assert_welded(fw)
    # ... until the service command clears it.
    r = fw.cmd("service")
    assert r["cleared"] == ["weld"]
    fw.advance(1000)
    st = fw.conn()
    assert not st["faults"] and st["error_code"] == "NoError", st
    fw.cmd("unplug")
    fw.advance(1000)
    charge(fw)
    assert_charging(fw)
    assert any("cleared weld: service command" in e["msg"] for e in fw.log())


# --- connector lock ------------------------------------------------------------------------
def test_lock_failure_never_closes(fw):
    fw.cmd("fault", name="lock")  # the lock actuator is jammed
    t0 = fw.now()
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.advance(LOCK_MS + 200)
    st = fw.conn()
    lk = fault(st, "lock")
    assert lk and st["error_code"] == "ConnectorLockFailure" and st["status"] == "Faulted", st
    t_cmd = [e["t"] for e in fw.log() if e["msg"] == "connector lock"][0]
    assert LOCK_MS <= lk["since"] - t_cmd <= LOCK_MS + TICK_MS
    fw.advance(30_000)
    assert scope(fw, t0, "coil", True) == [], "closed without a locked connector"
    assert not fw.conn()["contactor"]
    # Unplugging clears it; with a working lock the next charge goes ahead.
    fw.cmd("clear", name="lock")
    fw.cmd("unplug")
    fw.advance(500)
    assert not fw.conn()["faults"]
    charge(fw)
    assert_charging(fw)


# --- every fault: OCPP error code and log entry -----------------------------------------------
def _while_charging(name):
    def go(fw):
        charge(fw)
        fw.advance(5000)
        fw.cmd("fault", name=name)
        fw.advance(3000)  # faults that stop the EVSE way open when the EV stops (~1 s)
    return go


def _before_plug(name, wait=3000):
    def go(fw):
        fw.cmd("fault", name=name)
        fw.cmd("plug", amps=32)
        fw.cmd("ev", state="C")
        fw.advance(wait)
    return go


def _weld(fw):
    charge(fw)
    fw.cmd("fault", name="weld")
    fw.cmd("ev", state="B")
    fw.advance(2000)


def _short(fw):
    charge(fw)
    fw.cmd("ev", state="E")
    fw.advance(500)


def _overcurrent(fw):
    fw.cmd("limit", amps=16)
    fw.cmd("evopt", greedy=True)
    charge(fw)
    fw.advance(10_000)


def _overtemp(fw):
    charge(fw)
    fw.cmd("temp", celsius=75)
    fw.advance(3000)


TRIGGERS = {
    "rcd": _while_charging("rcd"),
    "ground": _while_charging("ground"),
    "diode": _while_charging("diode"),
    "pilot_short": _short,
    "pilot": _while_charging("pilot_f"),
    "weld": _weld,
    "switch": _before_plug("stuck_open"),
    "meter": _while_charging("meter"),
    "lock": _before_plug("lock"),
    "overcurrent": _overcurrent,
    "overtemp": _overtemp,
    "temp_sensor": _while_charging("temp_sensor"),
}


@pytest.mark.parametrize("code", sorted(TRIGGERS))
def test_fault_error_code_and_log_entry(fw, code):
    TRIGGERS[code](fw)
    st = fw.conn()
    f = fault(st, code)
    assert f, "expected fault %s, have %s" % (code, st["faults"])
    assert f["ocpp"] == OCPP[code], f
    assert st["error_code"] == OCPP[code] and st["status"] == "Faulted", st
    assert not st["contactor"]
    assert f["cause"]
    # Logged as an error, at the time it was raised, with its code, OCPP code and cause.
    hits = [e for e in fw.log() if e["level"] == 40 and e["src"] == "conn1" and ("fault %s " % code) in e["msg"]]
    assert hits, fw.log()
    e = hits[0]
    assert e["t"] == f["since"] and e["time"] == f["time"]
    assert OCPP[code] in e["msg"] and f["cause"] in e["msg"]

"""Thermal derating (docs/reference.md "Protection", thermal; config DERATE defaults).

Default curve (firmware/core/config.py, after OpenEVSE): 50 % at 65 C, 25 % at 68 C,
shutdown at 71 C (HighTemperature), resume at 62 C on the lowest step; steps back up
need the temperature 3 C below the step's point and 30 s since the last change.

bench temp(c) holds the charger at c (ambient = c); the plant still adds its small
self-heating with current, so the temperatures below keep >= 0.9 C from every
threshold. Duty per mille = A / 0.6 * 10 for 6..51 A.
"""

from scope import fault, first, scope

TICK_MS = 10
MAX_A = 32  # config max_current_a (and the 32 A cable)
STEP_C = [(65, 50), (68, 25)]  # config derate.points
HYSTERESIS_C = 3
SHUTDOWN_C = 71
RESUME_C = 62
INTERVAL_MS = 30_000  # config derate.min_interval_s
HOLD_F_MS = 300
FORCE_OPEN_MS = 6000
CLOSE_MAX_MS = 3000
TAU_S = 600  # plant: thermal time constant; ~25 C rise at 32 A


def duty(amps_ma):
    return amps_ma // 60


FULL = MAX_A * 1000  # 32 A -> duty 533
HALF = MAX_A * 1000 * 50 // 100  # 16 A -> duty 266
QUARTER = MAX_A * 1000 * 25 // 100  # 8 A -> duty 133


# --- helpers ------------------------------------------------------------------


def set_temp(fw, celsius):
    fw.cmd("temp", celsius=celsius)
    return fw.now()


def offered(fw):
    st = fw.conn()
    return st["offered_ma"], st["duty_pm"]


def assert_offers(fw, ma):
    st = fw.conn()
    assert (st["offered_ma"], st["duty_pm"]) == (ma, duty(ma)), (st["offered_ma"], st["duty_pm"], fw.status()["temp_c"])
    assert st["contactor"] and st["status"] == "Charging", st


def charging(fw):
    fw.charging(MAX_A)
    fw.advance(5000)
    assert_offers(fw, FULL)


# --- default curve -----------------------------------------------------------
def test_steps_down_at_once_when_hotter(fw):
    charging(fw)
    t = set_temp(fw, 66)  # >= 65 C: 50 %
    fw.advance(TICK_MS)
    assert scope(fw, t, "duty") == [(t, duty(HALF))], "not at once: %s" % scope(fw, t, "duty")
    assert_offers(fw, HALF)
    s = fw.status()
    assert s["derate_pct"] == 50
    assert fault(s["connectors"][0], "hot")["severity"] == "derate"  # informational, charging goes on
    t = set_temp(fw, 69)  # >= 68 C: 25 %
    fw.advance(TICK_MS)
    assert scope(fw, t, "duty") == [(t, duty(QUARTER))]
    assert_offers(fw, QUARTER)
    assert fw.status()["derate_pct"] == 25
    # The EV follows the lower duty.
    fw.advance(5000)
    assert fw.conn()["current_ma"] <= QUARTER


def test_steps_up_only_3c_below_the_point(fw):
    charging(fw)
    set_temp(fw, 69)
    fw.advance(TICK_MS)
    assert_offers(fw, QUARTER)
    # 66 C is below 68 C but within the 3 C hysteresis: stays at 25 %.
    set_temp(fw, 66)
    fw.advance(2 * INTERVAL_MS)
    assert_offers(fw, QUARTER)
    # 64 C is more than 3 C below 68 C: one step up (30 s have passed: at once).
    t = set_temp(fw, 64)
    fw.advance(TICK_MS)
    assert scope(fw, t, "duty") == [(t, duty(HALF))]
    assert_offers(fw, HALF)
    # 63 C is below 65 C but within 3 C of it: stays at 50 %.
    set_temp(fw, 63)
    fw.advance(2 * INTERVAL_MS)
    assert_offers(fw, HALF)
    # 61 C: full current again.
    t = set_temp(fw, 61)
    fw.advance(TICK_MS)
    assert scope(fw, t, "duty") == [(t, duty(FULL))]
    assert_offers(fw, FULL)
    assert fw.status()["derate_pct"] == 100 and not fw.conn()["faults"]


def test_steps_up_not_before_30s_since_the_last_change(fw):
    charging(fw)
    t_down = set_temp(fw, 69)
    fw.advance(5000)
    set_temp(fw, 64)  # cool enough for one step up, 5 s after the step down
    fw.advance(t_down + INTERVAL_MS - 500 - fw.now())
    assert_offers(fw, QUARTER)
    fw.advance(1500)
    t_up = first(fw, t_down + 1, "duty", duty(HALF))
    assert INTERVAL_MS <= t_up - t_down <= INTERVAL_MS + 1000  # checked once a second at most
    assert_offers(fw, HALF)


def test_two_steps_up_are_30s_apart(fw):
    charging(fw)
    t_down = set_temp(fw, 69)
    fw.advance(TICK_MS)
    set_temp(fw, 60)  # cool enough for both steps at once: still one step per 30 s
    fw.advance(2 * INTERVAL_MS + 2000)
    ups = [t for t, v in scope(fw, t_down + 1, "duty") if v in (duty(HALF), duty(FULL))]
    assert [v for t, v in scope(fw, t_down + 1, "duty")] == [duty(HALF), duty(FULL)]
    assert ups[0] - t_down >= INTERVAL_MS and ups[1] - ups[0] >= INTERVAL_MS
    assert ups[1] - ups[0] <= INTERVAL_MS + 1000


def test_shutdown_at_71c_stops_the_evse_way_and_resumes_at_62c(fw):
    charging(fw)
    t = set_temp(fw, SHUTDOWN_C + 1)
    fw.advance(FORCE_OPEN_MS + 1000)
    st = fw.conn()
    ot = fault(st, "overtemp")
    assert ot and ot["since"] == t
    assert st["status"] == "Faulted" and st["error_code"] == "HighTemperature"
    assert fw.status()["derate_pct"] == 0
    # EVSE-initiated stop: PWM off at once, the EV goes to B, then the contactor opens.
    d = scope(fw, t, "duty")
    assert d[0][0] == t and not (0 < d[0][1] < 1000), d
    assert all(not (0 < v < 1000) for _, v in d), d
    t_ev = first(fw, t, "ev", "B")
    t_coil = first(fw, t, "coil", False)
    assert t_ev <= t_coil <= t_ev + 100
    assert not st["contactor"]
    # Cooling to 63 C (below the derate points, above resume) is not enough.
    set_temp(fw, RESUME_C + 1)
    fw.advance(2 * INTERVAL_MS)
    assert fault(fw.conn(), "overtemp") and fw.conn()["status"] == "Faulted"
    # At 62 C it resumes, on the lowest step first.
    set_temp(fw, RESUME_C - 1)
    fw.advance(CLOSE_MAX_MS)
    assert not fault(fw.conn(), "overtemp")
    assert_offers(fw, QUARTER)
    fw.advance(2 * INTERVAL_MS + 2000)
    assert_offers(fw, FULL)
    assert not fw.conn()["faults"]


def test_configured_curve_is_honoured(make_fw):
    fw = make_fw(sets=["derate.points=[[50,75],[60,40]]"])
    charging(fw)
    set_temp(fw, 51)
    fw.advance(TICK_MS)
    assert_offers(fw, FULL * 75 // 100)  # 24 A -> duty 400
    assert fw.conn()["duty_pm"] == 400
    set_temp(fw, 61)
    fw.advance(TICK_MS)
    assert_offers(fw, FULL * 40 // 100)  # 12.8 A -> duty 213
    assert fw.status()["derate_pct"] == 40
    # 65 C, a default derate point, is no step of this curve; 71 C still shuts down.
    set_temp(fw, 66)
    fw.advance(TICK_MS)
    assert_offers(fw, FULL * 40 // 100)
    set_temp(fw, 72)
    fw.advance(TICK_MS)
    assert fault(fw.conn(), "overtemp")


def test_warm_day_long_charge_derates_before_shutdown(fw):
    # 45 C ambient plus ~25 C self-heating at 32 A would end at 70 C: the
    # derate must bring the current down well before the 71 C shutdown.
    fw.cmd("ambient", celsius=45)
    fw.charging(MAX_A)
    samples = []
    for _ in range(120):  # 1 h in 30 s steps
        fw.advance(30_000)
        s = fw.status()
        c = s["connectors"][0]
        samples.append((s["t"], s["plant"]["temp_c"], c["offered_ma"], c["status"], [f["code"] for f in c["faults"]]))
    derated = [x for x in samples if 0 < x[2] < FULL]
    assert derated, "never derated; max %.1f C" % max(x[1] for x in samples)
    t0, temp0 = derated[0][0], derated[0][1]
    assert STEP_C[0][0] - 1 <= temp0 < SHUTDOWN_C, derated[0]
    assert max(x[1] for x in samples) < SHUTDOWN_C
    assert all(x[3] == "Charging" and "overtemp" not in x[4] for x in samples), \
        [x for x in samples if x[3] != "Charging"][:3]
    # It kept charging all along, at reduced current while hot.
    assert all(x[2] >= QUARTER for x in samples)

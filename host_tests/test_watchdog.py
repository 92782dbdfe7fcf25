"""The software watchdog (firmware/core/sched.py) against a stalled control task.

The bench `stall` command makes the control task hang for ms of simulated time
after its next run. The watchdog then puts the charger in a safe state (coil
off, pilot F), raises the "watchdog" fault (InternalError) and logs which task
stalled; when the task runs again the fault clears and charging resumes.

Detection time in simulated (tickless) time, from sched.py: the watchdog
checks once a simulated second (CHECK) and flags a task more than GRACE past
its due time. The control task is due again one period after a run while
anything moves (closing, ramping), and up to SLOW_MS later when all is quiet.
So from the stall: at most due + GRACE + CHECK, i.e. PERIOD (or SLOW_MS) +
250 ms + 1 s. A stall longer than the simulated hardware watchdog (5 s
unfed) resets the board.
"""
import pytest

PERIOD = 10
GRACE = 250
CHECK = 1000
SLOW_MS = 1000
WDT_MS = 5000


def codes(c):
    return [f["code"] for f in c["faults"]]


def stall_until_open(fw, ms, limit=5000):
    """Stall the control task at the current time; advance 10 ms at a time
    until the coil is off. Returns (stall time, status when open, log seq)."""
    t0 = fw.now()
    seq = fw.cmd("log", n=1)["seq"]
    fw.cmd("stall", ms=ms)
    while fw.now() - t0 <= limit:
        s = fw.status()
        if not s["connectors"][0]["contactor"]:
            return t0, s, seq
        fw.advance(10)
    raise AssertionError("contactor still closed %d ms into a %d ms stall" % (limit, ms))


def check_safe_state(fw, t0, s, seq, bound):
    c = s["connectors"][0]
    coil = [e for e in fw.trace(t0) if e[2] == "coil"]
    assert coil and coil[0][3] is False, coil
    t_off = coil[0][0]
    assert t0 + GRACE < t_off <= t0 + bound, (t0, t_off, bound)
    assert [e for e in fw.trace(t0) if e[2] == "duty"][0][3] == 0  # pilot at F
    assert s["watchdog"] == "control", s["watchdog"]
    f = [f for f in c["faults"] if f["code"] == "watchdog"]
    assert f and f[0]["ocpp"] == "InternalError" and f[0]["severity"] == "recoverable", c["faults"]
    assert c["error_code"] == "InternalError" and c["status"] == "Faulted", c
    lines = [e for e in fw.log(seq) if e["src"] == "watchdog"]
    assert any("control" in e["msg"] and "stalled" in e["msg"] for e in lines), lines
    assert "watchdog: control task stalled" in fw.console()
    return t_off


def check_recovers(fw, t0, stall_ms):
    # Still safe while the task is stuck.
    fw.advance(max(0, t0 + stall_ms - fw.now()))
    assert not any(e[2] == "coil" and e[3] for e in fw.trace(t0)), fw.trace(t0)
    c = fw.conn()
    assert not c["contactor"] and "watchdog" in codes(c), c
    # Back: the watchdog sees it at its next check, the fault clears, the EV
    # (still plugged in, still asking) gets its energy again.
    fw.advance(CHECK + 1000 + 3000)
    s = fw.status()
    c = s["connectors"][0]
    assert s["watchdog"] == "ok" and "watchdog" not in codes(c), s
    assert c["contactor"] and c["status"] == "Charging", c
    assert any("running again" in e["msg"] for e in fw.log(0) if e["src"] == "watchdog")
    assert s["boots"] == 1


def test_stall_while_the_loop_ticks_every_period(fw):
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.advance(1500)  # closed at ~530 ms: the loop runs every period while the contactor settles
    assert fw.conn()["contactor"]
    t0, s, seq = stall_until_open(fw, 3000)
    check_safe_state(fw, t0, s, seq, PERIOD + GRACE + CHECK + PERIOD)
    check_recovers(fw, t0, 3000)


def test_stall_in_steady_charging(fw):
    fw.charging(32)
    fw.advance(60_000)  # quiet: the loop sleeps up to SLOW_MS between runs
    t0, s, seq = stall_until_open(fw, 3000)
    check_safe_state(fw, t0, s, seq, SLOW_MS + GRACE + CHECK + PERIOD)
    check_recovers(fw, t0, 3000)


def test_contacts_open_and_the_plug_stays_locked_in_the_safe_state(fw):
    fw.charging(32)
    fw.advance(10_000)
    t0, s, seq = stall_until_open(fw, 4000)
    t_off = [e for e in fw.trace(t0) if e[2] == "coil"][0][0]
    assert s["connectors"][0]["locked"] is True  # nothing unlocks while the loop is stuck
    fw.advance(4000)
    # The contacts followed the coil within the contactor's 100-110 ms (the
    # trace stamps the instant they moved).
    opened = [e for e in fw.trace(t0) if e[2] == "contacts"]
    assert opened and opened[0][3] is False and opened[0][0] - t_off <= 110, (t_off, opened)
    assert fw.conn()["locked"] is True


def test_the_plant_moves_on_while_the_control_task_is_stuck(fw):
    # The simulated world (contactor, EV, meter) is stepped by the control
    # task's sampling; while that task hangs, a bench reading of the plant
    # should still show what the real world does: contacts open ~100 ms
    # after the watchdog dropped the coil, no current flowing.
    fw.charging(32)
    fw.advance(10_000)
    t0, s, seq = stall_until_open(fw, 4000)
    fw.advance(200)
    p = fw.status()["plant"]
    assert p["contacts"] == [False] and p["draw_ma"] == [0], p


def test_short_stall_is_no_false_alarm(fw):
    fw.charging(32)
    fw.advance(10_000)
    t0 = fw.now()
    fw.cmd("stall", ms=GRACE - 50)
    fw.advance(3000)
    s = fw.status()
    c = s["connectors"][0]
    assert s["watchdog"] == "ok" and "watchdog" not in codes(c) and c["contactor"], c
    assert not [e for e in fw.trace(t0) if e[2] == "coil"]


def test_unplug_during_a_stall_never_closes_again(fw):
    fw.charging(32)
    fw.advance(10_000)
    t0, s, seq = stall_until_open(fw, 3000)
    fw.cmd("unplug")
    fw.advance(6000)
    c = fw.conn()
    assert not c["contactor"] and c["pilot"] == "A" and c["status"] == "Available", c
    assert not any(e[2] == "coil" and e[3] for e in fw.trace(t0))


def test_stall_beyond_the_hardware_watchdog_resets_the_board(fw):
    fw.charging(32)
    fw.advance(60_000)
    t0, s, seq = stall_until_open(fw, 20_000)
    check_safe_state(fw, t0, s, seq, SLOW_MS + GRACE + CHECK + PERIOD)
    # Unfed for WDT_MS: the board resets (checked once a second).
    fw.advance(WDT_MS + 2 * CHECK + 1000)
    s = fw.status()
    assert s["boots"] == 2, s["boots"]
    assert "hardware watchdog expired" in fw.console()
    with open(fw.dir + "/flash/log.txt") as f:
        text = f.read()
    assert "watchdog: control task stalled" in text and "hardware watchdog expired" in text
    # Never closed from the stall to the reset; then the fresh firmware charges.
    coil = [e for e in fw.trace(t0) if e[2] == "coil"]
    closes = [e for e in coil if e[3]]
    assert coil[0][3] is False and (not closes or closes[0][0] > t0 + WDT_MS), coil
    fw.advance(3000)
    c = fw.conn()
    assert c["contactor"] and c["faults"] == [], c

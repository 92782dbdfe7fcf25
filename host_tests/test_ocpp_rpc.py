"""OCPP-J framing and validation on the Unix port: what the CSMS sends is
checked against the official 1.6 schemas and every CALL gets one answer."""
import datetime
import json

from hypothesis import given, settings, strategies as st

from mp import run_mp


def mp_json(code):
    p = run_mp(code)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@settings(max_examples=5, deadline=None)
@given(st.lists(st.integers(-2_000_000_000, 4_000_000_000), min_size=50, max_size=50))
def test_rfc3339_round_trip_matches_cpython(stamps):
    out = mp_json("from firmware.core import timefmt\nimport json\nprint(json.dumps([timefmt.format(t) for t in %r]))"
                  % (stamps,))
    for t, s in zip(stamps, out):
        want = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert s == want
    back = mp_json("from firmware.core import timefmt\nimport json\nprint(json.dumps([timefmt.parse(s) for s in %r]))"
                   % (out,))
    assert back == stamps


def test_rfc3339_offsets_fractions_and_garbage():
    cases = ["2026-11-21T10:00:00Z", "2026-11-21T10:00:00.123456+01:00", "2026-11-21t10:00:00-05:30",
             "2026-11-21T10:00:00", "2026-02-30T10:00:00Z", "21-11-2026T10:00:00Z", "2026-11-21T25:00:00Z",
             "2026-11-21T10:00:00.Z", "", "2026-11-21T10:00:00+0100"]
    got = mp_json("from firmware.core import timefmt\nimport json\nprint(json.dumps([timefmt.parse(s) for s in %r]))"
                  % (cases,))
    assert got[0] == 1795255200
    assert got[1] == 1795255200 - 3600
    assert got[2] == 1795255200 + 5 * 3600 + 1800
    # No zone, a month in the wrong place, hour 25, an empty fraction, nothing,
    # an offset without its colon: not RFC 3339.
    assert got[3] is None and got[5:] == [None] * 5
    # Day 30 of February is not checked against the month (schema validation
    # only needs a well-formed stamp); it lands on 2 March.
    assert got[4] == 1772445600


# An Rpc on the Unix port with an in-memory pipe for a WebSocket (also used
# by test_ocpp_security_events.py).
RPC_PIPE = r"""
import asyncio, json
from firmware.core.clock import RealClock
from firmware.core.log import Log
from firmware.ocpp.rpc import Rpc

class Pipe:
    def __init__(s): s.out = []; s.inq = []; s.ev = asyncio.Event()
    async def send(s, t): s.out.append(json.loads(t))
    async def recv(s):
        while not s.inq:
            s.ev.clear(); await s.ev.wait()
        return s.inq.pop(0)

clock = RealClock()
rpc = Rpc(clock, Log(clock))
"""

FRAMES = RPC_PIPE + r"""
async def reset(p): return {"status": "Accepted"}
async def broken(p): raise ValueError("bug")
rpc.handlers["Reset"] = reset
rpc.handlers["ClearCache"] = broken
rpc.handlers["ChangeAvailability"] = reset

async def main():
    p = Pipe()
    asyncio.create_task(rpc.run(p))
    for f in FRAMES:
        p.inq.append(f); p.ev.set()
        await asyncio.sleep_ms(2)
    print(json.dumps({"out": p.out, "invalid": rpc.invalid}))
asyncio.run(main())
"""


def test_every_call_gets_the_specified_answer():
    frames = [
        '[2,"a","Reset",{"type":"Soft"}]',
        '[2,"b","Reset",{"type":"soft"}]',                 # bad enum
        '[2,"c","Reset",{}]',                              # missing required
        '[2,"d","Reset",{"type":"Soft","extra":1}]',       # not in the schema
        '[2,"e","ChangeAvailability",{"connectorId":"1","type":"Operative"}]',  # wrong type
        '[2,"f","FlyToTheMoon",{}]',                       # not a 1.6 action
        '[2,"g","UnlockConnector",{"connectorId":1}]',     # 1.6, no handler here
        '[2,"h","ClearCache",{}]',                         # handler raises
        '[2,"i","Reset"]',                                 # short CALL
        '[2,"j","Reset",[1]]',                             # payload not an object
        'not json', '{"an":"object"}', '[9,"k",{}]', '[2,7,"Reset",{}]',  # cannot be answered
    ]
    r = mp_json("FRAMES = %r\n" % frames + FRAMES)
    answers = {m[1]: (m[0], m[2] if m[0] == 4 else m[2]) for m in r["out"]}
    assert answers["a"] == (3, {"status": "Accepted"})
    assert answers["b"] == (4, "PropertyConstraintViolation")
    assert answers["c"] == (4, "OccurenceConstraintViolation")
    assert answers["d"] == (4, "FormationViolation")
    assert answers["e"] == (4, "TypeConstraintViolation")
    assert answers["f"] == (4, "NotImplemented")
    assert answers["g"] == (4, "NotSupported")
    assert answers["h"] == (4, "InternalError")
    assert answers["i"] == (4, "FormationViolation")
    assert answers["j"] == (4, "FormationViolation")
    assert len(r["out"]) == 10  # one answer per answerable CALL, nothing for the rest
    assert r["invalid"] == 4

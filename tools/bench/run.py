"""Firmware benchmarks on the MicroPython Unix port (`make bench`).

Prints figures, not pass/fail:
  1. control-loop lateness (real time) with no load and while JSON, store
     writes and TLS handshakes to a local TLS server load the asyncio loop
     (tools/bench/mp_lateness.py); also asyncio loop iterations per second
     with and without one idle TLS stream open;
  2. simulated seconds per wall second for a 24 h charging scenario in step
     mode, driven over the control channel (host_tests/fwproc.py), and the
     same in-process with and without an idle TLS stream (tools/bench/mp_simrate.py);
  3. the smallest `-X heapsize` in which a plug-charge-derate-unplug scenario
     runs correctly, for the whole Unix firmware (control channel on, REPL off)
     and for the station alone in-process from .py and from .mpy
     (tools/bench/mp_heap.py), plus live-heap figures (gc) and
     micropython.mem_peak() from inside.

The TLS server's certificate is self-signed RSA 2048, made with the
`cryptography` package if importable, else with `openssl req`.

  4. OCPP: CALL round trips per second to the dev CSMS, live heap during a
     session with MeterValues every second, and control-loop lateness while
     the CSMS floods the charger with CALLs (tools/bench/mp_ocpp.py).

  5. OTA: verifying a 1 MiB signed bundle (the firmware for esp32, rp2040 and
     unix, padded with a generated data module to 1 MiB, made by
     tools/release.py bundle; signed with ECDSA P-256 and with RSA-3072 keys
     from tools/release.py keys --alg): median ms of the whole verify and of
     its SHA-256 and signature parts, and the smallest -X heapsize in which
     the verify passes (tools/bench/mp_ota.py).

  6. A firmware update of the Unix board (tools/bench/mp_update.py): real
     time of download, signature, image check, install into the slot, the
     next boot's slot check and the new image's import; the smallest
     -X heapsize for download + verify and for + install; and a whole
     SignedUpdateFirmware against the dev CSMS from Installing to Installed
     (confirmed), real and simulated time.

  7. Allocation by the control tick (tools/bench/mp_alloc.py): bytes per
     1,000 ticks in each connector state (charging, every fault, derated,
     RCD retry wait, EVSE stop, lock failure), and in demo mode the plant's
     own step (time and bytes per tick), which runs outside the tick.

  8. Control-loop lateness (real time) while the charger keeps charging and
     a full signed update (download, signature and chain, image check,
     install) runs again and again (tools/bench/mp_lateness.py, phase
     "update"); goal on the Unix port: p99 <= 5 ms, max <= 20 ms.

  .venv/bin/python tools/bench/run.py [--only lateness,sim24h,heap,ocpp,ota,update,alloc,updlate] [--seconds S]
"""
import argparse
import json
import os
import shutil
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "host_tests"))

from fwproc import FirmwareProcess, micropython  # noqa: E402

SUMMARY = []  # (label, value) lines for the final block


def say(*a):
    print(*a, flush=True)


def summary(label, value):
    SUMMARY.append((label, value))


# --- 1. lateness under load ---------------------------------------------------

def make_cert(d):
    """Self-signed RSA-2048 certificate for 127.0.0.1: `cryptography` if the
    interpreter has it, else the `openssl` command. Returns (cert, key, how)."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    try:
        import datetime
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
        import ipaddress
    except ImportError:
        openssl = shutil.which("openssl")
        if not openssl:
            raise RuntimeError("neither the cryptography package nor the openssl command is available")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        return cert, key, "openssl req (RSA 2048)"
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
         .sign(k, hashes.SHA256()))
    with open(key, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()))
    with open(cert, "wb") as f:
        f.write(c.public_bytes(serialization.Encoding.PEM))
    return cert, key, "cryptography (RSA 2048)"


class TLSServer:
    """TLS on 127.0.0.1: per connection, read one line, answer b"pong\\n", close."""

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.handshakes = 0
        self.errors = 0
        self.last_error = None
        self.versions = {}
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.settimeout(10)
                try:
                    with outer.ctx.wrap_socket(self.request, server_side=True) as s:
                        v = "%s %s" % (s.version(), s.cipher()[0])
                        outer.versions[v] = outer.versions.get(v, 0) + 1
                        outer.handshakes += 1
                        buf = b""
                        while not buf.endswith(b"\n") and len(buf) < 100:
                            chunk = s.recv(100)
                            if not chunk:
                                break
                            buf += chunk
                        s.sendall(b"pong\n")
                except (OSError, ssl.SSLError) as e:
                    outer.errors += 1
                    outer.last_error = repr(e)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


PHASES = "idle,json,store,tls,all"
EXTRA = "spin:2,spin+tlsidle:2,json+tlsidle:3"


def bench_lateness(seconds, srv):
    say("\n== 1. control-loop lateness under load (RealClock, %s s per phase) ==" % seconds)
    d = tempfile.mkdtemp(prefix="bench-late-")
    try:
        hs0 = srv.handshakes
        cmd = [micropython(), os.path.join(HERE, "mp_lateness.py"), "--dir", os.path.join(d, "sim"),
               "--seconds", str(seconds), "--tls-port", str(srv.port), "--phases", PHASES + "," + EXTRA]
        t0 = time.monotonic()
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds * 10 + 60)
        wall = time.monotonic() - t0
        tls_info = dict(srv.versions), srv.handshakes - hs0, srv.errors, srv.last_error
    finally:
        shutil.rmtree(d, ignore_errors=True)
    results = []
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            results.append(json.loads(line[7:]))
        else:
            say("  mp: " + line)
    if p.returncode != 0 or not results or "error" in results[0]:
        say("mp_lateness.py failed (rc %s):\n%s\n%s" % (p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
        summary("lateness", "FAILED (see above)")
        return
    say("TLS server saw %d handshakes (%s), %d server-side errors%s" % (
        tls_info[1], ", ".join("%s x%d" % kv for kv in tls_info[0].items()), tls_info[2],
        " (last: %s)" % tls_info[3] if tls_info[3] else ""))
    say("")
    say("  %-12s %9s %4s %4s %4s %4s %5s   %s" % ("load", "runs/due", "p50", "p99", "max", "cpu%", "preem",
                                          "work done in the phase (longest single blocking step)"))
    extra = {}
    for r in results:
        if r["phase"] not in PHASES.split(","):
            extra[r["phase"]] = r
            continue
        la = r["late"]
        work = []
        ld = r["loads"]
        if "json" in ld:
            j = ld["json"]
            work.append("json %d msgs of %d B (encode max %d ms, decode max %d ms)" % (
                j["decode"]["n"], j["bytes"], j["encode"]["max_ms"], j["decode"]["max_ms"]))
        if "store" in ld:
            s = ld["store"]
            work.append("store %d writes of %d B (max %d ms)" % (s["write"]["n"], s["bytes"], s["write"]["max_ms"]))
        if "tls" in ld:
            t = ld["tls"]
            c = t["connection"]
            work.append("tls %d handshakes (mean %.1f ms, max %d ms per connection, %d errors%s)" % (
                c["n"], c["mean_ms"], c["max_ms"], t["errors"],
                "; last " + t["last_error"] if t["last_error"] else ""))
        flags = []
        if not r["charging"]:
            flags.append("NOT CHARGING at end")
        if r["watchdog"] != "ok":
            flags.append("watchdog " + r["watchdog"])
        if r["tick_errors"]:
            flags.append("%d tick errors" % r["tick_errors"])
        if r.get("wdt_resets"):
            flags.append("%d hardware watchdog resets" % r["wdt_resets"])
        say("  %-12s %9s %4d %4d %4d %4s %5s   %s%s" % (
            r["phase"], "%d/%d" % (la["n"], r["expected_runs"]), la["p50"], la["p99"], la["max"], r["cpu_pct"],
            r.get("preempted"), "; ".join(work) or "-",
            ("  !! " + ", ".join(flags)) if flags else ""))
        if r["hist_top"]:
            say("  %-12s lateness >= 5 ms: %s" % ("", ", ".join("%d ms x%d" % (i, n) for i, n in r["hist_top"])))
        summary("lateness %-5s p50/p99/max" % r["phase"], "%d / %d / %d ms  (%d runs of the 10 ms loop)" % (
            la["p50"], la["p99"], la["max"], la["n"]))
    if "all" in [r["phase"] for r in results]:
        say("  (runs/due: a run more than one period late re-anchors the schedule, so periods are skipped)")
    say("  (1 ms histogram buckets up to 99 ms, max exact; cpu%% = CPU time of the micropython process "
        "/ wall time; preem = times the kernel preempted it for another process: a busy host adds lateness "
        "the firmware did not cause; loop period %d ms)" % 10)
    sp, spt, jt = extra.get("spin"), extra.get("spin+tlsidle"), extra.get("json+tlsidle")
    if sp and spt:
        say("\nasyncio loop iterations per second (a task that only does sleep_ms(0)), station running:")
        say("  no socket          %8d /s  (cpu %s%%)" % (sp["loads"]["spin"]["per_s"], sp["cpu_pct"]))
        say("  idle TLS stream    %8d /s  (cpu %s%%)  <- one idle TLS stream waiting in read()" % (
            spt["loads"]["spin"]["per_s"], spt["cpu_pct"]))
        summary("asyncio loop iterations/s", "%d/s; with one idle TLS stream open: %d/s" % (
            sp["loads"]["spin"]["per_s"], spt["loads"]["spin"]["per_s"]))
    if jt:
        la = jt["late"]
        j = jt["loads"]["json"]
        say("  json load with an idle TLS stream open: lateness p50/p99/max %d/%d/%d ms, %d msgs in %.0f s, "
            "cpu %s%%" % (la["p50"], la["p99"], la["max"], j["decode"]["n"], jt["wall_ms"] / 1000, jt["cpu_pct"]))
        summary("lateness json+tlsidle p50/p99/max", "%d / %d / %d ms  (%d runs; json with one idle TLS "
                "stream open)" % (la["p50"], la["p99"], la["max"], la["n"]))
    say("(part 1 took %.1f s)" % wall)


# --- 2. simulated time rate ---------------------------------------------------

def bench_simrate_inprocess(srv):
    d = tempfile.mkdtemp(prefix="bench-simrate-")
    try:
        cmd = [micropython(), os.path.join(HERE, "mp_simrate.py"), "--dir", os.path.join(d, "sim"),
               "--sim-s", "86400", "--tls-port", str(srv.port), "--tls-sim-s", "300"]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    res = [json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if p.returncode != 0 or len(res) < 3 or any("error" in r for r in res):
        say("mp_simrate.py failed (rc %s): %s %s" % (p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
        summary("sim rate in-process", "FAILED")
        return
    say("same scenario in-process (tools/bench/mp_simrate.py: station alone, SimClock.advance, no control "
        "channel):")
    for r in res:
        say("  %-24s %7d sim s in %6.2f s wall: %8.0f sim-s per wall-s  (%d control runs)" % (
            r["label"], r["sim_s"], r["wall_ms"] / 1000, r["rate"], r["control_runs"]))
    summary("sim rate in-process", "%.0f sim-s/wall-s; with one idle TLS stream open: %.0f sim-s/wall-s" % (
        res[0]["rate"], res[1]["rate"]))


def bench_sim24h():
    say("\n== 2. 24 h scenario in step mode: simulated seconds per wall second ==")
    d = tempfile.mkdtemp(prefix="bench-sim-")
    fw = FirmwareProcess(os.path.join(d, "fw"))
    try:
        fw.start()
        fw.sock.settimeout(300)
        fw.cmd("ambient", celsius=45)
        fw.charging(32)
        st0 = fw.status()
        n0 = st0["lateness"]["n"]
        t0 = time.monotonic()
        fw.advance(86400_000)
        wall = time.monotonic() - t0
        st = fw.status()
        c = st["connectors"][0]
        rate = 86400 / wall
        say("advance(24 h) took %.2f s wall: %.0f simulated s per wall s" % (wall, rate))
        say("after 24 h: status %s, energy %.1f kWh, temperature %.1f C, derate %d%%, control runs %d, "
            "plant EV %s" % (c["status"], c["energy_wh"] / 1000, st["temp_c"], st["derate_pct"],
                             st["lateness"]["n"] - n0, st["plant"]["ev"][0]))
        summary("24 h sim in step mode", "%.0f sim-s per wall-s  (24 h in %.2f s wall, %d control runs)" % (
            rate, wall, st["lateness"]["n"] - n0))
    except Exception as e:
        say("24 h scenario failed: %r\n%s" % (e, fw.console()[-3000:]))
        summary("24 h sim in step mode", "FAILED: %r" % e)
    finally:
        fw.close()
        shutil.rmtree(d, ignore_errors=True)


# --- 3. smallest heap ------------------------------------------------------------

class ScenarioFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise ScenarioFailed(what)


def scenario(fw):
    """plug, EV C, charge, derate at 66 C and 69 C, back to 25 C, stop, unplug."""
    def conn():
        return fw.conn()

    def until(pred, what, step=100, limit=120_000):
        t = 0
        while t <= limit:
            c = conn()
            if pred(c):
                return c
            fw.advance(step)
            t += step
        raise ScenarioFailed("%s: not within %d ms; %s" % (what, limit, c))

    c = conn()
    expect(c["status"] == "Available" and not c["contactor"], "idle at boot: %s" % c)
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    c = until(lambda c: c["contactor"] and c["aux"], "contactor closes")
    expect(c["status"] == "Charging" and c["offered_ma"] == 32000, "charging at 32 A: %s" % c)
    fw.advance(60_000)
    c = conn()
    expect(c["contactor"] and c["energy_wh"] > 0, "energy flows: %s" % c)
    fw.cmd("temp", celsius=66)
    c = until(lambda c: c["offered_ma"] == 16000, "derate to 50% at 66 C", step=50, limit=5000)
    expect(c["contactor"], "contactor stays closed at 50%%: %s" % c)
    fw.cmd("temp", celsius=69)
    c = until(lambda c: c["offered_ma"] == 8000, "derate to 25% at 69 C", step=50, limit=5000)
    expect(c["contactor"], "contactor stays closed at 25%%: %s" % c)
    fw.advance(10_000)
    fw.cmd("temp", celsius=25)
    c = until(lambda c: c["offered_ma"] == 32000, "back to 32 A at 25 C", step=1000, limit=120_000)
    expect(c["contactor"] and c["status"] == "Charging", "charging again: %s" % c)
    fw.cmd("stop")
    c = until(lambda c: not c["contactor"] and not c["aux"], "contactor opens on stop", step=100, limit=10_000)
    fw.cmd("unplug")
    c = until(lambda c: c["status"] == "Available", "available after unplug", step=100, limit=5000)
    expect(not c["contactor"] and not c["aux"], "contactor open after unplug: %s" % c)
    st = fw.status()
    expect(st["watchdog"] == "ok", "watchdog: %s" % st["watchdog"])
    ls = c["last_session"] or {}
    expect(ls.get("reason") == "Local" and ls.get("wh", 0) > 0, "last session: %s" % ls)
    errs = [e for e in fw.log() if e["level"] >= 40]
    expect(not errs, "errors in the log: %s" % errs[:3])
    return st


def try_firmware_heap(heap, d):
    """Run the scenario with `-X heapsize=heap`; (ok, why)."""
    fw = FirmwareProcess(os.path.join(d, "h%d" % heap), heapsize=heap)
    try:
        fw.start(timeout=10)
        fw.sock.settimeout(15)
        scenario(fw)
        console = fw.console()
        if "MemoryError" in console or "Traceback" in console:
            return False, "exception on the console: %s" % console[-500:]
        return True, "ok"
    except Exception as e:
        why = "%s: %s" % (type(e).__name__, e)
        con = fw.console()
        if "MemoryError" in con:
            why = "MemoryError (%s)" % why
        return False, why.replace("\n", " ")[:300]
    finally:
        fw.close()
        shutil.rmtree(os.path.join(d, "h%d" % heap), ignore_errors=True)


def try_inprocess_heap(heap, d, tree=None):
    """mp_heap.py with `-X heapsize=heap`, from the source tree or from `tree`
    (a copy with every firmware and board module cross-compiled to .mpy)."""
    if tree:
        cwd, script = tree, os.path.join("tools", "bench", "mp_heap.py")
    else:
        cwd, script = ROOT, os.path.join(HERE, "mp_heap.py")
    cmd = [micropython(), "-X", "heapsize=%d" % heap, script, "--dir", os.path.join(d, "p%d" % heap)]
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False, "timeout", None
    finally:
        shutil.rmtree(os.path.join(d, "p%d" % heap), ignore_errors=True)
    res = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
    other = [l for l in (p.stdout + p.stderr).splitlines() if not l.startswith("RESULT ")]
    if p.returncode == 0 and res and res.get("ok") and not other:
        return True, "ok", res
    why = (res or {}).get("error") or (other[-1:] or ["rc %d" % p.returncode])[0]
    if res and res.get("ok") and other:
        why = "output besides the result: %s" % other[-1]
    return False, str(why)[:300], res


MPY_ARCH = {"x86_64": "x64", "amd64": "x64", "i686": "x86", "aarch64": "aarch64", "armv7l": "armv7m"}


def mpy_tree(d):
    """Copy of the tree with firmware/ and boards/ cross-compiled to .mpy for
    this host (mpy-cross -march=<host>, so @native/@viper code compiles too).
    A module mpy-cross refuses is copied as .py; returns (tree, [those])."""
    import platform
    tree = os.path.join(d, "mpy-tree")
    cross = os.path.join(os.path.dirname(micropython()), "mpy-cross")
    arch = MPY_ARCH.get(platform.machine().lower())
    as_py = []
    for top in ("firmware", "boards"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            rel = os.path.relpath(dirpath, ROOT)
            if "__pycache__" in rel:
                continue
            os.makedirs(os.path.join(tree, rel), exist_ok=True)
            for f in files:
                if not f.endswith(".py"):
                    continue
                cmd = [cross] + (["-march=" + arch] if arch else []) + [
                    "-o", os.path.join(tree, rel, f[:-3] + ".mpy"), os.path.join(rel, f)]
                if subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode != 0:
                    shutil.copy(os.path.join(ROOT, rel, f), os.path.join(tree, rel, f))
                    as_py.append(os.path.join(rel, f))
    os.makedirs(os.path.join(tree, "tools", "bench"))
    shutil.copy(os.path.join(HERE, "mp_heap.py"), os.path.join(tree, "tools", "bench"))
    return tree, as_py


def bisect(trial, lo, hi, gran, label):
    """Smallest passing heap in (lo, hi] to `gran` bytes, assuming monotonic."""
    ok, why = trial(hi)[:2]
    if not ok:
        say("  %s: fails even at %d bytes: %s" % (label, hi, why))
        return None
    ok, why = trial(lo)[:2]
    say("  %-10s %8d B  %s" % (label, lo, "ok" if ok else "FAIL " + why))
    if ok:
        return lo
    while hi - lo > gran:
        mid = (lo + hi) // 2 // 256 * 256
        ok, why = trial(mid)[:2]
        say("  %-10s %8d B  %s" % (label, mid, "ok" if ok else "FAIL " + why))
        if ok:
            hi = mid
        else:
            lo = mid
    return hi


def heap_figures(label, res):
    say("%s, default heap (%d B), gc.mem_alloc() right after gc.collect():" % (label, res["heap"]))
    b, i, t, sc = res["base"], res["imports"], res["boot"], res["scenario"]
    say("  interpreter + bench script     %7d B" % b["live"])
    say("  + firmware imports             %7d B  (+%d B: module code, qstrs, module dicts)" % (
        i["live"], i["live"] - b["live"]))
    say("  + station booted, 1 s run      %7d B  (+%d B: station, connectors, plant, log ring, tasks)" % (
        t["live"], t["live"] - i["live"]))
    say("  max over the scenario          %7d B  (+%d B above boot; %d checkpoints)" % (
        sc["max_live"], sc["max_live"] - t["live"], res["checkpoints"]))
    say("  after the scenario             %7d B" % sc["live"])
    say("  micropython.mem_peak()  after imports %d B, after boot %d B, after scenario %d B  (counts "
        "m_malloc minus explicit m_free; GC frees are not subtracted, so this is allocation volume, "
        "not peak live heap)" % (i["mem_peak"], t["mem_peak"], sc["mem_peak"]))


def bench_heap(lo, hi, gran):
    say("\n== 3. heap: plug, EV C, charge, derate at 66 C and 69 C, cool to 25 C, stop, unplug ==")
    d = tempfile.mkdtemp(prefix="bench-heap-")
    try:
        tree, as_py = mpy_tree(d)
        if as_py:
            say("mpy-cross refused %d module(s), used as .py in the .mpy runs: %s" % (len(as_py), ", ".join(as_py)))
        figs = {}
        for label, t in (("station in-process, .py source", None), ("station in-process, .mpy", tree)):
            ok, why, res = try_inprocess_heap(2 * 1024 * 1024, d, t)
            if ok:
                heap_figures(label, res)
                figs[label] = res
            else:
                say("%s: scenario failed at the default heap: %s" % (label, why))
        r = figs.get("station in-process, .py source")
        if r:
            summary("heap live: imports / boot / max", "%d / %d / %d B  (gc.mem_alloc after gc.collect; "
                    ".py source, in-process)" % (r["imports"]["live"], r["boot"]["live"], r["scenario"]["max_live"]))
            summary("heap live: station data alone", "%d B after boot, %d B max in scenario  (live minus "
                    "imports)" % (r["boot"]["live"] - r["imports"]["live"],
                                  r["scenario"]["max_live"] - r["imports"]["live"]))
            summary("micropython.mem_peak after scenario", "%d B  (allocation volume; GC frees not "
                    "subtracted)" % r["scenario"]["mem_peak"])
        r = figs.get("station in-process, .mpy")
        if r:
            summary("heap live with .mpy: imports / boot / max", "%d / %d / %d B" % (
                r["imports"]["live"], r["boot"]["live"], r["scenario"]["max_live"]))

        mins = {}
        for label, trial in (
                ("firmware", lambda h: try_firmware_heap(h, d)),
                ("in-process .py", lambda h: try_inprocess_heap(h, d)),
                ("in-process .mpy", lambda h: try_inprocess_heap(h, d, tree))):
            t0 = time.monotonic()
            say("bisection, %s:" % label)
            m = bisect(trial, lo, hi, gran, label)
            if m and label == "firmware":
                again = [try_firmware_heap(m, d)[0] for _ in range(3)]
                say("  re-run 3 times at %d B: %s" % (m, again))
            say("  -> %s (%.1f s)" % ("%d B" % m if m else "none", time.monotonic() - t0))
            mins[label] = m
        fmt = lambda m: "%d B" % m if m else "not found"  # noqa: E731
        summary("min heapsize, Unix firmware", "%s  (boards/unix/main.py --time step --no-repl: station, "
                "plant, control channel + its JSON; no REPL; modules compiled from .py at import)" % fmt(
                    mins["firmware"]))
        summary("min heapsize, station in-process", "%s  (.py source; no control channel, no REPL)" % fmt(
            mins["in-process .py"]))
        summary("min heapsize, station in-process .mpy", "%s  (same, modules precompiled by mpy-cross)" % fmt(
            mins["in-process .mpy"]))
        say("(bisection resolution %d B; a run passes if the scenario's checks hold and the console shows "
            "no traceback)" % gran)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_ocpp(seconds):
    """OCPP figures against the dev CSMS (tools/csms) on localhost."""
    sys.path.insert(0, ROOT)
    from tools.csms import CsmsServer
    d = tempfile.mkdtemp(prefix="bench-ocpp-")
    csms = CsmsServer(port=0, http_port=None, data_dir=os.path.join(d, "csms"), ping_interval=None).start()
    url = "ws://127.0.0.1:%d" % csms.port
    mp = os.path.join(HERE, "mp_ocpp.py")

    def run(phase, extra=()):
        p = subprocess.Popen([micropython(), mp, "--dir", os.path.join(d, phase), "--url", url, "--phase", phase,
                              "--seconds", str(seconds)] + list(extra), stdout=subprocess.PIPE, text=True, cwd=ROOT)
        return p

    def result(p):
        out, _ = p.communicate(timeout=300)
        line = [x for x in out.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise RuntimeError("mp_ocpp: no result:\n" + out[-2000:])
        return json.loads(line[-1][7:])

    try:
        r = result(run("rate"))
        say("\nOCPP CALL round trips (Heartbeat) to the dev CSMS: %d in %d ms = %.0f/s" % (r["calls"], r["ms"], r["per_s"]))
        summary("ocpp CALL round trips", "%.0f/s  (%d Heartbeats to the dev CSMS on localhost)" % (r["per_s"], r["calls"]))
        r = result(run("heap"))
        say("OCPP session with MeterValues every second for %.0f s: live heap %d B before, %d B peak; %d calls"
            % (seconds, r["live_before"], r["live_peak"], r["sent"]))
        summary("ocpp heap, MeterValues 1/s", "%d B live peak (%d B before the session; gc.mem_alloc after collect)"
                % (r["live_peak"], r["live_before"]))
        summary("ocpp heap: data alone", "%d B peak  (live peak minus the %d B of imported code, which is in "
                "flash when frozen)" % (r["live_peak"] - r["code"], r["code"]))
        p = run("flood")
        for line in p.stdout:
            if line.startswith("READY"):
                break
        frames = ['[2,"f%d","GetConfiguration",{"key":["HeartbeatInterval"]}]' % i for i in range(200)]
        sent = 0
        t_end = time.monotonic() + seconds - 1
        while time.monotonic() < t_end:
            csms.send_raw_sync("BENCH1", frames)
            sent += len(frames)
        r = result(p)
        la = r["late"]
        say("control-loop lateness while the CSMS floods %d CALLs: p50 %d / p99 %d / max %d ms (%d runs); still charging: %s"
            % (sent, la["p50"], la["p99"], la["max"], la["n"], r["charging"]))
        summary("lateness during CALL flood", "%d / %d / %d ms p50/p99/max  (%d CALLs in %.0f s, charging: %s)"
                % (la["p50"], la["p99"], la["max"], sent, seconds, r["charging"]))
    finally:
        csms.stop()
        shutil.rmtree(d, ignore_errors=True)


# --- 5. OTA verify ----------------------------------------------------------

OTA_SIZE = 1 << 20


def _release(*args):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "release.py")] + list(args),
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    if p.returncode != 0:
        raise RuntimeError("release.py %s: %s" % (args[0], (p.stderr + p.stdout)[-1000:]))
    return p


def _pad_module(path, nbytes):
    # A module holding nbytes of pseudo-random data as one bytes constant:
    # its .mpy is that size plus a few dozen bytes on every target.
    import random
    rnd = random.Random(1)
    data = bytes(rnd.getrandbits(8) for _ in range(max(0, nbytes)))
    with open(path, "w") as f:
        f.write("# generated by tools/bench/run.py: padding for the 1 MiB bundle benchmark\n")
        f.write("PAD = b\"" + "".join("\\x%02x" % b for b in data) + "\"\n")


def ota_bundle(d):
    """A ~1 MiB bundle of the real firmware for esp32,rp2040,unix plus a padding module."""
    src = os.path.join(d, "src", "firmware")
    shutil.copytree(os.path.join(ROOT, "firmware"), src, ignore=shutil.ignore_patterns("__pycache__"))
    out = os.path.join(d, "fw.bundle")
    pad = os.path.join(src, "bench_pad.py")

    def build(nbytes):
        _pad_module(pad, nbytes)
        _release("bundle", "--version", "9.0.0", "--targets", "esp32,rp2040,unix", "--min-version", "1.0.0",
                 "--out", out, "--src", src)
        return os.path.getsize(out)

    base = build(0)
    want = (OTA_SIZE - base) // 3  # the pad is compiled once per target
    want += (OTA_SIZE - build(want)) // 3  # then correct for .mpy and manifest overhead
    build(want)
    return out, base


def ota_sign(bundle, keys, out):
    _release("sign", "--embed", "--bundle", bundle, "--key", os.path.join(keys, "signing.key"),
             "--cert", os.path.join(keys, "signing.pem"), "--out", out)
    return out


def ota_chain_keys(keys):
    """A 3-level manufacturer PKI (root pathLen 1 -> intermediate -> code
    signer, ECDSA P-256): root.pem, signing.key and signing.pem holding the
    signer then the intermediate, as release.py sign --cert takes a chain."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    now = datetime.datetime.now(datetime.timezone.utc)
    ku = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
              encipher_only=False, decipher_only=False)

    def cert(cn, issuer, ikey, key, ca, path_len=None):
        n = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(n).issuer_name(issuer.subject if issuer else n)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=365))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **ku),
                            critical=True))
        if not ca:
            b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        return b.sign(ikey or key, hashes.SHA256())

    k = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    root = cert("Bench Root", None, None, k[0], True, 1)
    inter = cert("Bench Intermediate", root, k[0], k[1], True, 0)
    signer = cert("Bench Code Signer", inter, k[1], k[2], False)
    os.makedirs(keys, exist_ok=True)
    pem = serialization.Encoding.PEM
    with open(os.path.join(keys, "root.pem"), "wb") as f:
        f.write(root.public_bytes(pem))
    with open(os.path.join(keys, "signing.pem"), "wb") as f:
        f.write(signer.public_bytes(pem) + inter.public_bytes(pem))
    with open(os.path.join(keys, "signing.key"), "wb") as f:
        f.write(k[2].private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def bench_ota(runs, lo, hi, gran):
    say("\n== 5. OTA: verify a 1 MiB signed bundle (trailer, chain, SHA-256, signature) ==")
    d = tempfile.mkdtemp(prefix="bench-ota-")
    mp = os.path.join(HERE, "mp_ota.py")
    try:
        t0 = time.monotonic()
        bundle, base = ota_bundle(d)
        say("bundle: the firmware for esp32,rp2040,unix (%d B) padded to %d B (%.0f s to build)" % (
            base, os.path.getsize(bundle), time.monotonic() - t0))
        for alg, label in (("ecdsa", "ECDSA P-256"), ("rsa3072", "RSA-3072"),
                           ("chain3", "ECDSA P-256, 3-level chain")):
            keys = os.path.join(d, alg)
            if alg == "chain3":
                ota_chain_keys(keys)
            else:
                _release("keys", "--out", keys, "--alg", alg)
            signed = ota_sign(bundle, keys, os.path.join(d, "fw-%s.signed" % alg))
            root = os.path.join(keys, "root.pem")
            p = subprocess.run([micropython(), mp, "--file", signed, "--root", root, "--runs", str(runs)],
                               capture_output=True, text=True, cwd=ROOT, timeout=900)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                raise RuntimeError("mp_ota.py: %s" % (p.stdout + p.stderr)[-2000:])
            r = json.loads(line[-1][7:])
            say("%s (release.py sign --embed): %d B bundle, %d runs" % (label, r["n"], r["runs"]))
            say("  verify total  median %8.1f ms   runs %s" % (r["total_ms"], ", ".join("%.1f" % x for x in r["total_all"])))
            say("  SHA-256       median %8.1f ms   (%.1f MiB/s, 4 KiB reads)" % (r["hash_ms"], r["mb_per_s"]))
            say("  signature     median %8.1f ms   (on the digest)" % r["sig_ms"])
            say("  chain         median %8.1f ms   (%d certificates: signer to the root, root self-signature)"
                % (r["chain_ms"], r["chain_certs"]))
            if r.get("alloc_verify") is not None:
                say("  allocation volume of one verify %d B (mem_total growth; recycled by the GC)" % r["alloc_verify"])
            say("  live heap: interpreter %d B, after the ota imports %d B" % (r["live_base"], r["live_imports"]))

            def trial(h, signed=signed, root=root):
                q = subprocess.run([micropython(), "-X", "heapsize=%d" % h, mp, "--file", signed, "--root", root,
                                    "--mode", "heap"], capture_output=True, text=True, cwd=ROOT, timeout=300)
                res = [x for x in q.stdout.splitlines() if x.startswith("RESULT ")]
                if not res:
                    return False, (q.stdout + q.stderr).strip()[-200:] or "rc %d" % q.returncode
                res = json.loads(res[-1][7:])
                return bool(res.get("ok")), res.get("error", "ok")

            m = bisect(trial, lo, hi, gran, label)
            say("  -> smallest heapsize that verifies: %s" % ("%d B" % m if m else "not found"))
            summary("ota verify 1 MiB, %s" % label, "%.1f ms median (SHA-256 %.1f ms + signature %.1f ms + chain "
                    "%.1f ms; %d runs, Unix port)" % (r["total_ms"], r["hash_ms"], r["sig_ms"], r["chain_ms"], r["runs"]))
            summary("ota verify heap, %s" % label, "%s min -X heapsize (interpreter + ota modules from .py + verify; "
                    "%d B live after imports)" % ("%d B" % m if m else "not found", r["live_imports"]))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_update(lo, hi, gran):
    """A firmware update of the Unix board: in-process (tools/bench/mp_update.py)
    the real time of download, signature, image check, install into the slot,
    the next boot's slot check and the import of the new image, and the
    smallest -X heapsize for download + verify and for download + verify +
    install; then a whole SignedUpdateFirmware against the dev CSMS from
    Installing to Installed (confirmed) in real and simulated time."""
    sys.path.insert(0, ROOT)
    import datetime
    import pathlib
    from tools.csms import CsmsServer
    from ota_helpers import Kit
    d = tempfile.mkdtemp(prefix="bench-update-")
    csms = CsmsServer(port=0, http_port=0, data_dir=os.path.join(d, "csms"), ping_interval=None).start()
    try:
        os.makedirs(os.path.join(d, "kit"))
        kit = Kit(pathlib.Path(d) / "kit")
        f = kit.build("bench", "0.2.0")
        csms.files.add_firmware("bench.bin", f["bundle"].read_bytes())
        size = f["bundle"].stat().st_size
        cert = os.path.join(d, "signing.pem")
        with open(cert, "w") as fh:
            fh.write(f["cert"])
        runs = {"n": 0}
        # The firmware's own .mpy files for this machine, from the bundle:
        # imported code then costs the heap what frozen code costs a board.
        lib = os.path.join(d, "lib")
        data = f["bundle"].read_bytes()
        n = int.from_bytes(data[11:15], "big")
        man = json.loads(data[15:15 + n])
        pos = 15 + n
        for e in man["files"]:
            if e["path"].startswith("unix/"):
                dest = os.path.join(lib, e["path"][5:])
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(dest, "wb") as fh:
                    fh.write(data[pos:pos + e["size"]])
            pos += e["size"]

        def mp_update(until="boot", heap=None, mpy=False):
            runs["n"] += 1
            cmd = [micropython()] + (["-X", "heapsize=%d" % heap] if heap else []) + [
                os.path.join(HERE, "mp_update.py"), "--url", csms.file_url("bench.bin"),
                "--dir", os.path.join(d, "mp%d" % runs["n"]), "--root", kit.root(), "--sig", f["signature"],
                "--cert", cert, "--until", until] + (["--lib", lib] if mpy else [])
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
            res = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if not res:
                return {"ok": False, "error": (p.stdout + p.stderr).strip()[-120:] or "rc %d" % p.returncode}
            return json.loads(res[-1][7:])

        r = mp_update()
        if not r.get("ok"):
            raise RuntimeError("mp_update: %s" % r)
        say("\nupdate of a %d B bundle (%d files for the Unix target), in-process on the Unix port:" % (
            size, r["files"]))
        for k in ("download_ms", "signature_ms", "check_ms", "install_ms", "boot_record_ms", "import_ms"):
            say("  %-15s %6d ms" % (k[:-3], r[k]))
        say("  live heap: %d B after imports, %d B after download, %d B after install" % (
            r["live_imports"], r["live_downloaded"], r["live_installed"]))
        summary("update: download + verify", "%d ms download (HTTP, localhost) + %d ms signature (SHA-256 + "
                "ECDSA P-256) + %d ms image check (every file's SHA-256), %d B bundle"
                % (r["download_ms"], r["signature_ms"], r["check_ms"], size))
        summary("update: install + next boot", "%d ms extract into the slot, %d ms boot-time slot check, %d ms "
                "import of the new image (.mpy)" % (r["install_ms"], r["boot_record_ms"], r["import_ms"]))
        for until, label in (("verify", "download + verify"), ("install", "download + verify + install")):
            for mpy in (False, True):
                m = bisect(lambda h: (mp_update(until, h, mpy).get("ok", False), "ok"), lo, hi, gran, until)
                summary("update heap: %s, %s" % (label, ".mpy" if mpy else ".py"),
                        "%s min -X heapsize" % ("%d B" % m if m else "not found"))

        # The whole cycle through OCPP: Installing -> Installed (confirmed).
        fw = FirmwareProcess(os.path.join(d, "UPD0"), sets=[
            "id=UPD0", "csms_url=ws://127.0.0.1:%d" % csms.port, "fw_root=" + kit.root()])
        try:
            fw.start()
            fw.advance(100)
            csms.wait_for_sync("BootNotification", cp="UPD0", timeout=20)
            fw.advance(2000)
            when = datetime.datetime.fromtimestamp(fw.status()["time"], datetime.timezone.utc)
            csms.call_sync("UPD0", "SignedUpdateFirmware", {"requestId": 1, "firmware": {
                "location": csms.file_url("bench.bin"), "retrieveDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "signingCertificate": f["cert"], "signature": f["signature"]}})
            marks = {}
            t0 = time.monotonic()
            for _ in range(5000):
                seen = [m.payload["status"] for m in csms.messages(
                    cp="UPD0", action="SignedFirmwareStatusNotification", direction="in")]
                for st in seen:
                    marks.setdefault(st, (time.monotonic() - t0, fw.status()["time"]))
                if seen and seen[-1] in ("Installed", "InstallationFailed"):
                    break
                fw.advance(20)
        finally:
            fw.close()
        if "Installed" not in marks:
            raise RuntimeError("the update did not complete: %s" % sorted(marks))
        real = (marks["Installed"][0] - marks["Installing"][0]) * 1000
        sim = marks["Installed"][1] - marks["Installing"][1]
        say("  through OCPP: Installing -> Installed %.0f ms real, %d s simulated" % (real, sim))
        summary("update: install to confirmed", "%d s simulated, %.0f ms real (install, reboot into the trial, "
                "BootNotification Accepted, then ota_confirm_s=60 of healthy running, which dominates)"
                % (sim, real))
    finally:
        csms.stop()
        shutil.rmtree(d, ignore_errors=True)


def bench_alloc():
    say("\n== 7. control tick allocation per 1,000 ticks, by connector state ==")
    d = tempfile.mkdtemp(prefix="bench-alloc-")
    try:
        p = subprocess.run([micropython(), os.path.join(HERE, "mp_alloc.py"), "--dir", os.path.join(d, "run")],
                           capture_output=True, text=True, cwd=ROOT, timeout=600)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    res = [json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if p.returncode != 0 or not res:
        raise RuntimeError("mp_alloc.py (rc %s): %s" % (p.returncode, (p.stdout + p.stderr)[-2000:]))
    bad = []
    for r in res:
        if "error" in r or not r.get("ok"):
            bad.append(r["state"])
        say("  %-20s %7s B   %-14s %s" % (r["state"], r.get("alloc", "?"), r.get("status", ""),
                                         ",".join(r.get("faults", [])) or r.get("error", "")))
    demo = [r for r in res if r["state"] == "demo_plant_task"]
    states = [r for r in res if r["state"] != "demo_plant_task" and "alloc" in r]
    worst = max(states, key=lambda r: r["alloc"]) if states else None
    if worst and worst["alloc"] == 0:
        text = "0 B per 1,000 ticks in each of %d states" % len(states)
    else:
        text = "%d B per 1,000 ticks at most (%s), over %d states" % (
            worst["alloc"] if worst else -1, worst["state"] if worst else "-", len(states))
    summary("control tick allocation", text + ("; NOT REACHED: " + ",".join(bad) if bad else ""))
    if demo:
        r = demo[0]
        say("  demo mode: plant step in its own task %.1f us mean, %d us max, %d B per step; control tick %d B "
            "per 1,000 ticks with the plant running; one gc.collect() of %d B live: %d us" % (
                r["plant_us_per_tick"], r["plant_us_max"], r["plant_alloc"] // r["ticks"], r["alloc"],
                r["heap_used"], r["gc_us"]))
        summary("demo-mode plant step", "%.1f us, %d B per control period, in its own task (Unix port); "
                "control tick %d B per 1,000 ticks" % (r["plant_us_per_tick"], r["plant_alloc"] // r["ticks"],
                                                      r["alloc"]))


def bench_update_lateness(seconds):
    """7. Lateness of the 10 ms control loop, charging, during full signed
    updates (download from the dev CSMS's file server, verify, check, install)."""
    sys.path.insert(0, ROOT)
    import pathlib
    from tools.csms import CsmsServer
    from ota_helpers import Kit
    say("\n== 7. control-loop lateness during a signed update while charging (RealClock, %s s) ==" % seconds)
    d = tempfile.mkdtemp(prefix="bench-updlate-")
    csms = CsmsServer(port=0, http_port=0, data_dir=os.path.join(d, "csms"), ping_interval=None).start()
    try:
        os.makedirs(os.path.join(d, "kit"))
        kit = Kit(pathlib.Path(d) / "kit")
        f = kit.build("bench", "0.2.0")
        csms.files.add_firmware("bench.bin", f["bundle"].read_bytes())
        size = f["bundle"].stat().st_size
        cert = os.path.join(d, "signing.pem")
        with open(cert, "w") as fh:
            fh.write(f["cert"])
        spec = ",".join([csms.file_url("bench.bin"), kit.root(), f["signature"], cert])
        cmd = [micropython(), os.path.join(HERE, "mp_lateness.py"), "--dir", os.path.join(d, "sim"),
               "--seconds", str(seconds), "--phases", "idle:2,update", "--update", spec]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds * 10 + 120)
    finally:
        csms.stop()
        shutil.rmtree(d, ignore_errors=True)
    results = [json.loads(x[7:]) for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    r = [x for x in results if x.get("phase") == "update"]
    if p.returncode != 0 or not r:
        say("mp_lateness.py failed (rc %s):\n%s\n%s" % (p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
        summary("lateness during update", "FAILED (see above)")
        return
    r = r[0]
    idle = [x for x in results if x.get("phase") == "idle"]
    if idle:  # the same host right before: what lateness it adds without any update
        li = idle[0]["late"]
        say("  idle (no update), same host just before: lateness p50/p99/max %d/%d/%d ms over %d runs, "
            "preempted %s" % (li["p50"], li["p99"], li["max"], li["n"], idle[0].get("preempted")))
    la, u = r["late"], r["loads"]["update"]
    say("  %d updates of a %d B bundle in %d ms (%d errors%s); step mean/max ms:" % (
        u["updates"], size, r["wall_ms"], u["errors"], "; last " + u["last_error"] if u["last_error"] else ""))
    for k in ("download", "verify", "check", "install"):
        say("    %-9s %7.1f / %d" % (k, u[k]["mean_ms"], u[k]["max_ms"]))
    if u.get("slices"):
        say("  work slices: %(units)d units, the loop got control %(yields)d times, at most "
            "%(longest_units)d units between two yields" % u["slices"])
    say("  lateness p50/p99/max %d/%d/%d ms over %d runs; charging at the end: %s; watchdog %s; "
        "hardware watchdog resets %s; cpu %s%%, preempted %s" % (
            la["p50"], la["p99"], la["max"], la["n"], r["charging"], r["watchdog"], r.get("wdt_resets"),
            r["cpu_pct"], r.get("preempted")))
    if r["hist_top"]:
        say("  lateness >= 5 ms: %s" % ", ".join("%d ms x%d" % (i, n) for i, n in r["hist_top"]))
    summary("lateness during update p50/p99/max", "%d / %d / %d ms  (%d runs, %d full updates, charging: %s; "
            "goal p99 <= 5, max <= 20)" % (la["p50"], la["p99"], la["max"], la["n"], u["updates"], r["charging"]))


def guarded(label, fn, *args):
    # One part failing (a firmware change, a missing tool) must not hide the others.
    try:
        fn(*args)
    except Exception as e:
        import traceback
        traceback.print_exc()
        summary(label, "FAILED: %s: %s" % (type(e).__name__, str(e)[:200]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="lateness,sim24h,heap,ocpp,ota,update,alloc,updlate")
    ap.add_argument("--ota-runs", type=int, default=7, help="verify runs per algorithm (median)")
    ap.add_argument("--seconds", type=float, default=8, help="seconds per lateness phase")
    ap.add_argument("--heap-lo", type=int, default=16 * 1024)
    ap.add_argument("--heap-hi", type=int, default=2 * 1024 * 1024)
    ap.add_argument("--heap-gran", type=int, default=1024)
    a = ap.parse_args()
    parts = a.only.split(",")
    t0 = time.monotonic()
    load0 = os.getloadavg()[0]
    say("MicroPython: %s" % subprocess.run([micropython(), "-c", "import sys; print(sys.version)"],
                                           capture_output=True, text=True).stdout.strip())
    srv = None
    if "lateness" in parts or "sim24h" in parts:
        d = tempfile.mkdtemp(prefix="bench-tls-")
        try:
            cert, key, how = make_cert(d)
            srv = TLSServer(cert, key).__enter__()
        finally:
            shutil.rmtree(d, ignore_errors=True)
        say("local TLS server on 127.0.0.1:%d, self-signed certificate made with %s" % (srv.port, how))
    try:
        if "lateness" in parts:
            guarded("lateness", bench_lateness, a.seconds, srv)
        if "sim24h" in parts:
            guarded("24 h sim in step mode", bench_sim24h)
            guarded("sim rate in-process", bench_simrate_inprocess, srv)
    finally:
        if srv:
            srv.__exit__(None, None, None)
    if "heap" in parts:
        guarded("heap", bench_heap, a.heap_lo, a.heap_hi, a.heap_gran)
    if "ocpp" in parts:
        guarded("ocpp", bench_ocpp, a.seconds)
    if "ota" in parts:
        guarded("ota", bench_ota, a.ota_runs, 8 * 1024, 1024 * 1024, 512)
    if "update" in parts:
        guarded("update", bench_update, 16 * 1024, 1024 * 1024, 1024)
    if "alloc" in parts:
        guarded("control tick allocation", bench_alloc)
    if "updlate" in parts:
        guarded("lateness during update", bench_update_lateness, a.seconds)
    say("\n== summary (%.0f s; host load average %.2f at start, %.2f at end, %d CPUs) ==" % (
        time.monotonic() - t0, load0, os.getloadavg()[0], os.cpu_count() or 0))
    w = max(len(k) for k, _ in SUMMARY) if SUMMARY else 0
    for k, v in SUMMARY:
        say("  %-*s  %s" % (w, k, v))


if __name__ == "__main__":
    main()

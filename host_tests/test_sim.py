"""`make sim` (tools/sim.py) as a new developer meets it: the help shows the
firmware's options and configuration keys, a bad option names its value and
the allowed range before anything starts, a port clash says which port and
what to do without booting the charger, secrets never show, Ctrl-C ends
quietly, and the working tree runs unless installed slots are asked for.

The simulator runs in a pseudo-terminal, as on a developer's terminal, on
free ports."""
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from fwproc import ROOT

PY = sys.executable
SIM = os.path.join(ROOT, "tools", "sim.py")
MP = os.path.join(os.path.dirname(sys.executable), "micropython")


def free_port(pair=False):
    # A port (and, with pair, the one after it) nobody listens on.
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if not pair or p < 65535 and _free(p + 1):
            return p
    raise RuntimeError("no free port")


def _free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()


def run_sim(*args, env=None, timeout=60):
    e = dict(os.environ)
    e.pop("SIM_ARGS", None)
    e.update(env or {})
    return subprocess.run([PY, SIM] + list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=e, stdin=subprocess.DEVNULL)


class Term:
    """tools/sim.py on a pseudo-terminal: what the developer sees."""

    def __init__(self, args, env=None):
        self.master, slave = pty.openpty()
        e = dict(os.environ)
        e.pop("SIM_ARGS", None)
        e.update(env or {})
        self.proc = subprocess.Popen([PY, SIM] + list(args), cwd=ROOT, stdin=slave, stdout=slave,
                                     stderr=slave, env=e, start_new_session=True)
        os.close(slave)
        self.out = ""

    def read(self, timeout=0.1):
        r, _, _ = select.select([self.master], [], [], timeout)
        if r:
            try:
                self.out += os.read(self.master, 65536).decode("utf-8", "replace")
            except OSError:
                pass

    def wait_for(self, what, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read()
            if (what(self.out) if callable(what) else what in self.out):
                return self.out
            if self.proc.poll() is not None:
                self.read()
                break
        raise AssertionError("terminal did not show %r:\n%s" % (what, self.out[-3000:]))

    def type(self, text):
        os.write(self.master, text.encode())

    def ctrl_c(self):
        # What the terminal does on Ctrl-C: SIGINT to its foreground group.
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait_exit(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read()
            if self.proc.poll() is not None:
                self.read(0.2)
                return self.proc.returncode
        raise AssertionError("simulator did not end:\n" + self.out[-3000:])

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        os.close(self.master)


@pytest.fixture
def term(tmp_path):
    terms = []

    def start(*args, env=None):
        t = Term(args, env)
        terms.append(t)
        return t

    yield start
    for t in terms:
        t.close()
    # Whatever a failed test left running in its directory (the dev CSMS has its own session).
    for pid, cmd in proc_cmdlines(with_pid=True):
        if str(tmp_path).encode() in cmd and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def sim_args(d, csms=True):
    args = ["--dir", str(d), "--port", str(free_port())]
    return args + (["--csms-port", str(free_port(pair=True))] if csms else ["--no-csms"])


def boots(d):
    # The charger's boot counter in its store (flash/boot.json, a CRC-checked record).
    p = os.path.join(str(d), "flash", "boot.json")
    if not os.path.exists(p):
        return 0
    with open(p, "rb") as f:
        m = re.search(rb'"boots":\s*(\d+)', f.read())
    return int(m.group(1)) if m else 0


# ---------------------------------------------------------------- help and bad options

def test_help_shows_the_firmware_options_and_keys():
    r = run_sim("--help")
    assert r.returncode == 0, r.stderr
    for opt in ("--csms-port", "--boot-slots", "--time", "--connectors", "--set", "--port"):
        assert opt in r.stdout
    # every configuration key, from the firmware's own schema
    for key in ("max_current_a", "auth_key", "close_delay_ms", "derate", "csms_url", "security_profile"):
        assert re.search(r"^  %s\s" % key, r.stdout, re.M), key


@pytest.mark.parametrize("args, says", [
    (["--connectors", "9"], ["--connectors 9", "1..4"]),
    (["--time", "fast"], ["--time fast", "real, step, jump", "RATE"]),
    (["--port", "70000"], ["--port 70000", "0..65535"]),
    (["--set", "max_curent_a=16"], ["max_curent_a", "did you mean max_current_a"]),
    (["--set", "id=bad id!"], ["id: must be 1..48", "refusing to start"]),
])
def test_bad_option_names_value_and_range_before_anything_starts(tmp_path, args, says):
    d = tmp_path / "sim"
    port = free_port(pair=True)
    r = run_sim("--dir", str(d), "--csms-port", str(port), *args)
    assert r.returncode == 2
    for s in says:
        assert s in r.stderr, r.stderr
    assert "bad option" not in r.stderr
    assert not d.exists()  # no CSMS started, no keys made, no boot


# ---------------------------------------------------------------- port clashes

def test_csms_port_in_use_is_named(tmp_path):
    port = free_port(pair=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        r = run_sim("--dir", str(tmp_path / "sim"), "--csms-port", str(port), "--port", str(free_port()))
    assert r.returncode == 2
    assert "port %d in use" % port in r.stderr and "try --csms-port" in r.stderr
    assert not (tmp_path / "sim").exists()


def test_second_sim_on_the_same_ports_fails_clearly_and_boots_nothing(tmp_path, term):
    d = tmp_path / "sim"
    args = sim_args(d)
    first = term(*args)
    first.wait_for(">>> ")
    assert boots(d) == 1
    # the same command again, as a second `make sim` would be
    r = run_sim(*args)
    assert r.returncode == 2
    assert "port %s in use" % args[args.index("--csms-port") + 1] in r.stderr
    assert "try --csms-port" in r.stderr and "did not start" not in r.stderr
    # control port: the dev CSMS elsewhere, the same control port
    other = list(args)
    other[other.index("--csms-port") + 1] = str(free_port(pair=True))
    r = run_sim(*other)
    assert r.returncode == 2
    assert "control port %s in use" % args[args.index("--port") + 1] in r.stderr and "try --port" in r.stderr
    assert boots(d) == 1  # neither failed start counted as a boot
    first.ctrl_c()
    first.wait_exit()
    assert "power cut" not in first.out


# ---------------------------------------------------------------- secrets

def proc_cmdlines(with_pid=False):
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            out.append((int(pid), cmd) if with_pid else cmd)
    return out


def test_secrets_never_reach_terminal_process_list_or_logs(tmp_path, term):
    d = tmp_path / "sim"
    secret = "S3cret-%d" % os.getpid()
    t = term(*sim_args(d), env={"SIM_ARGS": "--set auth_key=%s --set max_current_a=16" % secret})
    t.wait_for(">>> ")
    t.wait_for("boot accepted", timeout=20)  # registered with the CSMS, with the password
    assert "auth_key=***" in t.out and "max_current_a=16" in t.out
    assert not any(secret.encode() in c for c in proc_cmdlines())
    t.type("status()\n")
    t.wait_for("firmware")
    t.ctrl_c()
    t.wait_exit()
    assert secret not in t.out
    for root, _, files in os.walk(d):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert secret.encode() not in fh.read(), os.path.join(root, f)


# ---------------------------------------------------------------- Ctrl-C

def test_ctrl_c_during_start_up_ends_quietly(tmp_path, term):
    d = tmp_path / "sim"
    t = term(*sim_args(d))
    deadline = time.monotonic() + 30
    while not (d / "csms.log").exists():  # the dev CSMS is starting
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(t.proc.pid, signal.SIGINT)
    rc = t.wait_exit()
    assert "Traceback" not in t.out
    assert rc == 130
    assert boots(d) == 0
    time.sleep(0.5)
    left = [c for c in proc_cmdlines() if str(d).encode() in c]
    assert not left, (left, t.out)  # no CSMS left behind


def test_ctrl_c_during_a_power_cut_ends_quietly(tmp_path, term):
    d = tmp_path / "sim"
    t = term(*sim_args(d, csms=False), "--off", "30")
    t.wait_for(">>> ")
    t.type("powercut()\n")
    t.wait_for("[power cut")
    t.ctrl_c()
    rc = t.wait_exit()
    assert rc == 0
    assert "Traceback" not in t.out and "power restored" not in t.out


# ---------------------------------------------------------------- working tree or slots

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A simulation directory with firmware 0.2.0 installed and confirmed in slot A."""
    sys.path.insert(0, ROOT)
    from tools import release
    base = tmp_path_factory.mktemp("slotsim")
    bundle = base / "fw-0.2.0.bundle"
    release.make_bundle("0.2.0", "unix", "0.1.0", str(bundle), os.path.join(ROOT, "firmware"))
    d = base / "sim"
    script = """
import sys
sys.path.insert(0, %r)
from firmware.core.store import Store
from firmware.ota import bundle
from firmware.ota.slots import Slots
st = Store(%r)
s = Slots(st, %r, factory_version="0.1.0")
slot = s.install(%r, bundle.read_manifest(%r), "unix")
s.arm_trial(slot)
s.boot()
print("slot", slot, s.confirm())
""" % (ROOT, str(d / "flash"), str(d / "flash" / "slots"), str(bundle), str(bundle))
    r = subprocess.run([MP, "-c", script], capture_output=True, text=True, timeout=60)
    assert "slot A True" in r.stdout, r.stdout + r.stderr
    return d


def _first_screen(term, d, *extra):
    t = term(*sim_args(d, csms=False), *extra)
    t.wait_for(">>> ")
    t.type("status()\n")
    t.wait_for(re.compile(r"firmware \S+ \(slot \w\)").search)  # status()'s block, not the boot log line
    t.wait_for("\n>>> ")  # the command has returned: Ctrl-C is the REPL's, not the command's
    t.ctrl_c()
    try:
        t.wait_exit(3)
    except AssertionError:
        t.ctrl_c()  # on a terminal the first Ctrl-C may only drop the line ("Ctrl-C twice quits")
        t.wait_exit()
    return t.out


def test_make_sim_runs_the_working_tree_after_an_update(installed, term):
    out = _first_screen(term, installed)
    assert "firmware 0.1.0" in out and "0.2.0" not in out
    assert "not the working tree" not in out


def test_boot_slots_runs_the_installed_image_and_says_so(installed, term):
    out = _first_screen(term, installed, "--boot-slots")
    lines = [ln for ln in out.splitlines() if "not the working tree" in ln]
    assert len(lines) == 1 and "slot A" in lines[0] and "0.2.0" in lines[0]
    assert "firmware 0.2.0" in out


def test_make_sim_passes_sim_args_out_of_sight(tmp_path):
    # make echoes its recipe: SIM_ARGS (with a secret) must not be in it.
    r = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "sim", "SIM_DIR=%s" % (tmp_path / "s"),
                        "SIM_ARGS=--set auth_key=TOPSECRET --connectors 9"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert "--connectors 9: must be 1..4" in r.stdout + r.stderr
    assert "TOPSECRET" not in r.stdout + r.stderr
    r = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "sim", "SIM_ARGS=--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--boot-slots" in r.stdout and "max_current_a" in r.stdout


def test_firmware_with_its_control_port_taken_does_not_boot(tmp_path):
    # The firmware binds its control channel before it boots: a clash is no boot.
    port = free_port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        r = subprocess.run([MP, os.path.join(ROOT, "boards", "unix", "main.py"), "--dir", str(tmp_path / "fw"),
                            "--port", str(port), "--no-repl", "--time", "step"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert "control port %d in use" % port in r.stdout and "try --port" in r.stdout
    assert boots(tmp_path / "fw") == 0

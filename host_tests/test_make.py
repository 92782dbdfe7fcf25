"""The Makefile as a newcomer meets it: `make` alone prints the help, every
target has a line in it, `make clean-sim` gives a fresh simulation directory,
`make venv` says what it is doing, and signed bundles stay out of git."""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make(*args, **kw):
    return subprocess.run(["make", "--no-print-directory", "-C", ROOT] + list(args), capture_output=True,
                          text=True, timeout=60, **kw)


def phony_targets():
    with open(os.path.join(ROOT, "Makefile")) as f:
        text = f.read()
    names = set()
    for m in re.finditer(r"^\.PHONY:(.*)$", text, re.M):
        names.update(m.group(1).split())
    return names - {"all"}


def test_make_alone_prints_help_and_runs_nothing():
    r = make()
    assert r.returncode == 0
    assert "make targets:" in r.stdout
    assert "pytest" not in r.stdout  # the suite did not start
    assert r.stdout == make("help").stdout


def test_help_has_one_line_per_target():
    out = make("help").stdout
    listed = set(re.findall(r"^  make ([\w-]+)", out, re.M))
    assert phony_targets() <= listed, "targets missing from make help: %s" % (phony_targets() - listed)
    for t in ("sim", "test", "clean-sim", "venv", "help", "mpy"):
        assert t in listed


def test_clean_sim_gives_a_fresh_directory(tmp_path):
    d = tmp_path / "sim"
    (d / "flash").mkdir(parents=True)
    (d / "plant.json").write_text("{}")
    r = make("clean-sim", "SIM_DIR=%s" % d)
    assert r.returncode == 0, r.stderr
    assert not d.exists()


def test_venv_shows_progress():
    # -B -n: what `make venv` would run on a fresh machine, without running it.
    r = make("-B", "-n", "venv")
    assert r.returncode == 0, r.stderr
    assert "pip install" in r.stdout and "--quiet" not in r.stdout
    assert r.stdout.count("echo \"venv:") >= 2


def test_signed_bundles_are_ignored():
    r = subprocess.run(["git", "check-ignore", "-q", "fw-1.3.0.signed"], cwd=ROOT)
    assert r.returncode == 0

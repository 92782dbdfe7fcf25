"""The repository stands alone: every file it points to is in it.

A newcomer follows links and paths in the README, the docs and the comments.
Each tracked text file is searched for references to repository files:
relative Markdown link targets, backticked or bare paths under the project's
own directories (`docs/x.md`, `host_tests/foo.py`, `firmware/...`), and bare
`*.md` names. Each must name a file or directory that exists. Nothing may
point outside the repository, except the optional vendor sources, a build
input under ../shared/vendor.
"""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = (".md", ".py", ".txt", ".ini", ".cfg", ".toml", ".csv", ".json", ".sh", ".yml", ".yaml")
TOP = ("docs", "firmware", "boards", "host_tests", "tools", ".ci")
ALLOWED_OUTSIDE = "../shared/vendor"
# Made by a build or a test run, never tracked (.gitignore): named on purpose.
GENERATED = ("tools/emulator/node_modules", "build/")
SELF = "host_tests/test_repo.py"  # its examples of bad references are on purpose

MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
PATH = re.compile(r"(?<![\w./<>-])((?:%s)/[\w./-]*[\w/])" % "|".join(re.escape(t) for t in TOP))
BARE_MD = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")
OUTSIDE = re.compile(r"(?:\.\./|/work/)shared[\w./-]*")


def tracked():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = [f for f in out.splitlines() if os.path.exists(os.path.join(ROOT, f))]
    # Files added in this working tree but not committed yet count as well.
    extra = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    return sorted(set(files + extra))


def _exists(path, base):
    path = path.split("#")[0].rstrip("/.")
    if not path:
        return True
    stem, ext = os.path.splitext(path)
    # firmware/ota/local.apply names a function of local.py; boards/x.mpy is
    # the compiled form of boards/x.py.
    candidates = (path, stem + ".py") if ext and ext != ".py" else (path,)
    for d in (ROOT, os.path.join(ROOT, base)):
        for c in candidates:
            if os.path.exists(os.path.normpath(os.path.join(d, c))):
                return True
    return False


def dangling(files):
    names = {os.path.basename(f) for f in files}
    bad = []
    for f in files:
        if not f.endswith(TEXT) or f.startswith(".venv") or f == SELF:
            continue
        try:
            with open(os.path.join(ROOT, f), encoding="utf-8") as fh:
                text = fh.read()
        except (UnicodeDecodeError, OSError):
            continue
        base = os.path.dirname(f)
        for n, line in enumerate(text.splitlines(), 1):
            where = "%s:%d" % (f, n)
            for m in OUTSIDE.finditer(line):
                if not m.group(0).startswith(ALLOWED_OUTSIDE):
                    bad.append((where, m.group(0), "outside the repository"))
            if f.endswith(".md"):
                for m in MD_LINK.finditer(line):
                    target = m.group(1)
                    if re.match(r"[a-z]+:", target) or target.startswith("#"):
                        continue  # a URL or an anchor in the same page
                    if target.startswith(ALLOWED_OUTSIDE):
                        continue
                    if not _exists(target, base):
                        bad.append((where, target, "link target missing"))
            for m in PATH.finditer(line):
                p = m.group(1)
                if "*" in p or "<" in p or p.startswith(GENERATED):
                    continue
                if not _exists(p, ""):
                    bad.append((where, p, "no such path"))
            for m in BARE_MD.finditer(line):
                if m.group(1) not in names:
                    bad.append((where, m.group(1), "no such file"))
    return bad


def test_every_referenced_file_exists():
    bad = dangling(tracked())
    assert not bad, "references to files not in the repository:\n" + "\n".join(
        "  %s: %s (%s)" % b for b in bad)


def test_the_check_finds_a_missing_file(tmp_path, monkeypatch):
    # The checker itself: a README citing a file that is not there is caught,
    # and so is a path outside the repository; the vendor input is allowed.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("x")
    (tmp_path / "README.md").write_text(
        "see REFERENCE.md and [ref](docs/gone.md), `host_tests/nothing.py`,\n"
        "[ok](docs/here.md), ../shared/REFERENCE.md, ../shared/vendor/micropython\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    found = {b[1] for b in dangling(["README.md", "docs/here.md"])}
    assert found == {"REFERENCE.md", "docs/gone.md", "host_tests/nothing.py", "../shared/REFERENCE.md"}


def test_readme_links_the_reference():
    with open(os.path.join(ROOT, "README.md")) as f:
        assert "](docs/reference.md)" in f.read()

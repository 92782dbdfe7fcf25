"""The firmware's layers, from its import graph.

Every import in firmware/ and boards/ (at module level or inside a function:
a lazy import is still a dependency) is read from the source with `ast` and
checked against the layers, which point down only:

    boards        hardware layer: drivers, pins, clock, store, network, main.py
    app           the composition root (firmware.app) and the technician's
                  console (firmware.bench, firmware.repl)
    ocpp, ota, web, telemetry    protocols and updates
    net           links: websocket, HTTP, the network interface
    crypto        hashes, DER/X.509, signatures
    evse          the charger as a machine (firmware.evse, firmware.station)
    core          clock, scheduler, store, log, time format, config

firmware.sim is the simulated plant: it stands beside the boards as hardware,
so only boards use it (and the bench's plant commands, which drive the plant
a board hands over). boards.common is shared by the boards and knows none of
them; a board knows only itself and boards.common. Boards build no charger
themselves: they hand their parts to firmware.app, so they never import evse
or ocpp.
"""
import ast
import os

from fwproc import ROOT

# Module prefix -> layer (the longest prefix wins).
LAYER_OF = {
    "firmware": "core",  # the package's __init__
    "firmware.version": "core",
    "firmware.core": "core",
    "firmware.evse": "evse",
    "firmware.station": "evse",
    "firmware.crypto": "crypto",
    "firmware.net": "net",
    "firmware.ota": "ota",
    "firmware.ocpp": "ocpp",
    "firmware.web": "web",
    "firmware.telemetry": "telemetry",
    "firmware.app": "app",
    "firmware.bench": "app",
    "firmware.repl": "app",
    "firmware.sim": "sim",
    "boards": "boards",
    "boards.common": "boards.common",
}

BELOW = {
    "core": set(),
    "evse": {"core"},
    "crypto": {"core"},
    "net": {"core", "crypto"},
    "ota": {"core", "crypto", "net"},
    "ocpp": {"core", "evse", "crypto", "net", "ota"},
    "web": {"core", "evse", "crypto", "net", "ota"},
    "telemetry": {"core", "evse", "crypto", "net"},
    "sim": {"core"},
}
BELOW["app"] = {"core", "evse", "crypto", "net", "ota", "ocpp", "web", "telemetry"}
# A board hands the app its hardware, clock, store, slots and network; it
# may use the layers that provide those, and never the charger's rules
# (evse) or its protocol (ocpp).
BELOW["boards.common"] = {"core", "crypto", "net", "ota", "app", "sim"}

# Named exceptions, each with its reason.
EXTRA = {
    ("firmware.bench", "sim"): "plug(32) sets the simulated cable's PP resistor",
}


def layer(module):
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "boards" and parts[1] not in ("common", "__init__"):
        return "boards." + parts[1]
    for n in range(len(parts), 0, -1):
        got = LAYER_OF.get(".".join(parts[:n]))
        if got is not None:
            return got
    return None  # MicroPython's own modules (asyncio, machine, network, ...)


def allowed(src_layer, dst_layer):
    if dst_layer is None or dst_layer == src_layer:
        return True
    if src_layer.startswith("boards.") and src_layer != "boards.common":
        return dst_layer == "boards.common" or dst_layer in BELOW["boards.common"]
    return dst_layer in BELOW.get(src_layer, ())


def modules(root):
    """{module name: path} of every .py file under firmware/ and boards/."""
    out = {}
    for top in ("firmware", "boards"):
        for d, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for f in sorted(files):
                if not f.endswith(".py") or f == "manifest.py":
                    continue
                rel = os.path.relpath(os.path.join(d, f), root)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(d, f)
    return out


def imports(name, path):
    """[(line, imported module name)] of one source file, relative imports resolved."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # `from firmware import app` depends on firmware.app, not only on firmware
            out += [(node.lineno, base + "." + a.name) for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            out.append((node.lineno, "<dynamic __import__>"))
    return out


def graph(root):
    return {name: imports(name, path) for name, path in modules(root).items()}


def violations(root):
    bad = []
    for src, deps in sorted(graph(root).items()):
        src_layer = layer(src)
        for line, dst in deps:
            if dst.startswith("<"):
                bad.append("%s:%d: %s hides a dependency from this check" % (src, line, dst))
                continue
            dst_layer = layer(dst)
            if allowed(src_layer, dst_layer) or (src, dst_layer) in EXTRA:
                continue
            bad.append("%s:%d imports %s: %s may not depend on %s" % (src, line, dst, src_layer, dst_layer))
    return bad


def test_imports_point_down_the_layers():
    bad = violations(ROOT)
    assert not bad, "layer breaks:\n" + "\n".join(bad)


def test_the_graph_is_read_whole():
    # The check sees lazy imports and every layer it judges.
    g = graph(ROOT)
    assert "firmware.ocpp.client.OcppClient" in [d for _, d in g["firmware.app"]]
    assert {layer(m) for m in g} >= {"core", "evse", "net", "ota", "ocpp", "app", "sim",
                                     "boards.common", "boards.unix", "boards.esp32", "boards.rp2040"}
    assert layer("firmware.core.timefmt") == "core" and layer("machine") is None


def test_each_board_calls_the_one_composition_root():
    # The three boards build their charger through firmware.app, and no
    # board module builds a Station or an OCPP client itself.
    g = graph(ROOT)
    for board in ("boards.unix.board", "boards.common.board"):
        assert "firmware.app" in {d for _, d in g[board]}, board
    for esp_or_pico in ("boards.esp32.main", "boards.rp2040.main"):
        assert "boards.common.board.main" in {d for _, d in g[esp_or_pico]}, esp_or_pico
    for name, deps in g.items():
        if name.startswith("boards"):
            assert not [d for _, d in deps if d.startswith(("firmware.station", "firmware.ocpp"))], name


def test_known_breaks_are_named():
    # The check itself: what the old tree did is refused, with the layer named.
    assert not allowed("core", "ocpp")
    assert not allowed("boards.common", "ocpp") and not allowed("boards.common", "evse")
    assert not allowed("boards.common", "boards.esp32") and not allowed("boards.unix", "boards.esp32")
    assert not allowed("evse", "ocpp") and not allowed("sim", "evse") and not allowed("app", "boards.unix")
    assert allowed("boards.esp32", "boards.common") and allowed("ocpp", "evse")

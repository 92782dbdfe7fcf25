# The one composition root: builds a charger from what a board hands it.
#
# A board (boards/unix/board.py, boards/common/board.py for the ESP32 and
# the RP2040) is its hardware layer, clock, store, network, pins and main.py.
# It boots the image the boot record names (boards/common/loader.py) and
# then calls, with `firmware` read from that image:
#
#   cfg = app.load_config(store, log, overrides)
#   st = app.build(board, cfg, log, slot, report, failures)
#   board.trial = app.start(board, st, cfg)
#
# build() wires the station, its updater and boot record, and the OCPP client
# when csms_url is set; start() starts it and watches a trial image. bench()
# is the technician's command set. Everything the charger is made of is put
# together here and nowhere else, so every board runs the same charger.
#
# What build() takes from the board (attributes):
#   hw, clock, store      the hardware interface (boards/README.md), the clock
#                         (firmware/core/clock.py), the store rooted at flash
#   slots, loader         the firmware slots and the boot loader
#   target                which files of an update bundle this board takes
#   reboot()              the board's orderly reboot (OCPP Reset, a failed trial)
#   serial                the charge point serial for BootNotification, or
#                         None ("SIM-" + the charger id)
#   net                   the network interface (firmware/net/link.py), whose
#                         task the board runs; None: dial as the port is
# Modules are imported inside the functions: a free-vend charger does not
# carry the OCPP client in its heap, and importing this module costs little
# before the boot loader has chosen the image.


def load_config(store, log, overrides=()):
    # config.json from the store with the board's overrides; a bad key is
    # logged and its default applies. Raises ConfigError when the charger
    # must not start (a bad charger id).
    from firmware.core import config as config_mod
    cfg, errors = config_mod.load(store, overrides)
    for e in errors:
        log.error("config", e)
    log.level = cfg["log_level"]
    log.json = cfg["log_json"]
    return cfg


def bench(board):
    # The technician's commands (REPL and control channel) on this board.
    from firmware.bench import Bench
    return Bench(board)


def build(board, cfg, log, slot, report, failures, working_tree=False):
    # The station, its updater and boot record, the OCPP client when a CSMS is
    # configured; not started yet. working_tree: the Unix board runs its
    # source tree in place of an installed slot, whose trial is not this
    # image's to confirm.
    from firmware.station import Station
    from firmware.ota.update import Updater
    for why in failures:
        log.error("boot", why)
    log.info("boot", "image %s (%s): %s" % (slot, board.slots.version(slot), report))
    st = Station(board.hw, board.clock, board.store, cfg, log, slot=slot)
    board.station = st
    st.reboot = board.reboot
    st.updater = Updater(board.slots, board.target, log)
    st.boot_info = board.loader.boot_info(slot, report, failures)
    if working_tree:
        st.boot_info["trial"] = False
    if cfg["csms_url"]:
        attach_ocpp(st, cfg, log, board.serial, board.net)
    return st


def start(board, st, cfg):
    # Start the charger; returns the Trial watching a trial image, or None.
    st.start()
    return board.loader.watch(st, board.reboot, cfg)


LINK_WAIT_MS = 60000  # the OCPP client waits this long for the link per dial


def attach_ocpp(st, cfg, log, serial=None, net=None):
    # Security profiles (firmware/ocpp/profile.py): the certificate files
    # seed the charger's certificate store at first boot; the link
    # arguments are worked out anew for every connection.
    from firmware.ocpp.client import OcppClient
    from firmware.net.ws import connect
    cp_id = cfg["id"]
    ca = None
    if cfg["csms_ca"]:
        try:
            with open(cfg["csms_ca"], "rb") as f:
                ca = f.read()
        except OSError as e:
            log.error("config", "csms_ca: cannot read %s: %s; wss:// will be refused" % (cfg["csms_ca"], e))
    tls_url = cfg["csms_tls_url"]
    opts = {"url": cfg["csms_url"].rstrip("/") + "/" + cp_id, "id": cp_id,
            "tls_url": tls_url.rstrip("/") + "/" + cp_id if tls_url else "",
            "auth_key": cfg["auth_key"], "security_profile": cfg["security_profile"],
            "basic": (cp_id, cfg["auth_key"]) if cfg["auth_key"] else None, "ca": ca,
            "ca_path": cfg["csms_ca"], "fw_root": cfg["fw_root"], "cp_cert": cfg["cp_cert"],
            "cp_key": cfg["cp_key"], "serial": serial or "SIM-" + cp_id}
    if net is None:
        return OcppClient(st, opts, connect)
    if net.KIND == "none":
        log.warn("ocpp", "csms_url is set but this board has no network: the CSMS is never reached; "
                 "local authorisation (local list, cache) only")
    cl = OcppClient(st, opts, _dial(net, connect))

    def link_changed(up):
        # A link that went down takes its connection with it: drop it at
        # once, so transaction messages queue (and are sent after the next
        # BootNotification) instead of waiting on a dead socket's timeouts.
        if not up and cl.ws is not None:
            cl.ws.abort("network down")
    net.on_change.append(link_changed)
    return cl


def _dial(net, connect):
    # The OCPP client's connect, which first waits for the link; while it is
    # down the dial fails like an unreachable host, and the client retries.
    from firmware.net.ws import WsConnectError

    async def dial(url, **kw):
        if not net.up and not await net.wait_up(LINK_WAIT_MS):
            raise WsConnectError("network %s (%s)" % (net.state, net.KIND))
        return await connect(url, **kw)
    return dial


def manufacturer_roots(store):
    # The manufacturer root certificates (DER list) the OCPP certificate store
    # holds, read straight from the store: for the USB update, which runs in
    # the maintenance boot without a charger.
    from firmware.ocpp.certs import stored_roots, MF_ROOT
    return stored_roots(store, MF_ROOT)


def max_visible_amps(us_per_sample):
    # The highest offered current whose pilot low half (1000 - duty us per
    # 1 ms period) is still longer than one ADC sample, for the board's
    # warning about slow pilot sampling.
    from firmware.evse.pilot import current_for
    duty = 1000 - us_per_sample
    while duty > 80 and current_for(duty) == 0:
        duty -= 1
    return current_for(duty) // 1000

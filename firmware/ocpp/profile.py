# Security profiles 1-3: how the charger connects to the CSMS. (Seam; filled
# in by the certificates / security-profile work.)
#
#   link_args(cl) -> keyword arguments for firmware.net.ws.connect:
#       url, basic, ca, cert, key


def link_args(cl):
    o = cl.opts
    return {"url": o["url"], "basic": o.get("basic"), "ca": o.get("ca")}

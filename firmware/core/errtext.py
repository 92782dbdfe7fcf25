# An exception in words for a log line or an error detail. Plain Python (no
# micropython module): the update checks in firmware/ota run on the host too.


def errtext(e):
    # An exception in words for a log line, "ClassName: message" (or the class
    # alone), never a repr such as NotConnected('connection lost',).
    name = type(e).__name__
    a = e.args
    if isinstance(e, OSError):
        msg = str(e)  # "[Errno 2] ENOENT" on MicroPython
    elif len(a) == 1:
        msg = str(a[0])
    else:
        msg = ", ".join(str(x) for x in a)
    return "%s: %s" % (name, msg) if msg else name

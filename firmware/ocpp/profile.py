# Security profiles 1-3 (OCPP 1.6 security whitepaper): how the charger
# connects to the CSMS, and the SecurityProfile / AuthorizationKey keys.
#
#   link_args(cl) -> keyword arguments for firmware.net.ws.connect:
#       url, basic, ca, cert, key (cert/key only for profile 3)
#
#   0: no security (Basic only if a password happens to be set)
#   1: ws:// with HTTP Basic id:AuthorizationKey
#   2: wss:// (server certificate checked against the installed
#      CentralSystemRootCertificates, host name too) with HTTP Basic
#   3: wss:// with the charge point certificate (mutual TLS), no Basic: the
#      certificate is the credential.
#
# URL: profile >= 2 needs wss://. When csms_url is ws:// the charger uses
# csms_tls_url if configured, else csms_url's host:port and path with wss://.
# The password: AuthorizationKey once the CSMS has set it, else config auth_key.
#
# The first SecurityProfile comes from the configuration (security_profile,
# or derived: wss:// with a client certificate -> 3, wss:// -> 2, auth_key ->
# 1, else 0) until a value is stored; a configured or derived profile above
# the stored one raises it (the technician's word, e.g. a client certificate
# added to the configuration). Lowering it is a local act too: a factory
# reset of the store (ocpp_keys.json). ChangeConfiguration may only
# raise it, and only to a profile the charger can use now (2: an installed
# CentralSystemRootCertificate; 3: also a charge point certificate and key;
# 1-2: a password). An accepted change (or a new AuthorizationKey) closes the
# connection; the next one uses the new setting.
from firmware.net.ws import WsHandshakeError, WsTlsError

KEY = "SecurityProfile"
CS_ROOT = "CentralSystemRootCertificate"


def password(cl):
    return cl.keys.get("AuthorizationKey") or cl.opts.get("auth_key") or ""


def initial(cl):
    o = cl.opts
    want = o.get("security_profile", -1)
    if want is None or want < 0:
        url = o.get("url", "")
        if url.startswith("wss://") and o.get("cp_cert") and o.get("cp_key"):
            want = 3
        elif url.startswith("wss://"):
            want = 2
        elif o.get("auth_key"):
            want = 1
        else:
            want = 0
    return want


def url_for(cl, prof):
    url = cl.opts["url"]
    if prof >= 2 and url.startswith("ws://"):
        return cl.opts.get("tls_url") or "wss://" + url[5:]
    return url


def link_args(cl):
    prof = cl.keys.get(KEY)
    url = url_for(cl, prof)
    args = {"url": url, "basic": None, "ca": None}
    if prof < 3:
        pw = password(cl)
        if pw:
            args["basic"] = (cl.opts["id"], pw)
    if url.startswith("wss://"):
        args["ca"] = cl.certs.ca_pem()
    if prof == 3:
        pair = cl.certs.client_pair()
        if pair:
            args["cert"], args["key"] = pair
    return args


def classify(cl, e):
    # A failed connect -> (security event type, techInfo), or None when it is
    # no security matter (refused, timeout, our own configuration). What this
    # port's mbedTLS binding lets us see is its error text:
    # - a server certificate that fails verification (untrusted CA, expired,
    #   wrong host name): "not correctly signed", "expired", "Common Name",
    #   "verif...": InvalidCentralSystemCertificate (OCTT TC_078);
    # - mbedTLS's own version / ciphersuite errors (it refuses what the server
    #   picked): InvalidTLSVersion / InvalidTLSCipherSuite;
    # - a server that refuses our TLS version or ciphers answers with a fatal
    #   alert, which arrives only as MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE with
    #   no alert code: version, cipher and a refused client certificate look
    #   the same. Under profile 3 (and for a handshake the server breaks off)
    #   it is taken as our certificate refused; under 0-2 no event, the log
    #   keeps the text.
    if isinstance(e, WsHandshakeError) and e.status in (401, 403):
        return "FailedToAuthenticateAtCentralSystem", "HTTP %d at the WebSocket upgrade" % e.status
    if not isinstance(e, WsTlsError):
        return None
    text = str(e)
    low = text.lower()
    if "unusable" in low or "needs ca=" in low or "needs both" in low:
        return None
    if ("verif" in low or "not correctly signed" in low or "expired" in low or "common name" in low
            or "not trusted" in low or "future" in low):
        return "InvalidCentralSystemCertificate", text
    if "protocol_version" in low or "protocol version" in low or "min/max" in low:
        return "InvalidTLSVersion", text
    if "ciphersuite" in low or "cipher suite" in low or "no_cipher" in low or "no cipher" in low:
        return "InvalidTLSCipherSuite", text
    if cl.keys.get(KEY) == 3:
        return "FailedToAuthenticateAtCentralSystem", "TLS handshake refused (client certificate?): " + text
    return None


def connect_failed(cl, e):
    # One event per distinct failure in a streak: the same failure on every
    # retry would flood the CSMS (and the security log).
    ev = classify(cl, e)
    st = cl.certs
    if ev is None or ev[0] in st.fail_streak:
        return
    st.fail_streak.append(ev[0])
    cl.security.event(ev[0], ev[1][:255])
    if ev[0] == "InvalidCentralSystemCertificate":
        # The CSMS's credentials (its certificate) were refused here: that is
        # also what CentralSystemFailedToAuthenticate reports.
        cl.security.event("CentralSystemFailedToAuthenticate", ev[1][:255])


def connected(cl):
    del cl.certs.fail_streak[:]


def _guard(cl, name, v):
    if name != KEY:
        return None
    cur = cl.keys.get(KEY)
    if v < cur:
        cl.security.audit("CSMS", "SecurityProfile %d -> %d refused: may only be raised" % (cur, v))
        return "Rejected"
    why = None
    if v in (1, 2) and not password(cl):
        why = "no AuthorizationKey"
    elif v >= 2 and not cl.certs.roots(CS_ROOT):
        why = "no CentralSystemRootCertificate installed"
    elif v == 3 and not cl.certs.client_pair():
        why = "no charge point certificate and key"
    if why:
        cl.security.audit("CSMS", "SecurityProfile %d -> %d refused: %s" % (cur, v, why))
        return "Rejected"
    cl.certs.old_profile = cur
    return None


def _changed(cl, name, v):
    if name == KEY:
        old = cl.certs.old_profile
        if old is not None and old != v:
            cl.security.event("ReconfigurationOfSecurityParameters", "SecurityProfile %d -> %d" % (old, v))
            cl.security.audit("CSMS", "SecurityProfile raised from %d to %d" % (old, v))
            relink(cl, "security profile %d" % v)
        cl.certs.old_profile = None
    elif name == "AuthorizationKey":
        cl.security.audit("CSMS", "AuthorizationKey changed")  # never the value
        if cl.keys.get(KEY) < 3:  # profile 3 sends no password
            relink(cl, "new AuthorizationKey")
    elif name == "CpoName":
        cl.security.audit("CSMS", "CpoName set to %r" % v)


def relink(cl, why):
    # Close the connection once the CSMS has our answer; the connect loop
    # reconnects with link_args as they are then.
    ws = cl.ws
    if ws is not None:
        cl.tasks.spawn(_relink(cl, ws, why), "relink")


async def _relink(cl, ws, why):
    await cl.clock.sleep_ms(300)  # the CALLRESULT goes out first
    if cl.ws is ws:
        cl.log.warn("ocpp", "reconnecting: %s" % why)
        # A short close handshake (real time): the CSMS learns why; the
        # session loop then sees the link gone and the connect loop reconnects.
        try:
            await ws.close(1000, "reconnect", 500)
        except Exception:
            pass
        ws.abort("reconnect")


def install(cl):
    k = cl.keys
    want = initial(cl)
    if KEY not in k.saved or want > k.get(KEY):
        k.values[KEY] = want
    k.guard = lambda name, v: _guard(cl, name, v)
    k.changed = lambda name, v: _changed(cl, name, v)

# Benchmark (MicroPython Unix port): verifying a signed update bundle.
#
#   micropython [-X heapsize=N] tools/bench/mp_ota.py --file F.signed --root ROOT.pem [--runs 5] [--mode time|heap]
#
# F.signed is a bundle with an embedded signature (tools/release.py sign
# --embed; trailer layout in firmware/ota/local.py). What the board does
# before it installs: firmware.ota.local.verify_signed (trailer, chain to the
# root, SHA-256 of the bundle, signature). Prints one line "RESULT {json}".
#   time: per run, the whole verify_signed, and its parts timed alone: the
#     SHA-256 of the N bundle bytes (streamed in 4 KiB reads), the signature
#     check on the digest, the certificate chain (signer, the trailer's
#     intermediates, the root: chain_certs of them); medians in ms. Also the
#     allocation volume of one verify (micropython.mem_total() growth, where
#     the build has it) and the live heap after the imports.
#   heap: one verify_signed; ok true when it passed. run.py bisects -X heapsize
#     with it for the smallest heap that verifies.
import sys

_parts = __file__.split("/")
sys.path.insert(0, "/".join(_parts[:-3]) or ("." if len(_parts) == 3 else ".."))

import gc
import json
import time


def arg(name, default=None):
    a = sys.argv
    return a[a.index(name) + 1] if name in a else default


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def ms(t0):
    return time.ticks_diff(time.ticks_us(), t0) / 1000


def main():
    path = arg("--file")
    mode = arg("--mode", "time")
    runs = int(arg("--runs", "5"))
    gc.collect()
    base = gc.mem_alloc()
    from firmware.ota import local
    from firmware.crypto import der, pem, verify
    from firmware.ota import bundle as _bundle
    from firmware.crypto.sha import sha256_file
    f = open(arg("--root"))
    roots = pem.decode_all(f.read())
    f.close()
    now = int(time.time())
    gc.collect()
    imports = gc.mem_alloc()
    if mode == "heap":
        try:
            n, root = local.verify_signed(path, roots, now)
            print("RESULT " + json.dumps({"ok": True, "n": n}))
        except MemoryError as e:
            print("RESULT " + json.dumps({"ok": False, "error": "MemoryError %r" % e}))
        except Exception as e:
            print("RESULT " + json.dumps({"ok": False, "error": repr(e)}))
        return
    n, cert_der, sig = _bundle.read_trailer(path)
    # The signer, then any intermediates the trailer carries.
    chain = [der.parse_certificate(d) for d in der.split_certificates(cert_der)]
    cert = chain[0]
    alg = _bundle._sig_alg(cert)
    tot, hsh, sg, ch = [], [], [], []
    for _ in range(runs):
        gc.collect()
        t0 = time.ticks_us()
        local.verify_signed(path, roots, now)
        tot.append(ms(t0))
        gc.collect()
        t0 = time.ticks_us()
        digest = sha256_file(path, _bundle.CHUNK, n)
        hsh.append(ms(t0))
        gc.collect()
        t0 = time.ticks_us()
        verify.verify_signature(cert, alg, digest, sig, is_digest=True)
        sg.append(ms(t0))
        gc.collect()
        t0 = time.ticks_us()
        verify.verify_chain(chain, roots, now)
        ch.append(ms(t0))
    # Allocation volume of one verify (bytes the allocator handed out; the GC
    # recycles most of it, so this is not live heap: see the heapsize bisection).
    alloc = None
    try:
        import micropython
        gc.collect()
        a0 = micropython.mem_total()
        local.verify_signed(path, roots, now)
        alloc = micropython.mem_total() - a0
    except AttributeError:
        pass
    print("RESULT " + json.dumps({
        "ok": True, "n": n, "alg": cert.public_key[0], "runs": runs, "chain_certs": len(chain) + 1,
        "total_ms": median(tot), "hash_ms": median(hsh), "sig_ms": median(sg), "chain_ms": median(ch),
        "total_all": tot, "alloc_verify": alloc, "live_base": base, "live_imports": imports,
        "mb_per_s": n / 1048576 / (median(hsh) / 1000) if median(hsh) else 0}))


try:
    main()
except MemoryError as e:  # during the imports, under a small -X heapsize
    print("RESULT " + json.dumps({"ok": False, "error": "MemoryError %r" % e}))

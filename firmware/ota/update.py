# One firmware update on this charger: verify a downloaded (or copied) bundle
# and install it into the inactive slot. Used by the OCPP firmware management
# (SignedUpdateFirmware, UpdateFirmware) and by the local USB path; the board
# owns the slots and says which hardware target it is.
#
# Every refusal is a VerifyError whose reason the caller maps to its status:
#   signature: policy.REASONS (bad_signature, unknown_root, cert_expired,
#              signer_is_ca, der_length, ...: docs/firmware-signing.md)
#   image:     bad_manifest, wrong_target, downgrade, size_mismatch, hash_mismatch
#   install:   trial_pending, slot_incomplete, install_failed (the slot could not be written)
#
# Each step is a generator (*_work, firmware/core/work.py). The charger's
# tasks call the async variants (verify_signature_async, check_async,
# install_async, check_signer_async), which drive that work in the bounded
# slices of a sched.Slice: one ECDSA verify is 0.3-3 s on an MCU, and the
# control loop must keep running meanwhile. The plain methods run the same
# work at once (tests, bench tools, the USB path in the maintenance boot).
import binascii
from firmware.core.work import run_sync
from firmware.ota import VerifyError
from firmware.ota import bundle
from firmware.core.errtext import errtext  # an exception in words for a log line

def is_signature_reason(reason):
    # Every certificate / signature refusal (docs/firmware-signing.md lists them).
    from firmware.crypto import policy
    return reason in policy.REASONS


def _slice(sl):
    if sl is None:
        from firmware.core.sched import Slice, WORK_SLICE_MS
        sl = Slice(WORK_SLICE_MS)
    return sl


def check_signer(cert_pem, roots, now):
    run_sync(check_signer_work(cert_pem, roots, now))


async def check_signer_async(cert_pem, roots, now, sl=None):
    await _slice(sl).run(check_signer_work(cert_pem, roots, now))


def check_signer_work(cert_pem, roots, now):
    """The signing certificate alone (SignedUpdateFirmware, before any download):
    it must chain to an installed ManufacturerRootCertificate, through the
    intermediates that follow it as further PEM blocks. Raises VerifyError."""
    from firmware.crypto import der, verify
    if not roots:
        raise VerifyError(verify.UNKNOWN_ROOT, "no ManufacturerRootCertificate installed")
    try:
        chain = [der.parse_certificate(d) for d in der.split_certificates(cert_pem)]
    except VerifyError:
        raise
    except Exception as e:
        raise VerifyError("malformed", errtext(e))
    yield from verify.verify_chain_work(chain, roots, now)


class Updater:
    """What a board offers for updates. slots: firmware.ota.slots.Slots;
    target: "unix", "esp32" or "rp2040"."""

    def __init__(self, slots, target, log=None):
        self.slots = slots
        self.target = target
        self.log = log

    def running_version(self):
        s = self.slots
        r, _ = s.record()
        return s.version(s.running or r["active"])

    def verify_signature(self, path, roots, now, sig_b64=None, cert_pem=None, unsigned=bundle.BAD_SIGNATURE):
        return run_sync(self.verify_signature_work(path, roots, now, sig_b64, cert_pem, unsigned))

    async def verify_signature_async(self, path, roots, now, sig_b64=None, cert_pem=None,
                                     unsigned=bundle.BAD_SIGNATURE, sl=None):
        return await _slice(sl).run(self.verify_signature_work(path, roots, now, sig_b64, cert_pem, unsigned))

    def verify_signature_work(self, path, roots, now, sig_b64=None, cert_pem=None, unsigned=bundle.BAD_SIGNATURE):
        """Signature over the file and the signer's chain to an installed root.

        Without sig_b64/cert_pem the file must carry its own signature
        (release.py sign --embed); without one it is refused with reason
        `unsigned`. Returns (the bundle's length in the file, the root Certificate)."""
        length = None
        if sig_b64 is None:
            t = bundle.read_trailer(path)
            if t is None:
                raise VerifyError(unsigned, "no signature: sign with tools/release.py sign --embed")
            length, cert_pem, sig = t
            sig_b64 = binascii.b2a_base64(sig)
        if not roots:
            raise VerifyError("unknown_root", "no ManufacturerRootCertificate installed")
        root = yield from bundle.verify_bundle_work(path, sig_b64, cert_pem, roots, now, length=length)
        return length, root

    def verify(self, path, roots, now, sig_b64=None, cert_pem=None, allow_downgrade=False):
        return run_sync(self.verify_work(path, roots, now, sig_b64, cert_pem, allow_downgrade))

    async def verify_async(self, path, roots, now, sig_b64=None, cert_pem=None, allow_downgrade=False, sl=None):
        return await _slice(sl).run(self.verify_work(path, roots, now, sig_b64, cert_pem, allow_downgrade))

    def verify_work(self, path, roots, now, sig_b64=None, cert_pem=None, allow_downgrade=False):
        """verify_signature, then check. Returns (manifest, bundle length)."""
        length, _ = yield from self.verify_signature_work(path, roots, now, sig_b64, cert_pem)
        return (yield from self.check_work(path, length, allow_downgrade))

    def check(self, path, length=None, allow_downgrade=False):
        return run_sync(self.check_work(path, length, allow_downgrade))

    async def check_async(self, path, length=None, allow_downgrade=False, sl=None):
        return await _slice(sl).run(self.check_work(path, length, allow_downgrade))

    def check_work(self, path, length=None, allow_downgrade=False):
        m = yield from bundle.read_manifest_work(path)
        running = self.running_version()
        why = yield from bundle.check_bundle_work(path, m, self.target, running, allow_downgrade, length)
        if why == bundle.DOWNGRADE:
            raise VerifyError(why, "%s is older than the running %s" % (m["version"], running))
        if why == bundle.WRONG_TARGET:
            raise VerifyError(why, "bundle is for %s, this is %s" % (",".join(m["targets"]), self.target))
        if why is not None:
            raise VerifyError(why, "bundle contents")
        return m, length

    def install(self, path, manifest, allow_downgrade=False):
        return run_sync(self.install_work(path, manifest, allow_downgrade))

    async def install_async(self, path, manifest, allow_downgrade=False, sl=None):
        return await _slice(sl).run(self.install_work(path, manifest, allow_downgrade))

    def install_work(self, path, manifest, allow_downgrade=False):
        """Into the inactive slot, armed for a trial boot. Returns the slot."""
        try:
            return (yield from self.slots.install_work(path, manifest, self.target, allow_downgrade=allow_downgrade))
        except OSError as e:
            raise VerifyError("install_failed", errtext(e))

#!/usr/bin/env python3
"""Baseline for `pqcc bench gpu-verify`: NVIDIA's nv-local-gpu-verifier 2.7.3 verifying
the same GPU evidence and RIMs (Set A) as pqcc, in process, timed by this script.

Usage: nv_gpu_verifier_baseline.py --report HEX_FILE --chain PEM_FILE --driver-rim F
       --vbios-rim F --nonce HEX --at UNIX [--runs N]

What it runs: `verifier.cc_admin.attest()` -- NVIDIA's whole per-GPU flow (report
parsing, device chain, report signature and nonce, driver + VBIOS RIM schema,
chain, XML-DSig, versions, golden measurements, claims) -- on an evidence object
that returns the given files instead of asking NVML.

Network calls are stubbed the same way pqcc skips them: the OCSP checks
(`CcAdminUtils.ocsp_certificate_chain_validation`) return "good" without a request,
and no RIM is fetched (both RIMs are given as files). Certificate validity is judged
at --at, as pqcc does (OpenSSL's X509Store gets that verification time), since the
2023 RIM signing certificate has since expired.

Prints one JSON object: per-run wall and thread-CPU ms of attest(), the verdict,
versions. Any rejection exits 1.
"""
import argparse
import importlib.metadata
import datetime
import json
import re
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", required=True)
    ap.add_argument("--chain", required=True)
    ap.add_argument("--driver-rim", required=True)
    ap.add_argument("--vbios-rim", required=True)
    ap.add_argument("--nonce", required=True)
    ap.add_argument("--at", type=int, required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()

    import logging
    import warnings
    warnings.simplefilter("ignore")
    from OpenSSL import crypto
    import verifier.cc_admin as cc_admin
    from verifier.cc_admin_utils import CcAdminUtils
    from verifier.config import BaseSettings, HopperSettings, info_log, event_log
    import pynvml

    if not a.verbose:
        for lg in (info_log, event_log):
            lg.setLevel(logging.CRITICAL)
            lg.disabled = True
    # NVML is never asked: a failed attest() would otherwise query the CC state.
    from verifier.nvml import NvmlHandler
    NvmlHandler.is_cc_dev_mode = staticmethod(lambda: False)

    # Certificate validity at --at (pyOpenSSL's store accepts a verification time).
    at = datetime.datetime.fromtimestamp(a.at, datetime.timezone.utc).replace(tzinfo=None)
    orig_store = crypto.X509Store

    class PinnedTimeStore(orig_store):
        def __init__(self):
            super().__init__()
            self.set_time(at)

    crypto.X509Store = PinnedTimeStore
    # signxml checks the RIM's embedded chain with an SSL context's store.
    from OpenSSL import SSL
    orig_get_store = SSL.Context.get_cert_store

    def pinned_get_store(self):
        store = orig_get_store(self)
        store.set_time(at)
        return store

    SSL.Context.get_cert_store = pinned_get_store

    # OCSP stub: no network, status "good" (pqcc's policy skips revocation alike).
    CcAdminUtils.ocsp_certificate_chain_validation = staticmethod(
        lambda chain, settings, mode: (True, "", "good", None))

    report = bytes.fromhex(re.sub(r"\s+", "", open(a.report).read()))
    pem = open(a.chain).read()
    certs = [crypto.load_certificate(crypto.FILETYPE_PEM, m)
             for m in re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)]

    class Evidence:
        """Stands in for NvmlHandler: returns the given files."""
        def get_gpu_architecture(self):
            return pynvml.NVML_DEVICE_ARCH_HOPPER
        def get_driver_version(self):
            return "545.00"
        def get_vbios_version(self):
            return "96.00.5E.00.01"
        def get_attestation_report(self):
            return report
        def get_attestation_cert_chain(self):
            return list(certs)
        def get_uuid(self):
            return "GPU-00000000-0000-0000-0000-000000000000"

    HopperSettings.DRIVER_RIM_PATH = a.driver_rim
    args = {
        "verbose": False, "test_no_gpu": False, "driver_rim": a.driver_rim,
        "vbios_rim": a.vbios_rim, "user_mode": True, "allow_hold_cert": False,
        "service_key": None, "nonce": a.nonce, "rim_root_cert": None,
        "rim_service_url": None, "ocsp_url": None, "ocsp_nonce_disabled": True,
        "claims_version": "2.0",
    }

    def once():
        c = time.thread_time()
        t = time.perf_counter()
        ok, _claims = cc_admin.attest(args, a.nonce, [Evidence()])
        return (time.perf_counter() - t) * 1e3, (time.thread_time() - c) * 1e3, ok

    _, _, ok = once()  # warm-up (imports, schema parse caches)
    if not ok:
        print(json.dumps({"error": "NVIDIA's verifier rejected the evidence"}))
        sys.exit(1)
    wall, cpu = [], []
    for _ in range(a.runs):
        ms, cpu_ms, ok = once()
        if not ok:
            print(json.dumps({"error": "NVIDIA's verifier rejected the evidence"}))
            sys.exit(1)
        wall.append(ms)
        cpu.append(cpu_ms)
    print(json.dumps({
        "verifier": "nv-local-gpu-verifier " + importlib.metadata.version("nv-local-gpu-verifier"),
        "python": sys.version.split()[0],
        "verdict": bool(ok),
        "wall_ms": wall,
        "cpu_ms": cpu,
    }))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Baseline for `pqcc bench sign`: pqc-gpu-driver 0.1.0's driver attestation.

Times, on the file given, what pqc-gpu-driver 0.1.0 does to sign and to verify a
driver module with its default backend (whatever `pip install pqc-gpu-driver==0.1.0`
gives: its quantumshield dependency uses liboqs ML-DSA when `oqs` is importable, else
Ed25519, else a stub; the backend in use is reported):

  sign   = read the file, DriverModule.hash_module_bytes (SHA3-256 of the bytes),
           DriverAttester.attest(DriverModule(...))
  verify = read the file, DriverAttestationVerifier.verify(attestation, bytes),
           which re-hashes the bytes and checks the signature and the signer allow-list

Each is run --runs times after one warm-up; the median is printed, in milliseconds, as
one JSON object on stdout: {"sign_ms", "verify_ms", ...}, with the median process CPU
times ("sign_cpu_ms", "verify_cpu_ms") and every sample ("*_samples_ms"), so a caller
can pool several invocations. Diagnostics go to stderr.

Install: python3 -m venv target/bench-venv && target/bench-venv/bin/pip install
pqc-gpu-driver==0.1.0, then run this script with target/bench-venv/bin/python.
"""

import argparse
import json
import os
import statistics
import sys
import time
import warnings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", help="the driver module to sign and verify")
    ap.add_argument("--runs", type=int, default=9, help="timed runs of each (default 9)")
    ap.add_argument(
        "--no-read",
        action="store_true",
        help="time only the library calls on bytes already in memory",
    )
    args = ap.parse_args()
    if args.runs < 1:
        print("--runs must be at least 1", file=sys.stderr)
        return 2

    with warnings.catch_warnings():
        # quantumshield warns when it falls back from liboqs; report it instead.
        warnings.simplefilter("ignore")
        try:
            import pqc_gpu_driver
            from pqc_gpu_driver import (
                DriverAttestationVerifier,
                DriverAttester,
                DriverModule,
            )
            from quantumshield.core.keys import get_backend
            from quantumshield.identity.agent import AgentIdentity
        except ImportError as e:
            print(f"pqc-gpu-driver is not installed: {e}", file=sys.stderr)
            return 3
        identity = AgentIdentity.create("pqcc-bench")

    path = args.file
    size = os.path.getsize(path)
    attester = DriverAttester(identity)
    verifier = DriverAttestationVerifier(trusted_signers={identity.did})
    preloaded = None
    if args.no_read:
        with open(path, "rb") as f:
            preloaded = f.read()

    def load() -> bytes:
        if preloaded is not None:
            return preloaded
        with open(path, "rb") as f:
            return f.read()

    def sign():
        data = load()
        module = DriverModule(
            name=os.path.basename(path),
            version="0.0.0",
            module_hash=DriverModule.hash_module_bytes(data),
            module_size=len(data),
        )
        return attester.attest(module)

    def verify(att):
        data = load()
        result = verifier.verify(att, data)
        if not result.valid:
            raise SystemExit(f"baseline verification failed: {result.error}")

    sign_ms, verify_ms, sign_cpu, verify_cpu = [], [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        att = sign()
        verify(att)  # warm-up
        for _ in range(args.runs):
            c = time.process_time()
            t = time.perf_counter()
            att = sign()
            sign_ms.append((time.perf_counter() - t) * 1e3)
            sign_cpu.append((time.process_time() - c) * 1e3)
            c = time.process_time()
            t = time.perf_counter()
            verify(att)
            verify_ms.append((time.perf_counter() - t) * 1e3)
            verify_cpu.append((time.process_time() - c) * 1e3)

    print(
        json.dumps(
            {
                "sign_ms": statistics.median(sign_ms),
                "verify_ms": statistics.median(verify_ms),
                "sign_cpu_ms": statistics.median(sign_cpu),
                "verify_cpu_ms": statistics.median(verify_cpu),
                "sign_samples_ms": sign_ms,
                "verify_samples_ms": verify_ms,
                "sign_cpu_samples_ms": sign_cpu,
                "verify_cpu_samples_ms": verify_cpu,
                "runs": args.runs,
                "bytes": size,
                "includes_file_read": not args.no_read,
                "package": f"pqc-gpu-driver {pqc_gpu_driver.__version__}",
                "backend": get_backend(),
                "algorithm": att.algorithm,
                "python": sys.version.split()[0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

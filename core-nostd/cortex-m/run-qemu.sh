#!/usr/bin/env bash
# Runs one defmt-test ELF on QEMU's mps2-an386 (Cortex-M4) and decodes its defmt
# output with defmt-print. Prints the decoded log, then a summary line
# `N passed, M failed` (plus `K not run` when a failure stopped the run early), and
# exits non-zero when QEMU did not report success or any test failed.
# Used as cargo's runner (.cargo/config.toml) and by .ci/nostd.sh.
#
# QEMU_TIMEOUT (seconds, default 600) bounds the QEMU run.
set -euo pipefail

elf="${1:?usage: run-qemu.sh <test-elf>}"
for tool in qemu-system-arm defmt-print; do
  command -v "$tool" >/dev/null || { echo "run-qemu.sh: $tool not found" >&2; exit 2; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# With target=native, the guest's semihosting stdout (the binary defmt stream) is
# QEMU's own stdout; serial and monitor are switched off so nothing else lands there.
# SYS_EXIT ends QEMU with the guest's status.
set +e
timeout "${QEMU_TIMEOUT:-600}" qemu-system-arm \
  -machine mps2-an386 -cpu cortex-m4 \
  -nographic -monitor none -serial none \
  -semihosting-config enable=on,target=native \
  -kernel "$elf" >"$work/defmt.bin"
qemu_rc=$?
set -e

defmt-print -e "$elf" stdin <"$work/defmt.bin" >"$work/log.txt" 2>&1 || true
cat "$work/log.txt"

# defmt-test prints `(i/N) running `name`...` before test i and `all tests passed!`
# after the last one; tests/selftest.rs's `after_each` prints `test ok ...` after each
# test that passed. A failing test panics, which ends the run there.
total="$(sed -n 's/^(\([0-9]*\)\/\([0-9]*\)) running .*/\2/p' "$work/log.txt" | head -n 1)"
total="${total:-0}"
started="$(grep -c '^([0-9]*/[0-9]*) running ' "$work/log.txt" || true)"
passed="$(grep -c '^test ok' "$work/log.txt" || true)"
failed=$((started - passed))
if [ "$qemu_rc" -ne 0 ] || [ "$total" -eq 0 ] || ! grep -q '^all tests passed!' "$work/log.txt"; then
  # QEMU failed, nothing ran, or the run stopped early: at least one failure.
  if [ "$failed" -lt 1 ]; then failed=1; fi
fi
not_run=$((total - passed - failed))
if [ "$not_run" -gt 0 ]; then
  echo "$passed passed, $failed failed ($not_run not run)"
else
  echo "$passed passed, $failed failed"
fi
if [ "$qemu_rc" -eq 124 ]; then
  echo "run-qemu.sh: QEMU timed out after ${QEMU_TIMEOUT:-600}s" >&2
fi
if [ "$failed" -ne 0 ]; then
  echo "run-qemu.sh: qemu exit status $qemu_rc" >&2
  exit 1
fi

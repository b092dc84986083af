# pqcc — see README.md.
.PHONY: test demo

test:
	./scripts/test.sh

demo:
	@echo "pqcc: the end-to-end demo (guest boot, attestation, key release) is not built yet." >&2
	@exit 1

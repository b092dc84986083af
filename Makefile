# pqcc — see README.md.
.PHONY: test demo

test:
	./scripts/test.sh

# make demo                 the happy path (exit 0)
# make demo TAMPER=model    or broker-key, policy, broker-down, key (a wrong model key
#                           released: the workload refuses it): shows the refusal (exit 1)
demo:
	./scripts/demo.sh $(if $(TAMPER),--tamper $(TAMPER))

# Two commands do all set-up on a fresh machine (see README):
#   make ci     provision, then run the whole pipeline on the reference service
#   make test   provision, then run the tests
.PHONY: ci test provision bench

provision:
	scripts/provision.sh

ci: provision
	.venv/bin/flightcheck ci

test: provision
	scripts/test.sh

bench: provision
	.venv/bin/python bench/bench_lint.py
	.venv/bin/python bench/bench_readiness.py
	.venv/bin/python bench/bench_proxy.py
	.venv/bin/python bench/bench_deploy.py

.PHONY: bootstrap venv test lint unit demo
bootstrap:
	scripts/bootstrap.sh
venv:
	scripts/bootstrap.sh --venv
test: bootstrap
	scripts/test.sh
lint: venv
	scripts/test.sh --lint-only
unit: venv
	scripts/test.sh --unit
demo: bootstrap
	.venv/bin/kubeaccel demo

.PHONY: bootstrap test demo
bootstrap:
	scripts/bootstrap.sh
test: bootstrap
	scripts/test.sh
demo: bootstrap
	.venv/bin/kubeaccel demo

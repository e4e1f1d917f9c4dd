# Conveniences over the scripts the README documents.
.PHONY: setup demo test bench
setup:
	bash scripts/setup.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
N ?= 100000
bench:
	bash scripts/bench.sh $(N)

# Conveniences over the scripts the README documents.
.PHONY: setup demo test test-fast test-unit test-database test-cli test-faults test-playbook test-e2e reliability bench \
	bench-runbook
setup:
	bash scripts/setup.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
# The inner loop: the unit and database tiers (the library against one PostgreSQL, small homeservers; what is
# fast is the rule in tests/support/tiers.py), on both cores.
test-fast:
	bash scripts/test.sh -m "unit or database"
# One tier (tests/support/tiers.py assigns every test file to one).
test-unit test-database test-cli test-faults test-playbook test-e2e:
	bash scripts/test.sh -m $(patsubst test-%,%,$@)
# The import's whole reliability suite: every fault at every step (the test run has one of each).
reliability:
	bash scripts/setup.sh
	SYN2MAS_RELIABILITY=full .venv/bin/python -m pytest tests/integration/test_import_reliability.py \
		tests/integration/test_import_kill_points.py tests/integration/test_bad_inputs.py \
		tests/integration/test_report_secrets.py \
		tests/integration/test_import_safety.py
N ?= 100000
bench:
	bash scripts/bench.sh $(N)
# The runbook's downtime window (bench/runbook.py): migrate.yml against a real Synapse of N generated users.
bench-runbook:
	bash scripts/bench-runbook.sh $(N)

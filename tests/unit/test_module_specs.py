"""The modules' option choices and defaults come from the library's constants, so they cannot drift."""

from __future__ import annotations

import ast
import os

from _syn2mas.config import mas_synapse_link as mas_link, synapse_auth_delegation as synapse_delegation
from _syn2mas.host import reverse_proxy, state as state_record
from _syn2mas.advisor import report as advisor_report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def documented_option(module: str, option: str) -> dict:
    """An option of a module's DOCUMENTATION, as ansible-doc reads it."""
    import yaml

    tree = ast.parse(open(os.path.join(ROOT, "plugins", "modules", module + ".py")).read())
    doc = next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
               and getattr(n.targets[0], "id", "") == "DOCUMENTATION")
    return yaml.safe_load(doc)["options"][option]


def test_documented_choices_and_defaults_are_the_librarys():
    assert documented_option("mas_synapse_link", "kind")["choices"] == list(mas_link.MAS_KINDS)
    assert documented_option("synapse_auth_delegation", "client_id")["default"] == \
        synapse_delegation.DEFAULT_MSC3861_CLIENT_ID
    assert documented_option("syn2mas_state", "state")["choices"] == list(state_record.STATES)
    assert documented_option("syn2mas_state", "path")["default"] == state_record.DEFAULT_STATE_FILE
    assert documented_option("syn2mas_advisor", "fail_on")["choices"] == list(advisor_report.FAIL_ON)
    assert documented_option("syn2mas_reverse_proxy", "kind")["choices"] == list(reverse_proxy.KINDS)


def test_the_action_group_lists_every_module():
    """`module_defaults: {group/matrix.syn2mas.syn2mas: ...}` reaches every module of the collection."""
    import yaml

    with open(os.path.join(ROOT, "meta", "runtime.yml")) as handle:
        group = yaml.safe_load(handle)["action_groups"]["syn2mas"]
    modules = sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "plugins", "modules"))
                     if name.endswith(".py") and name != "__init__.py")
    assert len(modules) > 0
    assert sorted(group) == modules
    assert len(group) == len(set(group))


def requirement_lines(name: str) -> dict:
    from packaging.requirements import Requirement

    with open(os.path.join(ROOT, name)) as handle:
        lines = [line.split("#")[0].strip() for line in handle]
    return {r.name: r for r in (Requirement(line) for line in lines if line and not line.startswith("-"))}


def test_controller_requirements_are_ranges_holding_the_tested_versions():
    """requirements-controller.txt gives ranges a controller can meet; the tests pin the versions they run."""
    import yaml

    ranges = requirement_lines("requirements-controller.txt")
    tested = requirement_lines("tests/constraints-controller.txt")
    assert sorted(ranges) == sorted(tested) == ["ansible-core", "ruamel.yaml"]
    for name, requirement in ranges.items():
        assert not any(spec.operator == "==" for spec in requirement.specifier), requirement
        (pin,) = tested[name].specifier
        assert pin.operator == "==" and requirement.specifier.contains(pin.version), (requirement, pin)
    # The test virtualenv runs the same ansible-core, and the range starts where the collection says it does.
    assert requirement_lines("requirements-test.txt")["ansible-core"].specifier == tested["ansible-core"].specifier
    with open(os.path.join(ROOT, "meta", "runtime.yml")) as handle:
        requires = yaml.safe_load(handle)["requires_ansible"]
    assert requires.startswith(">=") and ranges["ansible-core"].specifier.contains(requires[2:])
    assert not ranges["ansible-core"].specifier.contains("2.15.13")


def test_the_state_path_is_spelled_out_only_in_the_library_and_the_modules_documentation():
    """The roles and playbooks leave the default to syn2mas_state, whose default is the library's constant."""
    allowed = {os.path.join("plugins", "module_utils", "_syn2mas", "host", "state.py"): 1,  # the constant
               os.path.join("plugins", "modules", "syn2mas_state.py"): 1}  # its documented default
    found = {}
    for top in ("roles", "playbooks", "plugins", "meta"):
        for folder, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(folder, name)
                try:
                    count = open(path, encoding="utf-8").read().count(state_record.DEFAULT_STATE_FILE)
                except (UnicodeDecodeError, OSError):
                    continue
                if count:
                    found[os.path.relpath(path, ROOT)] = count
    assert found == allowed


def test_the_phases_documented_are_the_librarys():
    from _syn2mas.runbook import phase as phase_record

    assert documented_option("syn2mas_phase", "phase")["choices"] == list(phase_record.MARKS)

"""The modules' option choices and defaults come from the library's constants, so they cannot drift."""

from __future__ import annotations

import ast
import os

from _syn2mas import mas_link, state_record, synapse_delegation
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

# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The import's refusals, judged by the advisor's own checks, so both say the same words.

The import gathers its facts in its own order (lock, schema, snapshot) and hands each to the check
that judges it here; an ERROR finding becomes the refusal, worded as the advisor lists it
(`check: message [where] -> remedy`).
"""

from __future__ import annotations

from ..errors import RefusedError
from .facts import AdvisorOptions, Facts
from .registry import ERROR, REGISTRY
from .report import finding_line

# The checks the import refuses through, in the order it meets them.
IMPORT_REFUSALS = (
    "mas_homeserver_mismatch", "mas_already_imported", "mas_running", "mas_not_empty", "mas_row_rewriters",
    "synapse_schema_too_old",
    "synapse_running", "wrong_server_name_users", "oauth_delegated_links", "sso_links_unknown_provider",
    "sso_provider_unmapped", "sso_provider_not_in_mas_database",
)


def import_facts(synapse, server_name: str, mas, mapping: dict, real_import: bool) -> Facts:
    """The facts the import holds once it has read the configs (the databases' parts come later)."""
    options = AdvisorOptions(synapse_config=list(synapse.files), for_real_import=real_import)
    return Facts(options, synapse=synapse, settings=synapse.raw, server_name=server_name, mas=mas, mapping=mapping)


def errors_of(facts: Facts, *check_ids) -> list:
    """The ERROR findings of these checks on `facts`, completed as the advisor reports them."""
    found = []
    for check_id in check_ids:
        verdict = REGISTRY[check_id].judge(facts)
        for item in [verdict] if isinstance(verdict, dict) else (verdict if isinstance(verdict, list) else []):
            if item["severity"] == ERROR:
                found.append({"check": item.get("check", check_id), **item})
    return found


def refuse(facts: Facts, *check_ids, error=RefusedError) -> None:
    """Raises `error` with the lines of the ERROR findings of these checks, if any."""
    found = errors_of(facts, *check_ids)
    if found:
        raise error("; ".join(finding_line(item) for item in found))


__all__ = ["IMPORT_REFUSALS", "errors_of", "import_facts", "refuse"]

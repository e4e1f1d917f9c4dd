"""The stage table (stages.py) is the one list of what the import writes into MAS: mas_schema derives from it."""

from __future__ import annotations

import dataclasses

import pytest

from _syn2mas.migration.mas_schema import LEFT_COLUMNS, WRITTEN_TABLES, MasSchema, written_tables
from _syn2mas.migration.stages import STAGES


def test_every_column_a_stage_writes_is_a_written_column_of_its_table():
    for stage in STAGES:
        spec = WRITTEN_TABLES[stage.table]
        assert tuple(stage.columns) == spec["write"], stage.name
        assert tuple(stage.optional_columns) == spec["optional"], stage.name


def test_a_column_added_to_a_stage_is_written():
    users = STAGES[0]
    grown = dataclasses.replace(users, columns={**users.columns, "new_column": "NULL"})
    assert "new_column" in written_tables((grown,) + STAGES[1:])["users"]["write"]


def test_two_stages_of_one_table_that_write_different_columns_are_refused_by_name():
    sessions = [stage for stage in STAGES if stage.table == "compat_sessions"]
    assert len(sessions) == 2  # devices and deviceless access tokens
    columns = {k: v for k, v in sessions[1].columns.items() if k != "human_name"}
    short = dataclasses.replace(sessions[1], columns=columns)
    with pytest.raises(ValueError, match=f"stage {sessions[1].name} writes other columns into compat_sessions"):
        written_tables([sessions[0], short])


def test_the_left_columns_belong_to_written_tables():
    assert set(LEFT_COLUMNS) <= set(WRITTEN_TABLES)


def test_target_columns_follow_the_stages_and_add_optional_columns_only_where_mas_has_them():
    present = {table: {c: (True, False) for c in spec["write"] + spec["leave"]}
               for table, spec in WRITTEN_TABLES.items()}
    without = MasSchema(1, 1, "test", present)
    assert without.target_columns("user_emails") == list(WRITTEN_TABLES["user_emails"]["write"])
    emails = {**present["user_emails"], "confirmed_at": (False, False)}
    with_confirmed = MasSchema(1, 1, "test", {**present, "user_emails": emails})
    assert with_confirmed.target_columns("user_emails")[-1] == "confirmed_at"

"""Every audited table leads to an organization (ihub.audit.recorder.ORG_LINKS): a table left out files the
changes to its rows under the actor's own organization, where Owners of the organization they belong to never
see them (event endpoints and bulk replays once were)."""

from __future__ import annotations

from ihub.audit.recorder import ORG_LINKS, UNAUDITED_TABLES
from ihub.db.registry import metadata


def test_every_audited_table_names_the_way_to_its_organization() -> None:
    audited = {table.name for table in metadata.sorted_tables} - UNAUDITED_TABLES - {"organizations"}
    assert audited - ORG_LINKS.keys() == set()
    for table, (column, parent) in ORG_LINKS.items():
        assert column in metadata.tables[table].c, (table, column)
        assert parent in metadata.tables, (table, parent)

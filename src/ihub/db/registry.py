"""Imports every domain's tables so that `Base.metadata` is complete (Alembic, tests)."""

from ihub.accounts import models as _accounts  # noqa: F401
from ihub.audit import models as _audit  # noqa: F401
from ihub.db.base import Base
from ihub.events import models as _events  # noqa: F401
from ihub.flows import models as _flows  # noqa: F401
from ihub.incoming import models as _incoming  # noqa: F401
from ihub.oauth import models as _oauth  # noqa: F401
from ihub.projects import models as _projects  # noqa: F401
from ihub.provisioning import models as _provisioning  # noqa: F401
from ihub.ratelimit import models as _ratelimit  # noqa: F401
from ihub.replays import models as _replays  # noqa: F401
from ihub.runs import models as _runs  # noqa: F401
from ihub.templates import models as _templates  # noqa: F401
from ihub.tenancy import models as _tenancy  # noqa: F401

metadata = Base.metadata


def _ids_never_reused() -> None:
    """AUTOINCREMENT on SQLite for every table with an integer `id` (migration 0012 says why): without it SQLite
    hands a deleted newest row's id to the next row. PostgreSQL's sequences never reuse one anyway."""
    for table in metadata.tables.values():
        if [column.name for column in table.primary_key.columns] == ["id"]:
            table.dialect_options["sqlite"]["autoincrement"] = True


_ids_never_reused()

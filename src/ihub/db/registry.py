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

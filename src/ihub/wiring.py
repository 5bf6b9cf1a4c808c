"""Where the domains that must not import each other are connected: the composition root's one call.

Dependencies between domains point one way, tenancy <- templates <- projects (tests/test_wiring.py fails on
an import against that direction). Where a lower domain needs an answer only a higher one has (may this org
be deleted? which projects follow this template?), it declares a Protocol and the higher domain implements
it; `connect_domains` hands each implementation over. `build_context` (every API and worker process) and the
`ihub` command's callback call it; a lower domain used unwired raises instead of skipping the check.
"""

from __future__ import annotations

from ihub.projects import service as projects
from ihub.templates import service as templates
from ihub.tenancy import service as tenancy


def connect_domains() -> None:
    tenancy.use_org_contents(projects)
    templates.use_template_users(projects)

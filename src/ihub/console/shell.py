"""What every signed-in page shows around its content: the org tree of the viewer's subtree, the selected
organization and its breadcrumbs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ihub.console.auth import Viewer
from ihub.tenancy import service as tenancy
from ihub.tenancy.models import Organization

# The pages that exist per organization, as `/console/org/{id}/<page>`.
ORG_PAGES = ("projects", "templates", "runs", "failures", "replays", "users", "events", "orgs")


@dataclass
class OrgNode:
    id: int
    name: str
    depth: int
    children: list[OrgNode] = field(default_factory=list)


@dataclass(frozen=True)
class Shell:
    viewer: Viewer
    tree: list[OrgNode]
    org: Organization
    breadcrumbs: list[Organization]
    section: str
    # Where the org tree's links lead: the same page of the org that is clicked ("users", "runs" ...).
    org_page: str

    def context(self) -> dict[str, Any]:
        return {"shell": self, "viewer": self.viewer, "csrf": self.viewer.csrf, "org": self.org}


def build_tree(orgs: list[Organization]) -> list[OrgNode]:
    """Nest the orgs by parent; the viewer's own org is the only root (the subtree is all they see)."""
    nodes = {org.id: OrgNode(org.id, org.name, org.path.count("/") - 2) for org in orgs}
    roots: list[OrgNode] = []
    for org in sorted(orgs, key=lambda o: (o.path.count("/"), o.name.lower())):
        parent = nodes.get(org.parent_id) if org.parent_id is not None else None
        (parent.children if parent else roots).append(nodes[org.id])
    return roots


async def load_shell(
    session: AsyncSession, viewer: Viewer, org_id: int | None, section: str, org_page: str | None = None
) -> Shell:
    """The shell with `org_id` selected (404 like the API when it is outside the viewer's subtree), or the
    viewer's own organization."""
    orgs = list(await tenancy.list_orgs(session, viewer.principal))
    selected = await tenancy.visible_org(session, viewer.principal, org_id or viewer.principal.org_id)
    by_id = {org.id: org for org in orgs}
    crumbs = [by_id[int(part)] for part in selected.path.strip("/").split("/") if int(part) in by_id]
    page = org_page or (section if section in ORG_PAGES else "projects")
    return Shell(viewer, build_tree(orgs), selected, crumbs, section, page)

"""Who may do what: roles, the caller's identity and the subtree rule.

A user acts only inside their own organization's subtree. Objects outside it answer 404 (their
existence is not revealed); actions the role does not allow answer 403.

| action              | Owner | Admin               | Member |
|---------------------|-------|---------------------|--------|
| read anything       | yes   | yes                 | yes    |
| manage orgs         | yes   | no                  | no     |
| manage users        | yes   | not Owners          | no     |
| generate API keys   | yes   | no                  | no     |
| manage templates    | yes   | yes                 | no     |
| manage event hooks  | yes   | yes                 | no     |
| manage projects     | yes   | yes                 | yes    |
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ihub.common.errors import forbidden


class Role(StrEnum):
    OWNER = "Owner"
    ADMIN = "Admin"
    MEMBER = "Member"

    @classmethod
    def parse(cls, value: str) -> Role:
        for role in cls:
            if role.value.lower() == value.strip().lower():
                return role
        raise ValueError(f"role must be one of {', '.join(r.value for r in cls)}")


@dataclass(frozen=True)
class Principal:
    user_id: int
    org_id: int
    org_path: str
    role: Role

    def sees(self, org_path: str) -> bool:
        return org_path.startswith(self.org_path)


def require_owner(principal: Principal, action: str) -> None:
    if principal.role is not Role.OWNER:
        raise forbidden(f"only an Owner may {action}")


def require_admin(principal: Principal, action: str) -> None:
    if principal.role is Role.MEMBER:
        raise forbidden(f"only an Owner or Admin may {action}")


def require_user_manager(principal: Principal, target_role: Role | None, action: str) -> None:
    """Owners manage every user; Admins manage Admins and Members but never touch an Owner."""
    require_admin(principal, action)
    if principal.role is Role.ADMIN and target_role is Role.OWNER:
        raise forbidden(f"only an Owner may {action} an Owner")

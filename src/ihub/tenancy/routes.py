"""`/api/v1/org` and `/api/v1/user` routes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import TypeAdapter, ValidationError

from ihub.common.body import json_or_form, parse_body, refuse_nul, request_body, validation_error
from ihub.common.context import Session
from ihub.common.ids import path_id
from ihub.common.responses import errors
from ihub.provisioning.deps import Caller
from ihub.provisioning.service import has_key
from ihub.tenancy import service
from ihub.tenancy.models import Organization, User
from ihub.tenancy.schemas import OrgCreate, OrgList, OrgOut, OrgUpdate, UserCreate, UserList, UserOut, UserUpdate

router = APIRouter(prefix="/api/v1", responses=errors(400, 401, 403, 404))

UsersIn = list[UserCreate] | UserCreate


async def users_body(request: Request) -> list[UserCreate]:
    """An array of users or one user object; errors name the entry's index (`users[1].email`)."""
    data = await parse_body(request)
    entries = refuse_nul(data if isinstance(data, list) else [data], prefix=("users",))
    try:
        return TypeAdapter(list[UserCreate]).validate_python(entries)
    except ValidationError as error:
        raise validation_error(error, prefix=("users",)) from None


def org_list(*orgs: Organization) -> OrgList:
    return OrgList(organizations=[OrgOut.model_validate(org, from_attributes=True) for org in orgs])


async def user_list(session: Session, users: list[User]) -> UserList:
    keyed = await has_key(session, [user.id for user in users])
    return UserList(
        users=[
            UserOut.model_validate(user, from_attributes=True).model_copy(update={"has_key": user.id in keyed})
            for user in users
        ]
    )


@router.get("/org", response_model=OrgList, response_model_by_alias=True, tags=["organizations"])
async def list_orgs(caller: Caller, session: Session) -> OrgList:
    """The caller's organization and every organization below it."""
    return org_list(*await service.list_orgs(session, caller))


@router.get("/org/{org_id}", response_model=OrgList, tags=["organizations"])
async def get_org(org_id: str, caller: Caller, session: Session) -> OrgList:
    return org_list(await service.visible_org(session, caller, path_id(org_id, "organization")))


@router.post(
    "/org",
    response_model=OrgList,
    tags=["organizations"],
    responses=errors(409),
    openapi_extra=request_body(OrgCreate, example={"name": "Acme EMEA", "parentId": "1"}),
)
async def create_org(caller: Caller, session: Session, body: OrgCreate = json_or_form(OrgCreate)) -> OrgList:
    """Create an organization; `parentId` defaults to the caller's organization. Owners only."""
    return org_list(await service.create_org(session, caller, body))


@router.put(
    "/org/{org_id}",
    response_model=OrgList,
    tags=["organizations"],
    responses=errors(409),
    openapi_extra=request_body(OrgUpdate, example={"name": "Acme Europe"}),
)
async def update_org(
    org_id: str, caller: Caller, session: Session, body: OrgUpdate = json_or_form(OrgUpdate)
) -> OrgList:
    """Rename an organization or move it under another parent (never under itself). Owners only."""
    return org_list(await service.update_org(session, caller, path_id(org_id, "organization"), body))


@router.delete("/org/{org_id}", response_model=OrgList, tags=["organizations"], responses=errors(409))
async def delete_org(org_id: str, caller: Caller, session: Session, cascade: bool = False) -> OrgList:
    """Delete an empty organization, or with `?cascade=true` its whole subtree. Owners only."""
    return org_list(await service.delete_org(session, caller, path_id(org_id, "organization"), cascade))


@router.post(
    "/user/org/{org_id}",
    response_model=UserList,
    tags=["users"],
    responses=errors(409),
    openapi_extra=request_body(
        UsersIn,
        name="UsersCreate",
        example=[{"name": "Steve Owner", "email": "steve@example.com", "role": "Owner"}],
    ),
)
async def create_users(
    org_id: str, caller: Caller, session: Session, entries: list[UserCreate] = Depends(users_body)
) -> UserList:
    """Add one user or an array of users, all or nothing."""
    return await user_list(
        session, await service.create_users(session, caller, path_id(org_id, "organization"), entries)
    )


@router.get("/user/org/{org_id}", response_model=UserList, tags=["users"])
async def list_users(org_id: str, caller: Caller, session: Session) -> UserList:
    return await user_list(session, list(await service.list_users(session, caller, path_id(org_id, "organization"))))


@router.get("/user/{user_id}", response_model=UserList, tags=["users"])
async def get_user(user_id: str, caller: Caller, session: Session) -> UserList:
    return await user_list(session, [await service.visible_user(session, caller, path_id(user_id, "user"))])


@router.put(
    "/user/{user_id}",
    response_model=UserList,
    tags=["users"],
    responses=errors(409),
    openapi_extra=request_body(UserUpdate, example={"role": "Admin"}),
)
async def update_user(
    user_id: str, caller: Caller, session: Session, body: UserUpdate = json_or_form(UserUpdate)
) -> UserList:
    return await user_list(session, [await service.update_user(session, caller, path_id(user_id, "user"), body)])


@router.delete("/user/{user_id}", response_model=UserList, tags=["users"])
async def delete_user(user_id: str, caller: Caller, session: Session) -> UserList:
    return await user_list(session, [await service.delete_user(session, caller, path_id(user_id, "user"))])

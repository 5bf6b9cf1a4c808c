import pytest

pytestmark = pytest.mark.anyio


async def test_token_then_list_orgs(client, auth):
    response = await client.get("/api/v1/org", headers=auth)
    assert response.status_code == 200
    assert [o["id"] for o in response.json()["organizations"]] == ["1"]

"""The edge of the API: body limits before parsing, the JSON guard, bad bytes in any field, the
one error body in answers and in /openapi.json, offline /docs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cardsvc.api.limits import DEFAULT_LIMIT, MAX_DEPTH
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from hsm_sim import pboc
from terminals.access.canonical import canonical_request
from terminals.access.endpoints import SIGN_IN_LIMIT
from terminals.devices.host_client import dev_tmk
from terminals.uploads.endpoints import upload_limit
from tests.factories import build_registry, staff_headers
from tests.terminals.helpers import host

LOGIN = "/api/v1/staff/login"
SIGN_IN = "/api/v1/terminal/sign-in"
UPLOADS = "/api/v1/terminal/uploads"
RESIDENTS = "/api/v1/residents"


async def _chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("path", "limit"),
    [(LOGIN, 4096), (SIGN_IN, SIGN_IN_LIMIT.max_bytes), (RESIDENTS, DEFAULT_LIMIT.max_bytes)],
)
async def test_a_body_over_the_route_limit_is_refused_before_it_is_read(
    client: httpx.AsyncClient, path: str, limit: int
) -> None:
    # No token, no MAC: the limit comes before authentication, and the body is never parsed.
    body = b'{"a":' + b"[" * 10 + b"0" * (limit + 1) + b"]" * 10 + b"}"
    response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {
        "error": "BodyTooLarge",
        "detail": f"the body exceeds this route's limit of {limit} bytes",
        "limit": limit,
    }
    assert response.headers["connection"] == "close"


async def test_a_body_without_length_is_cut_at_the_limit(client: httpx.AsyncClient) -> None:
    body = b'{"username": "' + b"x" * 100_000 + b'", "password": "p"}'
    response = await client.post(
        LOGIN, content=_chunks(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["limit"] == 4096


async def test_the_upload_limit_follows_the_record_limit(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    limit = upload_limit(resources.settings)
    assert limit.max_bytes == 4096 + resources.settings.upload_max_records * 1024
    response = await client.post(
        UPLOADS, content=b" " * (limit.max_bytes + 1), headers={"X-Terminal-No": "321100000001"}
    )
    assert (response.status_code, response.json()["limit"]) == (413, limit.max_bytes)
    assert (await client.get("/openapi.json")).json()["paths"][UPLOADS]["post"][
        "x-body-limit"
    ] == limit.max_bytes


async def test_too_many_json_values_are_refused_before_objects_are_built(
    client: httpx.AsyncClient,
) -> None:
    body = b"[" + b",".join(b"{}" for _ in range(600)) + b"]"  # 1.8 KB, 600 objects
    response = await client.post(LOGIN, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["fields"] == [
        {"loc": ["body"], "msg": "more than 16 JSON values", "type": "json_too_many_values"}
    ]


async def test_nesting_is_bounded(client: httpx.AsyncClient) -> None:
    headers = await staff_headers(client, "op", Role.counter_operator)
    deep = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    response = await client.patch(
        f"{RESIDENTS}/1",
        content=b'{"address":' + deep + b"}",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["type"] == "json_too_deep"
    assert response.json()["fields"][0]["loc"][:2] == ["body", "address"]


BAD_VALUES = [
    ('"op\\u0000"', "string_bad_character"),
    ('"\\ud800x"', "string_bad_character"),
    ("1e999", "number_not_finite"),
    ("NaN", "number_not_finite"),
    ("9223372036854775808", "number_out_of_range"),
    ("-9223372036854775809", "number_out_of_range"),
    ("1.5e19", "number_out_of_range"),
]


@pytest.mark.parametrize(("value", "kind"), BAD_VALUES)
async def test_bad_bytes_in_a_staff_field_name_the_field(
    client: httpx.AsyncClient, value: str, kind: str
) -> None:
    body = '{"username": %s, "password": "whatever"}' % value  # noqa: UP031 - raw JSON text
    response = await client.post(
        LOGIN, content=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "RequestValidationFailed"
    assert response.json()["fields"][0]["loc"] == ["body", "username"]
    assert response.json()["fields"][0]["type"] == kind


@pytest.mark.parametrize(("value", "kind"), BAD_VALUES)
async def test_bad_bytes_in_a_terminal_field_name_the_field(
    client: httpx.AsyncClient, resources: Resources, value: str, kind: str
) -> None:
    world = await build_registry(resources, buses=1, taxis=0)
    terminal = world.bus_terminals[0]
    body = (
        '{"terminal_no": "%s", "psam_no": "AB", "terminal_time": "20260101000000",'  # noqa: UP031
        ' "nonce": "00", "blacklist_version": %s, "params_version": 0}' % (terminal, value)
    ).encode()
    mac = pboc.full_mac(
        dev_tmk(terminal), canonical_request("POST", SIGN_IN, terminal, "", 0, body)
    )
    response = await client.post(
        SIGN_IN, content=body, headers={"X-Terminal-No": terminal, "X-Mac": mac.hex()}
    )
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0] == {
        "loc": ["body", "blacklist_version"],
        "msg": response.json()["fields"][0]["msg"],
        "type": kind,
    }


async def test_the_sign_in_mac_is_checked_before_the_body_is_parsed(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    world = await build_registry(resources, buses=1, taxis=0)
    body = b'{"terminal_no": NaN}'
    response = await client.post(
        SIGN_IN, content=body, headers={"X-Terminal-No": world.bus_terminals[0], "X-Mac": "00" * 8}
    )
    assert (response.status_code, response.json()["error"]) == (401, "MacInvalid")


async def test_a_signed_upload_with_bad_bytes_is_refused(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    world = await build_registry(resources, buses=1, taxis=0)
    terminal = host(client, world.bus_terminals[0])
    await terminal.sign_in()
    body = b'{"batch_no": 99999999999999999999, "records": []}'
    response = await client.post(
        UPLOADS, content=body, headers=terminal.signed_headers("POST", UPLOADS, body)
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["loc"] == ["body", "batch_no"]


@pytest.mark.parametrize(
    ("target", "loc"),
    [
        (f"{RESIDENTS}/9223372036854775808", ["path", "resident_id"]),
        ("/api/v1/audit?limit=99999999999999999999", ["query", "limit"]),
        ("/api/v1/cards/3211%00", ["path", "card_no"]),
        ("/api/v1/blacklist?since=-9223372036854775809", ["query", "since"]),
    ],
)
async def test_bad_path_and_query_values_name_the_parameter(
    client: httpx.AsyncClient, target: str, loc: list[str]
) -> None:
    headers = await staff_headers(client, "aud", Role.auditor, Role.counter_operator)
    response = await client.get(target, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["loc"] == loc


async def test_unmatched_routes_answer_the_error_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nowhere")
    assert response.status_code == 404
    assert response.json() == {"error": "NotFound", "detail": "Not Found"}
    response = await client.delete(LOGIN)
    assert (response.status_code, response.json()["error"]) == (405, "MethodNotAllowed")


async def test_openapi_documents_one_error_body_and_who_is_admitted(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            assert responses["503"]["content"]["application/json"]["schema"] == error_ref, where
            if not path.startswith("/api/"):
                continue
            assert "**Admits:**" in operation["description"], where
            admits = operation["x-admits"]
            for status in ("413", "422"):
                assert responses[status]["content"]["application/json"]["schema"] == error_ref
            if admits["kind"] != "public":
                assert {"401", "403"} <= set(responses), where
            if "{" in path:
                assert "404" in responses, where
    registry = schema["paths"]["/api/v1/terminals/{terminal_no}/kind"]["post"]
    assert registry["x-admits"] == {"kind": "staff", "roles": ["administrator"]}
    assert schema["paths"][SIGN_IN]["post"]["x-admits"]["kind"] == "public"
    assert schema["paths"][UPLOADS]["post"]["x-admits"]["kind"] == "terminal"


async def test_docs_are_served_without_the_internet(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    assert "cdn" not in page.lower()
    assert "/docs/assets/swagger-ui-bundle.js" in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        response = await client.get(f"/docs/assets/{asset}")
        assert response.status_code == 200
        assert len(response.content) > 10_000
    assert "fonts.googleapis" not in (await client.get("/redoc")).text

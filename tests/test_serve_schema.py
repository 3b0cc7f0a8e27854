"""The OpenAPI schema is true (issue 14 item 9): a real server, over HTTP, is made to give
each error it can give, and every answer's status must be declared for its operation and
its body must validate against the declared schema (errors are {"detail": "one line"})."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn

from serve_helpers import encode, shapes_image
from tapkit.serve import ServeSettings, create_app


def validate(value, schema: dict, components: dict, where: str = "body") -> None:
    """A small JSON Schema check (the parts pydantic emits): $ref, type, anyOf, enum,
    properties, required, items; raises AssertionError naming the first misfit."""
    if "$ref" in schema:
        return validate(value, components[schema["$ref"].rsplit("/", 1)[1]], components, where)
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                return validate(value, option, components, where)
            except AssertionError as err:
                errors.append(str(err))
        raise AssertionError(f"{where}: {value!r} fits no anyOf option ({'; '.join(errors)})")
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict,
             "null": type(None)}
    if "type" in schema:
        kind = schema["type"]
        ok = isinstance(value, kinds[kind]) and not (kind in ("integer", "number") and isinstance(value, bool))
        assert ok, f"{where}: {value!r} is not of type {kind}"
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            assert name in value, f"{where}: missing required '{name}'"
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                validate(value[name], sub, components, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], components, f"{where}[{i}]")


@pytest.fixture
def served(tiny_model):
    """A real uvicorn server on a free loopback port, with small limits and no automatic mode."""
    app = create_app(tiny_model, ServeSettings(max_upload_bytes=60_000, max_json_bytes=20_000, max_prompts=4), everything=None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    server.should_exit = True
    thread.join(timeout=10)


def test_every_answer_is_declared_by_the_schema(served):
    schema = served.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components  # FastAPI's default 422 body, an array: not what is sent

    def check(method: str, template: str, response: httpx.Response, expected: int) -> None:
        assert response.status_code == expected, (method, template, response.status_code, response.text)
        declared = schema["paths"][template][method]["responses"]
        assert str(expected) in declared, f"{method.upper()} {template} answers {expected}, which is not declared"
        content = declared[str(expected)].get("content")
        if content is None:
            assert not response.content
            return
        validate(response.json(), content["application/json"]["schema"], components, f"{method.upper()} {template} {expected}")

    png = encode(shapes_image(), "PNG")
    up = served.post("/v1/images", files={"file": ("a.png", png, "image/png")})
    check("post", "/v1/images", up, 201)
    image = up.json()["id"]
    one = "/v1/images/{image_id}"
    check("get", "/healthz", served.get("/healthz"), 200)
    check("get", one, served.get(f"/v1/images/{image}"), 200)
    check("get", one, served.get("/v1/images/nope"), 404)
    check("delete", one, served.delete("/v1/images/nope"), 404)
    regions = one + "/regions"
    good = {"prompts": [{"points": [[40, 30, 1]]}, {"box": [10, 10, 90, 70]}, {"sketch": [[20, 20], [60, 40]]}]}
    check("post", regions, served.post(f"/v1/images/{image}/regions", json=good), 200)
    check("post", regions, served.post("/v1/images/nope/regions", json=good), 404)
    for bad in ({"prompts": "no"}, {"prompts": [{"box": [1, 2]}]}, {"prompts": [{"points": [[999, 5, 1]]}]},
                {"prompts": [{"points": [[1, 1, 1]]}] * 5}, {"unknown": 1}):
        check("post", regions, served.post(f"/v1/images/{image}/regions", json=bad), 422)
    check("post", regions, served.post(f"/v1/images/{image}/regions", content=b"{not json", headers={"content-type": "application/json"}), 422)
    check("post", regions, served.post(f"/v1/images/{image}/regions", content=b" " * 30_000, headers={"content-type": "application/json"}), 413)
    check("post", "/v1/images", served.post("/v1/images", files={"file": ("t.txt", b"just text", "text/plain")}), 415)
    check("post", "/v1/images", served.post("/v1/images", files={"file": ("big.bmp", b"BM" + b"\0" * 70_000, "image/bmp")}), 413)
    check("post", "/v1/images", served.post("/v1/images", files={"file": ("bad.png", png[:60], "image/png")}), 422)
    check("post", "/v1/images", served.post("/v1/images", data={"nofile": "x"}), 422)
    check("post", one + "/everything", served.post(f"/v1/images/{image}/everything"), 501)
    check("post", "/v1/images", served.post("/v1/images", files={"file": ("a.png", png, "image/png")},
                                            headers={"origin": "http://evil.example"}), 403)
    check("delete", one, served.delete(f"/v1/images/{image}"), 204)


def test_a_wrong_method_lists_every_method_of_the_path(served):
    """405's Allow names all the methods the schema documents for the path (Starlette alone
    names only the first route that matched: GET, not DELETE)."""
    schema = served.get("/openapi.json").json()
    path = "/v1/images/{image_id}"
    documented = sorted(m.upper() for m in schema["paths"][path])
    answer = served.request("OPTIONS", "/v1/images/0")
    assert answer.status_code == 405 and answer.json() == {"detail": "Method Not Allowed"}
    assert sorted(m.strip() for m in answer.headers["allow"].split(",")) == documented == ["DELETE", "GET"]

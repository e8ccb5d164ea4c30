"""Unmodified web apps behind function URLs and HTTP APIs (payload 2.0 and 1.0) through the
adapters people use: an Express app wrapped by `serverless-http` on the Node runtime, and a
Starlette app wrapped by `Mangum` run by awslambdaric. The packages come from npm and PyPI
(see web_apps.py); Python `requests` drives routing, path parameters, query strings, JSON
bodies, status codes, headers, cookies and redirects through each front end.
"""

from __future__ import annotations

import pytest
import requests

from test_function_urls import make_public, url_id


@pytest.fixture(scope="module")
def app_urls(lam, server, web_app_functions) -> dict[str, str]:
    """A public BUFFERED function URL base per app ({"express": "http://…/<id>", …})."""
    urls = {}
    for kind, name in web_app_functions.items():
        created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
        make_public(lam, name)
        urls[kind] = f"http://127.0.0.1:{server.url_port}/{url_id(created['FunctionUrl'])}"
    return urls


@pytest.fixture(scope="module")
def app_apis(server, web_app_functions) -> dict[str, str]:
    """HTTP APIs in front of each app: `api2-<app>` (quick create: payload 2.0 on the
    `$default` stage) and `api1-<app>` (a `$default` route with payload format 1.0)."""
    from test_lambent_cli import as_json, lambent

    def api(*args):
        return as_json(lambent(server, "api", *args, "--output", "json"))

    bases = {}
    for kind, name in web_app_functions.items():
        api_id = api("create", f"web2-{kind}", "--target", name)["ApiId"]
        bases[f"api2-{kind}"] = f"http://127.0.0.1:{server.url_port}/{api_id}"
        api_id = api("create", f"web1-{kind}")["ApiId"]
        api("route", "add", api_id, "$default", "--target", name, "--payload-format", "1.0")
        api("deploy", api_id)
        bases[f"api1-{kind}"] = f"http://127.0.0.1:{server.url_port}/{api_id}"
    return bases


@pytest.fixture(
    params=["url-express", "url-starlette", "api2-express", "api2-starlette", "api1-express", "api1-starlette"]
)
def base(request) -> str:
    """The app's base address behind a function URL or an HTTP API (payload 2.0 or 1.0)."""
    front, kind = request.param.split("-")
    if front == "url":
        return request.getfixturevalue("app_urls")[kind]
    return request.getfixturevalue("app_apis")[request.param]


def test_routing_and_plain_text(base):
    resp = requests.get(f"{base}/health", timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.text == "ok"
    assert resp.headers["content-type"].startswith("text/")


def test_path_parameters_and_404(base):
    resp = requests.get(f"{base}/items/1", timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["name"] == "first"
    assert resp.headers["x-item-id"] == "1"
    resp = requests.get(f"{base}/items/999", timeout=30)
    assert resp.status_code == 404
    assert resp.json() == {"error": "no item 999"}
    # a route the app does not have: the framework's own 404
    assert requests.get(f"{base}/no/such/route", timeout=30).status_code == 404


def test_query_strings(base):
    resp = requests.get(f"{base}/items", params=[("q", "a b&c"), ("tag", "x"), ("tag", "y")], timeout=30)
    assert resp.status_code == 200, resp.text
    query = resp.json()["query"]
    # Express gives one value as a string and repeats as a list; Starlette always lists
    assert query["q"] in ("a b&c", ["a b&c"])
    assert query["tag"] == ["x", "y"]


def test_json_bodies_and_status_codes(base):
    resp = requests.post(f"{base}/items", json={"name": "widget", "tags": ["new", "ünïcode"]}, timeout=30)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["name"] == "widget" and created["tags"] == ["new", "ünïcode"]
    assert resp.headers["location"] == f"/items/{created['id']}"
    assert requests.get(f"{base}/items/{created['id']}", timeout=30).json()["name"] == "widget"
    resp = requests.post(f"{base}/items", json={"nameless": True}, timeout=30)
    assert resp.status_code == 400
    assert resp.json() == {"error": "name is required"}
    assert requests.delete(f"{base}/items/{created['id']}", timeout=30).status_code == 204
    assert requests.delete(f"{base}/items/{created['id']}", timeout=30).status_code == 404


def test_request_headers_and_cookies_reach_the_app(base):
    resp = requests.get(
        f"{base}/headers", headers={"X-Custom": "hello", "Cookie": "a=1; b=two"}, timeout=30
    )
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["custom"] == "hello"
    assert got["method"] == "GET"
    assert got["path"] == "/headers"
    if "cookies" in got:
        assert got["cookies"] == {"a": "1", "b": "two"}
    else:
        assert got["cookie"] == "a=1; b=two"


def test_response_cookies_become_set_cookie_headers(base):
    resp = requests.get(f"{base}/login", timeout=30)
    assert resp.status_code == 204, resp.text
    set_cookies = resp.raw.headers.getlist("set-cookie")
    assert len(set_cookies) == 2, set_cookies
    session = next(c for c in set_cookies if c.startswith("session=abc123"))
    assert "httponly" in session.lower()
    assert any(c.startswith("theme=dark") for c in set_cookies)
    assert resp.cookies.get("session") == "abc123"


def test_redirects(base):
    resp = requests.get(f"{base}/redirect", allow_redirects=False, timeout=30)
    assert resp.status_code == 302
    assert resp.headers["location"] == "/items/1"


# ---------------------------------------------------------------------------------------
# Powertools for AWS Lambda (Python): its resolvers parse each front end's event strictly.


@pytest.fixture(scope="module")
def powertools_bases(server, lam, venv_python) -> dict[str, str]:
    """The Powertools app behind a function URL (LambdaFunctionUrlResolver), an HTTP API
    with payload 2.0 (APIGatewayHttpResolver) and one with payload 1.0
    (APIGatewayRestResolver)."""
    import helpers as h
    import web_apps
    from test_lambent_cli import as_json, lambent

    def api(*args):
        return as_json(lambent(server, "api", *args, "--output", "json"))

    code = web_apps.powertools_zip()
    names = {}
    for resolver in ("url", "http", "rest"):
        names[resolver] = h.uniq(f"powertools-{resolver}")
        h.create_function(
            lam, names[resolver], code, "provided.al2023", "app.handler",
            env={"LAMBENT_TEST_PYTHON": venv_python, "RESOLVER": resolver}, Timeout=10, MemorySize=256,
        )
    created = lam.create_function_url_config(FunctionName=names["url"], AuthType="NONE")
    make_public(lam, names["url"])
    bases = {"url": f"http://127.0.0.1:{server.url_port}/{url_id(created['FunctionUrl'])}"}
    api_id = api("create", "powertools-http", "--target", names["http"])["ApiId"]
    bases["http"] = f"http://127.0.0.1:{server.url_port}/{api_id}"
    api_id = api("create", "powertools-rest")["ApiId"]
    api("route", "add", api_id, "ANY /{proxy+}", "--target", names["rest"], "--payload-format", "1.0")
    api("deploy", api_id)
    bases["rest"] = f"http://127.0.0.1:{server.url_port}/{api_id}"
    return bases


@pytest.mark.parametrize("front", ["url", "http", "rest"])
def test_powertools_resolvers(powertools_bases, front):
    b = powertools_bases[front]
    resp = requests.get(f"{b}/hello/ada?q=1", headers={"X-Custom": "c"}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"hello": "ada", "method": "GET", "path": "/hello/ada", "q": "1", "header": "c"}
    resp = requests.post(f"{b}/items", json={"name": "widget"}, timeout=30)
    assert resp.status_code == 201, resp.text
    assert resp.json() == {"created": "widget"} and resp.headers["x-made"] == "yes"
    resp = requests.get(f"{b}/nope", timeout=30)
    assert resp.status_code == 404 and resp.text == "nothing here"


# ---------------------------------------------------------------------------------------
# Rust lambda_http: it picks the event type by trying deserializers in turn, so it needs
# complete events of the right shape.


@pytest.fixture(scope="module")
def lambda_http_bases(server, lam) -> dict[str, str]:
    """The lambda_http function behind a function URL and HTTP APIs (2.0 and 1.0), each on a
    stage with the variable color=blue."""
    import helpers as h
    from test_lambent_cli import as_json, lambent

    def api(*args):
        return as_json(lambent(server, "api", *args, "--output", "json"))

    name = h.uniq("lambda-http")
    code = h.make_zip({"bootstrap": (h.http_echo_binary().read_bytes(), 0o755)})
    h.create_function(lam, name, code, "provided.al2023", "bootstrap", Timeout=10, MemorySize=128)
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    make_public(lam, name)
    bases = {"url": f"http://127.0.0.1:{server.url_port}/{url_id(created['FunctionUrl'])}"}
    for version in ("2.0", "1.0"):
        api_id = api("create", f"lambda-http-{version}")["ApiId"]
        api("route", "add", api_id, "ANY /items/{id}", "--target", name, "--payload-format", version)
        api("stage", "add", api_id, "$default", "--var", "color=blue")
        api("deploy", api_id)
        bases[version] = f"http://127.0.0.1:{server.url_port}/{api_id}"
    return bases


@pytest.mark.parametrize("front,kind", [("url", "apigw-v2"), ("2.0", "apigw-v2"), ("1.0", "apigw-v1")])
def test_lambda_http(lambda_http_bases, front, kind):
    resp = requests.post(
        f"{lambda_http_bases[front]}/items/7?q=search",
        data="hello rust",
        headers={"X-Custom": "c", "Content-Type": "text/plain"},
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["x-rust"] == "lambda_http"
    got = resp.json()
    assert got["kind"] == kind
    assert got["method"] == "POST" and got["path"] == "/items/7"
    assert got["q"] == "search" and got["header"] == "c" and got["body"] == "hello rust"
    if front == "url":
        assert got["id"] is None and got["color"] is None
    else:
        assert got["id"] == "7" and got["color"] == "blue"

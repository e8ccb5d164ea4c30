"""ListFunctions pagination over exactly 120 functions.

Runs against a server of its own (fresh data dir) so the count is exact.
"""

import signal

import pytest

import helpers as h

COUNT = 120


@pytest.fixture(scope="module")
def paged(tmp_path_factory):
    base = tmp_path_factory.mktemp("lambent-paging")
    srv = h.start_server(base / "data", base / "server.log")
    lam = srv.client()
    code = h.make_zip({"app.py": "def handler(event, context):\n    return event\n"})
    names = [f"page-{i:03d}-{h.uniq('f')}" for i in range(COUNT)]
    for name in names:
        lam.create_function(
            FunctionName=name, Runtime="python3.12", Handler="app.handler", Role=h.ROLE, Code={"ZipFile": code}
        )
    yield srv, lam, names
    if srv.proc.poll() is None:
        srv.terminate()


def test_pages_of_50_50_20(paged):
    _srv, lam, names = paged
    sizes, seen, marker = [], [], None
    for _ in range(10):
        kwargs = {"MaxItems": 50}
        if marker:
            kwargs["Marker"] = marker
        resp = lam.list_functions(**kwargs)
        sizes.append(len(resp["Functions"]))
        seen += [f["FunctionName"] for f in resp["Functions"]]
        marker = resp.get("NextMarker")
        if not marker:
            assert "NextMarker" not in resp or resp["NextMarker"] is None
            break
    assert sizes == [50, 50, 20]
    assert len(seen) == len(set(seen)) == COUNT
    assert set(seen) == set(names)


def test_small_pages(paged):
    _srv, lam, names = paged
    seen, marker, pages = [], None, 0
    while True:
        kwargs = {"MaxItems": 7}
        if marker:
            kwargs["Marker"] = marker
        resp = lam.list_functions(**kwargs)
        pages += 1
        assert len(resp["Functions"]) <= 7
        seen += [f["FunctionName"] for f in resp["Functions"]]
        marker = resp.get("NextMarker")
        if not marker:
            break
        assert pages < 40
    assert pages == 18  # 17 full pages of 7 and one of 1
    assert sorted(seen) == sorted(names)


def test_default_page_is_at_most_50(paged):
    _srv, lam, _names = paged
    resp = lam.list_functions()
    assert 0 < len(resp["Functions"]) <= 50
    assert resp.get("NextMarker"), "120 functions do not fit in one page: NextMarker expected"


def test_boto3_paginator_returns_all_exactly_once(paged):
    _srv, lam, names = paged
    got = [f["FunctionName"] for page in lam.get_paginator("list_functions").paginate() for f in page["Functions"]]
    assert len(got) == COUNT
    assert sorted(got) == sorted(names)
    got50 = [
        f["FunctionName"]
        for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 50})
        for f in page["Functions"]
    ]
    assert sorted(got50) == sorted(names)


def test_entries_are_full_configurations(paged):
    _srv, lam, names = paged
    resp = lam.list_functions(MaxItems=50)
    for f in resp["Functions"]:
        assert f["FunctionArn"] == h.function_arn(f["FunctionName"])
        assert f["Runtime"] == "python3.12"
        assert f["Version"] == "$LATEST"
        assert h.LAST_MODIFIED_RE.match(f["LastModified"])


def test_zz_paging_server_stops_cleanly_on_ctrl_c(paged):
    # the session server is stopped with SIGTERM (test_zz_shutdown.py); this one with SIGINT
    srv, _lam, _names = paged
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(timeout=20) == 0, srv.log_tail()

"""An ordinary Starlette (ASGI) app, unmodified but for the last line: Mangum turns Lambda
events (function URLs, HTTP APIs, REST APIs) into ASGI requests to it."""

from mangum import Mangum
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

ITEMS = {1: {"id": 1, "name": "first"}}


async def health(request: Request):
    return PlainTextResponse("ok")


async def list_items(request: Request):
    return JSONResponse({"items": list(ITEMS.values()), "query": {k: request.query_params.getlist(k) for k in request.query_params}})


async def get_item(request: Request):
    item_id = request.path_params["item_id"]
    item = ITEMS.get(item_id)
    if item is None:
        return JSONResponse({"error": f"no item {item_id}"}, status_code=404)
    return JSONResponse(item, headers={"x-item-id": str(item_id)})


async def create_item(request: Request):
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "body is not JSON"}, status_code=400)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return JSONResponse({"error": "name is required"}, status_code=400)
    item_id = len(ITEMS) + 1
    item = {"id": item_id, "name": body["name"], "tags": body.get("tags", [])}
    ITEMS[item_id] = item
    return JSONResponse(item, status_code=201, headers={"location": f"/items/{item_id}"})


async def headers(request: Request):
    return JSONResponse(
        {
            "custom": request.headers.get("x-custom"),
            "cookies": dict(request.cookies),
            "method": request.method,
            "path": request.url.path,
        }
    )


async def login(request: Request):
    response = Response(status_code=204)
    response.set_cookie("session", "abc123", httponly=True, path="/")
    response.set_cookie("theme", "dark")
    return response


async def redirect(request: Request):
    return RedirectResponse("/items/1", status_code=302)


async def delete_item(request: Request):
    existed = ITEMS.pop(request.path_params["item_id"], None) is not None
    return Response(status_code=204 if existed else 404)


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/items", list_items, methods=["GET"]),
        Route("/items", create_item, methods=["POST"]),
        Route("/items/{item_id:int}", get_item, methods=["GET"]),
        Route("/items/{item_id:int}", delete_item, methods=["DELETE"]),
        Route("/headers", headers),
        Route("/login", login),
        Route("/redirect", redirect),
    ]
)

handler = Mangum(app, lifespan="off")

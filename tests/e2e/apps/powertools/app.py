"""An ordinary Powertools for AWS Lambda (Python) REST app, unmodified but for picking the
resolver that matches its front end (env RESOLVER): LambdaFunctionUrlResolver behind a
function URL, APIGatewayHttpResolver behind an HTTP API (payload 2.0),
APIGatewayRestResolver for payload 1.0. Powertools parses the event into its own data
classes, so a field of the wrong shape fails here."""

import json
import os

from aws_lambda_powertools.event_handler import (
    APIGatewayHttpResolver,
    APIGatewayRestResolver,
    LambdaFunctionUrlResolver,
    Response,
    content_types,
)

RESOLVERS = {
    "url": LambdaFunctionUrlResolver,
    "http": APIGatewayHttpResolver,
    "rest": APIGatewayRestResolver,
}
app = RESOLVERS[os.environ["RESOLVER"]]()


@app.get("/hello/<name>")
def hello(name: str):
    event = app.current_event
    return {
        "hello": name,
        "method": event.http_method,
        "path": event.path,
        "q": event.get_query_string_value("q"),
        "header": event.headers.get("x-custom"),
    }


@app.post("/items")
def create_item():
    body = app.current_event.json_body
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"created": body["name"]}),
        headers={"x-made": "yes"},
    )


@app.not_found
def not_found(_error):
    return Response(status_code=404, content_type=content_types.TEXT_PLAIN, body="nothing here")


def handler(event, context):
    return app.resolve(event, context)

//! An HTTP function on `lambda_http`, unmodified as users write them: it answers with what
//! lambda_http made of the event (which event type it recognised, method, path, query, path
//! parameters, stage variables, a header and the body), so tests can check that Lambent's
//! function URL and HTTP API events deserialize as AWS's do.

use lambda_http::request::RequestContext;
use lambda_http::{Body, Error, Request, RequestExt, Response, run, service_fn};
use serde_json::json;

async fn handle(request: Request) -> Result<Response<Body>, Error> {
    let kind = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(_)) => "apigw-v2",
        Some(RequestContext::ApiGatewayV1(_)) => "apigw-v1",
        _ => "other",
    };
    let body = String::from_utf8_lossy(request.body().as_ref()).into_owned();
    let answer = json!({
        "kind": kind,
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "q": request.query_string_parameters_ref().and_then(|q| q.first("q")),
        "id": request.path_parameters_ref().and_then(|p| p.first("id")),
        "color": request.stage_variables_ref().and_then(|v| v.first("color")),
        "header": request.headers().get("x-custom").and_then(|v| v.to_str().ok()),
        "body": body,
    });
    Ok(Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .header("x-rust", "lambda_http")
        .body(Body::Text(answer.to_string()))?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(handle)).await
}

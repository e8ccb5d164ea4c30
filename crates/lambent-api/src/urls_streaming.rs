//! Function URLs in the `RESPONSE_STREAM` invoke mode: the function runs with its response
//! streamed (as for InvokeWithResponseStream) and the gateway sends the bytes on, with
//! chunked transfer encoding, as they arrive.
//!
//! A response whose Content-Type is `application/vnd.awslambda.http-integration-response`
//! starts with a JSON prelude `{"statusCode","headers","cookies"}` and eight NUL bytes: the
//! prelude gives the HTTP status and headers, what follows is the body. Any other streamed
//! response is a 200 with the function's Content-Type. A function that answers the ordinary
//! (buffered) way has its payload sent as it is, as AWS does on such a URL. A failure before
//! the status line is sent is a 502 (504 for a timeout); after it, the body is cut short.

use bytes::{Bytes, BytesMut};
use http_body_util::{Either, Full};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use lambent_invoke::{InvokeError, InvokeRequest, StreamingInvocation};
use lambent_worker::InvocationResult;

use crate::streaming::ChannelBody;
use crate::urls_gateway::{UrlError, append_header, function_failure, header_text, invoke_error};
use crate::{ApiBody, ApiState};

/// The Content-Type of a streamed response that starts with an HTTP prelude.
const HTTP_INTEGRATION_CONTENT_TYPE: &str = "application/vnd.awslambda.http-integration-response";

/// What ends the prelude of an HTTP-integration response.
const PRELUDE_END: [u8; 8] = [0; 8];

/// The longest prelude accepted; a stream without its end by then is a function error.
const MAX_PRELUDE_BYTES: usize = 64 * 1024;

/// How many blocks may wait for a slow client.
const BLOCKS_IN_FLIGHT: usize = 16;

/// The next piece of a streamed response.
enum Piece {
    /// Bytes of the response, in order.
    Chunk(Bytes),
    /// The end: complete, or why the response failed.
    End(Result<(), UrlError>),
}

/// A streaming invocation read piece by piece: its chunks, then (with a buffered answer's
/// payload as a last chunk) its outcome.
struct Pieces {
    function: String,
    chunks: mpsc::Receiver<Bytes>,
    outcome: oneshot::Receiver<Result<InvocationResult, InvokeError>>,
    /// The outcome, once it arrived (chunks sent before it may still wait in the channel).
    done: Option<Result<InvocationResult, UrlError>>,
}

impl Pieces {
    fn settle(
        &self,
        outcome: Result<Result<InvocationResult, InvokeError>, oneshot::error::RecvError>,
    ) -> Result<InvocationResult, UrlError> {
        match outcome {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(refused)) => Err(invoke_error(&self.function, refused)),
            Err(_) => {
                tracing::warn!(function = %self.function, "a streaming invocation ended without an outcome");
                Err(UrlError::Internal)
            }
        }
    }

    async fn next(&mut self) -> Piece {
        loop {
            if let Some(done) = self.done.take() {
                // The worker sends every chunk before the outcome: take those still queued.
                if let Ok(chunk) = self.chunks.try_recv() {
                    self.done = Some(done);
                    return Piece::Chunk(chunk);
                }
                return match done {
                    Err(error) => Piece::End(Err(error)),
                    Ok(result) if result.function_error => {
                        Piece::End(Err(function_failure(&result.body)))
                    }
                    Ok(mut result) if !result.body.is_empty() => {
                        let body = std::mem::take(&mut result.body);
                        self.done = Some(Ok(result));
                        Piece::Chunk(body)
                    }
                    Ok(_) => Piece::End(Ok(())),
                };
            }
            tokio::select! {
                biased;
                chunk = self.chunks.recv() => match chunk {
                    Some(chunk) => return Piece::Chunk(chunk),
                    None => {
                        let outcome = (&mut self.outcome).await;
                        self.done = Some(self.settle(outcome));
                    }
                },
                outcome = &mut self.outcome => self.done = Some(self.settle(outcome)),
            }
        }
    }
}

/// Invokes the function of a `RESPONSE_STREAM` URL and answers with its response as it
/// streams. The caller adds CORS and request-id headers.
pub(crate) async fn respond(
    state: &ApiState,
    function: &str,
    request: InvokeRequest,
) -> Result<Response<ApiBody>, UrlError> {
    let StreamingInvocation {
        chunks,
        outcome,
        content_type,
        ..
    } = state
        .invoker
        .invoke_streaming(request)
        .map_err(|e| invoke_error(function, e))?;
    let mut pieces = Pieces {
        function: function.to_string(),
        chunks,
        outcome,
        done: None,
    };
    let first = pieces.next().await;
    // Set by the worker before the first chunk (or the outcome of a buffered answer).
    let content_type = content_type
        .get()
        .cloned()
        .unwrap_or_else(|| "application/octet-stream".to_string());
    let mut head = Response::new(());
    let (start, ended) = if content_type.eq_ignore_ascii_case(HTTP_INTEGRATION_CONTENT_TYPE) {
        let (prelude, start, ended) = read_prelude(&mut pieces, first).await?;
        apply_prelude(&prelude, &mut head).map_err(|why| {
            tracing::info!(%function, "streamed function URL response has an invalid prelude: {why}");
            UrlError::FunctionError
        })?;
        (start, ended)
    } else {
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            head.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        match first {
            Piece::Chunk(chunk) => (chunk, false),
            Piece::End(Ok(())) => (Bytes::new(), true),
            Piece::End(Err(error)) => return Err(error),
        }
    };
    let (parts, ()) = head.into_parts();
    if ended {
        return Ok(Response::from_parts(parts, Either::Left(Full::new(start))));
    }
    tracing::debug!(%function, "streaming the function URL response");
    let (blocks, body) = mpsc::channel(BLOCKS_IN_FLIGHT);
    let (cut, cut_signal) = oneshot::channel();
    tokio::spawn(pump(pieces, start, blocks, cut));
    Ok(Response::from_parts(
        parts,
        Either::Right(ChannelBody::cuttable(body, cut_signal)),
    ))
}

/// Reads an HTTP-integration response up to the end of its prelude: the prelude, the first
/// bytes of the body, and whether the response already ended.
async fn read_prelude(pieces: &mut Pieces, first: Piece) -> Result<(Bytes, Bytes, bool), UrlError> {
    let mut buffered = BytesMut::new();
    let mut piece = first;
    loop {
        match piece {
            Piece::Chunk(chunk) => {
                buffered.extend_from_slice(&chunk);
                if let Some(at) = buffered
                    .windows(PRELUDE_END.len())
                    .position(|w| w == PRELUDE_END)
                {
                    let mut prelude = buffered.split_to(at + PRELUDE_END.len());
                    prelude.truncate(at);
                    return Ok((prelude.freeze(), buffered.freeze(), false));
                }
                if buffered.len() > MAX_PRELUDE_BYTES {
                    tracing::info!(function = %pieces.function, "streamed function URL response has no end of prelude");
                    return Err(UrlError::FunctionError);
                }
            }
            // A stream that ended inside its prelude: the prelude is all there is.
            Piece::End(Ok(())) => return Ok((buffered.freeze(), Bytes::new(), true)),
            Piece::End(Err(error)) => return Err(error),
        }
        piece = pieces.next().await;
    }
}

/// Sets the status and headers a prelude (`{"statusCode","headers","cookies"}`) gives.
/// An empty prelude is a 200 without headers.
fn apply_prelude(prelude: &[u8], head: &mut Response<()>) -> Result<(), String> {
    if prelude.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let parsed: Value =
        serde_json::from_slice(prelude).map_err(|e| format!("prelude is not JSON: {e}"))?;
    let Value::Object(prelude) = parsed else {
        return Err("prelude is not a JSON object".into());
    };
    let status = match prelude.get("statusCode") {
        None | Some(Value::Null) => Some(200),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    }
    .and_then(|code| u16::try_from(code).ok())
    .and_then(|code| StatusCode::from_u16(code).ok())
    .ok_or("statusCode is not an HTTP status")?;
    *head.status_mut() = status;
    let headers: &mut HeaderMap = head.headers_mut();
    if let Some(Value::Object(given)) = prelude.get("headers") {
        for (name, value) in given {
            if let Some(text) = header_text(value) {
                append_header(headers, name, &text)?;
            }
        }
    }
    if let Some(Value::Object(given)) = prelude.get("multiValueHeaders") {
        for (name, values) in given {
            for value in values.as_array().into_iter().flatten() {
                if let Some(text) = header_text(value) {
                    append_header(headers, name, &text)?;
                }
            }
        }
    }
    if let Some(Value::Array(cookies)) = prelude.get("cookies") {
        for cookie in cookies.iter().filter_map(Value::as_str) {
            append_header(headers, "set-cookie", cookie)?;
        }
    }
    Ok(())
}

/// Sends the rest of a streamed response to the client: `start`, then every chunk; a
/// failure cuts the body short. A client that goes away stops the pump; the function runs
/// on and the rest of its output is dropped by the worker.
async fn pump(
    mut pieces: Pieces,
    start: Bytes,
    blocks: mpsc::Sender<Bytes>,
    cut: oneshot::Sender<()>,
) {
    if !start.is_empty() && blocks.send(start).await.is_err() {
        tracing::debug!(function = %pieces.function, "function URL client went away mid-stream");
        return;
    }
    loop {
        match pieces.next().await {
            Piece::Chunk(chunk) => {
                if blocks.send(chunk).await.is_err() {
                    tracing::debug!(function = %pieces.function, "function URL client went away mid-stream");
                    return;
                }
            }
            Piece::End(Ok(())) => return,
            Piece::End(Err(error)) => {
                tracing::debug!(function = %pieces.function, "function URL stream failed mid-way: {error}");
                let _ = cut.send(());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preludes_give_status_headers_and_cookies() {
        let mut head = Response::new(());
        apply_prelude(
            br#"{"statusCode":201,"headers":{"x-a":"1","content-type":"text/html"},"cookies":["a=1","b=2"]}"#,
            &mut head,
        )
        .unwrap();
        assert_eq!(head.status(), StatusCode::CREATED);
        assert_eq!(head.headers()["x-a"], "1");
        assert_eq!(head.headers()["content-type"], "text/html");
        assert_eq!(head.headers().get_all("set-cookie").iter().count(), 2);

        let mut head = Response::new(());
        apply_prelude(b"", &mut head).unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        let mut head = Response::new(());
        apply_prelude(b"{}", &mut head).unwrap();
        assert_eq!(head.status(), StatusCode::OK);

        assert!(apply_prelude(b"not json", &mut Response::new(())).is_err());
        assert!(apply_prelude(br#"{"statusCode":"x"}"#, &mut Response::new(())).is_err());
        assert!(apply_prelude(br#"{"statusCode":99999}"#, &mut Response::new(())).is_err());
        assert!(apply_prelude(br#"[1]"#, &mut Response::new(())).is_err());
    }

    fn pieces(chunks: Vec<&'static [u8]>, result: Result<InvocationResult, InvokeError>) -> Pieces {
        let (chunk_tx, chunk_rx) = mpsc::channel(16);
        for chunk in chunks {
            chunk_tx.try_send(Bytes::from_static(chunk)).unwrap();
        }
        let (outcome_tx, outcome) = oneshot::channel();
        outcome_tx.send(result).unwrap();
        // The worker keeps its sender until later: the outcome comes while it is open.
        std::mem::forget(chunk_tx);
        Pieces {
            function: "f".into(),
            chunks: chunk_rx,
            outcome,
            done: None,
        }
    }

    fn result(body: &'static [u8], function_error: bool) -> InvocationResult {
        InvocationResult {
            body: Bytes::from_static(body),
            function_error,
            log_tail: None,
            cold_start: false,
            report: Default::default(),
        }
    }

    #[tokio::test]
    async fn preludes_split_across_chunks_are_found() {
        let mut p = pieces(
            vec![
                b"{\"statusCode\":",
                b"202}",
                b"\0\0\0\0",
                b"\0\0\0\0bo",
                b"dy",
            ],
            Ok(result(b"", false)),
        );
        let first = p.next().await;
        let (prelude, start, ended) = read_prelude(&mut p, first).await.unwrap();
        assert_eq!(&prelude[..], b"{\"statusCode\":202}");
        assert_eq!(&start[..], b"bo");
        assert!(!ended);
        assert!(matches!(p.next().await, Piece::Chunk(c) if &c[..] == b"dy"));
        assert!(matches!(p.next().await, Piece::End(Ok(()))));
    }

    #[tokio::test]
    async fn chunks_queued_before_the_outcome_come_first() {
        let mut p = pieces(vec![b"a", b"b"], Ok(result(b"", true)));
        assert!(matches!(p.next().await, Piece::Chunk(c) if &c[..] == b"a"));
        assert!(matches!(p.next().await, Piece::Chunk(c) if &c[..] == b"b"));
        assert!(matches!(
            p.next().await,
            Piece::End(Err(UrlError::FunctionError))
        ));
    }

    #[tokio::test]
    async fn a_buffered_answer_is_one_chunk() {
        let mut p = pieces(vec![], Ok(result(b"{\"statusCode\":200}", false)));
        assert!(matches!(p.next().await, Piece::Chunk(c) if &c[..] == b"{\"statusCode\":200}"));
        assert!(matches!(p.next().await, Piece::End(Ok(()))));
        let mut p = pieces(
            vec![],
            Ok(result(br#"{"errorType":"Sandbox.Timedout"}"#, true)),
        );
        assert!(matches!(p.next().await, Piece::End(Err(UrlError::Timeout))));
    }
}

//! InvokeWithResponseStream (`POST /2021-11-15/functions/{Fn}/response-streaming-invocations`)
//! and AWS's `application/vnd.amazon.eventstream` framing.
//!
//! Each message is: total length (u32 BE), headers length (u32 BE), CRC32 of those 8 bytes,
//! the headers (name length u8, name, type 7 = string, value length u16 BE, value), the
//! payload, and the CRC32 of everything before it. The function's chunks go out as
//! `PayloadChunk` events as they arrive; the last event is `InvokeComplete` with
//! `ErrorCode`, `ErrorDetails` and `LogResult`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use bytes::Bytes;
use hyper::StatusCode;
use hyper::body::Frame;
use hyper::header::HeaderName;
use tokio::sync::{mpsc, oneshot};

use lambent_invoke::{InvocationType, InvokeError, InvokeRequest, StreamingInvocation};
use lambent_worker::InvocationResult;

use crate::functions::function_ref;
use crate::invoke::{client_context, log_tail};
use crate::{ApiError, ApiReply, ApiRequest, ApiState};

/// The Content-Type of an event stream.
pub(crate) const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// How many framed messages may wait for a slow client.
const FRAMES_IN_FLIGHT: usize = 16;

/// A response body fed by a channel of byte blocks, sent as they come.
///
/// A body made with [`ChannelBody::cuttable`] can be cut short: when its cut signal fires
/// before the channel closes, the body ends with an error, so the server closes the
/// connection without ending the chunked body (the client sees a truncated response).
pub(crate) struct ChannelBody {
    blocks: mpsc::Receiver<Bytes>,
    cut: Option<oneshot::Receiver<()>>,
}

/// The error with which a cut [`ChannelBody`] ends.
#[derive(Debug, thiserror::Error)]
#[error("the response stream was cut short")]
pub(crate) struct StreamCut;

impl ChannelBody {
    /// A body that ends when the channel closes.
    pub(crate) fn new(blocks: mpsc::Receiver<Bytes>) -> Self {
        Self { blocks, cut: None }
    }

    /// A body that ends when the channel closes, cleanly unless `cut` was sent first.
    pub(crate) fn cuttable(blocks: mpsc::Receiver<Bytes>, cut: oneshot::Receiver<()>) -> Self {
        Self {
            blocks,
            cut: Some(cut),
        }
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        match self.blocks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(block)) => Poll::Ready(Some(Ok(Frame::data(block)))),
            Poll::Ready(None) => {
                let Some(cut) = self.cut.as_mut() else {
                    return Poll::Ready(None);
                };
                match Pin::new(cut).poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(fired) => {
                        self.cut = None;
                        Poll::Ready(fired.is_ok().then_some(Err(StreamCut)))
                    }
                }
            }
        }
    }
}

/// CRC-32 (IEEE 802.3, as zlib), which event-stream messages carry.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// One event-stream message with string headers.
pub(crate) fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut header_bytes = Vec::new();
    for (name, value) in headers {
        // Names and values here are short constants; longer ones would not fit the format.
        let name_len = u8::try_from(name.len()).unwrap_or(u8::MAX);
        let value_len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        header_bytes.push(name_len);
        header_bytes.extend_from_slice(&name.as_bytes()[..usize::from(name_len)]);
        header_bytes.push(7);
        header_bytes.extend_from_slice(&value_len.to_be_bytes());
        header_bytes.extend_from_slice(&value.as_bytes()[..usize::from(value_len)]);
    }
    let total = 12 + header_bytes.len() + payload.len() + 4;
    let mut message = Vec::with_capacity(total);
    message.extend_from_slice(&(total as u32).to_be_bytes());
    message.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&message);
    message.extend_from_slice(&prelude_crc.to_be_bytes());
    message.extend_from_slice(&header_bytes);
    message.extend_from_slice(payload);
    let message_crc = crc32(&message);
    message.extend_from_slice(&message_crc.to_be_bytes());
    Bytes::from(message)
}

/// A `PayloadChunk` event carrying `chunk`.
fn payload_chunk(chunk: &[u8]) -> Bytes {
    encode_message(
        &[
            (":event-type", "PayloadChunk"),
            (":content-type", "application/octet-stream"),
            (":message-type", "event"),
        ],
        chunk,
    )
}

/// The `InvokeComplete` event with its JSON document.
fn invoke_complete(document: &serde_json::Value) -> Bytes {
    encode_message(
        &[
            (":event-type", "InvokeComplete"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        document.to_string().as_bytes(),
    )
}

/// The `InvokeComplete` document for a finished invocation: `ErrorCode` (the error type) and
/// `ErrorDetails` (its message) when the function failed, and `LogResult` when asked for.
fn completion(result: &InvocationResult) -> serde_json::Value {
    let mut document = serde_json::Map::new();
    if result.function_error {
        let error: serde_json::Value = serde_json::from_slice(&result.body).unwrap_or_default();
        let code = error["errorType"]
            .as_str()
            .unwrap_or("Unhandled")
            .to_string();
        let details = match error["errorMessage"].as_str() {
            Some(message) => message.to_string(),
            None => String::from_utf8_lossy(&result.body).into_owned(),
        };
        document.insert("ErrorCode".into(), code.into());
        document.insert("ErrorDetails".into(), details.into());
    }
    if let Some(tail) = &result.log_tail {
        document.insert(
            "LogResult".into(),
            base64::engine::general_purpose::STANDARD
                .encode(tail)
                .into(),
        );
    }
    serde_json::Value::Object(document)
}

/// What came first from a streaming invocation.
enum First {
    /// A chunk (`None`: the chunks ended before the outcome was sent).
    Chunk(Option<Bytes>),
    /// The outcome, with no chunk before it.
    Done(Result<Result<InvocationResult, InvokeError>, oneshot::error::RecvError>),
}

/// InvokeWithResponseStream: POST /2021-11-15/functions/{Fn}/response-streaming-invocations.
///
/// Refusals found before the function sends anything (unknown function, bad payload,
/// throttling) are ordinary AWS errors; after that, the outcome is the `InvokeComplete` event.
pub(crate) async fn invoke_with_response_stream(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let invocation_type = match req.header("x-amz-invocation-type") {
        None | Some("RequestResponse") => InvocationType::RequestResponse,
        Some("DryRun") => InvocationType::DryRun,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: \
                 Member must satisfy enum value set: [RequestResponse, DryRun]"
            )));
        }
    };
    let log_tail = log_tail(req)?;
    let request = InvokeRequest {
        function: function_ref(req, label)?,
        invocation_type,
        log_tail,
        payload: req.body.clone(),
        client_context: client_context(req)?,
        trace_id: req.header("x-amzn-trace-id").map(str::to_string),
        request_id: req.request_id.clone(),
    };
    if invocation_type == InvocationType::DryRun {
        state.invoker.invoke(request).await?;
        return Ok(ApiReply::empty(StatusCode::NO_CONTENT));
    }
    let StreamingInvocation {
        executed_version,
        mut chunks,
        mut outcome,
        ..
    } = state.invoker.invoke_streaming(request)?;
    let first = tokio::select! {
        biased;
        chunk = chunks.recv() => First::Chunk(chunk),
        done = &mut outcome => First::Done(done),
    };
    let first = match first {
        First::Done(Ok(Err(refused))) => return Err(refused.into()),
        First::Done(Err(_)) => {
            return Err(ApiError::internal(
                "the invocation ended without an outcome",
            ));
        }
        other => other,
    };
    tracing::debug!(request_id = %req.request_id, function = label, "streaming the response");
    let (frames, body) = mpsc::channel(FRAMES_IN_FLIGHT);
    tokio::spawn(pump(first, chunks, outcome, frames));
    Ok(ApiReply {
        status: StatusCode::OK,
        body: Bytes::new(),
        headers: vec![
            (
                HeaderName::from_static("x-amz-executed-version"),
                executed_version,
            ),
            (
                hyper::header::CONTENT_TYPE,
                EVENT_STREAM_CONTENT_TYPE.to_string(),
            ),
        ],
        stream: Some(body),
    })
}

/// Frames a streaming invocation's chunks and its outcome onto the response body until the
/// client goes away.
async fn pump(
    first: First,
    mut chunks: mpsc::Receiver<Bytes>,
    mut outcome: oneshot::Receiver<Result<InvocationResult, InvokeError>>,
    frames: mpsc::Sender<Bytes>,
) {
    let done = match first {
        First::Done(done) => done,
        First::Chunk(chunk) => {
            if let Some(chunk) = chunk
                && frames.send(payload_chunk(&chunk)).await.is_err()
            {
                return;
            }
            loop {
                tokio::select! {
                    biased;
                    chunk = chunks.recv() => match chunk {
                        Some(chunk) => {
                            if frames.send(payload_chunk(&chunk)).await.is_err() {
                                tracing::debug!("streaming client went away");
                                return;
                            }
                        }
                        None => break (&mut outcome).await,
                    },
                    done = &mut outcome => break done,
                }
            }
        }
    };
    while let Ok(chunk) = chunks.try_recv() {
        if frames.send(payload_chunk(&chunk)).await.is_err() {
            return;
        }
    }
    let complete = match done {
        Ok(Ok(result)) => {
            if !result.function_error
                && !result.body.is_empty()
                && frames.send(payload_chunk(&result.body)).await.is_err()
            {
                return;
            }
            completion(&result)
        }
        Ok(Err(refused)) => {
            let error = ApiError::from(refused);
            serde_json::json!({ "ErrorCode": error.code, "ErrorDetails": error.message })
        }
        Err(_) => serde_json::json!({
            "ErrorCode": "ServiceException",
            "ErrorDetails": "the invocation ended without an outcome",
        }),
    };
    let _ = frames.send(invoke_complete(&complete)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_bodies_end_cleanly_unless_cut() {
        use http_body_util::BodyExt;

        let (tx, rx) = mpsc::channel(4);
        let mut body = ChannelBody::new(rx);
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        drop(tx);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"a"));
        assert!(body.frame().await.is_none());

        // a cuttable body whose cut signal is dropped ends cleanly
        let (tx, rx) = mpsc::channel(4);
        let (cut, signal) = oneshot::channel::<()>();
        let mut body = ChannelBody::cuttable(rx, signal);
        tx.send(Bytes::from_static(b"b")).await.unwrap();
        drop((tx, cut));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.is_none());

        // a cut one ends with an error after the blocks already sent
        let (tx, rx) = mpsc::channel(4);
        let (cut, signal) = oneshot::channel();
        let mut body = ChannelBody::cuttable(rx, signal);
        tx.send(Bytes::from_static(b"c")).await.unwrap();
        cut.send(()).unwrap();
        drop(tx);
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_err());
        assert!(body.frame().await.is_none());
    }

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn messages_have_prelude_headers_payload_and_crcs() {
        let message = encode_message(&[(":event-type", "PayloadChunk")], b"hi");
        let total = u32::from_be_bytes(message[0..4].try_into().unwrap()) as usize;
        let headers = u32::from_be_bytes(message[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, message.len());
        assert_eq!(headers, 1 + 11 + 1 + 2 + 12);
        assert_eq!(
            u32::from_be_bytes(message[8..12].try_into().unwrap()),
            crc32(&message[..8])
        );
        assert_eq!(&message[12 + headers..total - 4], b"hi");
        assert_eq!(
            u32::from_be_bytes(message[total - 4..].try_into().unwrap()),
            crc32(&message[..total - 4])
        );
    }
}

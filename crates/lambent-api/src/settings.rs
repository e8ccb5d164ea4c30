//! Per-function settings and side resources: resource policies, tags, concurrency, event invoke configs, function URL configs, event-source mappings, code signing.

use crate::{ApiRequest, ApiState, Routed};

/// Routes these operations; `None` when the request is not one of them.
pub(crate) async fn route(_req: &ApiRequest, _state: &ApiState, _segments: &[&str]) -> Routed {
    None
}

//! Versions and aliases: PublishVersion, ListVersionsByFunction, and the alias operations.

use crate::{ApiRequest, ApiState, Routed};

/// Routes the version and alias operations; `None` when the request is not one of them.
pub(crate) async fn route(_req: &ApiRequest, _state: &ApiState, _segments: &[&str]) -> Routed {
    None
}

//! Layer operations (2018-10-31): publish, get, list, delete layer versions and their permissions.

use crate::{ApiRequest, ApiState, Routed};

/// Routes the layer operations; `None` when the request is not one of them.
pub(crate) async fn route(_req: &ApiRequest, _state: &ApiState, _segments: &[&str]) -> Routed {
    None
}

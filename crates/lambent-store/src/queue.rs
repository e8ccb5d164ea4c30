//! The durable queue behind asynchronous invocation: events waiting to invoke a function and
//! records waiting to be delivered to a destination, in one table.
//!
//! Every item belongs to a *lane*: the function it invokes, or the destination it goes to.
//! The dispatcher claims items lane by lane (oldest first), so one slow function or one
//! unreachable destination never holds up another. A claim names the claimer (one id per
//! server start); claims left by a server that died are released at the next start, so an
//! item is never lost, at worst run twice.

use serde_json::Value;

use crate::StoreError;

/// What a queue item asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// Invoke a function with the payload as its event.
    Invoke,
    /// Deliver the payload to a destination (lane = the destination's ARN or URL).
    Deliver,
}

impl ItemKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invoke => "invoke",
            Self::Deliver => "deliver",
        }
    }

    /// The kind a stored name stands for.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "invoke" => Some(Self::Invoke),
            "deliver" => Some(Self::Deliver),
            _ => None,
        }
    }
}

/// An item to add to the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    /// What to do with it.
    pub kind: ItemKind,
    /// The function to invoke, or the destination to deliver to.
    pub lane: String,
    /// The request id of the invocation this item belongs to (kept through every attempt).
    pub request_id: String,
    /// The function invoked (for a delivery: the function whose record it is).
    pub function: String,
    /// The qualifier the function was invoked with, if any.
    pub qualifier: Option<String>,
    /// The event (or the record to deliver).
    pub payload: Vec<u8>,
    /// Kind-specific details: the trace id of an invocation; the attributes, purpose and
    /// expiry of a delivery.
    pub meta: Value,
    /// When the invocation was accepted, epoch milliseconds (deliveries: when created).
    pub accepted_ms: i64,
    /// Not to be run before then, epoch milliseconds.
    pub not_before_ms: i64,
}

/// An item claimed from the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    /// Row id: increases with enqueue order.
    pub id: i64,
    /// The item as it was added.
    pub item: NewItem,
    /// Attempts that reached the function (or the destination) so far.
    pub attempts: u32,
    /// Times the item was put back because of throttles or platform errors.
    pub deferrals: u32,
}

/// What happens to the next items after one is finished: further items to enqueue in the
/// same transaction (destination records, events for destination functions).
pub type FollowUps = Vec<NewItem>;

/// How a claimed item ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Back to the queue, to be retried at `not_before_ms`.
    Retry {
        /// Earliest next attempt, epoch milliseconds.
        not_before_ms: i64,
        /// Attempts made so far.
        attempts: u32,
        /// Deferrals so far.
        deferrals: u32,
        /// Why the last attempt failed.
        error: String,
    },
    /// Back to the queue unchanged (a throttle, a shutdown).
    Release,
    /// Done: removed, and the follow-ups enqueued.
    Completed(FollowUps),
    /// Given up: kept as a failed item for inspection, and the follow-ups enqueued.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// Why it was given up (`RetriesExhausted`, `EventAgeExceeded`, …).
        condition: String,
        /// The last error.
        error: String,
        /// Records for the failure destinations.
        follow_ups: FollowUps,
    },
}

/// A lane's standing in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneStatus {
    /// The lane.
    pub lane: String,
    /// Whether some unclaimed item is due now.
    pub due_now: bool,
    /// The earliest due time of its unclaimed items not due yet, epoch milliseconds.
    pub next_due_ms: Option<i64>,
}

/// Pending items per function, for metrics and `lambent usage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The function.
    pub function: String,
    /// What the items are for.
    pub kind: ItemKind,
    /// How many are pending.
    pub depth: u64,
    /// When the oldest was accepted, epoch milliseconds.
    pub oldest_accepted_ms: i64,
}

/// One item as `lambent events` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemSummary {
    /// Row id.
    pub id: i64,
    /// What the item is for.
    pub kind: ItemKind,
    /// Its lane (the function or destination).
    pub lane: String,
    /// Request id.
    pub request_id: String,
    /// The function.
    pub function: String,
    /// The qualifier invoked.
    pub qualifier: Option<String>,
    /// `pending` or `failed`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When accepted, epoch milliseconds.
    pub accepted_ms: i64,
    /// When next due (pending items), epoch milliseconds.
    pub not_before_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Why a failed item was given up.
    pub condition: Option<String>,
    /// When a failed item was given up, epoch milliseconds.
    pub finished_ms: Option<i64>,
}

/// Most failed items kept per function; older ones are pruned.
pub const FAILED_KEPT_PER_FUNCTION: i64 = 1000;

/// The durable queue, implemented by every store.
pub trait EventQueue {
    /// Adds an item; returns once it is committed.
    fn enqueue(&self, item: &NewItem) -> Result<i64, StoreError>;
    /// Releases every claim (at start: whoever held them is gone).
    fn release_all_claims(&self) -> Result<u64, StoreError>;
    /// Lanes with unclaimed pending items, and when they are due.
    fn lanes(&self, now_ms: i64) -> Result<Vec<LaneStatus>, StoreError>;
    /// Claims up to `limit` due items of one lane, oldest first.
    fn claim(
        &self,
        lane: &str,
        now_ms: i64,
        limit: usize,
        claimer: &str,
    ) -> Result<Vec<QueueItem>, StoreError>;
    /// Records how a claimed item ended.
    fn finish(&self, id: i64, outcome: &Outcome, now_ms: i64) -> Result<(), StoreError>;
    /// Pending items per function and kind.
    fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError>;
    /// The items of one function (`state`: `pending`, `failed` or all), oldest first.
    fn list_items(
        &self,
        function: &str,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ItemSummary>, StoreError>;
}

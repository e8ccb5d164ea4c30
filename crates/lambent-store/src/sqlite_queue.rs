//! [`EventQueue`] on SQLite: one `async_queue` table; a claim is an UPDATE in the same
//! transaction as the SELECT that found the items, and every outcome (with its follow-ups)
//! is one transaction, so a crash at any point leaves each item either pending or done.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::queue::{
    EventQueue, FAILED_KEPT_PER_FUNCTION, ItemKind, ItemSummary, LaneStatus, NewItem, Outcome,
    QueueDepth, QueueItem,
};
use crate::{SqliteStore, StoreError};

fn insert(conn: &Connection, item: &NewItem) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO async_queue (kind, lane, request_id, function_name, qualifier, payload, meta, \
         accepted_ms, not_before_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        item.kind.as_str(),
        item.lane,
        item.request_id,
        item.function,
        item.qualifier,
        item.payload,
        item.meta.to_string(),
        item.accepted_ms,
        item.not_before_ms,
    ])?;
    Ok(conn.last_insert_rowid())
}

fn kind_of(text: String) -> Result<ItemKind, StoreError> {
    ItemKind::parse(&text)
        .ok_or_else(|| StoreError::Invalid(format!("unknown queue item kind {text:?}")))
}

fn claimed_item(row: &Row<'_>) -> rusqlite::Result<(QueueItem, String, String)> {
    Ok((
        QueueItem {
            id: row.get(0)?,
            item: NewItem {
                kind: ItemKind::Invoke,
                lane: row.get(2)?,
                request_id: row.get(3)?,
                function: row.get(4)?,
                qualifier: row.get(5)?,
                payload: row.get(6)?,
                meta: serde_json::Value::Null,
                accepted_ms: row.get(8)?,
                not_before_ms: row.get(9)?,
            },
            attempts: row.get::<_, i64>(10)? as u32,
            deferrals: row.get::<_, i64>(11)? as u32,
        },
        row.get(1)?,
        row.get(7)?,
    ))
}

impl EventQueue for SqliteStore {
    fn enqueue(&self, item: &NewItem) -> Result<i64, StoreError> {
        insert(&*self.conn()?, item)
    }

    fn release_all_claims(&self) -> Result<u64, StoreError> {
        let released = self.conn()?.execute(
            "UPDATE async_queue SET claimed_by = NULL WHERE claimed_by IS NOT NULL",
            [],
        )?;
        Ok(released as u64)
    }

    fn lanes(&self, now_ms: i64) -> Result<Vec<LaneStatus>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT lane, MAX(not_before_ms <= ?1), MIN(CASE WHEN not_before_ms > ?1 THEN not_before_ms END) \
             FROM async_queue WHERE state = 'pending' AND claimed_by IS NULL GROUP BY lane",
        )?;
        let rows = stmt.query_map(params![now_ms], |row| {
            Ok(LaneStatus {
                lane: row.get(0)?,
                due_now: row.get::<_, i64>(1)? != 0,
                next_due_ms: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn claim(
        &self,
        lane: &str,
        now_ms: i64,
        limit: usize,
        claimer: &str,
    ) -> Result<Vec<QueueItem>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let mut items = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT id, kind, lane, request_id, function_name, qualifier, payload, meta, accepted_ms, \
                 not_before_ms, attempts, deferrals FROM async_queue \
                 WHERE state = 'pending' AND lane = ?1 AND claimed_by IS NULL AND not_before_ms <= ?2 \
                 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![lane, now_ms, limit as i64], claimed_item)?;
            for row in rows {
                let (mut item, kind, meta) = row?;
                item.item.kind = kind_of(kind)?;
                item.item.meta = serde_json::from_str(&meta)?;
                items.push(item);
            }
            let mut mark =
                tx.prepare_cached("UPDATE async_queue SET claimed_by = ?2 WHERE id = ?1")?;
            for item in &items {
                mark.execute(params![item.id, claimer])?;
            }
        }
        tx.commit()?;
        Ok(items)
    }

    fn finish(&self, id: i64, outcome: &Outcome, now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        match outcome {
            Outcome::Retry {
                not_before_ms,
                attempts,
                deferrals,
                error,
            } => {
                tx.execute(
                    "UPDATE async_queue SET claimed_by = NULL, not_before_ms = ?2, attempts = ?3, \
                     deferrals = ?4, last_error = ?5 WHERE id = ?1",
                    params![id, not_before_ms, attempts, deferrals, error],
                )?;
            }
            Outcome::Release => {
                tx.execute(
                    "UPDATE async_queue SET claimed_by = NULL WHERE id = ?1",
                    params![id],
                )?;
            }
            Outcome::Completed(follow_ups) => {
                tx.execute("DELETE FROM async_queue WHERE id = ?1", params![id])?;
                for item in follow_ups {
                    insert(&tx, item)?;
                }
            }
            Outcome::Failed {
                attempts,
                condition,
                error,
                follow_ups,
            } => {
                let function: Option<String> = tx
                    .query_row(
                        "UPDATE async_queue SET claimed_by = NULL, state = 'failed', attempts = ?2, \
                         condition = ?3, last_error = ?4, finished_ms = ?5, payload = X'' \
                         WHERE id = ?1 RETURNING function_name",
                        params![id, attempts, condition, error, now_ms],
                        |row| row.get(0),
                    )
                    .optional()?;
                for item in follow_ups {
                    insert(&tx, item)?;
                }
                if let Some(function) = function {
                    tx.execute(
                        "DELETE FROM async_queue WHERE state = 'failed' AND function_name = ?1 AND id <= \
                         (SELECT id FROM async_queue WHERE state = 'failed' AND function_name = ?1 \
                          ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                        params![function, FAILED_KEPT_PER_FUNCTION],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT function_name, kind, COUNT(*), MIN(accepted_ms) FROM async_queue \
             WHERE state = 'pending' GROUP BY function_name, kind ORDER BY function_name, kind",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (function, kind, depth, oldest) = row?;
            out.push(QueueDepth {
                function,
                kind: kind_of(kind)?,
                depth: depth as u64,
                oldest_accepted_ms: oldest,
            });
        }
        Ok(out)
    }

    fn list_items(
        &self,
        function: &str,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ItemSummary>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, lane, request_id, function_name, qualifier, state, attempts, accepted_ms, \
             not_before_ms, last_error, condition, finished_ms FROM async_queue \
             WHERE function_name = ?1 AND (?2 IS NULL OR state = ?2) ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![function, state, limit as i64], |row| {
            Ok((
                row.get::<_, String>(1)?,
                ItemSummary {
                    id: row.get(0)?,
                    kind: ItemKind::Invoke,
                    lane: row.get(2)?,
                    request_id: row.get(3)?,
                    function: row.get(4)?,
                    qualifier: row.get(5)?,
                    state: row.get(6)?,
                    attempts: row.get::<_, i64>(7)? as u32,
                    accepted_ms: row.get(8)?,
                    not_before_ms: row.get(9)?,
                    last_error: row.get(10)?,
                    condition: row.get(11)?,
                    finished_ms: row.get(12)?,
                },
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, mut summary) = row?;
            summary.kind = kind_of(kind)?;
            out.push(summary);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(function: &str, request_id: &str, not_before_ms: i64) -> NewItem {
        NewItem {
            kind: ItemKind::Invoke,
            lane: function.to_string(),
            request_id: request_id.to_string(),
            function: function.to_string(),
            qualifier: None,
            payload: br#"{"n":1}"#.to_vec(),
            meta: json!({"trace_id": "t"}),
            accepted_ms: 1_000,
            not_before_ms,
        }
    }

    #[test]
    fn claims_are_per_lane_oldest_first_and_exclusive() {
        let store = SqliteStore::in_memory().unwrap();
        for (f, id) in [("a", "1"), ("b", "2"), ("a", "3"), ("a", "4")] {
            store.enqueue(&event(f, id, 1_000)).unwrap();
        }
        store.enqueue(&event("c", "5", 9_000)).unwrap();
        let lanes = store.lanes(2_000).unwrap();
        let due: Vec<_> = lanes
            .iter()
            .filter(|l| l.due_now)
            .map(|l| l.lane.as_str())
            .collect();
        assert_eq!(due, ["a", "b"]);
        let later = lanes.iter().find(|l| l.lane == "c").unwrap();
        assert_eq!((later.due_now, later.next_due_ms), (false, Some(9_000)));

        let first = store.claim("a", 2_000, 2, "boot-1").unwrap();
        let ids: Vec<_> = first.iter().map(|i| i.item.request_id.as_str()).collect();
        assert_eq!(ids, ["1", "3"]);
        assert_eq!(first[0].item.meta["trace_id"], "t");
        let rest = store.claim("a", 2_000, 10, "boot-1").unwrap();
        assert_eq!(rest.len(), 1, "claimed items are not claimed twice");
        assert!(store.claim("a", 2_000, 10, "boot-1").unwrap().is_empty());
        assert!(
            store.claim("c", 2_000, 10, "boot-1").unwrap().is_empty(),
            "not due yet"
        );

        // A restart releases every claim: nothing claimed is lost.
        assert_eq!(store.release_all_claims().unwrap(), 3);
        assert_eq!(store.claim("a", 2_000, 10, "boot-2").unwrap().len(), 3);
    }

    #[test]
    fn outcomes() {
        let store = SqliteStore::in_memory().unwrap();
        store.enqueue(&event("f", "r1", 0)).unwrap();
        let item = store.claim("f", 0, 1, "x").unwrap().remove(0);
        store
            .finish(
                item.id,
                &Outcome::Retry {
                    not_before_ms: 5_000,
                    attempts: 1,
                    deferrals: 0,
                    error: "boom".into(),
                },
                0,
            )
            .unwrap();
        assert!(store.claim("f", 4_999, 1, "x").unwrap().is_empty());
        let item = store.claim("f", 5_000, 1, "x").unwrap().remove(0);
        assert_eq!(item.attempts, 1);
        let pending = store.list_items("f", Some("pending"), 10).unwrap();
        assert_eq!(pending[0].last_error.as_deref(), Some("boom"));

        let mut record = event("f", "r1", 0);
        record.kind = ItemKind::Deliver;
        record.lane = "http://127.0.0.1:1/hook".into();
        store
            .finish(
                item.id,
                &Outcome::Failed {
                    attempts: 3,
                    condition: "RetriesExhausted".into(),
                    error: "boom".into(),
                    follow_ups: vec![record],
                },
                7_000,
            )
            .unwrap();
        let failed = store.list_items("f", Some("failed"), 10).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].condition.as_deref(), Some("RetriesExhausted"));
        assert_eq!(failed[0].finished_ms, Some(7_000));
        let depths = store.queue_depths().unwrap();
        assert_eq!(depths.len(), 1);
        assert_eq!((depths[0].kind, depths[0].depth), (ItemKind::Deliver, 1));

        let delivery = store.claim("http://127.0.0.1:1/hook", 0, 5, "x").unwrap();
        assert_eq!(delivery.len(), 1);
        store
            .finish(delivery[0].id, &Outcome::Completed(vec![]), 0)
            .unwrap();
        assert!(store.queue_depths().unwrap().is_empty());
    }

    #[test]
    fn failed_items_are_pruned_per_function() {
        let store = SqliteStore::in_memory().unwrap();
        for n in 0..(FAILED_KEPT_PER_FUNCTION + 5) {
            let id = store.enqueue(&event("f", &n.to_string(), 0)).unwrap();
            store
                .finish(
                    id,
                    &Outcome::Failed {
                        attempts: 1,
                        condition: "RetriesExhausted".into(),
                        error: String::new(),
                        follow_ups: vec![],
                    },
                    0,
                )
                .unwrap();
        }
        let kept = store.list_items("f", Some("failed"), 5000).unwrap();
        assert_eq!(kept.len() as i64, FAILED_KEPT_PER_FUNCTION);
        assert_eq!(kept[0].request_id, "5", "the oldest are pruned");
    }

    #[test]
    fn deleting_a_function_drops_its_queued_events() {
        use crate::Store;
        let store = SqliteStore::in_memory().unwrap();
        let config = lambent_types::FunctionConfig::with_defaults("f", "python3.12", "a.b", "r");
        store.create_function(&config).unwrap();
        store.enqueue(&event("f", "1", 0)).unwrap();
        let mut record = event("f", "2", 0);
        record.kind = ItemKind::Deliver;
        record.lane = "http://x/".into();
        store.enqueue(&record).unwrap();
        store.delete_function("f").unwrap();
        let left = store.list_items("f", None, 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].kind, ItemKind::Deliver);
    }
}

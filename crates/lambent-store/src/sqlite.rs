//! The embedded SQLite store (WAL mode), the default backing of [`Store`].

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use lambent_types::{FunctionConfig, ValidationError};
use rusqlite::{Connection, OptionalExtension, params};

use crate::{AccessKey, Page, Store, StoreError};

const LATEST: &str = "$LATEST";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS function_versions (
    function_name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    version TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (function_name, version)
);
CREATE TABLE IF NOT EXISTS access_keys (
    access_key_id TEXT PRIMARY KEY,
    secret_access_key TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
";

/// A [`Store`] in one SQLite file (or in memory, for tests).
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` in WAL mode and applies the schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

fn now_ms() -> i64 {
    lambent_types::time::epoch_millis(std::time::SystemTime::now()) as i64
}

fn read_config(conn: &Connection, name: &str, version: &str) -> Result<FunctionConfig, StoreError> {
    let json: Option<String> = conn
        .prepare_cached(
            "SELECT config FROM function_versions WHERE function_name = ?1 AND version = ?2",
        )?
        .query_row(params![name, version], |row| row.get(0))
        .optional()?;
    let json = json.ok_or_else(|| StoreError::NotFound(name.to_string()))?;
    Ok(serde_json::from_str(&json)?)
}

impl Store for SqliteStore {
    fn create_function(&self, config: &FunctionConfig) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO functions (name, created_ms) VALUES (?1, ?2)",
            params![config.name, now_ms()],
        )?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(config.name.clone()));
        }
        tx.execute(
            "INSERT INTO function_versions (function_name, version, config) VALUES (?1, ?2, ?3)",
            params![config.name, LATEST, serde_json::to_string(config)?],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn get_function(&self, name: &str, version: &str) -> Result<FunctionConfig, StoreError> {
        read_config(&*self.conn()?, name, version)
    }

    fn list_functions(
        &self,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<Page<FunctionConfig>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT config FROM function_versions WHERE version = ?1 AND function_name > ?2 \
             ORDER BY function_name LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![LATEST, marker.unwrap_or(""), (max_items + 1) as i64],
            |row| row.get::<_, String>(0),
        )?;
        let mut items = Vec::new();
        for row in rows {
            items.push(serde_json::from_str::<FunctionConfig>(&row?)?);
        }
        let next_marker = if items.len() > max_items {
            items.truncate(max_items);
            items.last().map(|c| c.name.clone())
        } else {
            None
        };
        Ok(Page { items, next_marker })
    }

    fn update_function(
        &self,
        name: &str,
        expected_revision: Option<&str>,
        change: &mut dyn FnMut(&mut FunctionConfig) -> Result<(), ValidationError>,
    ) -> Result<Result<FunctionConfig, ValidationError>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let mut config = read_config(&tx, name, LATEST)?;
        if let Some(expected) = expected_revision
            && expected != config.revision_id
        {
            return Err(StoreError::RevisionMismatch(name.to_string()));
        }
        if let Err(invalid) = change(&mut config) {
            return Ok(Err(invalid));
        }
        tx.execute(
            "UPDATE function_versions SET config = ?3 WHERE function_name = ?1 AND version = ?2",
            params![name, LATEST, serde_json::to_string(&config)?],
        )?;
        tx.commit()?;
        Ok(Ok(config))
    }

    fn delete_function(&self, name: &str) -> Result<(), StoreError> {
        let deleted = self
            .conn()?
            .execute("DELETE FROM functions WHERE name = ?1", params![name])?;
        if deleted == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        Ok(())
    }

    fn usage(&self) -> Result<(u64, u64), StoreError> {
        let conn = self.conn()?;
        let (count, size): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(json_extract(config, '$.code_size')), 0) \
             FROM function_versions",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((count as u64, size as u64))
    }

    fn put_access_key(&self, key: &AccessKey) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT OR REPLACE INTO access_keys (access_key_id, secret_access_key, created_ms) \
             VALUES (?1, ?2, ?3)",
            params![key.access_key_id, key.secret_access_key, now_ms()],
        )?;
        Ok(())
    }

    fn access_key_secret(&self, access_key_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()?
            .prepare_cached("SELECT secret_access_key FROM access_keys WHERE access_key_id = ?1")?
            .query_row(params![access_key_id], |row| row.get(0))
            .optional()?)
    }

    fn list_access_keys(&self) -> Result<Vec<AccessKey>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT access_key_id, secret_access_key FROM access_keys ORDER BY created_ms, access_key_id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(AccessKey {
                access_key_id: row.get(0)?,
                secret_access_key: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> FunctionConfig {
        FunctionConfig {
            code_sha256_hex: "ab".into(),
            code_sha256: "q=".into(),
            code_size: 10,
            revision_id: "r1".into(),
            ..FunctionConfig::with_defaults(name, "python3.12", "app.handler", "r")
        }
    }

    #[test]
    fn create_get_update_delete() {
        let store = SqliteStore::in_memory().unwrap();
        store.create_function(&config("a")).unwrap();
        assert!(matches!(
            store.create_function(&config("a")),
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(
            store.get_function("a", LATEST).unwrap().handler,
            "app.handler"
        );
        assert!(matches!(
            store.get_function("a", "1"),
            Err(StoreError::NotFound(_))
        ));

        assert!(matches!(
            store.update_function("a", Some("wrong"), &mut |_| Ok(())),
            Err(StoreError::RevisionMismatch(_))
        ));
        let updated = store
            .update_function("a", Some("r1"), &mut |c| {
                c.timeout = 9;
                c.revision_id = "r2".into();
                Ok(())
            })
            .unwrap()
            .unwrap();
        assert_eq!(updated.timeout, 9);
        assert_eq!(store.get_function("a", LATEST).unwrap().revision_id, "r2");
        let refused = store
            .update_function("a", None, &mut |c| {
                c.timeout = 1;
                Err(ValidationError::new("no"))
            })
            .unwrap();
        assert!(refused.is_err());
        assert_eq!(store.get_function("a", LATEST).unwrap().timeout, 9);
        assert_eq!(store.usage().unwrap(), (1, 10));

        store.delete_function("a").unwrap();
        assert!(matches!(
            store.get_function("a", LATEST),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.delete_function("a"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn paginates_in_name_order() {
        let store = SqliteStore::in_memory().unwrap();
        for i in (0..7).rev() {
            store.create_function(&config(&format!("f{i}"))).unwrap();
        }
        let mut seen = Vec::new();
        let mut marker = None;
        loop {
            let page = store.list_functions(marker.as_deref(), 3).unwrap();
            assert!(page.items.len() <= 3);
            seen.extend(page.items.iter().map(|c| c.name.clone()));
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        let expected: Vec<String> = (0..7).map(|i| format!("f{i}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn persists_across_reopen_and_stores_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lambent.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.create_function(&config("kept")).unwrap();
            store
                .put_access_key(&AccessKey {
                    access_key_id: "AK".into(),
                    secret_access_key: "SK".into(),
                })
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get_function("kept", LATEST).unwrap().name, "kept");
        assert_eq!(
            store.access_key_secret("AK").unwrap().as_deref(),
            Some("SK")
        );
        assert_eq!(store.access_key_secret("nope").unwrap(), None);
        assert_eq!(store.list_access_keys().unwrap().len(), 1);
    }
}

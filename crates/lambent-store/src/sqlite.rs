//! The embedded SQLite store (WAL mode), the default backing of [`Store`].

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use lambent_types::FunctionConfig;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::secrets::SecretBox;
use crate::{AccessKey, Page, Store, StoreError, kinds, sqlite_iam};

const LATEST: &str = "$LATEST";

/// Schema migrations; `PRAGMA user_version` records how many have been applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE functions (
        name TEXT PRIMARY KEY,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE function_versions (
        function_name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        version TEXT NOT NULL,
        config TEXT NOT NULL,
        PRIMARY KEY (function_name, version)
    );
    CREATE TABLE access_keys (
        access_key_id TEXT PRIMARY KEY,
        secret_access_key TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );",
    "ALTER TABLE functions ADD COLUMN last_version INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE documents (
        kind TEXT NOT NULL,
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (kind, scope, key)
    );",
    "CREATE TABLE async_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        lane TEXT NOT NULL,
        request_id TEXT NOT NULL,
        function_name TEXT NOT NULL,
        qualifier TEXT,
        payload BLOB NOT NULL,
        meta TEXT NOT NULL,
        accepted_ms INTEGER NOT NULL,
        not_before_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        deferrals INTEGER NOT NULL DEFAULT 0,
        claimed_by TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        last_error TEXT,
        condition TEXT,
        finished_ms INTEGER
    );
    CREATE INDEX async_queue_lane ON async_queue (state, lane, id);
    CREATE INDEX async_queue_function ON async_queue (function_name, state, id);",
    // The plaintext `access_keys` table is moved into `iam_keys` (sealed) and dropped by
    // `sqlite_iam::move_plaintext_keys` after the migrations, since sealing needs the key.
    "CREATE TABLE iam_users (
        name TEXT PRIMARY KEY,
        arn TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE iam_roles (
        name TEXT PRIMARY KEY,
        arn TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX iam_roles_arn ON iam_roles (arn);
    CREATE TABLE iam_keys (
        access_key_id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES iam_users(name) ON DELETE CASCADE,
        secret_sealed TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'Active',
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX iam_keys_user ON iam_keys (user_name, created_ms);
    CREATE TABLE iam_policies (
        kind TEXT NOT NULL,
        principal TEXT NOT NULL,
        name TEXT NOT NULL,
        document TEXT NOT NULL,
        PRIMARY KEY (kind, principal, name)
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        principal TEXT NOT NULL,
        access_key_id TEXT NOT NULL,
        action TEXT NOT NULL,
        resource TEXT NOT NULL,
        decision TEXT NOT NULL,
        source_ip TEXT NOT NULL,
        status INTEGER NOT NULL,
        error_code TEXT NOT NULL,
        request_id TEXT NOT NULL
    );
    CREATE INDEX audit_log_at ON audit_log (at_ms);",
];

/// Name of the master key file, next to the database in the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// A [`Store`] in one SQLite file (or in memory, for tests).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    secrets: SecretBox,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` in WAL mode and applies the schema.
    /// Secrets are sealed with the master key [`MASTER_KEY_FILE`] next to the database,
    /// created on first use; plaintext access keys of an older database are sealed and their
    /// old table dropped.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let secrets = SecretBox::load_or_create(&path.with_file_name(MASTER_KEY_FILE))?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn, secrets)
    }

    /// An in-memory store with an ephemeral master key, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, SecretBox::ephemeral()?)
    }

    fn init(mut conn: Connection, secrets: SecretBox) -> Result<Self, StoreError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        sqlite_iam::move_plaintext_keys(&mut conn, &secrets)?;
        sqlite_iam::check_master_key(&conn, &secrets)?;
        Ok(Self {
            conn: Mutex::new(conn),
            secrets,
        })
    }

    pub(crate) fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    /// The master key this store seals secrets with (also for MACs of session tokens).
    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }
}

/// Applies the migrations this database has not seen yet, each in its own transaction.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        conn.execute_batch(&format!(
            "BEGIN; {migration}; PRAGMA user_version = {}; COMMIT;",
            index + 1
        ))?;
    }
    Ok(())
}

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("Function not found: {name}"))
}

pub(crate) fn now_ms() -> i64 {
    lambent_types::time::epoch_millis(std::time::SystemTime::now()) as i64
}

fn write_config(conn: &Connection, config: &FunctionConfig) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE function_versions SET config = ?3 WHERE function_name = ?1 AND version = ?2",
        params![config.name, config.version, serde_json::to_string(config)?],
    )?;
    Ok(())
}

/// True when two configurations would run the same way (publishing again would add nothing).
fn same_deployment(published: &FunctionConfig, latest: &FunctionConfig) -> bool {
    let comparable = |c: &FunctionConfig| FunctionConfig {
        version: String::new(),
        description: String::new(),
        last_modified: String::new(),
        revision_id: String::new(),
        ..c.clone()
    };
    comparable(published) == comparable(latest)
}

fn read_document(
    conn: &Connection,
    kind: &str,
    scope: &str,
    key: &str,
) -> Result<Option<Value>, StoreError> {
    let doc: Option<String> = conn
        .prepare_cached("SELECT doc FROM documents WHERE kind = ?1 AND scope = ?2 AND key = ?3")?
        .query_row(params![kind, scope, key], |row| row.get(0))
        .optional()?;
    Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
}

fn documents(
    conn: &Connection,
    kind: &str,
    scope: Option<&str>,
) -> Result<Vec<(String, String, Value)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT scope, key, doc FROM documents WHERE kind = ?1 AND (?2 IS NULL OR scope = ?2) \
         ORDER BY scope, key",
    )?;
    let rows = stmt.query_map(params![kind, scope], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (scope, key, doc) = row?;
        out.push((scope, key, serde_json::from_str(&doc)?));
    }
    Ok(out)
}

fn read_config(conn: &Connection, name: &str, version: &str) -> Result<FunctionConfig, StoreError> {
    let json: Option<String> = conn
        .prepare_cached(
            "SELECT config FROM function_versions WHERE function_name = ?1 AND version = ?2",
        )?
        .query_row(params![name, version], |row| row.get(0))
        .optional()?;
    let json = json.ok_or_else(|| not_found(name))?;
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
            return Err(StoreError::AlreadyExists(format!(
                "Function already exist: {}",
                config.name
            )));
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
        all_versions: bool,
    ) -> Result<Page<FunctionConfig>, StoreError> {
        let conn = self.conn()?;
        // Markers are `name:version`; versions order as $LATEST, 1, 2, …
        let (after_name, after_version) = match marker.and_then(|m| m.rsplit_once(':')) {
            Some((name, LATEST)) => (name, -1),
            Some((name, version)) => (name, version.parse::<i64>().unwrap_or(i64::MAX)),
            None => (marker.unwrap_or(""), i64::MAX),
        };
        let mut stmt = conn.prepare_cached(
            "SELECT config FROM function_versions \
             WHERE (?1 OR version = '$LATEST') \
             AND (function_name, CASE version WHEN '$LATEST' THEN -1 ELSE CAST(version AS INTEGER) END) > (?2, ?3) \
             ORDER BY function_name, CASE version WHEN '$LATEST' THEN -1 ELSE CAST(version AS INTEGER) END LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                all_versions,
                after_name,
                after_version,
                (max_items + 1) as i64
            ],
            |row| row.get::<_, String>(0),
        )?;
        let mut items = Vec::new();
        for row in rows {
            items.push(serde_json::from_str::<FunctionConfig>(&row?)?);
        }
        let next_marker = if items.len() > max_items {
            items.truncate(max_items);
            items.last().map(|c| format!("{}:{}", c.name, c.version))
        } else {
            None
        };
        Ok(Page { items, next_marker })
    }

    fn update_function(
        &self,
        name: &str,
        expected_revision: Option<&str>,
        change: &mut dyn FnMut(&mut FunctionConfig) -> Result<(), StoreError>,
    ) -> Result<FunctionConfig, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let mut config = read_config(&tx, name, LATEST)?;
        if let Some(expected) = expected_revision
            && expected != config.revision_id
        {
            return Err(StoreError::RevisionMismatch(name.to_string()));
        }
        change(&mut config)?;
        write_config(&tx, &config)?;
        tx.commit()?;
        Ok(config)
    }

    fn publish_version(
        &self,
        name: &str,
        expected_revision: Option<&str>,
        expected_code_sha256: Option<&str>,
        description: Option<&str>,
    ) -> Result<FunctionConfig, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let latest = read_config(&tx, name, LATEST)?;
        if let Some(expected) = expected_revision
            && expected != latest.revision_id
        {
            return Err(StoreError::RevisionMismatch(name.to_string()));
        }
        if let Some(expected) = expected_code_sha256
            && expected != latest.code_sha256
        {
            return Err(StoreError::Invalid(format!(
                "CodeSHA256 ({expected}) is different from current CodeSHA256 in $LATEST ({}). Please try again \
                 with the CodeSHA256 in $LATEST.",
                latest.code_sha256
            )));
        }
        let last: u64 = tx.query_row(
            "SELECT last_version FROM functions WHERE name = ?1",
            params![name],
            |row| row.get::<_, i64>(0),
        )? as u64;
        let newest: Option<String> = tx
            .query_row(
                "SELECT config FROM function_versions WHERE function_name = ?1 AND version != '$LATEST' \
                 ORDER BY CAST(version AS INTEGER) DESC LIMIT 1",
                params![name],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(newest) = newest {
            let newest: FunctionConfig = serde_json::from_str(&newest)?;
            if same_deployment(&newest, &latest) {
                return Ok(newest);
            }
        }
        let number = last + 1;
        let version = FunctionConfig {
            version: number.to_string(),
            description: description.map_or(latest.description.clone(), str::to_string),
            ..latest
        };
        tx.execute(
            "INSERT INTO function_versions (function_name, version, config) VALUES (?1, ?2, ?3)",
            params![name, version.version, serde_json::to_string(&version)?],
        )?;
        tx.execute(
            "UPDATE functions SET last_version = ?2 WHERE name = ?1",
            params![name, number as i64],
        )?;
        tx.commit()?;
        Ok(version)
    }

    fn list_versions(
        &self,
        name: &str,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<Page<FunctionConfig>, StoreError> {
        let conn = self.conn()?;
        read_config(&conn, name, LATEST)?;
        let after: i64 = match marker {
            None | Some("") => -2,
            Some(LATEST) => -1,
            Some(m) => m
                .parse()
                .map_err(|_| StoreError::Invalid(format!("Invalid marker: {m}")))?,
        };
        let mut stmt = conn.prepare_cached(
            "SELECT config FROM function_versions WHERE function_name = ?1 \
             AND (CASE version WHEN '$LATEST' THEN -1 ELSE CAST(version AS INTEGER) END) > ?2 \
             ORDER BY CASE version WHEN '$LATEST' THEN -1 ELSE CAST(version AS INTEGER) END LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![name, after, (max_items + 1) as i64], |row| {
            row.get::<_, String>(0)
        })?;
        let mut items = Vec::new();
        for row in rows {
            items.push(serde_json::from_str::<FunctionConfig>(&row?)?);
        }
        let next_marker = if items.len() > max_items {
            items.truncate(max_items);
            items.last().map(|c| c.version.clone())
        } else {
            None
        };
        Ok(Page { items, next_marker })
    }

    fn delete_version(&self, name: &str, version: u64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let label = version.to_string();
        read_config(&tx, name, &label)
            .map_err(|_| StoreError::NotFound(format!("Function not found: {name}:{label}")))?;
        let aliases = documents(&tx, kinds::ALIAS, Some(name))?;
        for (_, alias, doc) in aliases {
            let routes_here = doc["FunctionVersion"].as_str() == Some(label.as_str())
                || doc["RoutingConfig"]["AdditionalVersionWeights"]
                    .get(&label)
                    .is_some();
            if routes_here {
                return Err(StoreError::Conflict(format!(
                    "Unable to delete version because the following aliases reference it: [{alias}]"
                )));
            }
        }
        tx.execute(
            "DELETE FROM function_versions WHERE function_name = ?1 AND version = ?2",
            params![name, label],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn modify_document(
        &self,
        kind: &str,
        scope: &str,
        key: &str,
        change: &mut dyn FnMut(Option<Value>) -> Result<Option<Value>, StoreError>,
    ) -> Result<Option<Value>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let current = read_document(&tx, kind, scope, key)?;
        let next = change(current)?;
        match &next {
            Some(doc) => tx.execute(
                "INSERT INTO documents (kind, scope, key, doc) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (kind, scope, key) DO UPDATE SET doc = excluded.doc",
                params![kind, scope, key, doc.to_string()],
            )?,
            None => tx.execute(
                "DELETE FROM documents WHERE kind = ?1 AND scope = ?2 AND key = ?3",
                params![kind, scope, key],
            )?,
        };
        tx.commit()?;
        Ok(next)
    }

    fn get_document(
        &self,
        kind: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<Value>, StoreError> {
        read_document(&*self.conn()?, kind, scope, key)
    }

    fn list_documents(
        &self,
        kind: &str,
        scope: Option<&str>,
    ) -> Result<Vec<(String, String, Value)>, StoreError> {
        documents(&*self.conn()?, kind, scope)
    }

    fn delete_function(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let deleted = tx.execute("DELETE FROM functions WHERE name = ?1", params![name])?;
        if deleted == 0 {
            return Err(not_found(name));
        }
        for kind in kinds::FUNCTION_SCOPED {
            tx.execute(
                "DELETE FROM documents WHERE kind = ?1 AND scope = ?2",
                params![kind, name],
            )?;
        }
        // Queued events die with their function; records of past invocations still go out.
        tx.execute(
            "DELETE FROM async_queue WHERE kind = 'invoke' AND function_name = ?1",
            params![name],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn usage(&self) -> Result<(u64, u64), StoreError> {
        let conn = self.conn()?;
        let (count, size): (i64, i64) = conn.query_row(
            "SELECT (SELECT COUNT(*) FROM functions), \
             COALESCE(SUM(json_extract(config, '$.code_size')), 0) FROM function_versions",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((count as u64, size as u64))
    }

    fn put_access_key(&self, key: &AccessKey) -> Result<(), StoreError> {
        sqlite_iam::put_root_key(self, key)
    }

    fn access_key_secret(&self, access_key_id: &str) -> Result<Option<String>, StoreError> {
        sqlite_iam::active_secret(self, access_key_id)
    }

    fn list_access_keys(&self) -> Result<Vec<AccessKey>, StoreError> {
        sqlite_iam::root_keys(self)
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
            .unwrap();
        assert_eq!(updated.timeout, 9);
        assert_eq!(store.get_function("a", LATEST).unwrap().revision_id, "r2");
        let refused = store.update_function("a", None, &mut |c| {
            c.timeout = 1;
            Err(StoreError::Invalid("no".into()))
        });
        assert!(matches!(refused, Err(StoreError::Invalid(_))));
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
    fn publishes_lists_and_deletes_versions() {
        let store = SqliteStore::in_memory().unwrap();
        store.create_function(&config("f")).unwrap();
        assert!(matches!(
            store.publish_version("f", Some("other"), None, None),
            Err(StoreError::RevisionMismatch(_))
        ));
        assert!(matches!(
            store.publish_version("f", None, Some("not-the-sha"), None),
            Err(StoreError::Invalid(_))
        ));
        let v1 = store
            .publish_version("f", Some("r1"), Some("q="), Some("first"))
            .unwrap();
        assert_eq!(
            (v1.version.as_str(), v1.description.as_str()),
            ("1", "first")
        );
        let again = store.publish_version("f", None, None, None).unwrap();
        assert_eq!(again.version, "1", "nothing changed, so no new version");
        store
            .update_function("f", None, &mut |c| {
                c.timeout = 30;
                c.revision_id = "r2".into();
                Ok(())
            })
            .unwrap();
        let v2 = store.publish_version("f", None, None, None).unwrap();
        assert_eq!(
            store.usage().unwrap(),
            (1, 30),
            "one function, three stored versions"
        );
        assert_eq!((v2.version.as_str(), v2.timeout), ("2", 30));
        assert_eq!(
            store.get_function("f", "1").unwrap().timeout,
            3,
            "versions are immutable"
        );

        let all = store.list_functions(None, 50, true).unwrap();
        let all: Vec<_> = all.items.iter().map(|c| c.version.as_str()).collect();
        assert_eq!(all, ["$LATEST", "1", "2"]);
        let first = store.list_functions(None, 2, true).unwrap();
        let rest = store
            .list_functions(first.next_marker.as_deref(), 2, true)
            .unwrap();
        assert_eq!(rest.items.len(), 1);
        assert_eq!(rest.items[0].version, "2");
        let page = store.list_versions("f", None, 2).unwrap();
        let names: Vec<_> = page.items.iter().map(|c| c.version.as_str()).collect();
        assert_eq!(names, ["$LATEST", "1"]);
        let rest = store
            .list_versions("f", page.next_marker.as_deref(), 2)
            .unwrap();
        assert_eq!(rest.items[0].version, "2");
        assert!(rest.next_marker.is_none());

        store
            .modify_document(kinds::ALIAS, "f", "live", &mut |_| {
                Ok(Some(serde_json::json!({"FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.5}}})))
            })
            .unwrap();
        assert!(matches!(
            store.delete_version("f", 1),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.delete_version("f", 2),
            Err(StoreError::Conflict(_))
        ));
        store
            .modify_document(kinds::ALIAS, "f", "live", &mut |_| Ok(None))
            .unwrap();
        store.delete_version("f", 2).unwrap();
        assert!(matches!(
            store.delete_version("f", 2),
            Err(StoreError::NotFound(_))
        ));
        let v3 = store.publish_version("f", None, None, Some("x")).unwrap();
        assert_eq!(v3.version, "3", "numbers are never reused");
    }

    #[test]
    fn documents_are_transactional_and_die_with_their_function() {
        let store = SqliteStore::in_memory().unwrap();
        store.create_function(&config("f")).unwrap();
        store
            .modify_document(kinds::ALIAS, "f", "a", &mut |current| {
                assert!(current.is_none());
                Ok(Some(serde_json::json!({"n": 1})))
            })
            .unwrap();
        let refused = store.modify_document(kinds::ALIAS, "f", "a", &mut |_| {
            Err(StoreError::Conflict("busy".into()))
        });
        assert!(matches!(refused, Err(StoreError::Conflict(_))));
        assert_eq!(
            store.get_document(kinds::ALIAS, "f", "a").unwrap(),
            Some(serde_json::json!({"n": 1}))
        );
        store
            .modify_document("other-kind", "f", "x", &mut |_| {
                Ok(Some(serde_json::json!(true)))
            })
            .unwrap();
        assert_eq!(
            store.list_documents(kinds::ALIAS, Some("f")).unwrap().len(),
            1
        );
        store.delete_function("f").unwrap();
        assert!(store.list_documents(kinds::ALIAS, None).unwrap().is_empty());
        assert_eq!(
            store.list_documents("other-kind", None).unwrap().len(),
            1,
            "only function-scoped kinds are deleted with the function"
        );
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
            let page = store.list_functions(marker.as_deref(), 3, false).unwrap();
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

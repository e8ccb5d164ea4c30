//! [`IamStore`] on SQLite: tables `iam_users`, `iam_roles`, `iam_keys` (secrets sealed with
//! the store's [`SecretBox`]), `iam_policies` and `audit_log`. Also the one-time move of the
//! plaintext `access_keys` table of older databases into `iam_keys`.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::iam::{
    AccessKeyInfo, AuditFilter, AuditRecord, IamStore, KEY_ACTIVE, KEY_INACTIVE, KeyLookup,
    MAX_KEYS_PER_USER, NewAccessKey, PLACEHOLDER_ROOT_ARN, PrincipalKind, ROOT_USER, Role, User,
};
use crate::secrets::{SecretBox, random_string};
use crate::sqlite::now_ms;
use crate::{AccessKey, SqliteStore, StoreError};

const KEY_ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Seals the keys of the plaintext `access_keys` table (databases from before the IAM
/// tables) into `iam_keys` as keys of [`ROOT_USER`], and drops that table, in one
/// transaction. Deleted pages are zeroed and the WAL truncated, so no plaintext secret
/// remains in the database files.
pub(crate) fn move_plaintext_keys(
    conn: &mut Connection,
    secrets: &SecretBox,
) -> Result<(), StoreError> {
    if !has_plaintext_table(conn)? {
        return Ok(());
    }
    let secure_delete: i64 = conn.query_row("PRAGMA secure_delete", [], |row| row.get(0))?;
    conn.pragma_update(None, "secure_delete", 1)?;
    let moved = move_in_transaction(conn, secrets);
    conn.pragma_update(None, "secure_delete", secure_delete)?;
    let moved = moved?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    if moved > 0 {
        tracing::info!(
            keys = moved,
            "sealed the access keys of an older database with the master key"
        );
    }
    Ok(())
}

fn has_plaintext_table(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'access_keys')",
        [],
        |row| row.get(0),
    )?)
}

fn move_in_transaction(conn: &mut Connection, secrets: &SecretBox) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !has_plaintext_table(&tx)? {
        return Ok(0);
    }
    let keys: Vec<(String, String, i64)> = {
        let mut stmt = tx.prepare(
            "SELECT access_key_id, secret_access_key, created_ms FROM access_keys \
             ORDER BY created_ms, access_key_id",
        )?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    if !keys.is_empty() {
        tx.execute(
            "INSERT OR IGNORE INTO iam_users (name, arn, created_ms) VALUES (?1, ?2, ?3)",
            params![ROOT_USER, PLACEHOLDER_ROOT_ARN, now_ms()],
        )?;
    }
    for (id, secret, created_ms) in &keys {
        tx.execute(
            "INSERT OR IGNORE INTO iam_keys (access_key_id, user_name, secret_sealed, status, created_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, ROOT_USER, secrets.seal(secret), KEY_ACTIVE, created_ms],
        )?;
    }
    tx.execute_batch("DROP TABLE access_keys")?;
    tx.commit()?;
    Ok(keys.len())
}

/// Fails clearly if the master key does not open the secrets already in the database
/// (a key file replaced, or restored from another backup than the database).
pub(crate) fn check_master_key(conn: &Connection, secrets: &SecretBox) -> Result<(), StoreError> {
    let sample: Option<(String, String)> = conn
        .query_row(
            "SELECT access_key_id, secret_sealed FROM iam_keys LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    if let Some((id, sealed)) = sample
        && secrets.open(&sealed).is_err()
    {
        return Err(StoreError::MasterKey(format!(
            "the master key does not decrypt the secret of access key {id} in the database: \
             the master key file is not the one that belongs with this database (replaced, or \
             restored from a different backup). Put back the original master key file next to \
             the database"
        )));
    }
    Ok(())
}

/// [`Store::put_access_key`](crate::Store::put_access_key): adds or replaces a key of
/// [`ROOT_USER`], creating that user if missing.
pub(crate) fn put_root_key(store: &SqliteStore, key: &AccessKey) -> Result<(), StoreError> {
    let sealed = store.secrets().seal(&key.secret_access_key);
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    tx.execute(
        "INSERT OR IGNORE INTO iam_users (name, arn, created_ms) VALUES (?1, ?2, ?3)",
        params![ROOT_USER, PLACEHOLDER_ROOT_ARN, now],
    )?;
    tx.execute(
        "INSERT OR REPLACE INTO iam_keys (access_key_id, user_name, secret_sealed, status, created_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![key.access_key_id, ROOT_USER, sealed, KEY_ACTIVE, now],
    )?;
    tx.commit()?;
    Ok(())
}

/// [`Store::access_key_secret`](crate::Store::access_key_secret): the secret of an active key.
pub(crate) fn active_secret(
    store: &SqliteStore,
    access_key_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(store
        .lookup_access_key(access_key_id)?
        .filter(|key| key.status == KEY_ACTIVE)
        .map(|key| key.secret_access_key))
}

/// [`Store::list_access_keys`](crate::Store::list_access_keys): the keys of [`ROOT_USER`],
/// active ones first, each group oldest first.
pub(crate) fn root_keys(store: &SqliteStore) -> Result<Vec<AccessKey>, StoreError> {
    let sealed: Vec<(String, String)> = {
        let conn = store.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT access_key_id, secret_sealed FROM iam_keys WHERE user_name = ?1 \
             ORDER BY status != 'Active', created_ms, access_key_id",
        )?;
        let rows = stmt.query_map(params![ROOT_USER], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    sealed
        .into_iter()
        .map(|(access_key_id, sealed)| {
            Ok(AccessKey {
                access_key_id,
                secret_access_key: store.secrets().open(&sealed)?,
            })
        })
        .collect()
}

fn user_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("The user with name {name} cannot be found."))
}

fn role_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("The role with name {name} cannot be found."))
}

fn key_not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("The Access Key with id {id} cannot be found."))
}

fn principal_not_found(kind: PrincipalKind, name: &str) -> StoreError {
    match kind {
        PrincipalKind::User => user_not_found(name),
        PrincipalKind::Role => role_not_found(name),
    }
}

fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: row.get(0)?,
        arn: row.get(1)?,
        created_ms: row.get(2)?,
    })
}

fn role_row(row: &Row<'_>) -> rusqlite::Result<Role> {
    Ok(Role {
        name: row.get(0)?,
        arn: row.get(1)?,
        description: row.get(2)?,
        created_ms: row.get(3)?,
    })
}

fn read_user(conn: &Connection, name: &str) -> Result<Option<User>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT name, arn, created_ms FROM iam_users WHERE name = ?1")?
        .query_row(params![name], user_row)
        .optional()?)
}

fn principal_exists(
    conn: &Connection,
    kind: PrincipalKind,
    name: &str,
) -> Result<bool, StoreError> {
    let sql = match kind {
        PrincipalKind::User => "SELECT EXISTS (SELECT 1 FROM iam_users WHERE name = ?1)",
        PrincipalKind::Role => "SELECT EXISTS (SELECT 1 FROM iam_roles WHERE name = ?1)",
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params![name], |row| row.get(0))?)
}

fn audit_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.get(0)?,
        at_ms: row.get(1)?,
        principal: row.get(2)?,
        access_key_id: row.get(3)?,
        action: row.get(4)?,
        resource: row.get(5)?,
        decision: row.get(6)?,
        source_ip: row.get(7)?,
        status: u16::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
        error_code: row.get(9)?,
        request_id: row.get(10)?,
    })
}

impl IamStore for SqliteStore {
    fn create_user(&self, name: &str, arn: &str) -> Result<User, StoreError> {
        let user = User {
            name: name.to_owned(),
            arn: arn.to_owned(),
            created_ms: now_ms(),
        };
        let inserted = self.conn()?.execute(
            "INSERT OR IGNORE INTO iam_users (name, arn, created_ms) VALUES (?1, ?2, ?3)",
            params![user.name, user.arn, user.created_ms],
        )?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(format!(
                "User with name {name} already exists."
            )));
        }
        Ok(user)
    }

    fn ensure_user(&self, name: &str, arn: &str) -> Result<User, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO iam_users (name, arn, created_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET arn = excluded.arn",
            params![name, arn, now_ms()],
        )?;
        let user = read_user(&tx, name)?.ok_or_else(|| user_not_found(name))?;
        tx.commit()?;
        Ok(user)
    }

    fn get_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        read_user(&*self.conn()?, name)
    }

    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT name, arn, created_ms FROM iam_users ORDER BY name")?;
        let rows = stmt.query_map([], user_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM iam_keys WHERE user_name = ?1", params![name])?;
        tx.execute(
            "DELETE FROM iam_policies WHERE kind = ?1 AND principal = ?2",
            params![PrincipalKind::User.as_str(), name],
        )?;
        if tx.execute("DELETE FROM iam_users WHERE name = ?1", params![name])? == 0 {
            return Err(user_not_found(name));
        }
        tx.commit()?;
        Ok(())
    }

    fn create_role(&self, name: &str, arn: &str, description: &str) -> Result<Role, StoreError> {
        let role = Role {
            name: name.to_owned(),
            arn: arn.to_owned(),
            description: description.to_owned(),
            created_ms: now_ms(),
        };
        let inserted = self.conn()?.execute(
            "INSERT OR IGNORE INTO iam_roles (name, arn, description, created_ms) \
             VALUES (?1, ?2, ?3, ?4)",
            params![role.name, role.arn, role.description, role.created_ms],
        )?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(format!(
                "Role with name {name} already exists."
            )));
        }
        Ok(role)
    }

    fn get_role(&self, name: &str) -> Result<Option<Role>, StoreError> {
        Ok(self
            .conn()?
            .prepare_cached(
                "SELECT name, arn, description, created_ms FROM iam_roles WHERE name = ?1",
            )?
            .query_row(params![name], role_row)
            .optional()?)
    }

    fn get_role_by_arn(&self, arn: &str) -> Result<Option<Role>, StoreError> {
        Ok(self
            .conn()?
            .prepare_cached(
                "SELECT name, arn, description, created_ms FROM iam_roles WHERE arn = ?1 \
                 ORDER BY name LIMIT 1",
            )?
            .query_row(params![arn], role_row)
            .optional()?)
    }

    fn list_roles(&self) -> Result<Vec<Role>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT name, arn, description, created_ms FROM iam_roles ORDER BY name",
        )?;
        let rows = stmt.query_map([], role_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_role(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM iam_policies WHERE kind = ?1 AND principal = ?2",
            params![PrincipalKind::Role.as_str(), name],
        )?;
        if tx.execute("DELETE FROM iam_roles WHERE name = ?1", params![name])? == 0 {
            return Err(role_not_found(name));
        }
        tx.commit()?;
        Ok(())
    }

    fn create_access_key(&self, user: &str) -> Result<NewAccessKey, StoreError> {
        let secret = random_string(40, SECRET_ALPHABET)?;
        let sealed = self.secrets().seal(&secret);
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !principal_exists(&tx, PrincipalKind::User, user)? {
            return Err(user_not_found(user));
        }
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM iam_keys WHERE user_name = ?1",
            params![user],
            |row| row.get(0),
        )?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_KEYS_PER_USER {
            return Err(StoreError::Invalid(format!(
                "Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}"
            )));
        }
        // 80 random bits: a collision is practically impossible, but never overwrite a key.
        for _ in 0..4 {
            let access_key_id = format!("LKIA{}", random_string(16, KEY_ID_ALPHABET)?);
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO iam_keys (access_key_id, user_name, secret_sealed, status, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![access_key_id, user, sealed, KEY_ACTIVE, now_ms()],
            )?;
            if inserted == 1 {
                tx.commit()?;
                return Ok(NewAccessKey {
                    access_key_id,
                    secret_access_key: secret,
                    user: user.to_owned(),
                });
            }
        }
        Err(StoreError::Conflict(
            "could not pick an unused access key id; try again".into(),
        ))
    }

    fn lookup_access_key(&self, access_key_id: &str) -> Result<Option<KeyLookup>, StoreError> {
        let row: Option<(String, String, String)> = self
            .conn()?
            .prepare_cached(
                "SELECT user_name, secret_sealed, status FROM iam_keys WHERE access_key_id = ?1",
            )?
            .query_row(params![access_key_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        row.map(|(user, sealed, status)| {
            Ok(KeyLookup {
                user,
                secret_access_key: self.secrets().open(&sealed)?,
                status,
            })
        })
        .transpose()
    }

    fn list_access_keys_of(&self, user: Option<&str>) -> Result<Vec<AccessKeyInfo>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT access_key_id, user_name, status, created_ms FROM iam_keys \
             WHERE ?1 IS NULL OR user_name = ?1 ORDER BY user_name, created_ms, access_key_id",
        )?;
        let rows = stmt.query_map(params![user], |row| {
            Ok(AccessKeyInfo {
                access_key_id: row.get(0)?,
                user: row.get(1)?,
                status: row.get(2)?,
                created_ms: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_access_key_status(&self, access_key_id: &str, active: bool) -> Result<(), StoreError> {
        let status = if active { KEY_ACTIVE } else { KEY_INACTIVE };
        let updated = self.conn()?.execute(
            "UPDATE iam_keys SET status = ?2 WHERE access_key_id = ?1",
            params![access_key_id, status],
        )?;
        if updated == 0 {
            return Err(key_not_found(access_key_id));
        }
        Ok(())
    }

    fn delete_access_key(&self, access_key_id: &str) -> Result<(), StoreError> {
        let deleted = self.conn()?.execute(
            "DELETE FROM iam_keys WHERE access_key_id = ?1",
            params![access_key_id],
        )?;
        if deleted == 0 {
            return Err(key_not_found(access_key_id));
        }
        Ok(())
    }

    fn put_policy(
        &self,
        kind: PrincipalKind,
        principal: &str,
        policy_name: &str,
        document: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !principal_exists(&tx, kind, principal)? {
            return Err(principal_not_found(kind, principal));
        }
        tx.execute(
            "INSERT INTO iam_policies (kind, principal, name, document) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (kind, principal, name) DO UPDATE SET document = excluded.document",
            params![kind.as_str(), principal, policy_name, document],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn delete_policy(
        &self,
        kind: PrincipalKind,
        principal: &str,
        policy_name: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !principal_exists(&tx, kind, principal)? {
            return Err(principal_not_found(kind, principal));
        }
        let deleted = tx.execute(
            "DELETE FROM iam_policies WHERE kind = ?1 AND principal = ?2 AND name = ?3",
            params![kind.as_str(), principal, policy_name],
        )?;
        if deleted == 0 {
            return Err(StoreError::NotFound(format!(
                "The {} policy with name {policy_name} cannot be found.",
                kind.as_str()
            )));
        }
        tx.commit()?;
        Ok(())
    }

    fn list_policies(
        &self,
        kind: PrincipalKind,
        principal: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT name, document FROM iam_policies WHERE kind = ?1 AND principal = ?2 \
             ORDER BY name",
        )?;
        let rows = stmt.query_map(params![kind.as_str(), principal], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        self.conn()?
            .prepare_cached(
                "INSERT INTO audit_log (at_ms, principal, access_key_id, action, resource, decision, \
                 source_ip, status, error_code, request_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                record.at_ms,
                record.principal,
                record.access_key_id,
                record.action,
                record.resource,
                record.decision,
                record.source_ip,
                i64::from(record.status),
                record.error_code,
                record.request_id,
            ])?;
        Ok(())
    }

    fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let mut conditions = Vec::new();
        let mut values: Vec<SqlValue> = Vec::new();
        if let Some(since) = filter.since_ms {
            values.push(SqlValue::Integer(since));
            conditions.push(format!("at_ms >= ?{}", values.len()));
        }
        if let Some(principal) = &filter.principal {
            values.push(SqlValue::Text(principal.clone()));
            conditions.push(format!("principal = ?{}", values.len()));
        }
        if let Some(decision) = &filter.decision {
            values.push(SqlValue::Text(decision.clone()));
            conditions.push(format!("decision = ?{}", values.len()));
        }
        let limit = match filter.limit {
            0 => -1,
            n => i64::try_from(n).unwrap_or(i64::MAX),
        };
        values.push(SqlValue::Integer(limit));
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT id, at_ms, principal, access_key_id, action, resource, decision, source_ip, \
             status, error_code, request_id FROM audit_log {where_clause} \
             ORDER BY at_ms DESC, id DESC LIMIT ?{}",
            values.len()
        );
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), audit_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn prune_audit(&self, keep: usize) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let cutoff: Option<(i64, i64)> = tx
            .query_row(
                "SELECT at_ms, id FROM audit_log ORDER BY at_ms DESC, id DESC LIMIT 1 OFFSET ?1",
                params![i64::try_from(keep).unwrap_or(i64::MAX)],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((at_ms, id)) = cutoff else {
            return Ok(0);
        };
        let deleted = tx.execute(
            "DELETE FROM audit_log WHERE at_ms < ?1 OR (at_ms = ?1 AND id <= ?2)",
            params![at_ms, id],
        )?;
        tx.commit()?;
        Ok(deleted as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;
    use crate::Store;
    use crate::sqlite::{MASTER_KEY_FILE, MIGRATIONS};

    fn store() -> SqliteStore {
        SqliteStore::in_memory().unwrap()
    }

    /// Every byte of the database and its side files in `dir`.
    fn database_bytes(dir: &Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("lambent.db") {
                bytes.extend(std::fs::read(&path).unwrap());
            }
        }
        bytes
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[test]
    fn principal_kinds_round_trip() {
        for kind in [PrincipalKind::User, PrincipalKind::Role] {
            assert_eq!(PrincipalKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(PrincipalKind::parse("group"), None);
    }

    #[test]
    fn users_round_trip() {
        let s = store();
        let bob = s
            .create_user("bob", "arn:aws:iam::123456789012:user/bob")
            .unwrap();
        s.create_user("alice", "arn:aws:iam::123456789012:user/alice")
            .unwrap();
        assert!(matches!(
            s.create_user("bob", "x"),
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(s.get_user("bob").unwrap(), Some(bob.clone()));
        assert_eq!(s.get_user("carol").unwrap(), None);
        let names: Vec<_> = s
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice", "bob"]);

        let fixed = s
            .ensure_user("bob", "arn:aws:iam::999999999999:user/bob")
            .unwrap();
        assert_eq!(fixed.arn, "arn:aws:iam::999999999999:user/bob");
        assert_eq!(fixed.created_ms, bob.created_ms, "an update keeps the user");
        let new = s.ensure_user("carol", "arn:carol").unwrap();
        assert_eq!(s.get_user("carol").unwrap(), Some(new));

        s.delete_user("alice").unwrap();
        assert!(matches!(
            s.delete_user("alice"),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.list_users().unwrap().len(), 2);
    }

    #[test]
    fn roles_round_trip() {
        let s = store();
        let arn = "arn:aws:iam::123456789012:role/exec";
        let role = s.create_role("exec", arn, "runs functions").unwrap();
        s.create_role("admin", "arn:aws:iam::123456789012:role/admin", "")
            .unwrap();
        assert!(matches!(
            s.create_role("exec", arn, ""),
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(s.get_role("exec").unwrap(), Some(role.clone()));
        assert_eq!(s.get_role_by_arn(arn).unwrap(), Some(role));
        assert_eq!(s.get_role_by_arn("arn:nope").unwrap(), None);
        assert_eq!(s.get_role("nope").unwrap(), None);
        let names: Vec<_> = s
            .list_roles()
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["admin", "exec"]);

        s.put_policy(PrincipalKind::Role, "exec", "p", "{}")
            .unwrap();
        s.delete_role("exec").unwrap();
        assert!(matches!(
            s.delete_role("exec"),
            Err(StoreError::NotFound(_))
        ));
        s.create_role("exec", arn, "again").unwrap();
        assert!(
            s.list_policies(PrincipalKind::Role, "exec")
                .unwrap()
                .is_empty(),
            "policies die with their role"
        );
    }

    #[test]
    fn access_keys_round_trip_and_limit() {
        let s = store();
        assert!(matches!(
            s.create_access_key("bob"),
            Err(StoreError::NotFound(_))
        ));
        s.create_user("bob", "arn:bob").unwrap();
        let k1 = s.create_access_key("bob").unwrap();
        let k2 = s.create_access_key("bob").unwrap();
        assert!(matches!(
            s.create_access_key("bob"),
            Err(StoreError::Invalid(m)) if m.contains("AccessKeysPerUser")
        ));
        for k in [&k1, &k2] {
            assert_eq!(k.user, "bob");
            assert_eq!(k.access_key_id.len(), 20);
            assert!(k.access_key_id.starts_with("LKIA"));
            assert!(
                k.access_key_id[4..]
                    .bytes()
                    .all(|b| KEY_ID_ALPHABET.contains(&b))
            );
            assert_eq!(k.secret_access_key.len(), 40);
            assert!(
                k.secret_access_key
                    .bytes()
                    .all(|b| SECRET_ALPHABET.contains(&b))
            );
            assert!(!format!("{k:?}").contains(&k.secret_access_key));
        }
        assert_ne!(k1.access_key_id, k2.access_key_id);
        assert_ne!(k1.secret_access_key, k2.secret_access_key);

        let found = s.lookup_access_key(&k1.access_key_id).unwrap().unwrap();
        assert_eq!(
            (
                found.user.as_str(),
                found.secret_access_key.as_str(),
                found.status.as_str()
            ),
            ("bob", k1.secret_access_key.as_str(), "Active")
        );
        assert!(!format!("{found:?}").contains(&k1.secret_access_key));
        assert_eq!(s.lookup_access_key("LKIANOPE").unwrap(), None);
        assert_eq!(
            s.access_key_secret(&k1.access_key_id).unwrap().as_deref(),
            Some(k1.secret_access_key.as_str())
        );

        s.set_access_key_status(&k1.access_key_id, false).unwrap();
        assert_eq!(
            s.lookup_access_key(&k1.access_key_id)
                .unwrap()
                .unwrap()
                .status,
            "Inactive"
        );
        assert_eq!(
            s.access_key_secret(&k1.access_key_id).unwrap(),
            None,
            "inactive keys do not sign"
        );
        s.set_access_key_status(&k1.access_key_id, true).unwrap();
        assert!(s.access_key_secret(&k1.access_key_id).unwrap().is_some());
        assert!(matches!(
            s.set_access_key_status("LKIANOPE", true),
            Err(StoreError::NotFound(_))
        ));

        s.create_user("alice", "arn:alice").unwrap();
        let k3 = s.create_access_key("alice").unwrap();
        let of_bob = s.list_access_keys_of(Some("bob")).unwrap();
        assert_eq!(of_bob.len(), 2);
        assert!(
            of_bob
                .iter()
                .all(|k| k.user == "bob" && k.status == "Active")
        );
        let all = s.list_access_keys_of(None).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].access_key_id, k3.access_key_id, "by user first");
        assert!(s.list_access_keys_of(Some("nobody")).unwrap().is_empty());

        s.delete_access_key(&k2.access_key_id).unwrap();
        assert!(matches!(
            s.delete_access_key(&k2.access_key_id),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.lookup_access_key(&k2.access_key_id).unwrap(), None);
        s.create_access_key("bob").unwrap();
    }

    #[test]
    fn deleting_a_user_deletes_its_keys_and_policies() {
        let s = store();
        s.create_user("bob", "arn:bob").unwrap();
        s.create_user("alice", "arn:alice").unwrap();
        let key = s.create_access_key("bob").unwrap();
        let kept = s.create_access_key("alice").unwrap();
        s.put_policy(PrincipalKind::User, "bob", "p", "{}").unwrap();
        s.create_role("bob", "arn:role/bob", "").unwrap();
        s.put_policy(PrincipalKind::Role, "bob", "p", "{\"r\":1}")
            .unwrap();
        s.delete_user("bob").unwrap();
        assert_eq!(s.lookup_access_key(&key.access_key_id).unwrap(), None);
        assert!(s.list_access_keys_of(Some("bob")).unwrap().is_empty());
        s.create_user("bob", "arn:bob").unwrap();
        assert!(
            s.list_policies(PrincipalKind::User, "bob")
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.list_policies(PrincipalKind::Role, "bob").unwrap().len(),
            1,
            "a role of the same name keeps its policies"
        );
        assert!(s.lookup_access_key(&kept.access_key_id).unwrap().is_some());
    }

    #[test]
    fn policies_round_trip() {
        let s = store();
        assert!(matches!(
            s.put_policy(PrincipalKind::User, "bob", "p", "{}"),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.put_policy(PrincipalKind::Role, "bob", "p", "{}"),
            Err(StoreError::NotFound(_))
        ));
        s.create_user("bob", "arn:bob").unwrap();
        s.put_policy(PrincipalKind::User, "bob", "b", "{\"v\":1}")
            .unwrap();
        s.put_policy(PrincipalKind::User, "bob", "a", "{\"v\":2}")
            .unwrap();
        s.put_policy(PrincipalKind::User, "bob", "b", "{\"v\":3}")
            .unwrap();
        assert_eq!(
            s.list_policies(PrincipalKind::User, "bob").unwrap(),
            [
                ("a".to_owned(), "{\"v\":2}".to_owned()),
                ("b".to_owned(), "{\"v\":3}".to_owned())
            ]
        );
        assert!(
            s.list_policies(PrincipalKind::Role, "bob")
                .unwrap()
                .is_empty()
        );
        s.delete_policy(PrincipalKind::User, "bob", "a").unwrap();
        assert!(matches!(
            s.delete_policy(PrincipalKind::User, "bob", "a"),
            Err(StoreError::NotFound(m)) if m.contains("user policy with name a")
        ));
        assert!(matches!(
            s.delete_policy(PrincipalKind::Role, "nobody", "a"),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            s.list_policies(PrincipalKind::User, "bob").unwrap().len(),
            1
        );
    }

    fn record(at_ms: i64, principal: &str, decision: &str) -> AuditRecord {
        AuditRecord {
            id: 0,
            at_ms,
            principal: principal.into(),
            access_key_id: "LKIAX".into(),
            action: "lambda:InvokeFunction".into(),
            resource: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
            decision: decision.into(),
            source_ip: "127.0.0.1".into(),
            status: 200,
            error_code: String::new(),
            request_id: format!("req-{at_ms}"),
        }
    }

    #[test]
    fn audit_appends_filters_and_prunes() {
        let s = store();
        s.append_audit(&record(100, "arn:a", "Allow")).unwrap();
        s.append_audit(&record(300, "arn:b", "Deny")).unwrap();
        s.append_audit(&record(200, "arn:a", "Allow")).unwrap();
        s.append_audit(&AuditRecord {
            status: 403,
            error_code: "UnrecognizedClientException".into(),
            ..record(300, "", "AuthFailed")
        })
        .unwrap();

        let all = s.list_audit(&AuditFilter::default()).unwrap();
        let order: Vec<_> = all.iter().map(|r| (r.at_ms, r.id)).collect();
        assert_eq!(order, [(300, 4), (300, 2), (200, 3), (100, 1)]);
        let mut expected = record(300, "", "AuthFailed");
        expected.id = 4;
        expected.status = 403;
        expected.error_code = "UnrecognizedClientException".into();
        assert_eq!(all[0], expected);

        let of_a = s
            .list_audit(&AuditFilter {
                principal: Some("arn:a".into()),
                ..AuditFilter::default()
            })
            .unwrap();
        assert_eq!(of_a.iter().map(|r| r.at_ms).collect::<Vec<_>>(), [200, 100]);
        let recent_allows = s
            .list_audit(&AuditFilter {
                since_ms: Some(150),
                decision: Some("Allow".into()),
                ..AuditFilter::default()
            })
            .unwrap();
        assert_eq!(recent_allows.len(), 1);
        assert_eq!(recent_allows[0].at_ms, 200);
        let newest = s
            .list_audit(&AuditFilter {
                limit: 2,
                ..AuditFilter::default()
            })
            .unwrap();
        assert_eq!(newest.iter().map(|r| r.id).collect::<Vec<_>>(), [4, 2]);
        let everything = s
            .list_audit(&AuditFilter {
                since_ms: Some(0),
                principal: Some("arn:b".into()),
                decision: Some("Deny".into()),
                limit: 10,
            })
            .unwrap();
        assert_eq!(everything.len(), 1);

        assert_eq!(s.prune_audit(10).unwrap(), 0);
        assert_eq!(s.prune_audit(2).unwrap(), 2);
        let left: Vec<_> = s
            .list_audit(&AuditFilter::default())
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, [4, 2]);
        s.append_audit(&record(400, "arn:a", "Allow")).unwrap();
        assert_eq!(
            s.list_audit(&AuditFilter::default()).unwrap()[0].id,
            5,
            "ids are never reused"
        );
        assert_eq!(s.prune_audit(0).unwrap(), 3);
        assert!(s.list_audit(&AuditFilter::default()).unwrap().is_empty());
    }

    #[test]
    fn root_keys_for_bootstrap() {
        let s = store();
        assert!(s.list_access_keys().unwrap().is_empty());
        let key = AccessKey {
            access_key_id: "LKIAROOT".into(),
            secret_access_key: "root-secret".into(),
        };
        s.put_access_key(&key).unwrap();
        let root = s.get_user(ROOT_USER).unwrap().unwrap();
        assert_eq!(root.arn, PLACEHOLDER_ROOT_ARN);
        assert_eq!(s.list_access_keys().unwrap(), std::slice::from_ref(&key));
        assert_eq!(
            s.access_key_secret("LKIAROOT").unwrap().as_deref(),
            Some("root-secret")
        );
        let fixed = s
            .ensure_user(ROOT_USER, "arn:aws:iam::123456789012:root")
            .unwrap();
        assert_eq!(fixed.arn, "arn:aws:iam::123456789012:root");
        assert_eq!(
            s.list_access_keys().unwrap(),
            std::slice::from_ref(&key),
            "keys are kept"
        );

        let second = s.create_access_key(ROOT_USER).unwrap();
        s.set_access_key_status("LKIAROOT", false).unwrap();
        let listed = s.list_access_keys().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed[0].access_key_id, second.access_key_id,
            "active keys first"
        );
        assert_eq!(listed[1], key);
    }

    #[test]
    fn secrets_are_never_stored_in_plaintext_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lambent.db");
        let (created, put) = {
            let s = SqliteStore::open(&path).unwrap();
            s.create_user("bob", "arn:bob").unwrap();
            let created = s.create_access_key("bob").unwrap();
            let put = AccessKey {
                access_key_id: "LKIAPUTPUTPUTPUTPUT1".into(),
                secret_access_key: "PutSecretPutSecretPutSecretPutSecret0000".into(),
            };
            s.put_access_key(&put).unwrap();
            let bytes = database_bytes(dir.path());
            assert!(contains(&bytes, &created.access_key_id), "the test looks");
            assert!(!contains(&bytes, &created.secret_access_key));
            assert!(!contains(&bytes, &put.secret_access_key));
            (created, put)
        };
        let bytes = database_bytes(dir.path());
        assert!(!contains(&bytes, &created.secret_access_key));
        assert!(!contains(&bytes, &put.secret_access_key));

        let key_path = dir.path().join(MASTER_KEY_FILE);
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.lookup_access_key(&created.access_key_id)
                .unwrap()
                .unwrap()
                .secret_access_key,
            created.secret_access_key
        );
        assert_eq!(s.list_access_keys().unwrap(), [put]);
        drop(s);

        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::MasterKey(m)) if m.contains("chmod 600")
        ));
        std::fs::remove_file(&key_path).unwrap();
        assert!(
            matches!(
                SqliteStore::open(&path),
                Err(StoreError::MasterKey(m)) if m.contains("does not decrypt")
            ),
            "a new master key cannot silently replace the one the secrets need"
        );
    }

    #[test]
    fn moves_plaintext_keys_of_an_older_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lambent.db");
        let old_secret = "OldPlaintextSecretOldPlaintextSecret1234";
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            for (index, migration) in MIGRATIONS[..3].iter().enumerate() {
                conn.execute_batch(&format!(
                    "BEGIN; {migration}; PRAGMA user_version = {}; COMMIT;",
                    index + 1
                ))
                .unwrap();
            }
            conn.execute(
                "INSERT INTO access_keys (access_key_id, secret_access_key, created_ms) \
                 VALUES ('LKIAOLDKEY', ?1, 42)",
                params![old_secret],
            )
            .unwrap();
        }
        assert!(contains(&database_bytes(dir.path()), old_secret));

        {
            let s = SqliteStore::open(&path).unwrap();
            let conn = s.conn().unwrap();
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .unwrap();
            assert_eq!(version as usize, MIGRATIONS.len());
            assert!(!has_plaintext_table(&conn).unwrap());
            let sealed: String = conn
                .query_row(
                    "SELECT secret_sealed FROM iam_keys WHERE access_key_id = 'LKIAOLDKEY'",
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            assert!(sealed.starts_with("v1:"));
            drop(conn);
            assert_eq!(
                s.access_key_secret("LKIAOLDKEY").unwrap().as_deref(),
                Some(old_secret)
            );
            let found = s.lookup_access_key("LKIAOLDKEY").unwrap().unwrap();
            assert_eq!(
                (found.user.as_str(), found.status.as_str()),
                ("root", "Active")
            );
            assert_eq!(
                s.get_user(ROOT_USER).unwrap().unwrap().arn,
                PLACEHOLDER_ROOT_ARN
            );
            let info = s.list_access_keys_of(Some(ROOT_USER)).unwrap();
            assert_eq!(info[0].created_ms, 42, "the key keeps its age");
            assert!(
                !contains(&database_bytes(dir.path()), old_secret),
                "no plaintext left in the database files while open"
            );
        }
        assert!(!contains(&database_bytes(dir.path()), old_secret));
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.list_access_keys().unwrap(),
            [AccessKey {
                access_key_id: "LKIAOLDKEY".into(),
                secret_access_key: old_secret.into(),
            }]
        );
    }

    #[test]
    fn a_new_database_has_no_plaintext_table_and_no_root() {
        let s = store();
        assert!(!has_plaintext_table(&s.conn().unwrap()).unwrap());
        assert_eq!(s.get_user(ROOT_USER).unwrap(), None);
    }
}

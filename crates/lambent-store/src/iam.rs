//! Identities and their permissions: users, roles, access keys (secrets sealed at rest with
//! the store's [`SecretBox`](crate::SecretBox)), inline policies, and the audit log of
//! authorization decisions.
//!
//! The store keeps what it is given: ARNs are built by the caller (the store does not know
//! the account), and policy documents are kept as text, validated by the caller.

use std::fmt;

use crate::StoreError;

/// Name of the user that owns the server's bootstrap keys.
pub const ROOT_USER: &str = "root";

/// ARN given to [`ROOT_USER`] when the store has to create it without knowing the account
/// (keys migrated from an older database, or added with
/// [`Store::put_access_key`](crate::Store::put_access_key)); the server corrects it with
/// [`IamStore::ensure_user`].
pub const PLACEHOLDER_ROOT_ARN: &str = "arn:aws:iam::000000000000:root";

/// Status of an access key that may sign requests.
pub const KEY_ACTIVE: &str = "Active";
/// Status of an access key that is kept but refused.
pub const KEY_INACTIVE: &str = "Inactive";

/// Most access keys one user may have ([`IamStore::create_access_key`]).
pub const MAX_KEYS_PER_USER: usize = 2;

/// What kind of principal an inline policy is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// An IAM user.
    User,
    /// An IAM role.
    Role,
}

impl PrincipalKind {
    /// The name stored in the database: `user` or `role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Role => "role",
        }
    }

    /// The kind a stored name stands for.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Self::User),
            "role" => Some(Self::Role),
            _ => None,
        }
    }
}

/// An IAM user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name (unique).
    pub name: String,
    /// Its ARN, as given when it was created.
    pub arn: String,
    /// When it was created, epoch milliseconds.
    pub created_ms: i64,
}

/// An IAM role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Role name (unique).
    pub name: String,
    /// Its ARN, as given when it was created.
    pub arn: String,
    /// Free text.
    pub description: String,
    /// When it was created, epoch milliseconds.
    pub created_ms: i64,
}

/// A freshly created access key: the only place its secret is ever returned by
/// [`IamStore::create_access_key`].
#[derive(Clone, PartialEq, Eq)]
pub struct NewAccessKey {
    /// Public key id (`LKIA` + 16 characters of `A-Z2-7`).
    pub access_key_id: String,
    /// Secret used to sign (40 characters of `A-Za-z0-9+/`).
    pub secret_access_key: String,
    /// The user the key belongs to.
    pub user: String,
}

impl fmt::Debug for NewAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("user", &self.user)
            .finish()
    }
}

/// What may be listed about an access key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeyInfo {
    /// Public key id.
    pub access_key_id: String,
    /// The user the key belongs to.
    pub user: String,
    /// [`KEY_ACTIVE`] or [`KEY_INACTIVE`].
    pub status: String,
    /// When it was created, epoch milliseconds.
    pub created_ms: i64,
}

/// What request authentication needs to know about an access key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyLookup {
    /// The user the key belongs to.
    pub user: String,
    /// The decrypted secret.
    pub secret_access_key: String,
    /// [`KEY_ACTIVE`] or [`KEY_INACTIVE`].
    pub status: String,
}

impl fmt::Debug for KeyLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLookup")
            .field("user", &self.user)
            .field("secret_access_key", &"<redacted>")
            .field("status", &self.status)
            .finish()
    }
}

/// One authorization decision (or authentication failure) in the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// Assigned by the store (0 in a record to append).
    pub id: i64,
    /// When the request arrived, epoch milliseconds.
    pub at_ms: i64,
    /// ARN of the caller, `""` when authentication failed before it was known.
    pub principal: String,
    /// The access key that signed the request (`""` if none).
    pub access_key_id: String,
    /// The action asked for, e.g. `lambda:InvokeFunction`.
    pub action: String,
    /// The resource it was asked on.
    pub resource: String,
    /// `Allow`, `Deny` or `AuthFailed`.
    pub decision: String,
    /// The client's address.
    pub source_ip: String,
    /// HTTP status of the response.
    pub status: u16,
    /// AWS error code of the response, `""` on success.
    pub error_code: String,
    /// Request id of the response.
    pub request_id: String,
}

/// Which audit records [`IamStore::list_audit`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only records at or after this time (epoch milliseconds).
    pub since_ms: Option<i64>,
    /// Only records of this principal ARN.
    pub principal: Option<String>,
    /// Only records with this decision.
    pub decision: Option<String>,
    /// At most this many records; 0 means no limit.
    pub limit: usize,
}

/// Users, roles, access keys, inline policies and the audit log.
pub trait IamStore {
    /// Creates a user; `AlreadyExists` if the name is taken.
    fn create_user(&self, name: &str, arn: &str) -> Result<User, StoreError>;
    /// Creates a user if missing, or sets the ARN of an existing one (used to give
    /// [`ROOT_USER`] its real ARN once the account is known).
    fn ensure_user(&self, name: &str, arn: &str) -> Result<User, StoreError>;
    /// Reads a user.
    fn get_user(&self, name: &str) -> Result<Option<User>, StoreError>;
    /// Every user, by name.
    fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// Deletes a user with its access keys and inline policies, in one transaction;
    /// `NotFound` if there is no such user.
    fn delete_user(&self, name: &str) -> Result<(), StoreError>;
    /// Creates a role; `AlreadyExists` if the name is taken.
    fn create_role(&self, name: &str, arn: &str, description: &str) -> Result<Role, StoreError>;
    /// Reads a role.
    fn get_role(&self, name: &str) -> Result<Option<Role>, StoreError>;
    /// Reads the role with this ARN.
    fn get_role_by_arn(&self, arn: &str) -> Result<Option<Role>, StoreError>;
    /// Every role, by name.
    fn list_roles(&self) -> Result<Vec<Role>, StoreError>;
    /// Deletes a role with its inline policies; `NotFound` if there is no such role.
    fn delete_role(&self, name: &str) -> Result<(), StoreError>;
    /// Creates an `Active` access key for a user: `NotFound` if there is no such user,
    /// `Invalid` (IAM's `LimitExceeded`) if it already has [`MAX_KEYS_PER_USER`] keys.
    fn create_access_key(&self, user: &str) -> Result<NewAccessKey, StoreError>;
    /// The owner, decrypted secret and status of an access key.
    fn lookup_access_key(&self, access_key_id: &str) -> Result<Option<KeyLookup>, StoreError>;
    /// The access keys of one user (or of every user), by user then age, oldest first.
    fn list_access_keys_of(&self, user: Option<&str>) -> Result<Vec<AccessKeyInfo>, StoreError>;
    /// Makes a key `Active` or `Inactive`; `NotFound` if there is no such key.
    fn set_access_key_status(&self, access_key_id: &str, active: bool) -> Result<(), StoreError>;
    /// Deletes a key; `NotFound` if there is no such key.
    fn delete_access_key(&self, access_key_id: &str) -> Result<(), StoreError>;
    /// Adds an inline policy to a user or role, replacing one of the same name; `NotFound`
    /// if the principal does not exist.
    fn put_policy(
        &self,
        kind: PrincipalKind,
        principal: &str,
        policy_name: &str,
        document: &str,
    ) -> Result<(), StoreError>;
    /// Removes an inline policy; `NotFound` if there is no such policy.
    fn delete_policy(
        &self,
        kind: PrincipalKind,
        principal: &str,
        policy_name: &str,
    ) -> Result<(), StoreError>;
    /// The inline policies of a principal as `(name, document)`, by name.
    fn list_policies(
        &self,
        kind: PrincipalKind,
        principal: &str,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Appends a record to the audit log (its `id` is ignored and assigned by the store).
    fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// Audit records matching `filter`, newest first (by time, then by order of appending).
    fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
    /// Deletes all but the newest `keep` audit records; returns how many were deleted.
    fn prune_audit(&self, keep: usize) -> Result<u64, StoreError>;
}

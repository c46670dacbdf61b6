//! Key management messages of `/admin/keys`.

use crate::ids::KeyId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a key may do: ADMIN everything, USER its own jobs, NODE only the node API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
    Node,
}

impl Role {
    /// The spelling stored in the database, as the spec writes it.
    pub fn as_db_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::User => "USER",
            Role::Node => "NODE",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Node => "node",
        })
    }
}

impl FromStr for Role {
    type Err = String;

    /// Accepts either case, so that both the CLI (`user`) and the database (`USER`) parse.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            "node" => Ok(Role::Node),
            other => Err(format!(
                "unknown role `{other}`; expected `admin`, `user` or `node`"
            )),
        }
    }
}

/// `POST /admin/keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub name: String,
    pub role: Role,
}

/// A key as listed: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    pub id: KeyId,
    pub object: String,
    pub name: String,
    pub role: Role,
    /// The first characters of the key, enough to recognise it.
    pub prefix: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, once revoked.
    pub revoked_at: Option<i64>,
}

/// The answer to a key creation: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    pub key: String,
}

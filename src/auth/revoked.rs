//! The ids of revoked tokens, as this instance knows them.
//!
//! The list itself lives in the database (`gw_revoked_tokens`), so that a
//! revocation made through any instance reaches all of them: each instance
//! re-reads it every few seconds (`startup`), and the instance that takes a
//! revocation adds it here at once. Checking a token is then a set lookup,
//! not a query per request.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often each instance re-reads the revoked token ids: a revocation
/// made elsewhere (another instance, `points-gateway revoke`) is enforced
/// here within this time. One small indexed read per interval.
pub const REVOCATION_REFRESH: Duration = Duration::from_secs(2);

/// A token's id as `token` prints it: 1 to 64 ASCII letters, digits and
/// `-` (the gateway's are 32 hex digits), so it is safe in a row and a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenId(String);

impl TokenId {
    pub fn new(value: &str) -> Result<TokenId, String> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(TokenId(value.to_owned()))
        } else {
            Err("a token id is 1 to 64 letters, digits and -, as `token` prints it".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shared by every clone of the keys: cheap to clone, cheap to check.
#[derive(Clone, Default)]
pub struct Revocations(Arc<RwLock<HashSet<String>>>);

impl Revocations {
    pub fn contains(&self, id: &str) -> bool {
        // A poisoned lock means a writer panicked mid-update; the set is
        // still a set, and refusing every token would be worse.
        let set = self.0.read().unwrap_or_else(|p| p.into_inner());
        set.contains(id)
    }

    /// Adds one id (the revocation this instance just recorded).
    pub fn insert(&self, id: String) {
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        set.insert(id);
    }

    /// Replaces the whole list with the database's (expired tokens drop
    /// out: they are refused anyway).
    pub fn replace(&self, ids: HashSet<String>) {
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        *set = ids;
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_short_and_plain() {
        assert!(TokenId::new(&"a".repeat(32)).is_ok());
        for bad in ["", "a b", "x'--", &"a".repeat(65), "é"] {
            assert!(TokenId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clones_share_one_list() {
        let a = Revocations::default();
        let b = a.clone();
        a.insert("x".into());
        assert!(b.contains("x"));
        b.replace(HashSet::from(["y".to_owned()]));
        assert!(!a.contains("x") && a.contains("y") && a.len() == 1);
    }
}

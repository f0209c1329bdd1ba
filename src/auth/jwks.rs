//! An identity provider's signing keys (`GATEWAY_JWKS_URL`), so tokens it
//! issues (RS256, ES256 and their kin, with a `kid`) are accepted beside
//! the gateway's own HS256 tokens.
//!
//! The set is fetched by a task of its own (`startup`): at start, every
//! five minutes, and when a token names a key the set does not hold (at
//! most every [`REFETCH_AT_MOST_EVERY`], so unknown `kid`s cannot turn
//! requests into fetches). A check never waits for a fetch: a token whose
//! key is not known yet is refused, and accepted once the set is in.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Notify;

/// How often the set is fetched when nothing asks for it sooner.
pub const REFETCH_EVERY: Duration = Duration::from_secs(300);
/// The least time between two fetches.
pub const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(2);

/// The algorithms an identity provider's tokens may use (never `none`,
/// never HS*: a provider's public key is no shared secret).
const ASYMMETRIC: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Whether a key of these parameters can check a token of `alg`.
fn fits(params: &AlgorithmParameters, alg: Algorithm) -> bool {
    match params {
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::EllipticCurve(_) => {
            matches!(alg, Algorithm::ES256 | Algorithm::ES384)
        }
        AlgorithmParameters::OctetKey(_) | AlgorithmParameters::OctetKeyPair(_) => false,
    }
}

struct Known {
    key: DecodingKey,
    params: AlgorithmParameters,
    /// The `alg` the provider pinned the key to, if it did.
    alg: Option<Algorithm>,
}

pub struct Jwks {
    url: String,
    issuer: Option<String>,
    audience: Option<String>,
    keys: RwLock<HashMap<String, Known>>,
    wanted: Notify,
}

impl Jwks {
    pub fn new(url: &str, issuer: Option<String>, audience: Option<String>) -> Jwks {
        Jwks {
            url: url.to_owned(),
            issuer,
            audience,
            keys: RwLock::default(),
            wanted: Notify::new(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Takes a freshly fetched set; keys without a `kid` or of a kind that
    /// cannot sign tokens here are left out. How many were taken.
    pub fn replace(&self, set: &JwkSet) -> usize {
        let mut taken = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if matches!(
                jwk.algorithm,
                AlgorithmParameters::OctetKey(_) | AlgorithmParameters::OctetKeyPair(_)
            ) {
                continue;
            }
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                taken.insert(
                    kid,
                    Known {
                        key,
                        params: jwk.algorithm.clone(),
                        alg,
                    },
                );
            }
        }
        let n = taken.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = taken;
        n
    }

    /// The key `kid` names and the validation for a token of `alg`; `None`
    /// when the algorithm is not an identity provider's or the key is not
    /// (yet) known, in which case a fetch is asked for.
    pub(super) fn checker(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Option<(DecodingKey, Validation)> {
        if !ASYMMETRIC.contains(&alg) {
            return None;
        }
        let kid = kid?;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let Some(known) = keys.get(kid) else {
            drop(keys);
            self.wanted.notify_one();
            return None;
        };
        if !fits(&known.params, alg) || known.alg.is_some_and(|a| a != alg) {
            return None;
        }
        let mut v = Validation::new(alg);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        Some((known.key.clone(), v))
    }

    /// Resolves when a token named a key the set does not hold.
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str) -> JwkSet {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn keys_are_found_by_kid_for_their_own_algorithms_only() {
        let j = Jwks::new("http://idp", None, None);
        assert_eq!(j.replace(&set("idp-test-jwks-a.json")), 1);
        assert!(j.checker(Some("idp-a"), Algorithm::RS256).is_some());
        // Pinned to RS256 by the provider; never HS256 or none-like.
        assert!(j.checker(Some("idp-a"), Algorithm::RS384).is_none());
        assert!(j.checker(Some("idp-a"), Algorithm::HS256).is_none());
        assert!(j.checker(Some("idp-a"), Algorithm::ES256).is_none());
        assert!(j.checker(None, Algorithm::RS256).is_none());
        assert!(j.checker(Some("idp-b"), Algorithm::RS256).is_none());
        // A new set replaces the old one.
        assert_eq!(j.replace(&set("idp-test-jwks-b.json")), 1);
        assert!(j.checker(Some("idp-a"), Algorithm::RS256).is_none());
        assert!(j.checker(Some("idp-b"), Algorithm::RS256).is_some());
    }
}

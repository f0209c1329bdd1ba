//! Minting and checking bearer tokens.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::jwks::Jwks;
use super::revoked::Revocations;
use super::Caller;
use crate::config::{JwtSecret, DEFAULT_MAX_LIFETIME_HOURS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Service,
    Admin,
    Partner,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "user" => Ok(Role::User),
            "service" => Ok(Role::Service),
            "admin" => Ok(Role::Admin),
            "partner" => Ok(Role::Partner),
            _ => Err(format!(
                "unknown role {s:?} (user, service, admin, partner)"
            )),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id for `user` tokens; a free label for the other roles.
    sub: String,
    role: Role,
    exp: i64,
    iat: i64,
    /// The token's id, for revocation. Tokens minted before ids existed
    /// have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is invalid")]
    Invalid,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the token's lifetime exceeds the {0} h this gateway accepts (TOKEN_MAX_HOURS)")]
    TooLong(i64),
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("connection_init needs a payload `{{\"authorization\": \"Bearer <token>\"}}` (or `headers.Authorization`)")]
    MissingInit,
}

/// The name of a service, admin or partner token (`fal-runner`): 1 to 48
/// lower-case letters, digits, `.`, `_` and `-`, starting with a letter or
/// digit, so a subject made from it is safe in a log line, a metric label
/// and a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerName(String);

impl CallerName {
    pub fn new(value: &str) -> Result<CallerName, String> {
        let mut chars = value.chars();
        let ok = value.len() <= 48
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if ok {
            Ok(CallerName(value.to_owned()))
        } else {
            Err(format!(
                "a name is 1 to 48 of a-z 0-9 . _ -, starting with a letter or digit, not {value:?}"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One HS256 secret with its key id.
#[derive(Clone)]
struct Key {
    /// `hs-` and the first 12 hex digits of the secret's SHA-256: names the
    /// secret in token headers and logs without revealing it.
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &JwtSecret) -> Key {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(secret.expose());
        Key {
            kid: format!("hs-{}", &hex::encode(digest)[..12]),
            encoding: EncodingKey::from_secret(secret.expose()),
            decoding: DecodingKey::from_secret(secret.expose()),
        }
    }
}

/// A token just minted, with what revoking it needs.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// Its `jti`.
    pub id: String,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: i64,
}

/// The keys tokens are minted and checked with, derived once from the
/// configured secrets: the current secret signs (its `kid` in the header)
/// and verifies; previous secrets only verify, so a secret rotates without
/// logging anyone out (DESIGN.md section 5). Every clone shares one
/// revocation list.
#[derive(Clone)]
pub struct TokenKeys {
    signing: Key,
    previous: Vec<Key>,
    max_lifetime_secs: i64,
    revoked: Revocations,
    /// An identity provider's keys, when `GATEWAY_JWKS_URL` is set.
    jwks: Option<Arc<Jwks>>,
}

impl TokenKeys {
    /// One secret, the default maximum lifetime, nothing revoked.
    pub fn new(secret: &JwtSecret) -> TokenKeys {
        TokenKeys::rotating(secret, &[], DEFAULT_MAX_LIFETIME_HOURS)
    }

    /// The current secret, the previous ones still accepted, and the
    /// longest lifetime a token may claim.
    pub fn rotating(
        current: &JwtSecret,
        previous: &[JwtSecret],
        max_lifetime_hours: i64,
    ) -> TokenKeys {
        TokenKeys {
            signing: Key::new(current),
            previous: previous.iter().map(Key::new).collect(),
            max_lifetime_secs: max_lifetime_hours.saturating_mul(3600),
            revoked: Revocations::default(),
            jwks: None,
        }
    }

    /// Also accepts tokens an identity provider signs with the keys of
    /// `jwks` (fetched by the caller: `startup`).
    pub fn with_jwks(mut self, jwks: Arc<Jwks>) -> TokenKeys {
        self.jwks = Some(jwks);
        self
    }

    /// The identity provider's key set, when one is configured.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// The key id new tokens carry.
    pub fn signing_kid(&self) -> &str {
        &self.signing.kid
    }

    /// The longest lifetime a token may have, in seconds.
    pub fn max_lifetime_secs(&self) -> i64 {
        self.max_lifetime_secs
    }

    /// The revocation list these keys check (refreshed by the caller).
    pub fn revocations(&self) -> &Revocations {
        &self.revoked
    }

    /// Mints a token. `user` is required for the `user` role (its `sub`).
    pub fn mint(
        &self,
        role: Role,
        user: Option<i32>,
        ttl: chrono::Duration,
    ) -> anyhow::Result<String> {
        Ok(self.issue(role, user, None, ttl)?.token)
    }

    /// Mints a token for a named caller of a role other than `user`: its
    /// subject is `role:name` (`service:fal-runner`), so the rate limits
    /// count it apart from other services and the rows it writes say who
    /// wrote them.
    pub fn mint_as(
        &self,
        role: Role,
        user: Option<i32>,
        name: Option<&CallerName>,
        ttl: chrono::Duration,
    ) -> anyhow::Result<String> {
        Ok(self.issue(role, user, name, ttl)?.token)
    }

    /// Mints a token and says its id and expiry (`token` prints the id so
    /// the token can be revoked).
    pub fn issue(
        &self,
        role: Role,
        user: Option<i32>,
        name: Option<&CallerName>,
        ttl: chrono::Duration,
    ) -> anyhow::Result<Issued> {
        if role == Role::User && user.is_none() {
            anyhow::bail!("a user token needs --user ID");
        }
        if role == Role::User && name.is_some() {
            anyhow::bail!("a user token is named by its user; --name is for the other roles");
        }
        if ttl.num_seconds() > self.max_lifetime_secs {
            anyhow::bail!(
                "at most {} hours (TOKEN_MAX_HOURS): a longer-lived token would be refused",
                self.max_lifetime_secs / 3600
            );
        }
        let role_name = format!("{role:?}").to_lowercase();
        let now = chrono::Utc::now().timestamp();
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
        let id = hex::encode(id);
        let claims = Claims {
            sub: match (user, name) {
                (Some(u), _) if role == Role::User => u.to_string(),
                (_, Some(n)) => format!("{role_name}:{}", n.as_str()),
                (Some(u), None) => u.to_string(),
                (None, None) => role_name,
            },
            role,
            exp: now + ttl.num_seconds(),
            iat: now,
            jti: Some(id.clone()),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing.kid.clone());
        Ok(Issued {
            token: encode(&header, &claims, &self.signing.encoding)?,
            id,
            expires_at: claims.exp,
        })
    }

    /// Checks signature (by the header's `kid`, or every accepted secret
    /// for tokens minted before key ids), algorithm, expiry (no leeway),
    /// lifetime and revocation.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        let checked = |key: &DecodingKey, v: &Validation| {
            decode::<Claims>(token, key, v).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })
        };
        let outcome = if header.alg == Algorithm::HS256 {
            let mut v = Validation::new(Algorithm::HS256);
            v.leeway = 0;
            v.set_required_spec_claims(&["exp", "sub"]);
            let keys = std::iter::once(&self.signing).chain(&self.previous);
            let mut outcome = Err(AuthError::Invalid);
            for key in keys.filter(|k| header.kid.as_ref().is_none_or(|kid| *kid == k.kid)) {
                outcome = checked(&key.decoding, &v);
                if outcome.is_ok() {
                    break;
                }
            }
            outcome
        } else {
            // An identity provider's token: its key by `kid`, its algorithm.
            match self
                .jwks
                .as_ref()
                .and_then(|j| j.checker(header.kid.as_deref(), header.alg))
            {
                Some((key, v)) => checked(&key, &v),
                None => Err(AuthError::Invalid),
            }
        };
        let c = outcome?.claims;
        if c.exp.saturating_sub(c.iat) > self.max_lifetime_secs {
            return Err(AuthError::TooLong(self.max_lifetime_secs / 3600));
        }
        if c.jti.as_deref().is_some_and(|id| self.revoked.contains(id)) {
            return Err(AuthError::Revoked);
        }
        let user_id = c.sub.parse::<i32>().ok();
        if c.role == Role::User && user_id.is_none() {
            return Err(AuthError::Invalid);
        }
        Ok(Caller {
            role: c.role,
            subject: c.sub,
            user_id,
            expires_at: c.exp,
            token_id: c.jti,
        })
    }

    /// Whether a caller's token has been revoked since it was checked
    /// (open WebSockets ask before each operation).
    pub fn is_revoked(&self, caller: &Caller) -> bool {
        caller
            .token_id
            .as_deref()
            .is_some_and(|id| self.revoked.contains(id))
    }

    /// Parses an `Authorization` header value.
    pub fn verify_header(&self, header: &str) -> Result<Caller, AuthError> {
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed)?;
        self.verify(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(b: u8) -> TokenKeys {
        TokenKeys::new(&JwtSecret::new(vec![b; 32]).unwrap())
    }

    #[test]
    fn a_minted_token_verifies_with_its_role_and_user() {
        let k = keys(1);
        let t = k
            .mint(Role::User, Some(7), chrono::Duration::hours(1))
            .unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!((c.role, c.user_id), (Role::User, Some(7)));
    }

    #[test]
    fn expired_and_foreign_tokens_are_refused() {
        let k = keys(1);
        let expired = k
            .mint(Role::Admin, None, chrono::Duration::seconds(-10))
            .unwrap();
        assert_eq!(k.verify(&expired), Err(AuthError::Expired));
        let forged = keys(2)
            .mint(Role::Admin, None, chrono::Duration::hours(1))
            .unwrap();
        assert_eq!(k.verify(&forged), Err(AuthError::Invalid));
        assert_eq!(k.verify("not.a.jwt"), Err(AuthError::Invalid));
        assert_eq!(k.verify_header("Basic abc"), Err(AuthError::Malformed));
    }

    #[test]
    fn named_tokens_have_role_and_name_as_their_subject() {
        let k = keys(1);
        let name = CallerName::new("fal-runner").unwrap();
        let t = k
            .mint_as(Role::Service, None, Some(&name), chrono::Duration::hours(1))
            .unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!(
            (c.role, c.subject.as_str()),
            (Role::Service, "service:fal-runner")
        );
        let plain = k
            .mint(Role::Service, None, chrono::Duration::hours(1))
            .unwrap();
        assert_eq!(k.verify(&plain).unwrap().subject, "service");
        for bad in ["", "Fal", "-x", "a b", "a/b", &"a".repeat(49)] {
            assert!(CallerName::new(bad).is_err(), "{bad:?}");
        }
        assert!(k
            .mint_as(Role::User, Some(1), Some(&name), chrono::Duration::hours(1))
            .is_err());
    }

    #[test]
    fn a_rotated_secret_still_verifies_and_an_unknown_kid_does_not() {
        let old = JwtSecret::new(vec![1; 32]).unwrap();
        let new = JwtSecret::new(vec![2; 32]).unwrap();
        let before = TokenKeys::new(&old)
            .mint(Role::Service, None, chrono::Duration::hours(1))
            .unwrap();
        let rotated = TokenKeys::rotating(&new, std::slice::from_ref(&old), 24);
        assert_eq!(rotated.verify(&before).unwrap().role, Role::Service);
        let after = rotated
            .mint(Role::Admin, None, chrono::Duration::hours(1))
            .unwrap();
        assert_eq!(rotated.verify(&after).unwrap().role, Role::Admin);
        // Once the old secret is dropped, its tokens are refused.
        assert_eq!(
            TokenKeys::new(&new).verify(&before),
            Err(AuthError::Invalid)
        );
        // The old secret alone does not accept the new key's tokens.
        assert_eq!(TokenKeys::new(&old).verify(&after), Err(AuthError::Invalid));
        assert_ne!(rotated.signing_kid(), TokenKeys::new(&old).signing_kid());
        assert!(
            !rotated.signing_kid().contains("0202"),
            "the kid is a digest"
        );
    }

    #[test]
    fn a_token_minted_before_key_ids_verifies_with_either_secret() {
        let old = JwtSecret::new(vec![1; 32]).unwrap();
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: "service".into(),
            role: Role::Service,
            exp: now + 60,
            iat: now,
            jti: None,
        };
        let t = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(old.expose()),
        )
        .unwrap();
        let rotated = TokenKeys::rotating(&JwtSecret::new(vec![2; 32]).unwrap(), &[old], 24);
        let c = rotated.verify(&t).unwrap();
        assert_eq!((c.role, c.token_id), (Role::Service, None));
    }

    #[test]
    fn lifetimes_past_the_maximum_are_refused_when_minted_and_when_checked() {
        let secret = JwtSecret::new(vec![1; 32]).unwrap();
        let lenient = TokenKeys::rotating(&secret, &[], 1000);
        let strict = TokenKeys::rotating(&secret, &[], 24);
        let long = lenient
            .mint(Role::Service, None, chrono::Duration::hours(25))
            .unwrap();
        assert_eq!(strict.verify(&long), Err(AuthError::TooLong(24)));
        assert!(strict
            .mint(Role::Service, None, chrono::Duration::hours(25))
            .is_err());
        assert!(strict
            .mint(Role::Service, None, chrono::Duration::hours(24))
            .is_ok());
    }

    #[test]
    fn a_revoked_token_is_refused_by_every_clone() {
        let k = keys(1);
        let issued = k
            .issue(Role::Service, None, None, chrono::Duration::hours(1))
            .unwrap();
        let other = keys(1);
        let clone = k.clone();
        assert_eq!(issued.id.len(), 32);
        let caller = k.verify(&issued.token).unwrap();
        assert_eq!(caller.token_id.as_deref(), Some(issued.id.as_str()));
        k.revocations().insert(issued.id.clone());
        assert_eq!(clone.verify(&issued.token), Err(AuthError::Revoked));
        assert!(clone.is_revoked(&caller));
        // Keys built apart have their own list (each instance refreshes
        // its own from the database).
        assert!(other.verify(&issued.token).is_ok());
    }

    #[test]
    fn tokens_of_other_algorithms_are_refused() {
        let k = keys(1);
        let t = k
            .mint(Role::Admin, None, chrono::Duration::hours(1))
            .unwrap();
        let (_, rest) = t.split_once('.').unwrap();
        // {"alg":"none","typ":"JWT"}
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{rest}");
        assert_eq!(k.verify(&none), Err(AuthError::Invalid));
    }

    #[test]
    fn user_tokens_need_a_user() {
        assert!(keys(1)
            .mint(Role::User, None, chrono::Duration::hours(1))
            .is_err());
    }
}

//! Minting and checking bearer tokens.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Caller;
use crate::config::JwtSecret;

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
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is invalid")]
    Invalid,
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

/// Keys derived once from the configured secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenKeys {
    pub fn new(secret: &JwtSecret) -> TokenKeys {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.expose()),
            decoding: DecodingKey::from_secret(secret.expose()),
        }
    }

    /// Mints a token. `user` is required for the `user` role (its `sub`).
    pub fn mint(
        &self,
        role: Role,
        user: Option<i32>,
        ttl: chrono::Duration,
    ) -> anyhow::Result<String> {
        self.mint_as(role, user, None, ttl)
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
        if role == Role::User && user.is_none() {
            anyhow::bail!("a user token needs --user ID");
        }
        if role == Role::User && name.is_some() {
            anyhow::bail!("a user token is named by its user; --name is for the other roles");
        }
        let role_name = format!("{role:?}").to_lowercase();
        let now = chrono::Utc::now().timestamp();
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
        };
        Ok(encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Checks signature, algorithm and expiry (no leeway: an expired token
    /// is refused at once).
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = decode::<Claims>(token, &self.decoding, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        })?;
        let c = data.claims;
        let user_id = c.sub.parse::<i32>().ok();
        if c.role == Role::User && user_id.is_none() {
            return Err(AuthError::Invalid);
        }
        Ok(Caller {
            role: c.role,
            subject: c.sub,
            user_id,
            expires_at: c.exp,
        })
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
    fn user_tokens_need_a_user() {
        assert!(keys(1)
            .mint(Role::User, None, chrono::Duration::hours(1))
            .is_err());
    }
}

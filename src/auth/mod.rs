//! Who is calling: bearer JWTs (HS256, rotating secrets, revocable) and the
//! authorization policy.

mod jwks;
mod policy;
mod revoked;
mod token;

pub use jwks::{Jwks, REFETCH_AT_MOST_EVERY, REFETCH_EVERY};
pub use policy::{AuthzError, Caller};
pub use revoked::{Revocations, TokenId, REVOCATION_REFRESH};
pub use token::{AuthError, CallerName, Issued, Role, TokenKeys};

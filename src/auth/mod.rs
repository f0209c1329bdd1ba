//! Who is calling: bearer JWTs (HS256) and the authorization policy.

mod policy;
mod token;

pub use policy::{AuthzError, Caller};
pub use token::{AuthError, CallerName, Role, TokenKeys};

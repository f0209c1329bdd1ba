//! The error policy, applied once: every domain error becomes a GraphQL
//! error whose `extensions.code` is its [`Code`]. Internal errors are logged
//! with their cause chain and answered opaquely (no SQL, no secrets).

use async_graphql::{Error, ErrorExtensions};

use crate::domain::{Code, Coded};

pub fn coded(code: Code, message: impl Into<String>) -> Error {
    Error::new(message).extend_with(|_, ext| ext.set("code", code.as_str()))
}

pub fn to_gql<E: Coded>(e: E) -> Error {
    match e.code() {
        Code::Internal => {
            let mut chain = Vec::new();
            let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
            while let Some(s) = src {
                chain.push(s.to_string());
                src = s.source();
            }
            tracing::error!(error = %e, cause = ?chain, "internal error");
            coded(Code::Internal, "internal error")
        }
        code => coded(code, e.to_string()),
    }
}

/// A database failure outside any operation's own error enum.
#[derive(Debug, thiserror::Error)]
#[error("database error")]
pub struct DbFailure(#[from] pub sea_orm::DbErr);

impl Coded for DbFailure {
    fn code(&self) -> Code {
        Code::Internal
    }
}

/// `result.gql()?` in resolvers.
pub trait GqlResult<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T, E: Coded> GqlResult<T> for Result<T, E> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(to_gql)
    }
}

impl<T> GqlResult<T> for Result<T, sea_orm::DbErr> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| to_gql(DbFailure(e)))
    }
}

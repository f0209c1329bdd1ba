//! The points gateway: a GraphQL API over a points billing database.

pub mod adopt;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod domain;
pub mod errors;
pub mod events;
pub mod fal;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod places;
pub mod reconcile;
pub mod release;
pub mod seed;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod time;

//! Integration tests: each spawns the real gateway on an ephemeral port
//! against a fresh database (a SQLite file, or a new PostgreSQL database)
//! and talks to it over HTTP.

#[macro_use]
mod helpers;

mod absorb;
mod adopt;
mod auth;
mod availability;
mod bench_gen;
mod billing;
mod cli;
mod coexist;
mod concurrency;
mod consume_call;
mod costs;
mod durability;
mod exposure;
mod fal_standin;
mod graphiql;
mod holds;
mod hostile;
mod idp;
mod keys;
mod ledger;
mod lifecycle;
mod pg_cluster;
mod pgbouncer;
mod pooling;
mod process;
mod readme;
mod reads;
mod replicas;
mod rollout;
mod schema;
mod services;
mod subscriptions;
mod traces;
mod transport;
mod verify;
mod ws_client;

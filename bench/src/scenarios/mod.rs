//! The scenarios of `bench run`, one file each, and what they share: the
//! gateway under test, the clients and tokens, the user range, and the
//! helpers that run a leg of requests while noting CPU.

pub mod consume;
pub mod costs;
pub mod holds;
pub mod peer;
pub mod pooled;
pub mod replay;
pub mod stuck;
pub mod tasks;
pub mod usage;

use points_gateway::store::Store;
use serde_json::{json, Value};

use crate::{cpu, gateway, load};

/// What every scenario runs against.
pub struct Ctx<'a> {
    pub gw: &'a gateway::Gateway,
    /// The database's URL (pgbench connects itself).
    pub database_url: &'a str,
    pub store: &'a Store,
    pub client: reqwest::Client,
    pub service: String,
    pub admin: String,
    /// The generated users' ids, `lo..=hi`.
    pub lo: i32,
    pub hi: i32,
    /// Distinguishes this run's idempotency keys from earlier runs'.
    pub run_id: u32,
    /// Requests per scenario and concurrency level.
    pub requests: usize,
}

/// Runs `leg`, noting the CPU the gateway and the database used meanwhile
/// (SQLite runs inside the gateway: no separate database figure).
pub async fn with_cpu(
    gw: &gateway::Gateway,
    leg: impl std::future::Future<Output = load::Measured>,
) -> load::Measured {
    let pg = || gw.postgres.then(cpu::postgres).flatten();
    let (g0, d0) = (gw.cpu(), pg());
    let mut m = leg.await;
    m.gateway_cpu = gw.cpu().zip(g0).map(|(a, b)| a.saturating_sub(b));
    m.db_cpu = pg().zip(d0).map(|(a, b)| a.saturating_sub(b));
    m
}

/// `total` requests of `query` from `concurrency` workers, request `i`
/// with the variables `vars(i)` (`None` counts as an error), CPU noted.
pub async fn gql_leg(
    gw: &gateway::Gateway,
    client: &reqwest::Client,
    token: &str,
    query: &'static str,
    concurrency: usize,
    total: usize,
    vars: impl Fn(usize) -> Option<Value> + Send + Sync + 'static,
) -> load::Measured {
    let (client, url, token) = (client.clone(), gw.url.clone(), token.to_owned());
    let leg = load::measure(concurrency, total, move |i| {
        let (client, url, token, vars) = (client.clone(), url.clone(), token.clone(), vars(i));
        async move {
            match vars {
                Some(v) => post(&client, &url, &token, query, v).await.is_ok(),
                None => false,
            }
        }
    });
    with_cpu(gw, leg).await
}

/// One table row for gateway legs: pooled figures and the gateway's peak RSS.
pub fn gateway_row(
    gw: &gateway::Gateway,
    scenario: &str,
    concurrency: usize,
    runs: &[load::Measured],
) -> load::Stats {
    let mut s = load::summarize(scenario, concurrency, runs);
    s.peak_rss_mib = gw.peak_rss_mib();
    s
}

/// One GraphQL request; an error for a transport failure or any GraphQL error.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    vars: Value,
) -> anyhow::Result<Value> {
    let body = json!({ "query": query, "variables": vars }).to_string();
    post_body(client, url, token, body).await
}

/// [`post`] of a request body already written.
pub async fn post_body(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: String,
) -> anyhow::Result<Value> {
    let v: Value = client
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(v.get("errors").is_none(), "{v}");
    Ok(v)
}

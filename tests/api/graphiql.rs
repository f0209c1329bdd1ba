//! GraphiQL in a real headless browser (Chromium from the system packages,
//! driven over the Chrome DevTools Protocol): the page renders from the
//! gateway alone, the Docs panel shows the schema, a query typed into the
//! editor returns data, and a subscription receives an event after a
//! consume. The test fails if the page requests anything outside the
//! gateway.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{spawn_app, Engine};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium, killed when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    /// `127.0.0.1:port` of its DevTools endpoint.
    devtools: String,
}

impl Browser {
    fn start() -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"
        );
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut devtools = None;
        let mut line = String::new();
        while err.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(url) = line.trim().strip_prefix("DevTools listening on ws://") {
                devtools = url.split('/').next().map(str::to_owned);
                break;
            }
            line.clear();
        }
        // Keep draining its log so the browser never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while err.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Browser {
            child,
            _profile: profile,
            devtools: devtools.expect("chromium's DevTools address"),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page's DevTools session: commands answered by id, events kept.
struct Page {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    events: Vec<Value>,
}

impl Page {
    async fn open(browser: &Browser) -> Page {
        let targets: Value = reqwest::get(format!("http://{}/json/list", browser.devtools))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let url = page["webSocketDebuggerUrl"].as_str().unwrap();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Page {
            ws,
            next_id: 1,
            events: Vec::new(),
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let v = self.call_raw(method, params).await;
        assert!(v["error"].is_null(), "{method}: {v}");
        v["result"].clone()
    }

    /// The whole answer, errors included.
    async fn call_raw(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(Message::text(
                json!({ "id": id, "method": method, "params": params }).to_string(),
            ))
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("DevTools answers")
                .unwrap()
                .unwrap();
            let Ok(text) = msg.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap();
            if v["id"] == id {
                return v;
            }
            self.events.push(v);
        }
    }

    /// Evaluates JavaScript in the page; its (JSON) value.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(r["exceptionDetails"].is_null(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy (30 s at most); a page that is
    /// navigating meanwhile just answers later.
    async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        for _ in 0..300 {
            let r = self
                .call_raw(
                    "Runtime.evaluate",
                    json!({ "expression": expression, "returnByValue": true }),
                )
                .await;
            let v = r["result"]["result"]["value"].clone();
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// Replaces the query editor's text by typing `text` into it.
    async fn type_query(&mut self, text: &str) {
        self.eval(
            "(() => { const cm = document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror; \
             cm.setValue(''); cm.focus(); return true; })()",
        )
        .await;
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    async fn response_text(&mut self) -> String {
        self.eval(
            "(() => { const cm = document.querySelector('.graphiql-response .CodeMirror'); \
             return cm ? cm.CodeMirror.getValue() : ''; })()",
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Every URL the page asked for (HTTP and WebSocket).
    fn requested(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e["method"].as_str() {
                Some("Network.requestWillBeSent") => e["params"]["request"]["url"].as_str(),
                Some("Network.webSocketCreated") => e["params"]["url"].as_str(),
                _ => None,
            })
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_works_from_the_gateway_alone() {
    let app = spawn_app(Engine::Sqlite).await;
    let u = app.create_user("watched").await;
    app.recharge(u, 100, "gq-o", None).await;
    let browser = Browser::start();
    let mut page = Page::open(&browser).await;
    page.call("Network.enable", json!({})).await;
    page.call("Page.enable", json!({})).await;
    let url = format!("{}/graphql", app.url);
    page.call("Page.navigate", json!({ "url": url })).await;
    page.wait_for(
        "GraphiQL to render",
        "!!document.querySelector('.graphiql-container')",
    )
    .await;

    // A first visit opens the editor on this API's example (a usage page).
    // Read before the token's reload: GraphiQL keeps its tabs, so what the
    // reloaded page shows is whatever the first page had stored by then.
    let example = page
        .wait_for(
            "the example query in the editor",
            "(() => { const cm = document.querySelector('.graphiql-query-editor .CodeMirror'); \
             return cm ? cm.CodeMirror.getValue() : ''; })()",
        )
        .await;
    assert!(
        example.as_str().unwrap().contains("query UsageDetail")
            && example.as_str().unwrap().contains("usageDetails("),
        "{example}"
    );

    // The token, entered in the page's own field (the page starts afresh
    // with it, and keeps it in this browser).
    page.eval(&format!(
        "(() => {{ const i = document.getElementById('token'); i.value = '{}'; \
         i.dispatchEvent(new Event('change')); return true; }})()",
        app.admin
    ))
    .await;
    page.wait_for(
        "GraphiQL with the token",
        "!!document.querySelector('.graphiql-container') && document.getElementById('token').value.length > 0",
    )
    .await;

    // The Explorer plugin lists the schema's fields to click queries
    // together. Opened by a click, clicked again while it is not open (a
    // click during the page's reload with the token is lost).
    page.wait_for(
        "the Explorer to list the root fields",
        "(() => { const e = document.querySelector('.graphiql-explorer-root'); \
         if (e && e.innerText.includes('usageDetails') && e.innerText.includes('accountCosts')) return e.innerText; \
         const b = document.querySelector('button[aria-label*=\"GraphiQL Explorer\"]'); \
         if (b && !e) b.click(); return ''; })()",
    )
    .await;

    // The Docs panel shows the schema (introspection as an admin).
    page.wait_for(
        "the docs button",
        "!!document.querySelector('button[aria-label*=\"Documentation Explorer\"]')",
    )
    .await;
    page.eval(
        "document.querySelector('button[aria-label*=\"Documentation Explorer\"]').click(), true",
    )
    .await;
    let docs = page
        .wait_for(
            "the Docs panel to list the query type",
            "(() => { const d = document.querySelector('.graphiql-doc-explorer'); \
             return d && d.innerText.includes('QueryRoot') ? d.innerText : ''; })()",
        )
        .await;
    assert!(docs.as_str().unwrap().contains("query"), "{docs}");

    // A query typed into the editor returns data.
    page.type_query("{ users(first: 5) { totalCount nodes { name } } }")
        .await;
    page.eval("document.querySelector('.graphiql-execute-button').click(), true")
        .await;
    let mut answer = String::new();
    for _ in 0..100 {
        answer = page.response_text().await;
        if answer.contains("watched") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answer.contains("\"totalCount\": 1"), "{answer}");

    // A subscription over the same /graphql WebSocket gets an event after a
    // consume.
    page.type_query(&format!(
        "subscription Live {{ balanceChanged(userId: {u}) {{ userId balance }} }}"
    ))
    .await;

    page.eval("document.querySelector('.graphiql-execute-button').click(), true")
        .await;
    let mut event = String::new();
    for attempt in 0..100 {
        if attempt % 10 == 0 {
            // Repeated until the subscription is up: each consume is new.
            app.consume(u, 1, "SCRIPT", &format!("gq-{attempt}"), None)
                .await;
        }
        event = page.response_text().await;
        if event.contains("\"balance\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(event.contains(&format!("\"userId\": {u}")), "{event}");

    // Nothing but the gateway was asked for anything.
    page.call("Runtime.evaluate", json!({ "expression": "1" }))
        .await;
    let host = app.url.trim_start_matches("http://").to_owned();
    let requested = page.requested();
    assert!(requested.len() >= 5, "{requested:?}");
    for r in &requested {
        let local = r.starts_with(&format!("http://{host}/"))
            || r.starts_with(&format!("ws://{host}/"))
            || r.starts_with("data:");
        assert!(local, "the page requested {r} (all: {requested:?})");
    }
    assert!(
        requested.iter().any(|r| r.starts_with("ws://")),
        "the subscription used the WebSocket: {requested:?}"
    );
}

/// GraphiQL's 978 KB of scripts are sent compressed, revalidated by ETag
/// (a 304 sends nothing), and a client re-fetching them in a loop is held
/// to the anonymous rate (429 with `Retry-After`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_assets_are_compressed_revalidated_and_rate_limited() {
    let app = crate::helpers::spawn_with(Engine::Sqlite, |s| s.rates.anonymous = 2.0).await;
    let client = reqwest::Client::new();
    let url = format!("{}/graphiql/graphiql.min.js", app.url);
    let plain = client.get(&url).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    let etag = plain.headers()["etag"].to_str().unwrap().to_owned();
    let plain_len = plain.bytes().await.unwrap().len();
    let zipped = client
        .get(&url)
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let zipped_len = zipped.bytes().await.unwrap().len();
    assert!(
        zipped_len * 2 < plain_len,
        "{zipped_len} of {plain_len} bytes"
    );
    let mut limited = false;
    for _ in 0..20 {
        let r = client.get(&url).send().await.unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            limited = true;
            break;
        }
    }
    assert!(limited, "re-fetching in a loop is rate limited");
    // A revalidation costs nothing and is never limited.
    let r = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(r.bytes().await.unwrap().is_empty());
}

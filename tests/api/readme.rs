//! The README's `curl` examples, extracted from the README and run as
//! written against a fresh gateway, so they cannot drift from the API.

use serde_json::Value;

use crate::helpers::{spawn_app, Engine};

/// The `sh` code blocks of the README section `## Calling the API` that
/// call `curl`, in order.
fn curl_blocks() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("## Calling the API")
        .expect("the section exists");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let section = &section[..end];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("\n```").expect("a closed block");
        if body[..close].contains("curl ") {
            blocks.push(body[..close].to_owned());
        }
        rest = &body[close + 4..];
    }
    blocks
}

fn run(block: &str, url: &str, token: &str) -> Vec<Value> {
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .env("URL", url)
        .env("TOKEN", token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{block}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("{e}: {text}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_examples_run_as_written() {
    let app = spawn_app(Engine::Sqlite).await;
    let url = format!("{}/graphql", app.url);
    let blocks = curl_blocks();
    assert_eq!(blocks.len(), 3, "the query, the mutations, the holds");
    let query = run(&blocks[0], &url, &app.service);
    assert_eq!(query.len(), 1);
    assert!(query[0]["errors"].is_null(), "{}", query[0]);

    let first = run(&blocks[1], &url, &app.service);
    assert_eq!(first.len(), 4, "createUser, recharge, consume, refund");
    for r in &first {
        assert!(r["errors"].is_null(), "{r}");
    }
    assert_eq!(first[1]["data"]["recharge"]["balanceAfter"], 500);
    assert_eq!(first[2]["data"]["consume"]["balanceAfter"], 380);
    assert_eq!(first[3]["data"]["refund"]["balanceAfter"], 400);
    // Run again: every mutation is a retry of the same key and payload.
    let again = run(&blocks[1], &url, &app.service);
    assert_eq!(again, first, "retries return the original rows");
    assert_eq!(app.balance(1).await, 400);

    let holds = run(&blocks[2], &url, &app.service);
    assert_eq!(holds.len(), 4, "hold, capture, hold, release");
    for r in &holds {
        assert!(r["errors"].is_null(), "{r}");
    }
    assert_eq!(
        holds[1]["data"]["captureHold"]["entry"]["balanceAfter"],
        320
    );
    assert_eq!(holds[3]["data"]["releaseHold"]["status"], "RELEASED");
    let again = run(&blocks[2], &url, &app.service);
    assert_eq!(again, holds, "retries return the original holds");
    assert_eq!(app.balance(1).await, 320);

    // And the query now finds the user.
    let query = run(&blocks[0], &url, &app.service);
    assert_eq!(query[0]["data"]["user"]["balance"], 320, "{}", query[0]);
    app.assert_verify_clean().await;
}

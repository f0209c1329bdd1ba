//! HTTP legs driven by wrk, a load generator written in C (from the system
//! packages), so the client's own cost is not this tool's: consumes (a Lua
//! script makes every request a distinct consume, its own source id, a
//! random user) and pages (each request one of a list, e.g. a random
//! user's page with that user's token). wrk runs for a duration, not a count: the leg lasts about
//! as long as `total` requests take at 1,000/s (5 to 60 s) and the count is
//! whatever completed; wrk prints the latency percentiles, the count, the
//! exact time and the errors (HTTP status other than 200, or a GraphQL
//! error in the body).

use std::process::Command;
use std::time::Duration;

use crate::load::Measured;

/// Whether wrk can be run.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wrk"))
}

/// wrk's threads: one per core of this 2-core machine's share.
const THREADS: usize = 2;

/// What every script shares: a seed per thread, the error count (HTTP
/// status other than 200, or a GraphQL error in the body), and the `BENCH`
/// lines [`parse`] reads.
const COMMON: &str = r#"
local threads = {}
local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
function init(args)
  math.randomseed(os.time() * 100 + id)
  count, errors = 0, 0
end
response = function(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then
    errors = errors + 1
  end
end
done = function(summary, latency, requests)
  local errs = 0
  for _, t in ipairs(threads) do errs = errs + t:get("errors") end
  io.write(string.format("BENCH requests=%d duration_us=%d errors=%d\n",
    summary.requests, summary.duration, errs + summary.errors.status + summary.errors.timeout))
  local q = {}
  for p = 1, 100 do q[#q + 1] = string.format("%d", latency:percentile(p)) end
  io.write("BENCH percentiles_us=" .. table.concat(q, ",") .. "\n")
end
"#;

/// A distinct consume per request: its own source id, a random user.
const CONSUME: &str = r#"
request = function()
  count = count + 1
  local body = string.format(
    '{"query":"mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 1, sourceType: SCRIPT, sourceId: $id}) { id balanceAfter } }","variables":{"u":%d,"id":"%s-%d-%d"}}',
    math.random(LO, HI), TAG, id, count)
  return wrk.format("POST", "/graphql", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. TOKEN,
  }, body)
end
"#;

/// One of `REQUESTS` (`{ token or "", body }`) at random per request.
const PICK: &str = r#"
request = function()
  local r = REQUESTS[math.random(#REQUESTS)]
  local headers = { ["Content-Type"] = "application/json" }
  if r[1] ~= "" then headers["Authorization"] = "Bearer " .. r[1] end
  return wrk.format("POST", "/graphql", headers, r[2])
end
"#;

/// `total` consumes from `concurrency` connections on random users in
/// `lo..=hi`, source ids prefixed `tag`. Blocking (a child process): run it
/// on a blocking thread.
pub fn consume(
    url: &str,
    token: &str,
    concurrency: usize,
    total: usize,
    (lo, hi): (i32, i32),
    tag: &str,
) -> anyhow::Result<Measured> {
    let head = format!("LO, HI = {lo}, {hi}\nTAG = {tag:?}\nTOKEN = {token:?}\n");
    run(url, concurrency, total, &format!("{head}{COMMON}{CONSUME}"))
}

/// About `total` POSTs to `{url}/graphql` from `concurrency` connections,
/// each one of `requests` (`(bearer token or "", JSON body)`) at random.
/// Blocking.
pub fn posts(
    url: &str,
    concurrency: usize,
    total: usize,
    requests: &[(String, String)],
) -> anyhow::Result<Measured> {
    let mut head = String::from("REQUESTS = {\n");
    for (token, body) in requests {
        anyhow::ensure!(
            !body.contains("]==]") && token.chars().all(|c| c.is_ascii_graphic()),
            "a request wrk's script cannot hold"
        );
        head.push_str(&format!("  {{ {token:?}, [==[{body}]==] }},\n"));
    }
    head.push_str("}\n");
    run(url, concurrency, total, &format!("{head}{COMMON}{PICK}"))
}

/// Runs wrk with `script` for about as long as `total` requests take at
/// 1,000/s. Blocking.
fn run(url: &str, concurrency: usize, total: usize, script_text: &str) -> anyhow::Result<Measured> {
    let dir = std::env::temp_dir().join(format!("bench-wrk-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join(format!("{:08x}.lua", rand::random::<u32>()));
    let threads = THREADS.min(concurrency.max(1));
    let secs = (total / 1_000).clamp(5, 60);
    std::fs::write(&script, script_text)?;
    let out = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{}", concurrency.max(threads)))
        .arg(format!("-d{secs}s"))
        .args(["--timeout", "10s", "-s"])
        .arg(&script)
        .arg(format!("{url}/graphql"))
        .output()?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&text)
}

/// Reads the `BENCH` lines of the script's `done`: the count, time and
/// errors, and the 100 percentiles, which stand for the latencies (the
/// table reports p50 and p99, as wrk computes them).
fn parse(text: &str) -> anyhow::Result<Measured> {
    let field = |name: &str| -> anyhow::Result<u64> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .ok_or_else(|| anyhow::anyhow!("wrk printed no {name}: {text}"))?
            .parse::<u64>()
            .map_err(|e| anyhow::anyhow!("wrk's {name}: {e}"))
    };
    let requests = field("requests")? as usize;
    let elapsed = Duration::from_micros(field("duration_us")?);
    let errors = field("errors")? as usize;
    let percentiles: Vec<u64> = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("percentiles_us="))
        .ok_or_else(|| anyhow::anyhow!("wrk printed no percentiles: {text}"))?
        .split(',')
        .map(|p| p.parse::<u64>())
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(
        percentiles.len() == 100,
        "wrk printed {} percentiles",
        percentiles.len()
    );
    let latencies = (0..requests)
        .map(|i| {
            let p = ((i + 1) * 100).div_ceil(requests.max(1)).clamp(1, 100);
            Duration::from_micros(percentiles[p - 1])
        })
        .collect();
    Ok(Measured::from_parts(latencies, errors, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_output_is_read() {
        let q: Vec<String> = (1..=100).map(|p| (p * 100).to_string()).collect();
        let text = format!(
            "Running 1s test\nBENCH requests=400 duration_us=2000000 errors=3\nBENCH percentiles_us={}\n",
            q.join(",")
        );
        let m = parse(&text).expect("parsed");
        assert!((m.throughput() - 200.0).abs() < 1e-9);
        let s = crate::load::summarize("x", 16, &[m]);
        assert_eq!(s.errors, 3);
        assert!((s.p50_ms - 5.0).abs() < 1e-9, "{}", s.p50_ms);
        assert!((s.p99_ms - 9.9).abs() < 1e-9, "{}", s.p99_ms);
        assert!(parse("nothing").is_err());
    }
}

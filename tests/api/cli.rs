//! The command line as a newcomer meets it: clear answers, fast failures.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn gateway(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_points-gateway"))
        .args(args)
        .env(
            "GATEWAY_JWT_SECRET",
            "cli-secret-0123456789abcdef0123456789",
        )
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn token_help_lists_the_roles_and_lifetimes_must_be_positive() {
    let help = gateway(&["token", "--help"], &[]);
    let help = text(&help);
    for role in ["user", "service", "admin", "partner"] {
        assert!(help.contains(role), "{help}");
    }
    for hours in ["0", "-3"] {
        let o = gateway(&["token", "--role", "admin", "--hours", hours], &[]);
        assert!(!o.status.success(), "--hours {hours}: {}", text(&o));
    }
    let o = gateway(&["token", "--role", "root"], &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("possible values"), "{}", text(&o));
    let o = gateway(&["token", "--role", "admin", "--hours", "1"], &[]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn an_unreachable_database_fails_fast_naming_where_and_why() {
    let started = Instant::now();
    let o = gateway(
        &["migrate"],
        &[("DATABASE_URL", "postgres://gw:hunter2@127.0.0.1:1/points")],
    );
    assert!(!o.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let t = text(&o);
    assert!(t.contains("127.0.0.1:1") && t.contains("refused"), "{t}");
    assert!(!t.contains("hunter2"), "credentials in an error: {t}");
}

#[test]
fn seed_demo_twice_says_the_data_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/demo.sqlite?mode=rwc", dir.path().display());
    let env = [("DATABASE_URL", url.as_str())];
    let first = gateway(&["seed-demo", "--users", "2"], &env);
    assert!(first.status.success(), "{}", text(&first));
    let second = gateway(&["seed-demo", "--users", "2"], &env);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("already holds demo data"),
        "{}",
        text(&second)
    );
}

//! `points-gateway release`: the way back. A dry run reports what handing
//! the database back to the legacy systems would do; `--apply` does it in
//! one transaction (PostgreSQL, where the legacy systems live beside the
//! gateway). Afterwards the old code runs on the gateway's balances with
//! nothing of the gateway's in its way, and `adopt` works again.

use crate::store::adopt::release::{self as sr, Handback, JoinedTo};
use crate::store::adopt::{self as sa, Standing};
use crate::store::{Engine, Store};

#[derive(Debug, Clone, Copy)]
pub struct ReleaseOptions {
    pub apply: bool,
    pub joined_to: JoinedTo,
}

/// The text to print and whether it succeeded.
pub struct Released {
    pub text: String,
    pub ok: bool,
}

/// Ledger types and source types the legacy code writes itself.
const MJK_TYPES: [&str; 4] = ["recharge", "consume", "expire", "refund"];
const MJK_SOURCES: [&str; 6] = ["", "script", "polish", "voice_clone", "tts", "video"];
const TS_SOURCES: [&str; 4] = ["recharge", "gift", "consume", "refund"];

/// Why a word of the gateway's is in the legacy tables.
fn explain(word: &str) -> &'static str {
    match word {
        "opening" => "the adopted opening balance; its balance_after is right, which is all the old code reads",
        "fal" => "a job run on fal.ai (the ts platform's charges of fal tasks)",
        "paid" | "gift" => "a recharge, by the funds it added (paid or gift points)",
        "transfer" => "this release: a joined user's points left on one side",
        "adjust" => "an admin tool's direct edit of ts_users, absorbed as a movement",
        "expire" => "points past their batch's expiry, taken by the gateway's sweep",
        _ => "a source type a legacy statement row used, kept as written",
    }
}

fn render(
    h: &Handback,
    opts: &ReleaseOptions,
    columns: Option<&sa::TsBalanceColumns>,
    archive: &str,
) -> String {
    let mut out = String::new();
    let joined_points: i64 = h.joined.iter().map(|j| j.1).sum();
    out.push_str(&format!("users: {}\n", h.users));
    match columns {
        Some(c) => out.push_str(&format!(
            "ts_users {}: set to each user's paid and gift points (kept so since the cutover)\n",
            c.describe()
        )),
        None => out.push_str("ts_users: no balance columns kept; left as they are\n"),
    }
    out.push_str(&format!(
        "mjk ledger and ts statement: each user's last balance_after is their balance{}\n",
        if h.ledger_off > 0 {
            format!(
                " ({} users' ledger ends elsewhere: run `points-gateway verify`)",
                h.ledger_off
            )
        } else {
            String::new()
        }
    ));
    let side = match opts.joined_to {
        JoinedTo::Ts => "stay in ts_users; the mjk ledger gets one row to 0 each (consume, source_type transfer, 【积分转至ts平台】)",
        JoinedTo::Mjk => "stay on the mjk ledger; ts_users goes to 0 with one statement row each (transfer, 【积分转至mjk系统】)",
    };
    out.push_str(&format!(
        "users both systems know: {} with {joined_points} points; their points {side}, so no point is counted by both\n",
        h.joined.len()
    ));
    out.push_str(&format!("open holds: {}\n", h.open_holds));
    out.push_str(
        "removed: the absorbing triggers, the ts_users follow trigger, the event triggers and every gw_* function\n",
    );
    out.push_str(&format!(
        "kept aside: the gateway's tables (batches, holds, request hashes) move to schema {archive}; \
         `points-gateway adopt` works on this database again\n"
    ));
    let strange: Vec<String> = h
        .ledger_vocabulary
        .iter()
        .filter(|(ty, st, _)| {
            !MJK_TYPES.contains(&ty.as_str()) || !MJK_SOURCES.contains(&st.as_str())
        })
        .map(|(ty, st, n)| {
            let word = if MJK_TYPES.contains(&ty.as_str()) {
                st
            } else {
                ty
            };
            format!(
                "  - mjk_point_transactions type {ty}, source_type {st:?}: {n} rows: {}",
                explain(word)
            )
        })
        .chain(
            h.statement_vocabulary
                .iter()
                .filter(|(st, _)| !TS_SOURCES.contains(&st.as_str()))
                .map(|(st, n)| {
                    format!(
                        "  - ts_points_detail source_type {st}: {n} rows: {}",
                        explain(st)
                    )
                }),
        )
        .collect();
    if !strange.is_empty() {
        out.push_str("Rows the old code will meet that it never writes itself:\n");
        out.push_str(&strange.join("\n"));
        out.push('\n');
    }
    out
}

pub async fn release(store: &Store, opts: &ReleaseOptions) -> anyhow::Result<Released> {
    let refused = |text: String| Released { text, ok: false };
    match store.engine() {
        Engine::Postgres => {}
        Engine::Sqlite => {
            return Ok(refused(
                "release: a SQLite database was adopted without coexistence (the legacy \
                 applications stopped writing at the cutover); restore the copy taken before \
                 `adopt --apply`, or keep the gateway. Nothing was changed.\n"
                    .to_owned(),
            ))
        }
    }
    let tx = sa::begin(store).await?;
    if sa::standing_in(&tx).await? != Standing::Adopted {
        tx.rollback().await?;
        return Ok(refused(
            "release: this database is not adopted by the gateway: nothing to hand back\n"
                .to_owned(),
        ));
    }
    match sa::adoption_row(store.conn()).await? {
        Some(a) if a.adopted() => {}
        _ => {
            tx.rollback().await?;
            return Ok(refused(
                "release: the gateway made this database (no legacy system to hand it to)\n"
                    .to_owned(),
            ));
        }
    }
    let columns = sa::ts_users::followed(store).await?;
    let h = sr::survey(&tx).await?;
    let archive = format!("gw_released_{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let title = format!(
        "points-gateway release{} - {}\nStop every gateway instance first: it hands the balances back to the legacy code.\n",
        if opts.apply { " --apply" } else { " (dry run: nothing is changed)" },
        crate::store::describe_store(store)
    );
    let report = format!("{title}{}", render(&h, opts, columns.as_ref(), &archive));
    if h.open_holds > 0 {
        tx.rollback().await?;
        return Ok(refused(format!(
            "{report}Cannot proceed: {} holds are open (the old code knows no holds); capture or release them first.\n",
            h.open_holds
        )));
    }
    if !opts.apply {
        tx.rollback().await?;
        return Ok(Released {
            text: format!(
                "{report}\nTo hand it back: points-gateway release --apply [--joined-to ts|mjk]\n"
            ),
            ok: true,
        });
    }
    sr::hand_back(
        &tx,
        columns.as_ref(),
        opts.joined_to,
        &archive,
        store.legacy_zone().name(),
    )
    .await?;
    tx.commit().await?;
    Ok(Released {
        text: format!(
            "{report}\nReleased: the legacy systems own the balances again ({} users, {} joined). \
             The gateway's tables are in schema {archive}.\n",
            h.users,
            h.joined.len()
        ),
        ok: true,
    })
}

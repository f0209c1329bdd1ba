//! `seed-demo`: realistic data through the real ledger code, so the demo
//! database satisfies every invariant (`verify` is clean after seeding).
//!
//! Each user gets a 90-day history: a paid recharge, a gift batch that
//! expires after 30 days, a few dozen consumes of every source type (TTS and
//! video with durations, fal jobs with a `ts_fal_tasks` row on a pool key),
//! refunds of failed jobs (full) and partial refunds, and top-ups when the
//! balance runs low.

use chrono::{DateTime, Duration, Utc};
use entity::{fal_account, fal_task};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ActiveValue::NotSet, Set};

use crate::domain::input::{
    ConsumeRequest, RechargeDraft, RechargeRequest, RefundRequest, UserName,
};
use crate::domain::ledger::{self, ConsumeError, CreateUser};
use crate::domain::source::{DurationRule, RechargeKind, SourceType};
use crate::store::Store;
use entity::legacy_time::LocalTime;

#[derive(Debug, Default)]
pub struct SeedReport {
    /// Demo users found already: nothing was seeded.
    pub already: u64,
    pub users: usize,
    pub ledger_rows: usize,
    pub accounts: usize,
    pub tasks: usize,
}

/// Real fal endpoint ids with a plausible USD cost per job.
const ENDPOINTS: &[(&str, f64)] = &[
    ("fal-ai/flux/dev", 0.025),
    ("fal-ai/flux/schnell", 0.003),
    ("fal-ai/flux-pro/v1.1", 0.04),
    ("fal-ai/recraft-v3", 0.04),
    ("fal-ai/sora-2/image-to-video", 0.8),
    ("fal-ai/kling-video/v2.5-turbo/pro/image-to-video", 0.35),
    ("fal-ai/minimax/video-01", 0.5),
    ("fal-ai/kokoro", 0.02),
];

fn key(rng: &mut StdRng) -> String {
    let bytes: [u8; 16] = rng.gen();
    format!("demo-fal-{}", hex::encode(bytes))
}

pub async fn seed_demo(store: &Store, users: usize, seed: u64) -> anyhow::Result<SeedReport> {
    // Demo data is seeded once per database: the same seed would write the
    // same fal keys again (unique), and a second history helps no one.
    let already = crate::store::read::users::count_named(store, "demo-user-").await?;
    if already > 0 {
        return Ok(SeedReport {
            already,
            ..SeedReport::default()
        });
    }
    let mut report = SeedReport::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let run = rng.gen::<u32>();
    let now = crate::time::now();

    let mut keys = Vec::new();
    for i in 0..5 {
        let api_key = key(&mut rng);
        crate::store::fal::insert_account(
            store,
            fal_account::ActiveModel {
                id: NotSet,
                name: Set(format!("fal-pool-{}-{run:08x}", i + 1)),
                api_key: Set(api_key.clone()),
                balance: Set(rng.gen_range(5.0..500.0_f64).round()),
                use_cnt: Set(0),
                error_cnt: Set(rng.gen_range(0..20)),
                status: Set(if i == 4 { 0 } else { 1 }),
                remark: Set(Some(
                    if i == 4 {
                        "disabled: quota"
                    } else {
                        "demo pool"
                    }
                    .to_owned(),
                )),
            },
        )
        .await?;
        keys.push(api_key);
        report.accounts += 1;
    }

    let types = SourceType::defaults();
    for u in 0..users {
        let user = ledger::create_user(
            store,
            &CreateUser {
                name: UserName::new(&format!("demo-user-{u}"))?,
                uuid: None,
                id: None,
            },
        )
        .await?;
        let mut txn = store.begin_write().await?;
        let mut t = now - Duration::days(90) + Duration::minutes(rng.gen_range(0..14_400));
        let mut order = 0;
        let mut recharge =
            |t: DateTime<Utc>, kind: RechargeKind, amount: i64, expires: Option<DateTime<Utc>>| {
                order += 1;
                let order_id = format!("demo-{run:08x}-{}-{order}", user.id);
                let draft = RechargeDraft {
                    user_id: user.id,
                    amount,
                    order_id: &order_id,
                    kind,
                    money_cents: (kind == RechargeKind::Paid).then_some(amount as i32),
                    pay_type: (kind == RechargeKind::Paid).then_some(1),
                    expires_at: expires,
                };
                RechargeRequest::new(draft, t)
            };
        let first = recharge(t, RechargeKind::Paid, rng.gen_range(20..200) * 100, None)?;
        ledger::recharge_in(
            &mut txn,
            &first,
            &first.fingerprint(),
            ledger::RowTime::At(t),
        )
        .await?;
        report.ledger_rows += 1;
        t += Duration::minutes(5);
        let gift = recharge(
            t,
            RechargeKind::Gift,
            rng.gen_range(1..20) * 100,
            Some(t + Duration::days(30)),
        )?;
        ledger::recharge_in(&mut txn, &gift, &gift.fingerprint(), ledger::RowTime::At(t)).await?;
        report.ledger_rows += 1;

        let mut tasks = Vec::new();
        for j in 0..rng.gen_range(10..40) {
            t += Duration::minutes(rng.gen_range(10..3_000));
            if t >= now {
                break;
            }
            // The defaults in order: script, polish, voice_clone, tts,
            // video, fal.
            let st = types[match rng.gen_range(0..10) {
                n @ 0..=2 => n,
                3 | 4 => 3,
                5 => 4,
                _ => 5,
            }]
            .clone();
            let duration = (st.duration() == DurationRule::Required)
                .then(|| (rng.gen_range(30..1_800) as f64) / 10.0);
            let amount = match duration {
                Some(d) => (d * if st.as_str() == "video" { 10.0 } else { 2.0 }).ceil() as i64,
                None => rng.gen_range(5..300),
            };
            let source_id = format!("{st}-{run:08x}-{}-{j}", user.id);
            let req = ConsumeRequest::new(user.id, amount, st.clone(), &source_id, duration, None)?;
            match ledger::consume_in(&mut txn, &req, &req.fingerprint(), ledger::RowTime::At(t))
                .await
            {
                Ok(_) => report.ledger_rows += 1,
                Err(ConsumeError::InsufficientBalance { .. }) => {
                    let top = recharge(t, RechargeKind::Paid, rng.gen_range(50..200) * 100, None)?;
                    ledger::recharge_in(&mut txn, &top, &top.fingerprint(), ledger::RowTime::At(t))
                        .await?;
                    report.ledger_rows += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            let failed = rng.gen_bool(0.08);
            if st.is_fal() {
                let (app, price) = ENDPOINTS[rng.gen_range(0..ENDPOINTS.len())];
                tasks.push(fal_task::ActiveModel {
                    id: NotSet,
                    user_id: Set(user.id),
                    task_id: Set(source_id.clone()),
                    online_task_id: Set(Some(uuid::Uuid::from_u128(rng.gen()).to_string())),
                    app_name: Set(app.to_owned()),
                    api_key: Set(keys[rng.gen_range(0..4)].clone()),
                    task_type: Set(if app.contains("video") {
                        "video"
                    } else {
                        "image"
                    }
                    .to_owned()),
                    status: Set(if failed { "FAILED" } else { "COMPLETED" }.to_owned()),
                    money: Set(amount as i32),
                    cost_money: Set(if failed {
                        0.0
                    } else {
                        price * rng.gen_range(1..4) as f64
                    }),
                    is_refund: Set(0),
                    input_params: Set(Some(format!("{{\"prompt\":\"demo prompt {j}\"}}"))),
                    output_params: Set(None),
                    created_at: Set(LocalTime::of(t, store.legacy_zone())),
                    completed_at: Set(Some(LocalTime::of(
                        t + Duration::seconds(rng.gen_range(3..300)),
                        store.legacy_zone(),
                    ))),
                });
            }
            let partial = !failed && rng.gen_bool(0.05) && amount > 1;
            if failed || partial {
                if st.is_fal() && !tasks.is_empty() {
                    // The task row must exist before its refund flags it.
                    txn.insert_fal_tasks(std::mem::take(&mut tasks)).await?;
                }
                t += Duration::minutes(1);
                let refund = RefundRequest::new(
                    st,
                    &source_id,
                    Some(&format!("refund-{source_id}")),
                    partial.then_some(amount / 2),
                    Some(if failed {
                        "任务失败"
                    } else {
                        "部分退款"
                    }),
                )?;
                ledger::refund_in(
                    &mut txn,
                    &refund,
                    &refund.fingerprint(),
                    ledger::RowTime::At(t),
                )
                .await?;
                report.ledger_rows += 1;
            }
        }
        report.tasks += tasks.len();
        txn.insert_fal_tasks(tasks).await?;
        txn.commit().await?;
        report.users += 1;
    }
    let expired = ledger::expire_due(store, now).await?;
    report.ledger_rows += expired.batches as usize;
    let tasks = crate::store::fal::task_count(store).await?;
    report.tasks = tasks as usize;
    Ok(report)
}

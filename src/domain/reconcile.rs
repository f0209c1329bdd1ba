//! The rules of the per-job reconciliation against fal's bill: what a job
//! earned, what fal billed for it, and which findings it raises.
//!
//! Money on fal's side is integer nano-USD (exact sums); points are
//! integers; only the conversion between them (`POINTS_PER_USD`) rounds,
//! once per line, to the nearest nano-USD.

/// What the platform recorded for one job (`ts_fal_tasks` and the ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobSide {
    /// Points charged (`ts_fal_tasks.money`).
    pub charged_points: i64,
    /// Points given back: the ledger's refunds of the job where it has
    /// any, else the task's money when `is_refund` is set.
    pub refunded_points: i64,
    /// The platform's own estimate of fal's cost (`cost_money`).
    pub cost_money_nano: Option<i64>,
}

impl JobSide {
    pub fn net_points(&self) -> i64 {
        self.charged_points - self.refunded_points
    }
}

/// What fal billed for one request id (its events summed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FalSide {
    pub cost_nano: i64,
    pub events: u32,
}

/// One finding on a line; a line can raise several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// fal billed the request, yet the user got points back or was never
    /// charged: the platform carries fal's cost.
    BilledButRefunded,
    /// The user was charged (net of refunds) and fal billed nothing: fal
    /// failed the job (a refund may be owed) or it never ran.
    ChargedNotBilled,
    /// fal billed a request no task records.
    UnknownRequest,
    /// The platform's `cost_money` is off fal's charge by more than the
    /// tolerance.
    CostMismatch,
    /// The points kept are worth less than fal's charge.
    NegativeMargin,
}

impl Flag {
    pub const ALL: [Flag; 5] = [
        Flag::BilledButRefunded,
        Flag::ChargedNotBilled,
        Flag::UnknownRequest,
        Flag::CostMismatch,
        Flag::NegativeMargin,
    ];

    /// The bit stored for the flag; the values are stored, never reused.
    pub const fn bit(self) -> i32 {
        match self {
            Flag::BilledButRefunded => 1,
            Flag::ChargedNotBilled => 2,
            Flag::UnknownRequest => 4,
            Flag::CostMismatch => 8,
            Flag::NegativeMargin => 16,
        }
    }

    /// The stable name, as in the CSV export and the GraphQL enum.
    pub const fn name(self) -> &'static str {
        match self {
            Flag::BilledButRefunded => "BILLED_BUT_REFUNDED",
            Flag::ChargedNotBilled => "CHARGED_NOT_BILLED",
            Flag::UnknownRequest => "UNKNOWN_REQUEST",
            Flag::CostMismatch => "COST_MISMATCH",
            Flag::NegativeMargin => "NEGATIVE_MARGIN",
        }
    }

    pub fn parse(s: &str) -> Option<Flag> {
        Flag::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// A set of flags, stored as the sum of their bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(i32);

impl Flags {
    pub fn from_bits(bits: i32) -> Flags {
        Flags(bits & Flag::ALL.iter().map(|f| f.bit()).sum::<i32>())
    }

    pub fn bits(self) -> i32 {
        self.0
    }

    pub fn with(self, f: Flag) -> Flags {
        Flags(self.0 | f.bit())
    }

    pub fn has(self, f: Flag) -> bool {
        self.0 & f.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Flag> {
        Flag::ALL.into_iter().filter(move |f| self.has(*f))
    }

    pub fn of(flags: &[Flag]) -> Flags {
        flags.iter().fold(Flags::default(), |acc, f| acc.with(*f))
    }
}

/// The conversion and the tolerance a reconciliation runs with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Terms {
    /// `POINTS_PER_USD`: points one US dollar buys (positive).
    pub points_per_usd: f64,
    /// `FAL_JOB_TOLERANCE_USD` in nano-USD: the largest `cost_money` error
    /// not flagged.
    pub tolerance_nano: i64,
}

impl Terms {
    /// Points in nano-USD, rounded to the nearest.
    pub fn points_nano(&self, points: i64) -> i64 {
        (points as f64 * 1e9 / self.points_per_usd).round() as i64
    }
}

/// A line's judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub flags: Flags,
    /// The points kept, in nano-USD, less fal's charge (none billed: 0).
    pub margin_nano: i64,
}

/// Judges one line: a job, a billed request, or both matched by request id.
/// `None, None` is no line at all and judges to nothing flagged.
pub fn judge(job: Option<&JobSide>, fal: Option<&FalSide>, terms: &Terms) -> Verdict {
    let billed = fal.map(|f| f.cost_nano).unwrap_or(0);
    let kept = job.map(|j| terms.points_nano(j.net_points())).unwrap_or(0);
    let margin_nano = kept - billed;
    let mut flags = Flags::default();
    match (job, fal) {
        (Some(j), Some(f)) => {
            if f.cost_nano > 0 && (j.refunded_points > 0 || j.charged_points == 0) {
                flags = flags.with(Flag::BilledButRefunded);
            }
            if let Some(est) = j.cost_money_nano {
                if (est - f.cost_nano).abs() > terms.tolerance_nano {
                    flags = flags.with(Flag::CostMismatch);
                }
            }
        }
        (Some(j), None) => {
            if j.net_points() > 0 {
                flags = flags.with(Flag::ChargedNotBilled);
            }
        }
        (None, Some(_)) => flags = flags.with(Flag::UnknownRequest),
        (None, None) => {}
    }
    if margin_nano < 0 {
        flags = flags.with(Flag::NegativeMargin);
    }
    Verdict { flags, margin_nano }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERMS: Terms = Terms {
        points_per_usd: 100.0,
        tolerance_nano: 1_000_000,
    };

    fn job(charged: i64, refunded: i64, cost: Option<i64>) -> JobSide {
        JobSide {
            charged_points: charged,
            refunded_points: refunded,
            cost_money_nano: cost,
        }
    }

    fn fal(cost: i64) -> FalSide {
        FalSide {
            cost_nano: cost,
            events: 1,
        }
    }

    #[test]
    fn a_paid_billed_job_at_its_estimate_raises_nothing() {
        // 50 points = $0.50; fal billed $0.32.
        let v = judge(
            Some(&job(50, 0, Some(320_000_000))),
            Some(&fal(320_000_000)),
            &TERMS,
        );
        assert_eq!(v.flags, Flags::default());
        assert_eq!(v.margin_nano, 180_000_000);
    }

    #[test]
    fn billed_and_refunded_or_never_charged() {
        let refunded = judge(Some(&job(50, 50, None)), Some(&fal(320_000_000)), &TERMS);
        assert_eq!(
            refunded.flags,
            Flags::of(&[Flag::BilledButRefunded, Flag::NegativeMargin])
        );
        assert_eq!(refunded.margin_nano, -320_000_000);
        let partly = judge(Some(&job(50, 10, None)), Some(&fal(100_000_000)), &TERMS);
        assert_eq!(partly.flags, Flags::of(&[Flag::BilledButRefunded]));
        let free = judge(Some(&job(0, 0, None)), Some(&fal(1)), &TERMS);
        assert!(free.flags.has(Flag::BilledButRefunded));
        // fal billing nothing for it is no finding.
        let zero = judge(Some(&job(0, 0, None)), Some(&fal(0)), &TERMS);
        assert_eq!(zero.flags, Flags::default());
    }

    #[test]
    fn charged_without_a_bill_unless_refunded() {
        let v = judge(Some(&job(30, 0, Some(0))), None, &TERMS);
        assert_eq!(v.flags, Flags::of(&[Flag::ChargedNotBilled]));
        assert_eq!(v.margin_nano, 300_000_000);
        let refunded = judge(Some(&job(30, 30, Some(0))), None, &TERMS);
        assert_eq!(refunded.flags, Flags::default());
    }

    #[test]
    fn a_bill_without_a_task_is_unknown_and_a_loss() {
        let v = judge(None, Some(&fal(45_000_000)), &TERMS);
        assert_eq!(
            v.flags,
            Flags::of(&[Flag::UnknownRequest, Flag::NegativeMargin])
        );
        assert_eq!(v.margin_nano, -45_000_000);
    }

    #[test]
    fn the_estimate_is_flagged_past_the_tolerance_only() {
        let within = judge(
            Some(&job(50, 0, Some(321_000_000))),
            Some(&fal(320_000_000)),
            &TERMS,
        );
        assert!(!within.flags.has(Flag::CostMismatch));
        let past = judge(
            Some(&job(50, 0, Some(321_000_001))),
            Some(&fal(320_000_000)),
            &TERMS,
        );
        assert!(past.flags.has(Flag::CostMismatch));
        let below = judge(
            Some(&job(50, 0, Some(318_999_999))),
            Some(&fal(320_000_000)),
            &TERMS,
        );
        assert!(below.flags.has(Flag::CostMismatch));
    }

    #[test]
    fn flags_round_trip_through_bits_and_names() {
        let all = Flags::of(&Flag::ALL);
        assert_eq!(all.bits(), 31);
        assert_eq!(Flags::from_bits(all.bits() | 64), all);
        for f in Flag::ALL {
            assert_eq!(Flag::parse(f.name()), Some(f));
            assert_eq!(
                Flags::from_bits(f.bit()).iter().collect::<Vec<_>>(),
                vec![f]
            );
        }
        assert_eq!(Flag::parse("negative_margin"), None);
    }

    #[test]
    fn points_convert_at_the_configured_rate() {
        let t = Terms {
            points_per_usd: 7.0,
            tolerance_nano: 0,
        };
        assert_eq!(t.points_nano(1), 142_857_143);
        assert_eq!(t.points_nano(-7), -1_000_000_000);
    }
}

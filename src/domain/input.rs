//! Validated inputs: every ledger operation takes these, never raw numbers
//! or strings, so a value that reaches the database has already been checked.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::source::{DurationRule, RechargeKind, SourceType};

/// The largest balance a user may hold. The public API speaks 32-bit GraphQL
/// `Int`, so a balance above this could not be shown; recharges that would
/// pass it are refused rather than silently wrapped.
pub const MAX_BALANCE: i64 = i32::MAX as i64;

/// Ids the gateway gives users the ts platform does not know start here,
/// far above any serial the platform will reach, so the platform's next
/// `ts_users` rows never take an id the gateway already gave out. Users
/// created through the API after adoption continue from there.
pub const FIRST_GATEWAY_ID: i32 = 1_000_000_000;

/// Longest billed duration accepted (one year of seconds): anything larger is
/// a unit mistake by the caller, not a job.
pub const MAX_DURATION_SECS: f64 = 31_536_000.0;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct InputError(pub String);

pub(super) fn invalid(msg: impl Into<String>) -> InputError {
    InputError(msg.into())
}

/// A text a reader filters or searches by (`users(search:)`, a task's
/// status or app name): at most `max` characters, none of them control
/// characters. Longer texts match nothing real and cost the engine (SQLite
/// refuses LIKE patterns over 50,000 bytes); NUL is not storable text on
/// PostgreSQL. Both are the caller's mistake: `INVALID_INPUT`.
pub fn filter_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, InputError> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.chars().count() > max {
        return Err(invalid(format!("{field} must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(Some(value))
}

/// Characters that change how the text around them is shown without being
/// seen: bidirectional overrides and isolates (a name or note could show
/// reversed text on an admin's or user's page) and zero-width characters
/// (two names that look the same).
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A time given by a client, checked to lie in the range every engine
/// stores and compares correctly (see [`crate::time::storable`]).
pub fn timestamp(what: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, InputError> {
    if crate::time::storable(t) {
        Ok(t)
    } else {
        Err(invalid(format!(
            "{what} must lie between {} and {}",
            crate::time::EARLIEST,
            crate::time::LATEST
        )))
    }
}

/// A strictly positive number of points that fits the public `Int`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(i64);

impl Amount {
    pub fn new(value: i64) -> Result<Amount, InputError> {
        if value <= 0 {
            return Err(invalid(format!("amount must be positive, got {value}")));
        }
        if value > MAX_BALANCE {
            return Err(invalid(format!(
                "amount must be at most {MAX_BALANCE}, got {value}"
            )));
        }
        Ok(Amount(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// An idempotency key or external reference: `source_id`, `order_id`, refund
/// key. Bounded by the 64-character column it is stored in; printable only,
/// so a key can be logged and compared without surprises.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    pub const MAX_LEN: usize = 64;

    pub fn new(what: &str, value: &str) -> Result<Key, InputError> {
        if value.trim().is_empty() {
            return Err(invalid(format!("{what} must not be empty")));
        }
        if value.chars().count() > Self::MAX_LEN {
            return Err(invalid(format!(
                "{what} must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid(format!(
                "{what} must not contain control characters"
            )));
        }
        Ok(Key(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A free-text note appended to a description (or a refund reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note(String);

impl Note {
    pub const MAX_LEN: usize = 200;

    pub fn new(value: &str) -> Result<Note, InputError> {
        if value.chars().count() > Self::MAX_LEN {
            return Err(invalid(format!(
                "note must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid("note must not contain control characters"));
        }
        if value.chars().any(is_invisible_format) {
            return Err(invalid(
                "note must not contain direction overrides or zero-width characters",
            ));
        }
        Ok(Note(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Seconds billed for a TTS or video job: finite, non-negative, bounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BilledDuration(f64);

impl BilledDuration {
    pub fn new(secs: f64) -> Result<BilledDuration, InputError> {
        if !secs.is_finite() {
            return Err(invalid("duration must be a finite number of seconds"));
        }
        if secs < 0.0 {
            return Err(invalid("duration must not be negative"));
        }
        if secs > MAX_DURATION_SECS {
            return Err(invalid(format!(
                "duration must be at most {MAX_DURATION_SECS} seconds"
            )));
        }
        Ok(BilledDuration(secs))
    }

    pub fn secs(self) -> f64 {
        self.0
    }
}

/// A user display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub fn new(value: &str) -> Result<UserName, InputError> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(invalid("name must not be empty"));
        }
        if trimmed.chars().count() > 100 || trimmed.chars().any(char::is_control) {
            return Err(invalid("name must be at most 100 printable characters"));
        }
        if trimmed.chars().any(is_invisible_format) {
            return Err(invalid(
                "name must not contain direction overrides or zero-width characters",
            ));
        }
        Ok(UserName(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user's mjk ledger uuid given to `createUser`: any uuid but the nil
/// one, which legacy code uses as "no user" and which would let two
/// callers that forgot to set it share one identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserUuid(uuid::Uuid);

impl UserUuid {
    pub fn new(value: uuid::Uuid) -> Result<UserUuid, InputError> {
        if value.is_nil() {
            return Err(invalid("uuid must not be the nil uuid"));
        }
        Ok(UserUuid(value))
    }

    pub fn get(self) -> uuid::Uuid {
        self.0
    }
}

/// A ts platform user id given to `createUser`: a person the platform
/// registered after the gateway adopted its database. Below the ids the
/// gateway gives out itself ([`FIRST_GATEWAY_ID`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformUserId(i32);

impl PlatformUserId {
    pub fn new(value: i32) -> Result<PlatformUserId, InputError> {
        let max = FIRST_GATEWAY_ID - 1;
        if (1..=max).contains(&value) {
            Ok(PlatformUserId(value))
        } else {
            Err(invalid(format!(
                "id must be a ts platform user id between 1 and {max}"
            )))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// Hex SHA-256 of the canonical form of a request: two requests with one
/// idempotency key are "the same" exactly when their fingerprints match.
pub(super) fn fingerprint(parts: &[String]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

pub(super) fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| format!("some:{}", x.to_string()))
        .unwrap_or_else(|| "none".to_owned())
}

/// The billed seconds of a job, as its source type's rule says: required
/// (tts, video), accepted, or refused.
pub(super) fn billed_duration(
    source_type: &SourceType,
    duration: Option<f64>,
) -> Result<Option<BilledDuration>, InputError> {
    match (source_type.duration(), duration) {
        (DurationRule::Required | DurationRule::Optional, Some(d)) => {
            Ok(Some(BilledDuration::new(d)?))
        }
        (DurationRule::Required, None) => Err(invalid(format!(
            "duration is required for {source_type} consumes"
        ))),
        (DurationRule::Refused, Some(_)) => Err(invalid(format!(
            "duration is not accepted for {source_type}: it is not billed by the second"
        ))),
        (DurationRule::Optional | DurationRule::Refused, None) => Ok(None),
    }
}

/// Who wrote a row: the token subject of the caller (`service:fal-runner`,
/// `admin`, `user:7`) or `gateway` for its own sweeps. Stored in
/// `gw_entries.written_by`; never a secret, since it is made from a
/// token's claims, not from the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author(String);

impl Author {
    pub const MAX_LEN: usize = 80;

    pub fn new(value: &str) -> Result<Author, InputError> {
        if value.is_empty() || value.chars().count() > Self::MAX_LEN {
            return Err(invalid(format!(
                "a writer is 1 to {} characters",
                Self::MAX_LEN
            )));
        }
        if value
            .chars()
            .any(|c| c.is_control() || is_invisible_format(c))
        {
            return Err(invalid("a writer must be printable"));
        }
        Ok(Author(value.to_owned()))
    }

    /// The gateway itself (expiry sweeps).
    pub fn gateway() -> Author {
        Author("gateway".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The title the ts platform's statement page shows for a movement
/// (`ts_points_detail.title`, `ts_financial_transactions.title`), as the
/// old code wrote it (`"视频生成-xxx"`); the ledger's description keeps the
/// `【…】` label. Bounded by those 255-character columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub const MAX_LEN: usize = 255;

    pub fn new(value: &str) -> Result<Title, InputError> {
        if value.trim().is_empty() || value.chars().count() > Self::MAX_LEN {
            return Err(invalid(format!(
                "title must be 1 to {} characters",
                Self::MAX_LEN
            )));
        }
        if value
            .chars()
            .any(|c| c.is_control() || is_invisible_format(c))
        {
            return Err(invalid(
                "title must not contain control, direction or zero-width characters",
            ));
        }
        Ok(Title(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub struct ConsumeRequest {
    pub user_id: i32,
    pub amount: Amount,
    pub source_type: SourceType,
    pub source_id: Key,
    pub duration: Option<BilledDuration>,
    pub note: Option<Note>,
    /// The statement title, where a ts call site gives one.
    pub title: Option<Title>,
    /// Who asks; recorded on the row, not part of the request's identity
    /// (a retry by another instance of the same service is the same
    /// request).
    pub by: Option<Author>,
}

impl ConsumeRequest {
    /// Builds a consume, enforcing that billed-by-the-second sources carry a
    /// duration and the others do not.
    pub fn new(
        user_id: i32,
        amount: i64,
        source_type: SourceType,
        source_id: &str,
        duration: Option<f64>,
        note: Option<&str>,
    ) -> Result<ConsumeRequest, InputError> {
        let amount = Amount::new(amount)?;
        let source_id = Key::new("sourceId", source_id)?;
        let duration = billed_duration(&source_type, duration)?;
        let note = note.map(Note::new).transpose()?;
        Ok(ConsumeRequest {
            user_id,
            amount,
            source_type,
            source_id,
            duration,
            note,
            title: None,
            by: None,
        })
    }

    /// The same consume with the statement title a ts call site gives.
    pub fn titled(mut self, title: Option<&str>) -> Result<ConsumeRequest, InputError> {
        self.title = title.map(Title::new).transpose()?;
        Ok(self)
    }

    /// A title is part of the request only when given, so the requests
    /// made before titles existed keep their fingerprints (a retry across
    /// the upgrade is still the same request).
    pub fn fingerprint(&self) -> String {
        let mut parts = vec![
            "consume".into(),
            self.user_id.to_string(),
            self.amount.get().to_string(),
            self.source_type.as_str().into(),
            self.source_id.as_str().into(),
            opt(self.duration.map(|d| d.secs().to_bits())),
            opt(self.note.as_ref().map(|n| n.as_str())),
        ];
        parts.extend(self.title.as_ref().map(|t| format!("title:{}", t.as_str())));
        fingerprint(&parts)
    }
}

#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub source_type: SourceType,
    pub source_id: Key,
    pub refund_key: Key,
    /// `None` refunds whatever of the consume is not refunded yet.
    pub amount: Option<Amount>,
    pub reason: Option<Note>,
    pub by: Option<Author>,
}

impl RefundRequest {
    /// `refund_key` omitted: the job's one keyless refund, under a key made
    /// from the job's (see [`keyless_refund_key`]). The old code refunded a
    /// failed job once and had no key to give; a second keyless refund of
    /// the same job replays the first (or conflicts, if it differs).
    pub fn new(
        source_type: SourceType,
        source_id: &str,
        refund_key: Option<&str>,
        amount: Option<i64>,
        reason: Option<&str>,
    ) -> Result<RefundRequest, InputError> {
        let source_id = Key::new("sourceId", source_id)?;
        let refund_key = match refund_key {
            Some(k) => Key::new("refundKey", k)?,
            None => keyless_refund_key(&source_type, &source_id)?,
        };
        Ok(RefundRequest {
            source_type,
            source_id,
            refund_key,
            amount: amount.map(Amount::new).transpose()?,
            reason: reason.map(Note::new).transpose()?,
            by: None,
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&[
            "refund".into(),
            self.source_type.as_str().into(),
            self.source_id.as_str().into(),
            self.refund_key.as_str().into(),
            opt(self.amount.map(|a| a.get())),
            opt(self.reason.as_ref().map(|n| n.as_str())),
        ])
    }
}

/// The refund key of a job's keyless refund: `refund:` and the job's key,
/// or, when that would pass the key column's 64 characters, `refund:` and
/// the key's SHA-256 (the same job always gets the same key).
pub fn keyless_refund_key(source_type: &SourceType, source_id: &Key) -> Result<Key, InputError> {
    let plain = format!("refund:{source_type}:{}", source_id.as_str());
    if plain.chars().count() <= Key::MAX_LEN {
        return Key::new("refundKey", &plain);
    }
    let digest = fingerprint(&[source_type.as_str().into(), source_id.as_str().into()]);
    Key::new("refundKey", &format!("refund:{}", &digest[..56]))
}

/// The largest `payType` accepted. Seed 004 names the column 支付类型
/// (payment type) without listing codes; the platforms use small channel
/// numbers, so a negative or huge value is a caller's mistake, not a new
/// channel, and is never written to the legacy table.
pub const PAY_TYPE_MAX: i32 = 999;

#[derive(Debug, Clone)]
pub struct RechargeRequest {
    pub user_id: i32,
    pub amount: Amount,
    pub order_id: Key,
    pub kind: RechargeKind,
    /// What the user paid, in cents; required for paid recharges.
    pub money_cents: Option<i32>,
    pub pay_type: Option<i32>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The statement title, where a ts call site gives one.
    pub title: Option<Title>,
    pub by: Option<Author>,
}

/// A recharge as a caller sent it, before validation.
#[derive(Debug, Clone)]
pub struct RechargeDraft<'a> {
    pub user_id: i32,
    pub amount: i64,
    pub order_id: &'a str,
    pub kind: RechargeKind,
    pub money_cents: Option<i32>,
    pub pay_type: Option<i32>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl RechargeRequest {
    /// Validates a draft; `now` decides whether `expires_at` is in the future.
    pub fn new(
        draft: RechargeDraft<'_>,
        now: DateTime<Utc>,
    ) -> Result<RechargeRequest, InputError> {
        let RechargeDraft {
            user_id,
            amount,
            order_id,
            kind,
            money_cents,
            pay_type,
            expires_at,
        } = draft;
        let amount = Amount::new(amount)?;
        let order_id = Key::new("orderId", order_id)?;
        match (kind, money_cents) {
            (RechargeKind::Paid, None) => {
                return Err(invalid("moneyCents is required for a paid recharge"))
            }
            // A paid recharge with nothing paid is a gift: booked as one,
            // it keeps paid and gift points apart.
            (RechargeKind::Paid, Some(m)) if m <= 0 => {
                return Err(invalid(
                    "moneyCents must be positive for a paid recharge (use kind GIFT)",
                ))
            }
            (RechargeKind::Gift, Some(_)) => {
                return Err(invalid("moneyCents is only accepted for a paid recharge"))
            }
            _ => {}
        }
        if let Some(p) = pay_type {
            if !(0..=PAY_TYPE_MAX).contains(&p) {
                return Err(invalid(format!(
                    "payType must be a payment channel code from 0 to {PAY_TYPE_MAX}"
                )));
            }
        }
        if let Some(at) = expires_at {
            timestamp("expiresAt", at)?;
            if at <= now {
                return Err(invalid("expiresAt must be in the future"));
            }
        }
        Ok(RechargeRequest {
            user_id,
            amount,
            order_id,
            kind,
            money_cents,
            pay_type,
            // Stored at microsecond precision on both engines; keep the
            // fingerprint of a retry equal to the original's.
            expires_at: expires_at.map(crate::time::truncate_micros),
            title: None,
            by: None,
        })
    }

    /// The same recharge with the statement title a ts call site gives.
    pub fn titled(mut self, title: Option<&str>) -> Result<RechargeRequest, InputError> {
        self.title = title.map(Title::new).transpose()?;
        Ok(self)
    }

    /// A title is part of the request only when given (see
    /// [`ConsumeRequest::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        let mut parts = vec![
            "recharge".into(),
            self.user_id.to_string(),
            self.amount.get().to_string(),
            self.order_id.as_str().into(),
            self.kind.as_str().into(),
            opt(self.money_cents),
            opt(self.pay_type),
            opt(self.expires_at.map(|t| t.timestamp_micros())),
        ];
        parts.extend(self.title.as_ref().map(|t| format!("title:{}", t.as_str())));
        fingerprint(&parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(name: &str) -> SourceType {
        SourceType::default_named(name).unwrap()
    }

    #[test]
    fn filter_texts_are_bounded_and_printable() {
        use super::filter_text;
        assert_eq!(filter_text("search", None, 5).ok(), Some(None));
        assert!(filter_text("search", Some("abcde".into()), 5).is_ok());
        assert!(filter_text("search", Some("abcdef".into()), 5).is_err());
        assert!(filter_text("search", Some("a\0b".into()), 5).is_err());
    }

    #[test]
    fn hidden_formatting_and_the_nil_uuid_are_refused() {
        use super::{Note, UserName, UserUuid};
        for bad in [
            "ad\u{202E}nimda",
            "a\u{200B}b",
            "\u{2066}x\u{2069}",
            "\u{FEFF}x",
        ] {
            assert!(UserName::new(bad).is_err(), "{bad:?}");
            assert!(Note::new(bad).is_err(), "{bad:?}");
        }
        assert!(UserName::new("张三 (王)").is_ok());
        assert!(UserUuid::new(uuid::Uuid::nil()).is_err());
        assert!(UserUuid::new(uuid::Uuid::from_u128(1)).is_ok());
    }

    #[test]
    fn amount_must_be_positive_and_fit_an_int() {
        assert!(Amount::new(0).is_err());
        assert!(Amount::new(-5).is_err());
        assert!(Amount::new(MAX_BALANCE + 1).is_err());
        assert_eq!(Amount::new(MAX_BALANCE).unwrap().get(), MAX_BALANCE);
        assert_eq!(Amount::new(1).unwrap().get(), 1);
    }

    #[test]
    fn keys_are_bounded_printable_and_non_empty() {
        assert!(Key::new("k", "").is_err());
        assert!(Key::new("k", "   ").is_err());
        assert!(Key::new("k", &"x".repeat(65)).is_err());
        assert!(Key::new("k", "a\u{0}b").is_err());
        assert!(Key::new("k", &"字".repeat(64)).is_ok());
    }

    #[test]
    fn durations_must_be_finite_and_non_negative() {
        assert!(BilledDuration::new(f64::NAN).is_err());
        assert!(BilledDuration::new(f64::INFINITY).is_err());
        assert!(BilledDuration::new(-0.5).is_err());
        assert!(BilledDuration::new(MAX_DURATION_SECS * 2.0).is_err());
        assert_eq!(BilledDuration::new(0.0).unwrap().secs(), 0.0);
        assert_eq!(BilledDuration::new(12.5).unwrap().secs(), 12.5);
    }

    #[test]
    fn duration_is_required_for_tts_and_refused_for_script() {
        assert!(ConsumeRequest::new(1, 5, st("tts"), "t", None, None).is_err());
        assert!(ConsumeRequest::new(1, 5, st("tts"), "t", Some(3.0), None).is_ok());
        assert!(ConsumeRequest::new(1, 5, st("script"), "s", Some(3.0), None).is_err());
        assert!(ConsumeRequest::new(1, 5, st("script"), "s", None, None).is_ok());
    }

    #[test]
    fn fingerprints_differ_when_any_field_differs() {
        let a = ConsumeRequest::new(1, 5, st("tts"), "t", Some(3.0), None).unwrap();
        let b = ConsumeRequest::new(1, 5, st("tts"), "t", Some(3.5), None).unwrap();
        let c = ConsumeRequest::new(1, 6, st("tts"), "t", Some(3.0), None).unwrap();
        let a2 = ConsumeRequest::new(1, 5, st("tts"), "t", Some(3.0), None).unwrap();
        assert_eq!(a.fingerprint(), a2.fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn paid_recharges_need_money_and_gifts_refuse_it() {
        let now = Utc::now();
        let draft = |kind, money_cents, expires_at| RechargeDraft {
            user_id: 1,
            amount: 10,
            order_id: "o",
            kind,
            money_cents,
            pay_type: None,
            expires_at,
        };
        let r = |kind, money| RechargeRequest::new(draft(kind, money, None), now);
        assert!(r(RechargeKind::Paid, None).is_err());
        assert!(r(RechargeKind::Paid, Some(-1)).is_err());
        assert!(r(RechargeKind::Paid, Some(100)).is_ok());
        assert!(r(RechargeKind::Gift, Some(100)).is_err());
        assert!(r(RechargeKind::Gift, None).is_ok());
        let past = now - chrono::Duration::seconds(1);
        assert!(RechargeRequest::new(draft(RechargeKind::Gift, None, Some(past)), now).is_err());
    }

    #[test]
    fn optional_durations_are_accepted_either_way_and_titles_keep_old_fingerprints() {
        let ts = SourceType::new("ts_charge", "【消费】", DurationRule::Optional).unwrap();
        assert!(ConsumeRequest::new(1, 5, ts.clone(), "o", None, None).is_ok());
        assert!(ConsumeRequest::new(1, 5, ts.clone(), "o", Some(2.0), None).is_ok());
        let plain = ConsumeRequest::new(1, 5, ts.clone(), "o", None, None).unwrap();
        let untitled = plain.clone().titled(None).unwrap();
        let titled = plain.clone().titled(Some("视频生成-1")).unwrap();
        assert_eq!(plain.fingerprint(), untitled.fingerprint());
        assert_ne!(plain.fingerprint(), titled.fingerprint());
        assert!(plain.titled(Some(&"x".repeat(256))).is_err());
    }

    #[test]
    fn a_keyless_refund_has_one_key_per_job_within_the_column() {
        let a = RefundRequest::new(st("tts"), "job-1", None, None, None).unwrap();
        let b = RefundRequest::new(st("tts"), "job-1", None, Some(3), None).unwrap();
        let c = RefundRequest::new(st("video"), "job-1", None, None, None).unwrap();
        assert_eq!(a.refund_key, b.refund_key);
        assert_ne!(a.refund_key, c.refund_key);
        assert_eq!(a.refund_key.as_str(), "refund:tts:job-1");
        let long = "j".repeat(64);
        let l1 = RefundRequest::new(st("tts"), &long, None, None, None).unwrap();
        let l2 = RefundRequest::new(st("tts"), &long, None, None, None).unwrap();
        assert_eq!(l1.refund_key, l2.refund_key);
        assert!(l1.refund_key.as_str().chars().count() <= Key::MAX_LEN);
    }
}

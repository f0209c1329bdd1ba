//! Validated inputs of holds: the reservation, its capture and its
//! release. Each is keyed by the job's `(source_type, source_id)`, the key
//! the job's consume row carries once captured.

use super::input::{
    billed_duration, fingerprint, invalid, opt, Amount, Author, BilledDuration, InputError, Key,
    Note,
};
use super::source::{DurationRule, SourceType};

/// How long a hold lives when the caller does not say.
pub const DEFAULT_HOLD_SECS: i64 = 86_400;

/// The longest a hold may live: seven days. Longer than any job this
/// platform runs; a hold nobody settles must not keep a user's points
/// unavailable for longer.
pub const MAX_HOLD_SECS: i64 = 604_800;

/// A hold's lifetime in seconds: 1 ..= [`MAX_HOLD_SECS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldTtl(i64);

impl HoldTtl {
    pub fn new(secs: Option<i64>) -> Result<HoldTtl, InputError> {
        let secs = secs.unwrap_or(DEFAULT_HOLD_SECS);
        if secs <= 0 {
            return Err(invalid(format!(
                "expiresInSecs must be positive, got {secs}"
            )));
        }
        if secs > MAX_HOLD_SECS {
            return Err(invalid(format!(
                "expiresInSecs must be at most {MAX_HOLD_SECS} (7 days), got {secs}"
            )));
        }
        Ok(HoldTtl(secs))
    }

    pub fn secs(self) -> i64 {
        self.0
    }
}

#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub user_id: i32,
    pub amount: Amount,
    pub source_type: SourceType,
    pub source_id: Key,
    /// The estimated seconds (tts, video), as a consume would carry.
    pub duration: Option<BilledDuration>,
    pub note: Option<Note>,
    pub ttl: HoldTtl,
}

/// The fields of a hold, as the API gives them.
#[derive(Debug, Clone)]
pub struct HoldDraft<'a> {
    pub user_id: i32,
    pub amount: i64,
    pub source_type: SourceType,
    pub source_id: &'a str,
    pub duration: Option<f64>,
    pub note: Option<&'a str>,
    pub expires_in_secs: Option<i64>,
}

impl HoldRequest {
    pub fn new(d: HoldDraft<'_>) -> Result<HoldRequest, InputError> {
        Ok(HoldRequest {
            user_id: d.user_id,
            amount: Amount::new(d.amount)?,
            duration: billed_duration(&d.source_type, d.duration)?,
            source_type: d.source_type,
            source_id: Key::new("sourceId", d.source_id)?,
            note: d.note.map(Note::new).transpose()?,
            ttl: HoldTtl::new(d.expires_in_secs)?,
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&[
            "hold".into(),
            self.user_id.to_string(),
            self.amount.get().to_string(),
            self.source_type.as_str().into(),
            self.source_id.as_str().into(),
            opt(self.duration.map(|d| d.secs().to_bits())),
            opt(self.note.as_ref().map(|n| n.as_str())),
            self.ttl.secs().to_string(),
        ])
    }
}

#[derive(Debug, Clone)]
pub struct CaptureRequest {
    pub source_type: SourceType,
    pub source_id: Key,
    pub amount: Amount,
    /// The billed seconds (tts, video); omitted: the hold's.
    pub duration: Option<BilledDuration>,
    /// Omitted: the hold's note.
    pub note: Option<Note>,
    /// Who settles it; recorded on the consume row.
    pub by: Option<Author>,
}

impl CaptureRequest {
    pub fn new(
        source_type: SourceType,
        source_id: &str,
        amount: i64,
        duration: Option<f64>,
        note: Option<&str>,
    ) -> Result<CaptureRequest, InputError> {
        let duration = match duration {
            Some(d) if source_type.duration() != DurationRule::Refused => {
                Some(BilledDuration::new(d)?)
            }
            Some(_) => {
                return Err(invalid(format!(
                    "duration is not accepted for {source_type}: it is not billed by the second"
                )))
            }
            None => None,
        };
        Ok(CaptureRequest {
            source_type,
            source_id: Key::new("sourceId", source_id)?,
            amount: Amount::new(amount)?,
            duration,
            note: note.map(Note::new).transpose()?,
            by: None,
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&[
            "capture".into(),
            self.source_type.as_str().into(),
            self.source_id.as_str().into(),
            self.amount.get().to_string(),
            opt(self.duration.map(|d| d.secs().to_bits())),
            opt(self.note.as_ref().map(|n| n.as_str())),
        ])
    }
}

#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    pub source_type: SourceType,
    pub source_id: Key,
    pub reason: Option<Note>,
}

impl ReleaseRequest {
    pub fn new(
        source_type: SourceType,
        source_id: &str,
        reason: Option<&str>,
    ) -> Result<ReleaseRequest, InputError> {
        Ok(ReleaseRequest {
            source_type,
            source_id: Key::new("sourceId", source_id)?,
            reason: reason.map(Note::new).transpose()?,
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&[
            "release".into(),
            self.source_type.as_str().into(),
            self.source_id.as_str().into(),
            opt(self.reason.as_ref().map(|n| n.as_str())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(name: &str) -> SourceType {
        SourceType::default_named(name).unwrap()
    }

    fn draft(amount: i64, ttl: Option<i64>) -> HoldDraft<'static> {
        HoldDraft {
            user_id: 1,
            amount,
            source_type: st("video"),
            source_id: "job-1",
            duration: Some(12.0),
            note: None,
            expires_in_secs: ttl,
        }
    }

    #[test]
    fn hold_lifetimes_are_bounded_and_default_to_a_day() {
        assert!(HoldRequest::new(draft(10, Some(0))).is_err());
        assert!(HoldRequest::new(draft(10, Some(-5))).is_err());
        assert!(HoldRequest::new(draft(10, Some(MAX_HOLD_SECS + 1))).is_err());
        assert_eq!(
            HoldRequest::new(draft(10, Some(MAX_HOLD_SECS)))
                .map(|r| r.ttl.secs())
                .ok(),
            Some(MAX_HOLD_SECS)
        );
        assert_eq!(
            HoldRequest::new(draft(10, None)).map(|r| r.ttl.secs()).ok(),
            Some(DEFAULT_HOLD_SECS)
        );
        assert!(HoldRequest::new(draft(0, None)).is_err());
        assert!(HoldRequest::new(draft(i64::from(i32::MAX) + 1, None)).is_err());
    }

    #[test]
    fn a_capture_takes_a_duration_only_for_sources_billed_by_the_second() {
        assert!(CaptureRequest::new(st("video"), "j", 5, Some(3.0), None).is_ok());
        assert!(CaptureRequest::new(st("video"), "j", 5, None, None).is_ok());
        assert!(CaptureRequest::new(st("script"), "j", 5, Some(3.0), None).is_err());
        assert!(CaptureRequest::new(st("video"), "j", 0, None, None).is_err());
    }

    #[test]
    fn fingerprints_tell_the_three_operations_apart() {
        let h = HoldRequest::new(draft(10, None)).map(|r| r.fingerprint());
        let h2 = HoldRequest::new(draft(10, Some(60))).map(|r| r.fingerprint());
        assert_ne!(h.ok(), h2.ok());
        let c = CaptureRequest::new(st("video"), "job-1", 10, None, None).map(|r| r.fingerprint());
        let r = ReleaseRequest::new(st("video"), "job-1", None).map(|r| r.fingerprint());
        assert_ne!(c.ok(), r.ok());
    }
}

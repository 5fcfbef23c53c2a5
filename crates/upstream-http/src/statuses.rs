//! [`StatusSet`]: the answer statuses a transport treats as "try later". An error status in the
//! set is transient, any other is permanent; `429` is a rate limit whatever the set says, and a
//! `2xx` is a success, so the set may not hold one.

use std::fmt;

use reqwest::StatusCode;

/// The lowest and highest codes a status can have (the `http` crate's bounds).
const LOWEST: u16 = 100;
const HIGHEST: u16 = 999;

/// Words of the bitset: one bit for every code from 0 to [`HIGHEST`].
const WORDS: usize = (HIGHEST as usize) / 64 + 1;

/// A set of HTTP statuses, small and `Copy`. [`StatusSet::default`] is the set a transport
/// retries unless told otherwise: `408` and every `5xx`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StatusSet {
    bits: [u64; WORDS],
}

/// A code that cannot be in a [`StatusSet`]: fix the configured list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusSetError {
    /// The code is outside `100..=999`.
    #[error("{0} is not an HTTP status (100 to 999)")]
    NotAStatus(u16),
    /// The code is a `2xx`: such an answer is a success and is never retried.
    #[error("{0} is a success status; a 2xx answer is never retried")]
    Success(u16),
}

impl StatusSet {
    /// The set with no status: every error status but `429` is permanent.
    pub const fn empty() -> Self {
        Self { bits: [0; WORDS] }
    }

    /// The set of `codes`, refusing a code that is not a status or is a `2xx`.
    pub fn new(codes: impl IntoIterator<Item = u16>) -> Result<Self, StatusSetError> {
        let mut set = Self::empty();
        for code in codes {
            if !(LOWEST..=HIGHEST).contains(&code) {
                return Err(StatusSetError::NotAStatus(code));
            }
            if (200..300).contains(&code) {
                return Err(StatusSetError::Success(code));
            }
            set.insert(code);
        }
        Ok(set)
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: StatusCode) -> bool {
        let code = usize::from(status.as_u16());
        self.bits
            .get(code / 64)
            .is_some_and(|word| word & (1 << (code % 64)) != 0)
    }

    /// The codes in the set, lowest first.
    pub fn codes(&self) -> Vec<u16> {
        (LOWEST..=HIGHEST)
            .filter(|&code| StatusCode::from_u16(code).is_ok_and(|s| self.contains(s)))
            .collect()
    }

    fn insert(&mut self, code: u16) {
        let code = usize::from(code);
        if let Some(word) = self.bits.get_mut(code / 64) {
            *word |= 1 << (code % 64);
        }
    }
}

impl Default for StatusSet {
    /// `408` and `500` to `599`: a request that timed out at the upstream, and a server error.
    fn default() -> Self {
        let mut set = Self::empty();
        set.insert(408);
        (500..=599).for_each(|code| set.insert(code));
        set
    }
}

/// Runs of consecutive codes read as ranges: `{408, 500-599}`.
impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes = self.codes();
        let mut runs: Vec<(u16, u16)> = Vec::new();
        for code in codes {
            match runs.last_mut() {
                Some((_, end)) if *end + 1 == code => *end = code,
                _ => runs.push((code, code)),
            }
        }
        f.write_str("{")?;
        for (i, (start, end)) in runs.into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> StatusCode {
        match StatusCode::from_u16(code) {
            Ok(status) => status,
            Err(error) => panic!("{code}: {error}"),
        }
    }

    #[test]
    fn the_default_is_408_and_every_5xx() {
        let set = StatusSet::default();
        for code in [408, 500, 502, 503, 504, 520, 599] {
            assert!(set.contains(status(code)), "{code} missing");
        }
        for code in [100, 200, 301, 400, 404, 409, 429, 499, 600, 999] {
            assert!(!set.contains(status(code)), "{code} present");
        }
        let mut expected = vec![408];
        expected.extend(500..=599);
        assert_eq!(set.codes(), expected);
        assert_eq!(format!("{set:?}"), "{408, 500-599}");
    }

    #[test]
    fn a_configured_set_holds_exactly_its_codes() {
        let set = StatusSet::new([409, 503, 409, 999, 100]);
        assert_eq!(set.map(|s| s.codes()), Ok(vec![100, 409, 503, 999]));
        let set = StatusSet::new([409, 503]).unwrap_or_else(|_| StatusSet::empty());
        assert!(set.contains(status(409)));
        assert!(!set.contains(status(500)));
        assert_eq!(format!("{set:?}"), "{409, 503}");
        assert_eq!(StatusSet::new([]), Ok(StatusSet::empty()));
        assert_eq!(format!("{:?}", StatusSet::empty()), "{}");
    }

    #[test]
    fn success_codes_and_non_statuses_are_refused() {
        assert_eq!(
            StatusSet::new([503, 204]),
            Err(StatusSetError::Success(204))
        );
        assert_eq!(StatusSet::new([99]), Err(StatusSetError::NotAStatus(99)));
        assert_eq!(
            StatusSet::new([1000]),
            Err(StatusSetError::NotAStatus(1000))
        );
        assert_eq!(
            StatusSetError::Success(200).to_string(),
            "200 is a success status; a 2xx answer is never retried"
        );
        assert_eq!(
            StatusSetError::NotAStatus(0).to_string(),
            "0 is not an HTTP status (100 to 999)"
        );
    }
}

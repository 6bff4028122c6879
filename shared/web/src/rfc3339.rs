//! Timestamps in API bodies: RFC 3339, UTC, milliseconds (`2027-06-01T09:00:00.000Z`).

use chrono::{DateTime, SecondsFormat, Utc};

/// `t` as the API writes times.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_milliseconds_utc() {
        for s in [
            "2027-06-01T09:00:00.000Z",
            "2028-02-29T23:59:59.999Z",
            "1999-12-31T00:00:00.007Z",
            "0999-01-09T10:01:02.050Z",
        ] {
            let t: DateTime<Utc> = s.parse().unwrap();
            assert_eq!(format(t), s);
        }
    }
}

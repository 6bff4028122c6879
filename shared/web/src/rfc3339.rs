//! Timestamps in API bodies: RFC 3339, UTC, milliseconds (`2027-06-01T09:00:00.000Z`).

use chrono::{DateTime, SecondsFormat, Utc};

/// `t` as the API writes times.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Appends `t` as RFC 3339 UTC with milliseconds, e.g. `2027-06-01T09:00:00.000Z`: what
/// [`format`] writes for years 0 to 9999, without the formatting machinery.
pub fn write(out: &mut Vec<u8>, t: DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    let digit = |n: u32| b'0' + (n % 10) as u8;
    let year = t.year().clamp(0, 9999) as u32;
    let millis = (t.nanosecond() / 1_000_000).min(999); // a leap second shows as .999
    let (mo, d, h, mi, sec) = (t.month(), t.day(), t.hour(), t.minute(), t.second());
    out.extend_from_slice(&[
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        b'-',
        digit(mo / 10),
        digit(mo),
        b'-',
        digit(d / 10),
        digit(d),
        b'T',
        digit(h / 10),
        digit(h),
        b':',
        digit(mi / 10),
        digit(mi),
        b':',
        digit(sec / 10),
        digit(sec),
        b'.',
        digit(millis / 100),
        digit(millis / 10),
        digit(millis),
        b'Z',
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_timestamps_match_chrono() {
        for s in [
            "2027-06-01T09:00:00.000Z",
            "2028-02-29T23:59:59.999Z",
            "1999-12-31T00:00:00.007Z",
            "0999-01-09T10:01:02.050Z",
        ] {
            let t: DateTime<Utc> = s.parse().unwrap();
            let mut out = Vec::new();
            write(&mut out, t);
            assert_eq!(std::str::from_utf8(&out).unwrap(), format(t));
            assert_eq!(format(t), s);
        }
        let now = Utc::now();
        let mut out = Vec::new();
        write(&mut out, now);
        assert_eq!(std::str::from_utf8(&out).unwrap(), format(now));
    }
}

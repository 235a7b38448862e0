//! How times are shown to people: RFC 3339 in UTC, to the second.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[test]
    fn utc_seconds() {
        assert_eq!(
            super::rfc3339(datetime!(2030-01-01 2:00:00.5 +2)),
            "2030-01-01T00:00:00Z"
        );
    }
}

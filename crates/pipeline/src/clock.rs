//! Timestamps for documents, in one format everywhere.

/// The current UTC time as RFC 3339 (`2026-12-05T10:00:00.123Z`).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// How long ago an RFC 3339 timestamp (as [`now_rfc3339`] writes them) was; `None` when it
/// does not parse or lies in the future.
pub fn since_rfc3339(timestamp: &str) -> Option<std::time::Duration> {
    let then =
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
            .ok()?;
    (time::OffsetDateTime::now_utc() - then).try_into().ok()
}

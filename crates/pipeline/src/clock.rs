//! Timestamps for documents, in one format everywhere.

/// The current UTC time as RFC 3339 (`2026-12-05T10:00:00.123Z`).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

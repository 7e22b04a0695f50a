//! `notifications/<id>.json`: the claim that makes one result send one email.

use serde::{Deserialize, Serialize};

/// Written with a conditional write before sending, updated after; see the notifier handler for
/// the state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub state: NotificationState,
    #[serde(default)]
    pub recipients: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationState {
    /// Claimed; the send is under way (or the notifier died during it: never re-sent).
    Sending,
    Sent,
    /// SES refused it; Lambda's retry may claim it again.
    Failed,
    /// The call ended without SES's answer (a timeout): maybe sent, never re-sent.
    Unconfirmed,
    /// It cannot be sent as things are (no sender configured, an unreadable result, an
    /// address that does not parse): recorded with the reason, not retried.
    Undeliverable,
    NoRecipients,
}

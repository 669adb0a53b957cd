//! What a message's text may be: the one check for REST bodies, the AI routes and the
//! WebSocket `send` and `prompt` requests (each gives the location its errors name).

use crate::error::{ApiError, ApiResult, ValidationIssue};
use crate::extract::{check_text, Text};

/// Longest message accepted, in characters.
pub const MAX_CONTENT_CHARS: usize = 32_000;

/// Content must be non-empty, at most [`MAX_CONTENT_CHARS`], and free text
/// ([`Text::Free`]: no control character but tab, line feed and carriage return).
pub fn validate_content(issues: &mut Vec<ValidationIssue>, loc: &[&str], content: &str) {
    let loc: Vec<serde_json::Value> = loc.iter().map(|s| serde_json::json!(s)).collect();
    validate_content_at(issues, &loc, content);
}

/// [`validate_content`] at a location with index segments (`["body", "messages", 0, "content"]`).
pub fn validate_content_at(
    issues: &mut Vec<ValidationIssue>,
    loc: &[serde_json::Value],
    content: &str,
) {
    if content.is_empty() {
        issues.push(ValidationIssue::new(
            loc.to_vec(),
            "string_too_short",
            "String should have at least 1 character",
        ));
    }
    check_text(issues, loc, Some(content), MAX_CONTENT_CHARS, Text::Free);
}

/// [`validate_content`] as a result: a 422 (`validation`) naming `loc` when it fails.
pub fn check_content(loc: &[&str], content: &str) -> ApiResult<()> {
    let mut issues = Vec::new();
    validate_content(&mut issues, loc, content);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(issues))
    }
}

//! Building a prompt from a chat's history: the system prompt, then the newest messages that fit
//! the token budget, oldest first.

use super::{PromptMessage, Role};
use crate::db::models::Message;

/// Messages read from the database at most, before the budget trims them.
pub const HISTORY_LIMIT: i64 = 200;

/// Tokens a message costs beyond its text (role and separators), as OpenAI counts them.
const PER_MESSAGE_OVERHEAD: u32 = 4;

/// A conservative estimate of a text's tokens (about four characters each for English text).
pub fn estimate_tokens(text: &str) -> u32 {
    let chars = u32::try_from(text.chars().count()).unwrap_or(u32::MAX);
    chars.div_ceil(4)
}

/// Estimated tokens of a whole prompt.
pub fn estimate_prompt_tokens(messages: &[PromptMessage]) -> u32 {
    messages
        .iter()
        .map(|m| estimate_tokens(&m.content).saturating_add(PER_MESSAGE_OVERHEAD))
        .fold(0u32, u32::saturating_add)
}

/// The prompt for a reply: `system_prompt` (when not empty) and the newest messages of
/// `history` (ascending `seq`) whose estimated tokens fit in `budget` together with it. The
/// newest message is always included, whatever its size; empty messages are left out.
pub fn build(system_prompt: &str, history: &[Message], budget: u32) -> Vec<PromptMessage> {
    let mut left = budget;
    let system = (!system_prompt.is_empty()).then(|| PromptMessage {
        role: Role::System,
        content: system_prompt.to_string(),
    });
    if let Some(s) = &system {
        left = left.saturating_sub(estimate_tokens(&s.content) + PER_MESSAGE_OVERHEAD);
    }
    let mut chosen: Vec<PromptMessage> = Vec::new();
    for m in history.iter().rev() {
        if m.content.is_empty() {
            continue;
        }
        let cost = estimate_tokens(&m.content) + PER_MESSAGE_OVERHEAD;
        if cost > left && !chosen.is_empty() {
            break;
        }
        left = left.saturating_sub(cost);
        chosen.push(PromptMessage {
            role: match m.role.as_str() {
                "assistant" => Role::Assistant,
                "system" => Role::System,
                _ => Role::User,
            },
            content: m.content.clone(),
        });
    }
    chosen.reverse();
    system.into_iter().chain(chosen).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sql_types::DbUuid;
    use uuid::Uuid;

    fn msg(seq: i64, role: &str, content: &str) -> Message {
        Message {
            id: DbUuid(Uuid::new_v4()),
            chat_id: DbUuid(Uuid::nil()),
            seq,
            user_id: None,
            role: role.into(),
            is_from_ai: role == "assistant",
            content: content.into(),
            client_msg_id: None,
            finish_reason: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn the_newest_messages_that_fit_are_kept_oldest_first_after_the_system_prompt() {
        let history = vec![
            msg(1, "user", &"a".repeat(400)),
            msg(2, "assistant", &"b".repeat(40)),
            msg(3, "user", &"c".repeat(40)),
        ];
        // 10 (system) + 4, then 10 + 4 each for the last two; the 100-token first one is out.
        let p = build("s".repeat(40).as_str(), &history, 50);
        let roles: Vec<Role> = p.iter().map(|m| m.role).collect();
        assert_eq!(roles, vec![Role::System, Role::Assistant, Role::User]);
        assert!(p[2].content.starts_with('c'));
    }

    #[test]
    fn the_newest_message_is_kept_even_over_budget_and_empty_ones_are_skipped() {
        let history = vec![msg(1, "assistant", ""), msg(2, "user", &"x".repeat(4000))];
        let p = build("", &history, 10);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].role, Role::User);
    }
}

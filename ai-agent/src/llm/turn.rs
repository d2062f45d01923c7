//! One streamed model turn, accumulated: text, tool calls (fragments joined by index), the
//! finish reason and usage.

use std::collections::BTreeMap;

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    CreateChatCompletionStreamResponse, FinishReason, FunctionCall,
};
use serde::Serialize;

use super::LlmError;

/// Token usage of one or more model calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens, reasoning included.
    pub completion_tokens: u64,
    /// Total as the service counted it.
    pub total_tokens: u64,
}

impl Usage {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// A natural stop: the model is done.
    Stop,
    /// The completion-token limit was reached.
    Length,
    /// The model wants its tool calls run.
    ToolCalls,
    /// The service filtered the content.
    ContentFilter,
}

/// A complete tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCallRequest {
    /// The call id to answer with (generated as `call_<index>` if the service sent none).
    pub id: String,
    /// Tool (function) name; empty if the service sent none.
    pub name: String,
    /// Arguments as the model wrote them: a JSON string that may be invalid.
    pub arguments: String,
}

/// One model turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Text the model wrote (may be empty).
    pub text: String,
    /// Tool calls in index order.
    pub tool_calls: Vec<ToolCallRequest>,
    /// Why it stopped.
    pub finish: Finish,
    /// Usage, if the service sent it (`stream_options.include_usage`).
    pub usage: Option<Usage>,
}

impl Turn {
    /// The tool calls as async-openai message tool calls, to repeat them in the conversation.
    pub fn message_tool_calls(&self) -> Vec<ChatCompletionMessageToolCalls> {
        self.tool_calls
            .iter()
            .map(|c| {
                ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                    id: c.id.clone(),
                    function: FunctionCall {
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    },
                })
            })
            .collect()
    }
}

#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Joins the chunks of one streamed response.
#[derive(Debug, Default)]
pub(crate) struct TurnBuilder {
    text: String,
    calls: BTreeMap<u32, PartialCall>,
    finish: Option<Finish>,
    usage: Option<Usage>,
}

/// Most tool calls accepted in one turn; more is a protocol error (the run caps calls anyway).
const MAX_CALLS_PER_TURN: usize = 256;
/// Most bytes of text plus arguments accepted in one turn.
const MAX_TURN_BYTES: usize = 4 * 1024 * 1024;

impl TurnBuilder {
    pub(crate) fn push(
        &mut self,
        chunk: CreateChatCompletionStreamResponse,
    ) -> Result<(), LlmError> {
        if let Some(u) = chunk.usage {
            self.usage = Some(Usage {
                prompt_tokens: u64::from(u.prompt_tokens),
                completion_tokens: u64::from(u.completion_tokens),
                total_tokens: u64::from(u.total_tokens),
            });
        }
        // We ask for one choice; ignore any other.
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.content {
                self.text.push_str(&text);
            }
            if let Some(refusal) = choice.delta.refusal {
                self.text.push_str(&refusal);
            }
            for fragment in choice.delta.tool_calls.unwrap_or_default() {
                if !self.calls.contains_key(&fragment.index)
                    && self.calls.len() >= MAX_CALLS_PER_TURN
                {
                    return Err(LlmError::Protocol("too many tool calls in one turn".into()));
                }
                let call = self.calls.entry(fragment.index).or_default();
                if let Some(id) = fragment.id.filter(|id| !id.is_empty()) {
                    call.id = Some(id);
                }
                if let Some(function) = fragment.function {
                    if let Some(name) = function.name {
                        if call.name.is_empty() {
                            call.name = name;
                        } else if call.name != name {
                            call.name.push_str(&name);
                        }
                    }
                    if let Some(args) = function.arguments {
                        call.arguments.push_str(&args);
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(match reason {
                    FinishReason::Stop => Finish::Stop,
                    FinishReason::Length => Finish::Length,
                    FinishReason::ToolCalls | FinishReason::FunctionCall => Finish::ToolCalls,
                    FinishReason::ContentFilter => Finish::ContentFilter,
                });
            }
        }
        let size = self.text.len()
            + self
                .calls
                .values()
                .map(|c| c.arguments.len() + c.name.len())
                .sum::<usize>();
        if size > MAX_TURN_BYTES {
            return Err(LlmError::Protocol("the response is too large".into()));
        }
        Ok(())
    }

    /// The turn, or a protocol error if the model never finished (the stream was cut).
    pub(crate) fn finish(self) -> Result<Turn, LlmError> {
        let Some(finish) = self.finish else {
            return Err(LlmError::Protocol(
                "the stream ended before the model finished (no finish_reason, no [DONE])".into(),
            ));
        };
        let tool_calls = self
            .calls
            .into_iter()
            .map(|(index, c)| ToolCallRequest {
                id: c.id.unwrap_or_else(|| format!("call_{index}")),
                name: c.name,
                arguments: c.arguments,
            })
            .collect();
        Ok(Turn {
            text: self.text,
            tool_calls,
            finish,
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::needless_pass_by_value)]
    use super::*;

    fn chunk(v: serde_json::Value) -> CreateChatCompletionStreamResponse {
        let mut base = serde_json::json!({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"
        });
        for (k, val) in v.as_object().unwrap() {
            base[k] = val.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn joins_fragments_by_index_and_orders_calls() {
        let mut b = TurnBuilder::default();
        for c in [
            serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"b","type":"function","function":{"name":"moveObject","arguments":"{\"id\""}}]}}]}),
            serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"deleteObject","arguments":"{}"}}]}}]}),
            serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":":\"n1\"}"}}]}}]}),
            serde_json::json!({"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"tool_calls"}]}),
            serde_json::json!({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}),
        ] {
            b.push(chunk(c)).unwrap();
        }
        let t = b.finish().unwrap();
        assert_eq!(t.text, "ok");
        assert_eq!(t.finish, Finish::ToolCalls);
        assert_eq!(t.usage.unwrap().total_tokens, 7);
        let names: Vec<_> = t.tool_calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["deleteObject", "moveObject"]);
        assert_eq!(t.tool_calls[1].arguments, "{\"id\":\"n1\"}");
    }

    #[test]
    fn no_finish_reason_is_a_protocol_error() {
        let mut b = TurnBuilder::default();
        b.push(chunk(
            serde_json::json!({"choices":[{"index":0,"delta":{"content":"half"}}]}),
        ))
        .unwrap();
        assert!(matches!(b.finish(), Err(LlmError::Protocol(_))));
    }
}

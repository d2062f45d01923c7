//! What a close code from the server means for the client (`PROTOCOL.md`, "Close codes").

use serde::Serialize;

/// What to do after the socket closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterClose {
    /// Reconnect after a backoff delay: a transient failure (network, restart, overload,
    /// a failed commit; the server resends nothing, the client's step 2 resends what it lacks).
    Reconnect,
    /// Fetch a fresh token from the callback, then reconnect (4401).
    RefreshToken,
    /// A permanent refusal: retrying cannot help, so the client stops and says why.
    Stop(Refused),
}

/// Why the server refused the client for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refused {
    /// 4400: the client sent something that is not the protocol (a bug in the client).
    BadMessage,
    /// 4401 again right after a fresh token: the token callback cannot produce a valid token.
    Unauthorized,
    /// 4403: the token does not cover this board.
    Forbidden,
    /// 4404: the board was deleted, or does not exist for a read-only token.
    NotFound,
    /// 4413: a message or the board is over the server's size limits.
    TooLarge,
    /// 4422: the server could not apply an update this client sent.
    BadUpdate,
}

/// Classifies a close code. Codes not in the table (1000, 1001, 1006, 1008, 1011, 1012, 1013,
/// 4503 and anything new) reconnect with backoff, as y-websocket does outside 4400-4499.
pub fn after_close(code: u16) -> AfterClose {
    match code {
        4401 => AfterClose::RefreshToken,
        4403 => AfterClose::Stop(Refused::Forbidden),
        4404 => AfterClose::Stop(Refused::NotFound),
        4413 => AfterClose::Stop(Refused::TooLarge),
        4422 => AfterClose::Stop(Refused::BadUpdate),
        // 4400, and any unknown 44xx: a refusal y-websocket would not retry either.
        4400..=4499 => AfterClose::Stop(Refused::BadMessage),
        _ => AfterClose::Reconnect,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn follows_the_protocol_table() {
        for code in [1000, 1001, 1006, 1008, 1011, 1012, 1013, 4503] {
            assert_eq!(after_close(code), AfterClose::Reconnect, "{code}");
        }
        assert_eq!(after_close(4401), AfterClose::RefreshToken);
        assert_eq!(after_close(4404), AfterClose::Stop(Refused::NotFound));
        assert_eq!(after_close(4403), AfterClose::Stop(Refused::Forbidden));
        assert_eq!(after_close(4413), AfterClose::Stop(Refused::TooLarge));
        assert_eq!(after_close(4422), AfterClose::Stop(Refused::BadUpdate));
        assert_eq!(after_close(4400), AfterClose::Stop(Refused::BadMessage));
        assert_eq!(after_close(4499), AfterClose::Stop(Refused::BadMessage));
    }

    /// Every 4xxx code PROTOCOL.md lists is classified deliberately, not by the fallback.
    #[test]
    fn every_code_in_protocol_md_is_known() {
        let doc = include_str!("../../PROTOCOL.md");
        let codes: Vec<u16> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| "))
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .collect();
        assert!(codes.len() >= 10, "close code table not found");
        for code in codes {
            let known = matches!(
                code,
                1008 | 1011 | 1012 | 1013 | 4400 | 4401 | 4403 | 4404 | 4413 | 4422 | 4503
            );
            assert!(
                known,
                "PROTOCOL.md lists close code {code}; classify it in close.rs"
            );
        }
    }
}

//! The refusals against `PROTOCOL.md`, read at test time: its close-code table lists every
//! code and every reason a client can see, and nothing else; its count statement names every
//! kind a refusal is counted under.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::*;

fn protocol_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The `## Close codes` section: from its heading to the next one.
fn close_codes_section(doc: &str) -> &str {
    let start = doc
        .find("\n## Close codes\n")
        .expect("PROTOCOL.md has a `## Close codes` section");
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

/// The table's rows: code -> the meaning column.
fn close_code_table(section: &str) -> BTreeMap<u16, String> {
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(code) = cells[1].parse::<u16>() else {
            continue;
        };
        let previous = rows.insert(code, cells[2].to_owned());
        assert!(previous.is_none(), "code {code} has two rows");
    }
    assert!(!rows.is_empty(), "no close-code table in:\n{section}");
    rows
}

/// What a text puts in backticks, except command-line flags (`--max-message-bytes`).
fn quoted(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|q| !q.starts_with("--"))
        .collect()
}

#[test]
fn every_refusal_is_in_the_table_with_its_code_and_reason() {
    let doc = protocol_md();
    let table = close_code_table(close_codes_section(&doc));
    for refusal in Refusal::ALL {
        let Some(meaning) = table.get(&refusal.close_code()) else {
            panic!(
                "{refusal:?} closes with {}, which PROTOCOL.md's table lacks",
                refusal.close_code()
            );
        };
        assert!(
            quoted(meaning).contains(&refusal.reason()),
            "{refusal:?}: PROTOCOL.md's row for {} does not give its reason `{}`: {meaning}",
            refusal.close_code(),
            refusal.reason()
        );
    }
}

#[test]
fn every_code_and_reason_in_the_table_is_a_refusal() {
    let doc = protocol_md();
    let table = close_code_table(close_codes_section(&doc));
    for (code, meaning) in &table {
        let refusals: Vec<&Refusal> = Refusal::ALL
            .iter()
            .filter(|r| r.close_code() == *code)
            .collect();
        assert!(!refusals.is_empty(), "no refusal closes with {code}");
        for reason in quoted(meaning) {
            assert!(
                refusals.iter().any(|r| r.reason() == reason),
                "PROTOCOL.md gives {code} the reason `{reason}`, which no refusal sends"
            );
        }
    }
}

#[test]
fn every_kind_a_refusal_counts_under_is_documented_and_registered() {
    let doc = protocol_md();
    let section = close_codes_section(&doc);
    let statement = &section[section
        .find("`sync_errors_total")
        .expect("the close codes section says how refusals are counted")..];
    let documented = quoted(statement);
    for refusal in Refusal::ALL {
        let Some(kind) = refusal.kind() else {
            continue;
        };
        assert!(
            kind::ALL.contains(&kind),
            "{kind} is not in metrics::kind::ALL"
        );
        assert!(
            documented.contains(&kind),
            "{refusal:?} is counted as `{kind}`, which PROTOCOL.md does not name"
        );
    }
    for kind in kind::ALL {
        assert!(
            documented.contains(kind),
            "PROTOCOL.md does not name the error kind `{kind}`"
        );
    }
}

#[test]
fn each_close_is_one_code_and_reason_pair() {
    let mut seen = BTreeMap::new();
    for refusal in Refusal::ALL {
        let pair = (refusal.close_code(), refusal.reason());
        if let Some(other) = seen.insert(pair, refusal) {
            // The only pair two refusals share: who deleted the board is all that differs.
            let mut both = [format!("{other:?}"), format!("{refusal:?}")];
            both.sort();
            assert_eq!(both, ["BoardDeleted", "Deleted"], "{pair:?}");
        }
        // A close frame's reason must fit its 125-byte payload with the code.
        assert!(refusal.reason().len() <= 123, "{refusal:?}");
    }
    assert_eq!(seen.len() + 1, Refusal::ALL.len());
}

#[test]
fn counting_a_refusal_counts_its_kind_once() {
    let metrics = Metrics::new();
    assert_eq!(
        Refusal::TokenExpired.count(&metrics),
        CloseReason {
            code: 4401,
            reason: "token expired",
        }
    );
    assert_eq!(Refusal::ServerRestart.count(&metrics).code, 1012);
    let text = metrics.render();
    assert!(
        text.contains(r#"sync_errors_total{kind="unauthorized"} 1"#),
        "{text}"
    );
}

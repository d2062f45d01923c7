//! Input hygiene for board text shown to the model.
//!
//! Removed: control characters other than newline and tab, zero-width and bidi controls
//! (U+200B–U+200F, U+202A–U+202E, U+2060–U+2064, U+2066–U+2069, U+FEFF), variation-less
//! invisible separators (U+2028, U+2029 become newlines), and Unicode tag characters
//! (U+E0000–U+E007F, used to smuggle invisible instructions). Then truncated to a number of
//! characters, reporting whether it was.

/// `s` cleaned and cut to at most `max_chars` characters; `true` if anything was cut.
pub(crate) fn clean_text(s: &str, max_chars: usize) -> (String, bool) {
    let mut out = String::with_capacity(s.len().min(max_chars * 4));
    let mut count = 0;
    for c in s.chars() {
        let c = match c {
            '\u{2028}' | '\u{2029}' => '\n',
            c if is_hidden(c) => continue,
            c => c,
        };
        if count == max_chars {
            return (out, true);
        }
        out.push(c);
        count += 1;
    }
    (out, false)
}

/// A short single-line value (a colour, a kind name): cleaned, newlines removed, cut.
pub(crate) fn clean_word(s: &str, max_chars: usize) -> String {
    let (cleaned, _) = clean_text(s, max_chars);
    cleaned.replace(['\n', '\t'], " ")
}

fn is_hidden(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c,
            '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{E0000}'..='\u{E007F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hidden_characters_and_truncates() {
        let s = "a\u{200B}b\u{202E}c\u{E0041}\u{E0042}d\u{7}\ne\u{FEFF}";
        assert_eq!(clean_text(s, 100), ("abcd\ne".to_string(), false));
        assert_eq!(clean_text("héllo wörld", 5), ("héllo".to_string(), true));
        assert_eq!(clean_text("hello", 5), ("hello".to_string(), false));
        assert_eq!(clean_word("a\nb", 10), "a b");
    }
}

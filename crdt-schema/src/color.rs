//! CSS colour validation (a documented subset of CSS Color 4).
//!
//! Accepted, case-insensitively, with no surrounding whitespace, at most
//! [`crate::limits::MAX_COLOR_LEN`] characters:
//! - hex: `#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`;
//! - `rgb()`/`rgba()`: three channels, each a number 0-255 or a percentage 0-100%, all of the
//!   same form, plus an optional alpha (number 0-1 or percentage 0-100%); either the legacy comma
//!   syntax `rgb(255, 0, 0)` / `rgba(255, 0, 0, 0.5)` or the space syntax `rgb(255 0 0 / 50%)`;
//! - `hsl()`/`hsla()`: hue (number, optionally with `deg`), saturation and lightness as
//!   percentages 0-100% (the space syntax also accepts plain numbers 0-100), optional alpha, in
//!   either syntax;
//! - the 148 CSS named colours, plus `transparent`.
//!
//! Not accepted: `currentcolor`, system colours, `none`, `calc()`, `hwb()`, `lab()`, `lch()`,
//! `oklab()`, `oklch()`, `color()`, and other angle units.

/// Whether `s` is an accepted CSS colour (see the module docs).
pub fn is_valid_color(s: &str) -> bool {
    if s.is_empty() || s.len() > crate::limits::MAX_COLOR_LEN || s.trim() != s {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix('#') {
        return matches!(hex.len(), 3 | 4 | 6 | 8) && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    if let Some(args) = function_args(&lower, &["rgb", "rgba"]) {
        return valid_rgb(args);
    }
    if let Some(args) = function_args(&lower, &["hsl", "hsla"]) {
        return valid_hsl(args);
    }
    NAMED.binary_search(&lower.as_str()).is_ok()
}

/// The text between the parentheses of `name(...)`, for any of `names`.
fn function_args<'a>(s: &'a str, names: &[&str]) -> Option<&'a str> {
    let (name, rest) = s.split_once('(')?;
    if !names.contains(&name) {
        return None;
    }
    rest.strip_suffix(')')
}

/// Channels and alpha, split per the legacy (comma) or modern (space and slash) syntax.
/// Returns (channels, alpha, legacy).
fn split_args(args: &str) -> Option<(Vec<&str>, Option<&str>, bool)> {
    if args.contains(',') {
        let parts: Vec<&str> = args.split(',').map(str::trim).collect();
        return match parts.len() {
            3 => Some((parts, None, true)),
            4 => Some((parts[..3].to_vec(), Some(parts[3]), true)),
            _ => None,
        };
    }
    let (main, alpha) = match args.split_once('/') {
        Some((main, alpha)) => (main, Some(alpha.trim())),
        None => (args, None),
    };
    let parts: Vec<&str> = main.split_whitespace().collect();
    (parts.len() == 3).then_some((parts, alpha, false))
}

#[derive(Clone, Copy, PartialEq)]
enum Form {
    Number(f64),
    Percent(f64),
}

fn parse_number(s: &str) -> Option<f64> {
    // Plain decimal numbers only: no exponents, no "inf"/"nan", no hex.
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let valid = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && body.bytes().filter(|&b| b == b'.').count() <= 1
        && body.bytes().any(|b| b.is_ascii_digit());
    if !valid {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn parse_form(s: &str) -> Option<Form> {
    match s.strip_suffix('%') {
        Some(p) => parse_number(p).map(Form::Percent),
        None => parse_number(s).map(Form::Number),
    }
}

fn valid_alpha(alpha: Option<&str>) -> bool {
    match alpha.map(parse_form) {
        None => true,
        Some(Some(Form::Number(v))) => (0.0..=1.0).contains(&v),
        Some(Some(Form::Percent(v))) => (0.0..=100.0).contains(&v),
        Some(None) => false,
    }
}

fn valid_rgb(args: &str) -> bool {
    let Some((channels, alpha, _)) = split_args(args) else {
        return false;
    };
    let forms: Option<Vec<Form>> = channels.iter().map(|c| parse_form(c)).collect();
    let Some(forms) = forms else {
        return false;
    };
    let all_numbers = forms
        .iter()
        .all(|f| matches!(f, Form::Number(v) if (0.0..=255.0).contains(v)));
    let all_percents = forms
        .iter()
        .all(|f| matches!(f, Form::Percent(v) if (0.0..=100.0).contains(v)));
    (all_numbers || all_percents) && valid_alpha(alpha)
}

fn valid_hsl(args: &str) -> bool {
    let Some((channels, alpha, legacy)) = split_args(args) else {
        return false;
    };
    let [hue, sat, light] = channels.as_slice() else {
        return false;
    };
    let hue_ok = parse_number(hue.strip_suffix("deg").unwrap_or(hue)).is_some();
    let pct = |s: &str| match parse_form(s) {
        Some(Form::Percent(v)) => (0.0..=100.0).contains(&v),
        Some(Form::Number(v)) => !legacy && (0.0..=100.0).contains(&v),
        None => false,
    };
    hue_ok && pct(sat) && pct(light) && valid_alpha(alpha)
}

/// CSS named colours (CSS Color 4) plus `transparent`, sorted for binary search.
const NAMED: &[&str] = &[
    "aliceblue",
    "antiquewhite",
    "aqua",
    "aquamarine",
    "azure",
    "beige",
    "bisque",
    "black",
    "blanchedalmond",
    "blue",
    "blueviolet",
    "brown",
    "burlywood",
    "cadetblue",
    "chartreuse",
    "chocolate",
    "coral",
    "cornflowerblue",
    "cornsilk",
    "crimson",
    "cyan",
    "darkblue",
    "darkcyan",
    "darkgoldenrod",
    "darkgray",
    "darkgreen",
    "darkgrey",
    "darkkhaki",
    "darkmagenta",
    "darkolivegreen",
    "darkorange",
    "darkorchid",
    "darkred",
    "darksalmon",
    "darkseagreen",
    "darkslateblue",
    "darkslategray",
    "darkslategrey",
    "darkturquoise",
    "darkviolet",
    "deeppink",
    "deepskyblue",
    "dimgray",
    "dimgrey",
    "dodgerblue",
    "firebrick",
    "floralwhite",
    "forestgreen",
    "fuchsia",
    "gainsboro",
    "ghostwhite",
    "gold",
    "goldenrod",
    "gray",
    "green",
    "greenyellow",
    "grey",
    "honeydew",
    "hotpink",
    "indianred",
    "indigo",
    "ivory",
    "khaki",
    "lavender",
    "lavenderblush",
    "lawngreen",
    "lemonchiffon",
    "lightblue",
    "lightcoral",
    "lightcyan",
    "lightgoldenrodyellow",
    "lightgray",
    "lightgreen",
    "lightgrey",
    "lightpink",
    "lightsalmon",
    "lightseagreen",
    "lightskyblue",
    "lightslategray",
    "lightslategrey",
    "lightsteelblue",
    "lightyellow",
    "lime",
    "limegreen",
    "linen",
    "magenta",
    "maroon",
    "mediumaquamarine",
    "mediumblue",
    "mediumorchid",
    "mediumpurple",
    "mediumseagreen",
    "mediumslateblue",
    "mediumspringgreen",
    "mediumturquoise",
    "mediumvioletred",
    "midnightblue",
    "mintcream",
    "mistyrose",
    "moccasin",
    "navajowhite",
    "navy",
    "oldlace",
    "olive",
    "olivedrab",
    "orange",
    "orangered",
    "orchid",
    "palegoldenrod",
    "palegreen",
    "paleturquoise",
    "palevioletred",
    "papayawhip",
    "peachpuff",
    "peru",
    "pink",
    "plum",
    "powderblue",
    "purple",
    "rebeccapurple",
    "red",
    "rosybrown",
    "royalblue",
    "saddlebrown",
    "salmon",
    "sandybrown",
    "seagreen",
    "seashell",
    "sienna",
    "silver",
    "skyblue",
    "slateblue",
    "slategray",
    "slategrey",
    "snow",
    "springgreen",
    "steelblue",
    "tan",
    "teal",
    "thistle",
    "tomato",
    "transparent",
    "turquoise",
    "violet",
    "wheat",
    "white",
    "whitesmoke",
    "yellow",
    "yellowgreen",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_list_is_sorted_and_complete() {
        assert!(NAMED.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(NAMED.len(), 149); // 148 named colours + transparent
    }

    #[test]
    fn accepts() {
        for c in [
            "#fff",
            "#FFF",
            "#ffff",
            "#ffd700",
            "#ffd700cc",
            "red",
            "Red",
            "rebeccapurple",
            "transparent",
            "rgb(255, 0, 0)",
            "rgba(255,0,0,0.5)",
            "rgb(100%, 0%, 0%)",
            "rgb(255 0 0)",
            "rgb(255 0 0 / 50%)",
            "rgb(255 0 0 / .5)",
            "RGB(1 2 3)",
            "hsl(120 50% 50%)",
            "hsl(120deg, 50%, 50%)",
            "hsla(120, 50%, 50%, 0.3)",
            "hsl(-30 50 50 / 1)",
            "hsl(120.5 100% 0%)",
        ] {
            assert!(is_valid_color(c), "{c}");
        }
    }

    #[test]
    fn rejects() {
        for c in [
            "",
            " red",
            "red ",
            "#ff",
            "#fffff",
            "#ggg",
            "#ffd700cc00",
            "notacolor",
            "currentcolor",
            "rgb(256, 0, 0)",
            "rgb(255, 0)",
            "rgb(255, 0, 0, 0, 0)",
            "rgb(255, 0%, 0)",
            "rgb(255 0 0 / 2)",
            "rgb(nan 0 0)",
            "rgb(1e3 0 0)",
            "rgb(inf, 0, 0)",
            "rgb(255, 0, 0",
            "hsl(120, 50, 50)",
            "hsl(120 150% 50%)",
            "hsl(x 50% 50%)",
            "hwb(0 0% 0%)",
            "url(javascript:alert(1))",
            "red;",
            &"#fff".repeat(30),
        ] {
            assert!(!is_valid_color(c), "{c}");
        }
    }
}

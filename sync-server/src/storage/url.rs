//! Choosing a backend from a database URL.

use std::sync::Arc;
use std::time::Duration;

use super::memory::MemoryStore;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{Storage, StorageError};

/// Tuning shared by the SQL backends.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Most connections one pool opens: PostgreSQL's general pool (appends have
    /// [`APPEND_CONNECTIONS`](super::postgres::APPEND_CONNECTIONS) more of their own), SQLite's
    /// read pool.
    pub max_connections: u32,
    /// How long SQLite waits for another process's lock before failing with `SQLITE_BUSY`.
    pub busy_timeout: Duration,
    /// How long to wait for a connection from the pool.
    pub acquire_timeout: Duration,
    /// SQLite: how long without appends before the WAL is checkpointed and truncated (only if
    /// something was written since the last time).
    pub checkpoint_idle: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
            checkpoint_idle: Duration::from_secs(5),
        }
    }
}

/// Opens the store a database URL names, running migrations:
///
/// - `sqlite://PATH` or `sqlite:PATH`: a SQLite file, created with its directory if missing;
/// - `postgres://...` or `postgresql://...`: a PostgreSQL database;
/// - `memory:`: process memory, gone on exit.
pub async fn open(url: &str, options: &StorageOptions) -> Result<Arc<dyn Storage>, StorageError> {
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    match scheme {
        "sqlite" => Ok(Arc::new(SqliteStore::open(url, options).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(PostgresStore::connect(url, options).await?)),
        "memory" => Ok(Arc::new(MemoryStore::new())),
        _ => Err(StorageError::InvalidUrl(format!(
            "unsupported scheme {scheme:?}; expected sqlite://PATH, postgres://... or memory:"
        ))),
    }
}

/// A database URL. It dereferences to the URL itself (to open it), but its `Debug` shows it
/// [`redact`]ed, so a configuration printed with `{:?}` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, secrets included: to open the database, never to log.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&redact(&self.0))
            .finish()
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(url.into())
    }
}

/// The database URL with every secret in it replaced by `***`, for logs and messages: the
/// password of the user info, and the value of every query parameter whose name suggests a
/// secret (`password`, `sslpassword`, `passfile`, `token`, `secret`, `...key`: see
/// [`is_secret_name`]); everything else stays readable. A URL that does not parse because its
/// password holds an unescaped `/`, `?`, `#` or `@` is redacted too (its parse error is where
/// it would show). libpq-style `key=value` strings have their secret values hidden the same way.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", redact_after_scheme(rest)),
        None if url.contains('=') => redact_key_values(url),
        None => url.to_owned(),
    }
}

/// Words that make a parameter's value a secret, matched within its lowercased name.
const SECRET_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
];

/// Whether a parameter named `name` (percent-decoded) carries a secret.
pub(super) fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| name.contains(word))
}

/// `user:password@host/path?query` with the password and secret parameters hidden.
fn redact_after_scheme(rest: &str) -> String {
    // The authority ends at the first `/`, `?` or `#`, as URL parsers read it; its last `@`
    // ends the user info.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@').or_else(|| {
        // No user info by that reading, yet an `@` further on and an authority that is not
        // `host[:port]`: a password with an unescaped delimiter. Take everything up to the
        // last `@` as user info rather than show part of it.
        rest.rfind('@')
            .filter(|_| !is_host_list(&rest[..authority_end]))
    });
    let mut out = String::with_capacity(rest.len());
    let hosts_and_more = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    out.push_str(&redact_query(hosts_and_more));
    out
}

/// Whether `authority` reads as `host[:port]` items separated by commas (libpq's multi-host
/// form), IPv6 literals in brackets.
fn is_host_list(authority: &str) -> bool {
    let is_port = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    authority.split(',').all(|item| {
        if let Some(bracketed) = item.strip_prefix('[') {
            return bracketed.split_once(']').is_some_and(|(_, after)| {
                after.is_empty() || after.strip_prefix(':').is_some_and(is_port)
            });
        }
        match item.split_once(':') {
            Some((_, port)) => is_port(port),
            None => true,
        }
    })
}

/// `path?query#fragment` with the values of secret query parameters hidden.
fn redact_query(s: &str) -> String {
    let Some((before, after)) = s.split_once('?') else {
        return s.to_owned();
    };
    let (query, fragment) = match after.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (after, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(&percent_decode(name)) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{before}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Decodes a query-string component as URL parsers do (`+` is a space, `%XX` a byte; anything
/// else, including a malformed escape, stays as it is).
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A libpq connection string (`host=h password='x y' dbname=d`) with secret values hidden.
fn redact_key_values(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let copy_spaces = |i: &mut usize, out: &mut String| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            out.push(chars[*i]);
            *i += 1;
        }
    };
    while i < chars.len() {
        copy_spaces(&mut i, &mut out);
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        out.push_str(&key);
        copy_spaces(&mut i, &mut out);
        if chars.get(i) != Some(&'=') {
            continue;
        }
        out.push('=');
        i += 1;
        copy_spaces(&mut i, &mut out);
        let start = i;
        if chars.get(i) == Some(&'\'') {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                // A backslash escapes the next character, a quote included.
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(chars.len());
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                i += 1;
            }
        }
        if is_secret_name(&key) {
            out.push_str("***");
        } else {
            out.extend(&chars[start..i.min(chars.len())]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("postgres://app:s3cr%40t@db:5432/boards?sslmode=require"),
            "postgres://app:***@db:5432/boards?sslmode=require"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redact("sqlite://./data/boards.db"),
            "sqlite://./data/boards.db"
        );
        assert_eq!(redact("memory:"), "memory:");
    }

    #[test]
    fn redact_hides_secrets_in_the_query_string() {
        for (url, expected) in [
            (
                "postgres://u@h/db?password=secret",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgres://u@h/db?sslmode=require&sslpassword=s2&application_name=app",
                "postgres://u@h/db?sslmode=require&sslpassword=***&application_name=app",
            ),
            (
                "postgres://u:pw@h/db?PassWord=x&token=t&api_key=k&client_secret=c&passfile=/p",
                "postgres://u:***@h/db?PassWord=***&token=***&api_key=***&client_secret=***&passfile=***",
            ),
            // A key spelled with percent-escapes is still a password.
            (
                "postgres://u@h/db?pass%77ord=x",
                "postgres://u@h/db?pass%77ord=***",
            ),
            (
                "postgres://h/db?options=-c%20search_path%3Dx&sslmode=disable",
                "postgres://h/db?options=-c%20search_path%3Dx&sslmode=disable",
            ),
            ("postgres://[::1]:5432/db", "postgres://[::1]:5432/db"),
            (
                "postgres://h1:5432,h2:5433/db?user=u",
                "postgres://h1:5432,h2:5433/db?user=u",
            ),
        ] {
            assert_eq!(redact(url), expected, "{url}");
        }
    }

    #[test]
    fn redact_hides_passwords_of_malformed_urls() {
        // A password with an unescaped `/`, `?`, `#` or `@`: the URL does not parse, and the
        // error that says so must not show it either.
        for (url, secret) in [
            ("postgres://u:pa/ss@h/db", "pa/ss"),
            ("postgres://u:pa?ss@h/db", "pa?ss"),
            ("postgres://u:pa#ss@h/db", "pa#ss"),
            ("postgres://u:p@ss@h/db", "p@ss"),
            ("postgres://u:hunter2@h:notaport/db", "hunter2"),
        ] {
            let shown = redact(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
            assert!(!shown.contains("ss@"), "{url} -> {shown}");
            assert!(shown.starts_with("postgres://u"), "{url} -> {shown}");
        }
    }

    #[test]
    fn redact_hides_passwords_of_key_value_strings() {
        assert_eq!(
            redact("host=h user=u password=secret dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(
            redact("host=h password='a b\\' c' sslpassword = x dbname=d"),
            "host=h password=*** sslpassword = *** dbname=d"
        );
    }
}

//! Tokens: JWTs signed with HMAC-SHA256 (`HS256`) using the server's secret.
//!
//! Claims: `sub` (who, optional), `board` (a board id or `*`), `role` (`read`, `write`,
//! `admin`), `iat` and `exp` (seconds since the epoch; `exp` is required and checked against
//! the server's clock with no leeway). Any JWT library can mint them, so an application's own
//! backend can issue tokens for its users without calling the server.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Grant, Role, Scope, unix_now};

/// Shortest secret accepted, in bytes: HS256 wants at least as many as the hash has.
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest lifetime a token may be minted with.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// The latest `exp` a token may carry: 9999-12-31T23:59:59Z, in seconds since the epoch.
///
/// `exp` is a `u64` on the wire, but the server computes with it: `SystemTime` overflows (and
/// panics on `+`) past `i64::MAX` seconds, and a WebSocket's expiry timer adds the time left to
/// `Instant::now()`. A token claiming a later expiry is refused
/// ([`TokenError::ExpiryOutOfRange`]), whoever signed it; the bound is far beyond any real
/// token's lifetime and keeps every such sum small.
pub const MAX_EXP: u64 = 253_402_300_799;

/// The signing secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes, redacted>)", self.0.len())
    }
}

/// Why a secret is refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Too short to sign safely.
    #[error(
        "the auth secret is {0} bytes; at least {MIN_SECRET_BYTES} are required (e.g. `openssl rand -hex 32`)"
    )]
    TooShort(usize),
    /// The secret file could not be read.
    #[error("cannot read the auth secret file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Secret {
    /// A secret from its bytes; surrounding whitespace (a file's trailing newline) is dropped.
    pub fn new(raw: &[u8]) -> Result<Self, SecretError> {
        let trimmed = raw.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort(trimmed.len()));
        }
        Ok(Self(trimmed.to_vec()))
    }

    /// A secret read from a file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, SecretError> {
        let raw = std::fs::read(path).map_err(|source| SecretError::File {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(&raw)
    }
}

/// Why a token is refused. The messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Its `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// It was not signed with this server's secret (or was altered).
    #[error("the token's signature is not valid")]
    BadSignature,
    /// It is not a token of this server's shape.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// Its `exp` is past [`MAX_EXP`] (the year 9999): no clock of the server can hold it.
    #[error("the token's `exp` is past the year 9999")]
    ExpiryOutOfRange,
    /// A lifetime outside what the server mints.
    #[error("a token's lifetime must be between 1 second and {} days", MAX_TTL.as_secs() / 86400)]
    BadTtl,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    board: String,
    role: Role,
    exp: u64,
    #[serde(default)]
    iat: u64,
}

/// What a new token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Who it is for (recorded as the author of versions and assistant runs).
    pub user: Option<String>,
    /// The boards it covers.
    pub scope: Scope,
    /// What it allows.
    pub role: Role,
    /// How long it is valid.
    pub ttl: Duration,
}

/// A minted token and when it expires.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The token. Hand it to the client; never log it.
    pub token: String,
    /// Seconds since the epoch at which it expires.
    pub expires_at: u64,
    /// Whether `expires_at` was brought forward from the lifetime asked for to a limit
    /// (see [`Keys::mint_until`]).
    pub clamped: bool,
}

/// The keys derived from the secret, and the validation rules.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    /// Keys for `secret`.
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            encoding: EncodingKey::from_secret(&secret.0),
            decoding: DecodingKey::from_secret(&secret.0),
            validation,
        }
    }

    /// Mints a token.
    pub fn mint(&self, request: &TokenRequest) -> Result<Minted, TokenError> {
        self.mint_until(request, None)
    }

    /// Mints a token that expires no later than `not_after` (the expiry of the token asking
    /// for it): a lifetime reaching past it is cut short, and [`Minted::clamped`] says so.
    /// [`TokenError::Expired`] if `not_after` has passed.
    pub fn mint_until(
        &self,
        request: &TokenRequest,
        not_after: Option<SystemTime>,
    ) -> Result<Minted, TokenError> {
        if request.ttl.is_zero() || request.ttl > MAX_TTL {
            return Err(TokenError::BadTtl);
        }
        let now = unix_now();
        let mut exp = now + request.ttl.as_secs().max(1);
        let mut clamped = false;
        if let Some(limit) = not_after {
            // Whole seconds, rounded down: never past the limit.
            let limit = limit.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if exp > limit {
                exp = limit;
                clamped = true;
            }
            if exp <= now {
                return Err(TokenError::Expired);
            }
        }
        let claims = Claims {
            sub: request.user.clone(),
            board: request.scope.to_string(),
            role: request.role,
            exp,
            iat: now,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Malformed("cannot sign these claims"))?;
        Ok(Minted {
            token,
            expires_at: exp,
            clamped,
        })
    }

    /// Verifies a token and returns what it grants.
    pub fn verify(&self, token: &str) -> Result<Grant, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Malformed("only HS256 tokens are accepted")
                }
                ErrorKind::MissingRequiredClaim(_) => TokenError::Malformed("it has no `exp`"),
                ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
                    TokenError::Malformed("its claims are not {board, role, exp}")
                }
                _ => TokenError::Malformed("not a JWT"),
            })?;
        let claims = data.claims;
        if claims.exp > MAX_EXP {
            return Err(TokenError::ExpiryOutOfRange);
        }
        // `decode` checks `exp` with the leeway above; check again so that a token valid for
        // less than a second is not accepted at its expiry second.
        if claims.exp <= unix_now() {
            return Err(TokenError::Expired);
        }
        // Cannot fail below `MAX_EXP`; checked all the same rather than risking a panic.
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(claims.exp))
            .ok_or(TokenError::ExpiryOutOfRange)?;
        let scope = Scope::parse(&claims.board)
            .map_err(|_| TokenError::Malformed("its `board` is not a board id or `*`"))?;
        Ok(Grant {
            user: claims.sub,
            scope,
            role: claims.role,
            expires_at: Some(expires_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BoardId;

    fn keys(secret: &str) -> Keys {
        Keys::new(&Secret::new(secret.as_bytes()).expect("long enough"))
    }

    fn request(ttl: u64) -> TokenRequest {
        TokenRequest {
            user: Some("alice".into()),
            scope: Scope::Board(BoardId::parse("b1").expect("id")),
            role: Role::Write,
            ttl: Duration::from_secs(ttl),
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_minted_token_verifies_to_its_claims() {
        let keys = keys(SECRET);
        let minted = keys.mint(&request(60)).expect("mint");
        let grant = keys.verify(&minted.token).expect("verify");
        assert_eq!(grant.user.as_deref(), Some("alice"));
        assert_eq!(grant.role, Role::Write);
        assert_eq!(grant.scope, Scope::Board(BoardId::parse("b1").expect("id")));
        assert!(grant.remaining().expect("expires") <= Duration::from_secs(60));
    }

    #[test]
    fn a_token_minted_until_a_limit_expires_by_then() {
        let keys = keys(SECRET);
        let limit = UNIX_EPOCH + Duration::from_secs(unix_now() + 30);
        let minted = keys.mint_until(&request(3600), Some(limit)).expect("mint");
        assert!(minted.clamped);
        assert_eq!(UNIX_EPOCH + Duration::from_secs(minted.expires_at), limit);
        let grant = keys.verify(&minted.token).expect("verify");
        assert_eq!(grant.expires_at, Some(limit));
        let short = keys.mint_until(&request(10), Some(limit)).expect("mint");
        assert!(!short.clamped);
        assert!(short.expires_at <= unix_now() + 10);
        let past = UNIX_EPOCH + Duration::from_secs(unix_now() - 1);
        assert_eq!(
            keys.mint_until(&request(60), Some(past)).map(|_| ()),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let minted = keys(SECRET).mint(&request(60)).expect("mint");
        let other = keys("ffffffffffffffffffffffffffffffff");
        assert_eq!(other.verify(&minted.token), Err(TokenError::BadSignature));
    }

    #[test]
    fn an_altered_token_is_refused() {
        let keys = keys(SECRET);
        let minted = keys.mint(&request(60)).expect("mint");
        // Swap in a payload claiming admin of every board, keeping the original signature.
        let forged_claims = Claims {
            sub: None,
            board: "*".into(),
            role: Role::Admin,
            exp: unix_now() + 3600,
            iat: 0,
        };
        let other = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &forged_claims,
            &EncodingKey::from_secret(b"an attacker's own secret, 32 bytes"),
        )
        .expect("encode");
        let (forged_body, _) = other.rsplit_once('.').expect("three parts");
        let (_, signature) = minted.token.rsplit_once('.').expect("three parts");
        let forged = format!("{forged_body}.{signature}");
        assert_eq!(keys.verify(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_and_expired_tokens_are_refused() {
        let keys = keys(SECRET);
        assert!(matches!(
            keys.verify("not-a-token"),
            Err(TokenError::Malformed(_))
        ));
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: None,
                board: "b1".into(),
                role: Role::Read,
                exp: unix_now() - 1,
                iat: 0,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode");
        assert_eq!(keys.verify(&expired), Err(TokenError::Expired));
    }

    /// 9999-12-31T23:59:59Z.
    const LAST_SECOND_OF_9999: u64 = 253_402_300_799;

    fn signed(exp: u64) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: None,
                board: "*".into(),
                role: Role::Admin,
                exp,
                iat: 0,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode")
    }

    #[test]
    fn expiries_beyond_any_clock_are_refused_without_panicking() {
        let keys = keys(SECRET);
        for exp in [
            u64::MAX,
            i64::MAX as u64 + 1,
            i64::MAX as u64,
            LAST_SECOND_OF_9999 + 1,
        ] {
            let token = signed(exp);
            let verified = std::panic::catch_unwind(|| keys.verify(&token));
            assert!(verified.is_ok(), "exp {exp}: verify panicked");
            assert_eq!(
                verified.expect("did not panic"),
                Err(TokenError::ExpiryOutOfRange),
                "exp {exp}"
            );
        }
        assert_eq!(LAST_SECOND_OF_9999, MAX_EXP);
        let far = keys
            .verify(&signed(LAST_SECOND_OF_9999))
            .expect("the year 9999 is fine");
        assert!(far.remaining().expect("expires") > Duration::from_secs(3600 * 24 * 365 * 7000));
    }

    #[test]
    fn short_secrets_and_bad_ttls_are_refused() {
        assert!(matches!(
            Secret::new(b"short\n"),
            Err(SecretError::TooShort(5))
        ));
        assert_eq!(
            keys(SECRET).mint(&request(0)).map(|_| ()),
            Err(TokenError::BadTtl)
        );
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let secret = Secret::new(SECRET.as_bytes()).expect("secret");
        assert!(!format!("{secret:?}").contains(SECRET));
        assert!(!format!("{:?}", Keys::new(&secret)).contains(SECRET));
    }
}

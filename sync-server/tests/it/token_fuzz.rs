//! Property tests over token verification: whatever a client presents as a token, verifying it
//! never panics and never grants anything unless it is exactly a token this server minted.
//! Runs 256 cases per property by default; `PROPTEST_CASES` raises it.

use std::time::Duration;

use proptest::prelude::*;
use sync_server::auth::token::TokenRequest;
use sync_server::auth::{Keys, Role, Scope, Secret};

fn keys() -> Keys {
    Keys::new(&Secret::new(b"property-test secret, 32 bytes or more").unwrap())
}

fn minted() -> String {
    keys()
        .mint(&TokenRequest {
            user: Some("alice".into()),
            scope: Scope::parse("board-1").unwrap(),
            role: Role::Write,
            ttl: Duration::from_secs(3600),
        })
        .unwrap()
        .token
}

proptest! {
    #[test]
    fn arbitrary_strings_are_refused(token in ".{0,400}") {
        prop_assert!(keys().verify(&token).is_err());
    }

    #[test]
    fn any_change_to_a_real_token_is_refused(
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let token = minted();
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let Ok(changed) = String::from_utf8(bytes) else { return Ok(()) };
        // Base64url's last character can carry unused bits, so a few edits decode to the same
        // token; those must verify to the same grant, anything else must be refused.
        if let Ok(grant) = keys().verify(&changed) {
            prop_assert_eq!(grant, keys().verify(&token).unwrap());
        }
    }
}

#[test]
fn the_unchanged_token_verifies() {
    let grant = keys().verify(&minted()).unwrap();
    assert_eq!(grant.role, Role::Write);
    assert_eq!(grant.user.as_deref(), Some("alice"));
}

fn with_exp(exp: u64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"board": "*", "role": "admin", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(b"property-test secret, 32 bytes or more"),
    )
    .unwrap()
}

proptest! {
    /// Whatever `exp` a correctly signed token carries, verifying it never panics, and it
    /// grants something only if `exp` is in the future and no later than the year 9999.
    #[test]
    fn any_expiry_is_verified_without_panicking(
        exp in prop_oneof![
            any::<u64>(),
            (i64::MAX as u64 - 10)..=(i64::MAX as u64 + 10),
            (u64::MAX - 10)..=u64::MAX,
            253_402_300_700_u64..253_402_300_900,
        ],
    ) {
        let verified = std::panic::catch_unwind(|| keys().verify(&with_exp(exp)));
        prop_assert!(verified.is_ok(), "exp {} panicked", exp);
        if let Ok(grant) = verified.unwrap() {
            prop_assert!(exp <= 253_402_300_799, "exp {} was accepted", exp);
            prop_assert!(grant.remaining().is_some_and(|left| !left.is_zero()));
        }
    }
}

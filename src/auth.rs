//! Bearer tokens: HS256 JWTs with the CONTRACT.md claims (`sub` string or
//! number, `role`, optional `orgId`, `exp`, `iat`, `type` = `access`).
//! Validation accepts HS256 only (so `alg: none` and every other algorithm
//! are refused), requires `exp`, and refuses any `type` but `access`.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
    SuperAdmin,
}

impl Role {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "user" => Some(Self::User),
            "admin" => Some(Self::Admin),
            "super_admin" => Some(Self::SuperAdmin),
            _ => None,
        }
    }
}

/// Who is calling, once the token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub role: Role,
    pub org_id: Option<String>,
}

impl Caller {
    pub fn is_super_admin(&self) -> bool {
        self.role == Role::SuperAdmin
    }

    /// An `admin` of `org` (a `super_admin` is not scoped and passes too).
    pub fn administers(&self, org: Option<&str>) -> bool {
        match self.role {
            Role::SuperAdmin => true,
            Role::Admin => self.org_id.is_some() && self.org_id.as_deref() == org,
            Role::User => false,
        }
    }
}

/// `sub` may be a string or a number.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Subject {
    Text(String),
    Number(i64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: Subject,
    role: String,
    #[serde(rename = "orgId", default, skip_serializing_if = "Option::is_none")]
    org_id: Option<OrgId>,
    exp: i64,
    iat: i64,
    #[serde(rename = "type")]
    kind: String,
}

/// `orgId` may also be a string or a number.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum OrgId {
    Text(String),
    Number(i64),
}

fn id_text(s: &Subject) -> String {
    match s {
        Subject::Text(t) => t.clone(),
        Subject::Number(n) => n.to_string(),
    }
}

/// Why a token was refused (never echoes the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing bearer token")]
    Missing,
    #[error("token is expired")]
    Expired,
    #[error("token is not a valid access token")]
    Invalid,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token is issued in the future (iat)")]
    IssuedInTheFuture,
    #[error("token lives longer than the 7-day maximum")]
    TooLong,
}

/// The longest a token may live (`exp - iat`): a stolen token stops
/// working within a week whoever minted it.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 7 * 24 * 3600;

/// How far a token's `iat` may be ahead of our clock.
const MAX_CLOCK_SKEW_SECS: i64 = 60;

/// Signs a token (the `token` command).
pub fn mint(
    secret: &str,
    sub: &str,
    role: Role,
    org_id: Option<&str>,
    now: i64,
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        sub: Subject::Text(sub.to_string()),
        role: match role {
            Role::User => "user",
            Role::Admin => "admin",
            Role::SuperAdmin => "super_admin",
        }
        .to_string(),
        org_id: org_id.map(|o| OrgId::Text(o.to_string())),
        exp: now + ttl_secs,
        iat: now,
        kind: "access".to_string(),
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Checks a bearer token and returns the caller.
pub fn verify(secret: &str, token: &str) -> Result<Caller, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    // `sub` is required by `Claims` itself; the library only accepts string subjects.
    validation.set_required_spec_claims(&["exp"]);
    validation.leeway = 0;
    validation.validate_nbf = true;
    let data = decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
        jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        _ => TokenError::Invalid,
    })?;
    let claims = data.claims;
    if claims.iat > chrono::Utc::now().timestamp() + MAX_CLOCK_SKEW_SECS {
        return Err(TokenError::IssuedInTheFuture);
    }
    if claims.exp.saturating_sub(claims.iat) > MAX_TOKEN_LIFETIME_SECS {
        return Err(TokenError::TooLong);
    }
    if claims.kind != "access" {
        return Err(TokenError::Invalid);
    }
    let role = Role::parse(&claims.role).ok_or(TokenError::Invalid)?;
    let user_id = id_text(&claims.sub);
    if user_id.is_empty() || user_id.len() > 128 {
        return Err(TokenError::Invalid);
    }
    let org_id = claims.org_id.map(|o| match o {
        OrgId::Text(t) => t,
        OrgId::Number(n) => n.to_string(),
    });
    // Claims are copied into stored events and projections.
    let storable = |s: &str| !s.chars().any(char::is_control);
    if !storable(&user_id)
        || org_id
            .as_deref()
            .is_some_and(|o| !storable(o) || o.len() > 128)
    {
        return Err(TokenError::Invalid);
    }
    Ok(Caller {
        user_id,
        role,
        org_id,
    })
}

/// `1h`, `30m`, `45s`, `2d` or plain seconds.
pub fn parse_ttl(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    let (number, unit) = match raw.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&raw[..i], c),
        _ => (raw, 's'),
    };
    let n: i64 = number.parse().ok().filter(|n| *n > 0)?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "unit-test-jwt-secret-0123456789abcdef";

    #[test]
    fn nbf_future_iat_and_overlong_lifetimes_are_refused() {
        let now = chrono::Utc::now().timestamp();
        let later = mint(SECRET, "42", Role::User, None, now + 3600, 600).unwrap_or_default();
        assert_eq!(verify(SECRET, &later), Err(TokenError::IssuedInTheFuture));
        let long = mint(
            SECRET,
            "42",
            Role::User,
            None,
            now,
            MAX_TOKEN_LIFETIME_SECS + 1,
        )
        .unwrap_or_default();
        assert_eq!(verify(SECRET, &long), Err(TokenError::TooLong));
        let week =
            mint(SECRET, "42", Role::User, None, now, MAX_TOKEN_LIFETIME_SECS).unwrap_or_default();
        assert!(verify(SECRET, &week).is_ok());
        let claims = serde_json::json!({"sub": "42", "role": "user", "exp": now + 600,
            "iat": now, "nbf": now + 300, "type": "access"});
        let not_yet = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap_or_default();
        assert_eq!(verify(SECRET, &not_yet), Err(TokenError::NotYetValid));
        let mut ok = claims.clone();
        ok["nbf"] = serde_json::json!(now - 1);
        let ok = encode(
            &Header::new(Algorithm::HS256),
            &ok,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap_or_default();
        assert!(verify(SECRET, &ok).is_ok());
    }

    #[test]
    fn minted_tokens_verify() {
        let t = mint(SECRET, "42", Role::Admin, Some("org-1"), 1_000, 3600).unwrap_or_default();
        // Verification uses the real clock: mint relative to now.
        let now = chrono::Utc::now().timestamp();
        let t2 = mint(SECRET, "42", Role::Admin, Some("org-1"), now, 3600).unwrap_or_default();
        assert_eq!(verify(SECRET, &t), Err(TokenError::Expired));
        assert_eq!(
            verify(SECRET, &t2),
            Ok(Caller {
                user_id: "42".into(),
                role: Role::Admin,
                org_id: Some("org-1".into())
            })
        );
        assert_eq!(
            verify("another-secret-0123456789abcdef0123", &t2),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn refuses_alg_none_refresh_and_numeric_sub_is_fine() {
        use base64_like::b64;
        let now = chrono::Utc::now().timestamp();
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(format!(
            r#"{{"sub":"1","role":"super_admin","exp":{},"iat":{now},"type":"access"}}"#,
            now + 60
        )
        .as_bytes());
        assert_eq!(
            verify(SECRET, &format!("{header}.{body}.")),
            Err(TokenError::Invalid)
        );

        let refresh = Claims {
            sub: Subject::Number(7),
            role: "user".into(),
            org_id: None,
            exp: now + 60,
            iat: now,
            kind: "refresh".into(),
        };
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let t = encode(&Header::new(Algorithm::HS256), &refresh, &key).unwrap_or_default();
        assert_eq!(verify(SECRET, &t), Err(TokenError::Invalid));
        let access = Claims {
            kind: "access".into(),
            ..refresh
        };
        let t = encode(&Header::new(Algorithm::HS256), &access, &key).unwrap_or_default();
        assert_eq!(verify(SECRET, &t).map(|c| c.user_id), Ok("7".to_string()));
    }

    #[test]
    fn ttl() {
        assert_eq!(parse_ttl("1h"), Some(3600));
        assert_eq!(parse_ttl("15m"), Some(900));
        assert_eq!(parse_ttl("90"), Some(90));
        assert_eq!(parse_ttl("2d"), Some(172_800));
        assert_eq!(parse_ttl("0s"), None);
        assert_eq!(parse_ttl("1y"), None);
    }

    /// Unpadded URL-safe base64, for hand-made test tokens.
    mod base64_like {
        pub fn b64(bytes: &[u8]) -> String {
            const T: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
                for i in 0..=chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}

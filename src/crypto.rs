//! Keys and encryption at rest.
//!
//! One 32-byte master key (`ENCRYPTION_KEY`) yields labelled sub-keys, so
//! the same secret never serves two purposes directly: one keys the hash
//! chain, one encrypts raw Stripe payloads (AES-256-GCM), one produces the
//! key-check value a database remembers, so that opening it with another
//! key fails loudly instead of producing garbage.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256(key, label).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so construction cannot fail.
    let mut mac = match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The master key from `ENCRYPTION_KEY`. `Debug` never prints it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// 64 hex characters.
    pub fn parse_hex(raw: &str) -> Option<Self> {
        let bytes = hex::decode(raw.trim()).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    fn subkey(&self, label: &str) -> [u8; 32] {
        hmac_sha256(&self.0, label.as_bytes())
    }

    pub fn chain_key(&self) -> crate::store::chain::ChainKey {
        crate::store::chain::ChainKey::from_bytes(self.subkey("klubz-ledger/chain/v1"))
    }

    pub fn payload_cipher(&self) -> PayloadCipher {
        PayloadCipher {
            key: self.subkey("klubz-ledger/payload/v1"),
        }
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Version tag of the stored ciphertext format: `v1 ‖ nonce(12) ‖ ciphertext+tag`.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("encrypted payload is malformed")]
    Malformed,
    /// Wrong key or tampered data: never returns garbage.
    #[error(
        "encrypted payload does not decrypt with this ENCRYPTION_KEY (wrong key or tampered data)"
    )]
    Undecryptable,
}

/// AES-256-GCM for raw Stripe bodies at rest.
#[derive(Clone)]
pub struct PayloadCipher {
    key: [u8; 32],
}

impl fmt::Debug for PayloadCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PayloadCipher(<redacted>)")
    }
}

impl PayloadCipher {
    fn aead(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.key.into())
    }

    /// Encrypts with a fresh random nonce.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        // Encryption only fails for plaintexts over 64 GiB; bodies are ≤ 1 MiB.
        let sealed = self.aead().encrypt(nonce, plaintext).unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn decrypt(&self, blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if blob.len() < 1 + NONCE_LEN + 16 || blob[0] != FORMAT_V1 {
            return Err(CryptoError::Malformed);
        }
        let nonce = Nonce::from_slice(&blob[1..1 + NONCE_LEN]);
        self.aead()
            .decrypt(nonce, &blob[1 + NONCE_LEN..])
            .map_err(|_| CryptoError::Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key_fails_loudly() {
        let cipher = MasterKey::from_bytes([1; 32]).payload_cipher();
        let body = br#"{"email":"rider@example.com"}"#;
        let sealed = cipher.encrypt(body);
        assert!(
            !sealed.windows(5).any(|w| w == b"rider"),
            "plaintext visible"
        );
        assert_eq!(cipher.decrypt(&sealed).as_deref(), Ok(&body[..]));
        let other = MasterKey::from_bytes([2; 32]).payload_cipher();
        assert_eq!(other.decrypt(&sealed), Err(CryptoError::Undecryptable));
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(cipher.decrypt(&tampered), Err(CryptoError::Undecryptable));
        assert_eq!(cipher.decrypt(b"x"), Err(CryptoError::Malformed));
    }

    #[test]
    fn nonces_differ() {
        let cipher = MasterKey::from_bytes([1; 32]).payload_cipher();
        assert_ne!(cipher.encrypt(b"same"), cipher.encrypt(b"same"));
    }

    #[test]
    fn debug_redacts() {
        let key = MasterKey::from_bytes([9; 32]);
        assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
    }
}

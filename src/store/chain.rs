//! The keyed hash chain (invariant 8): each event's `hash` is an
//! HMAC-SHA256, under a key derived from `ENCRYPTION_KEY`, over its
//! canonical fields and the previous hash of its stream. Editing, deleting
//! or reordering an event breaks a link that [`ChainWalker`] reports.

use super::{format_time, StoredEvent};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// `prev_hash` of a stream's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain key. `Debug` never prints it.
#[derive(Clone)]
pub struct ChainKey([u8; 32]);

impl ChainKey {
    /// The chain key itself (see [`crate::crypto::MasterKey::chain_key`]).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Derives the chain key from raw master-key bytes (tests, benches).
    pub fn derive(master: &[u8; 32]) -> Self {
        crate::crypto::MasterKey::from_bytes(*master).chain_key()
    }

    /// A value a database remembers on first open: another key gives
    /// another value, so opening with the wrong `ENCRYPTION_KEY` is refused.
    pub fn check_value(&self) -> String {
        hex::encode(crate::crypto::hmac_sha256(
            &self.0,
            b"klubz-ledger/key-check/v1",
        ))
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(<redacted>)")
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The fields a link covers. Each is length-prefixed, so no two different
/// field lists encode to the same bytes.
pub struct LinkFields<'a> {
    pub stream: &'a str,
    pub stream_version: i64,
    pub kind: &'a str,
    pub source: &'a str,
    pub idempotency_key: &'a str,
    pub occurred_at: &'a str,
    pub recorded_at: &'a str,
    pub fingerprint: &'a str,
    pub payload: &'a str,
    pub raw_payload: Option<&'a [u8]>,
    pub prev_hash: &'a str,
}

pub fn link_hash(key: &ChainKey, f: &LinkFields<'_>) -> String {
    let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(&key.0) else {
        unreachable!("HMAC accepts keys of any length")
    };
    let version = f.stream_version.to_string();
    let payload_digest = sha256_hex(f.payload.as_bytes());
    let raw_digest = f.raw_payload.map(sha256_hex).unwrap_or_default();
    for part in [
        f.stream,
        &version,
        f.kind,
        f.source,
        f.idempotency_key,
        f.occurred_at,
        f.recorded_at,
        f.fingerprint,
        &payload_digest,
        &raw_digest,
        f.prev_hash,
    ] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Recomputes a stored event's hash.
pub fn stored_hash(key: &ChainKey, e: &StoredEvent) -> String {
    link_hash(
        key,
        &LinkFields {
            stream: &e.stream,
            stream_version: e.stream_version,
            kind: &e.kind,
            source: &e.source,
            idempotency_key: &e.idempotency_key,
            occurred_at: &format_time(&e.occurred_at),
            recorded_at: &format_time(&e.recorded_at),
            fingerprint: &e.fingerprint,
            payload: &e.payload,
            raw_payload: e.raw_payload.as_deref(),
            prev_hash: &e.prev_hash,
        },
    )
}

/// The first broken link found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: i64,
    pub stream: String,
    pub stream_version: i64,
    pub problem: String,
}

impl fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seq {} ({} v{}): {}",
            self.seq, self.stream, self.stream_version, self.problem
        )
    }
}

/// Walks the log in seq order, remembering only each stream's last link,
/// so memory grows with the number of streams, not events.
pub struct ChainWalker {
    key: ChainKey,
    last: HashMap<String, (i64, String)>,
    pub events: u64,
}

impl ChainWalker {
    pub fn new(key: ChainKey) -> Self {
        Self {
            key,
            last: HashMap::new(),
            events: 0,
        }
    }

    pub fn streams(&self) -> usize {
        self.last.len()
    }

    /// Checks the next event (in seq order).
    pub fn check(&mut self, e: &StoredEvent) -> Result<(), BrokenLink> {
        self.events += 1;
        let broken = |problem: String| BrokenLink {
            seq: e.seq,
            stream: e.stream.clone(),
            stream_version: e.stream_version,
            problem,
        };
        let (want_version, want_prev) = match self.last.get(&e.stream) {
            Some((v, h)) => (v + 1, h.as_str()),
            None => (1, GENESIS),
        };
        if e.stream_version != want_version {
            return Err(broken(format!(
                "version {} follows {} (an event was deleted or reordered)",
                e.stream_version,
                want_version - 1
            )));
        }
        if e.prev_hash != want_prev {
            return Err(broken(
                "prev_hash does not match the previous event's hash".into(),
            ));
        }
        if stored_hash(&self.key, e) != e.hash {
            return Err(broken(
                "hash does not match the event's content (edited)".into(),
            ));
        }
        self.last
            .insert(e.stream.clone(), (e.stream_version, e.hash.clone()));
        Ok(())
    }
}

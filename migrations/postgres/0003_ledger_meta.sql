-- Facts about the ledger itself. `key_check` is derived from ENCRYPTION_KEY
-- on first open; opening the database with another key is refused, so a
-- wrong key fails loudly instead of producing a broken chain or garbage.
CREATE TABLE ledger_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

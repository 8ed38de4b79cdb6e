-- An API write's key is settled in the same transaction as its event:
-- `claim` is the token of the request holding a pending key, `seq` the
-- event it committed. A pending key with a seq (the process died before
-- storing the response) is answered from the log; one without a seq and
-- older than the request deadline is claimed anew by a retry, and a late
-- commit under the old claim is refused.
ALTER TABLE idempotency_keys ADD COLUMN claim TEXT;
ALTER TABLE idempotency_keys ADD COLUMN seq INTEGER;

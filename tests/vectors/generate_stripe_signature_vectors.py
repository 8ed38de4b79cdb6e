#!/usr/bin/env python3
"""Generate Stripe webhook signature test vectors using the official stripe-python library.

What it does
------------
Builds a fixed list of (payload, Stripe-Signature header, configured secrets,
tolerance) cases and asks the OFFICIAL ``stripe`` Python library to judge each
one with ``stripe.WebhookSignature.verify_header``. The verdicts (and the
library's exception message when a case is rejected) are written to
``tests/vectors/stripe_signatures.json`` so the Rust test suite can check that
our own verifier agrees with Stripe's reference implementation.

* Signatures are computed with the library's own helpers
  (``WebhookSignature.generate_signature_header`` and
  ``WebhookSignature._compute_signature``); no HMAC is hand-rolled here.
* A case is ``valid`` when ``verify_header`` returns without raising for at
  least one of the configured secrets (tried in order, like a secret rotation).
  Otherwise ``stripeError`` holds the message of the exception raised for the
  FIRST configured secret. ``SignatureVerificationError`` messages are recorded
  verbatim; any other exception type (the library leaks a ``TypeError`` for
  non-ASCII signature values) is recorded as ``"<TypeName>: <message>"``.
* Everything is deterministic: fixed fake secrets, fixed payload bytes and a
  fixed clock. "now" is pinned to 1790000000 by replacing the ``time`` module
  that ``stripe._webhook`` imported (``verify_header`` calls ``time.time()``
  through that module-level name), only for the duration of each call.
* Cases whose names start with ``pyquirk_`` get their verdict from Python
  semantics leaking through the library's parser (``int()`` accepting ``+``,
  ``_``, surrounding whitespace, non-ASCII digits and unbounded integers;
  ``str.split("=", 2)`` dropping anything after a second ``=``). They are
  recorded faithfully, but a Rust verifier may reasonably be stricter; the Rust
  tests can treat that prefix as "documented divergence allowed".

How to rerun
------------
    pip install stripe && python3 tests/vectors/generate_stripe_signature_vectors.py

(run from the repository root; the output path is resolved relative to this
file, so the working directory does not actually matter).
"""

import base64
import hashlib
import importlib.metadata
import inspect
import json
import sys
import time
import types
import unicodedata
from contextlib import contextmanager
from pathlib import Path

import stripe
import stripe._webhook as stripe_webhook
from stripe import SignatureVerificationError, WebhookSignature

NOW = 1790000000
TOLERANCE = 300

PRIMARY = "whsec_test_primary_0123456789abcdef"
ROTATED = "whsec_test_rotated_fedcba9876543210"
UNRELATED = "whsec_test_unrelated_00000000000000"

OUT_PATH = Path(__file__).resolve().parent / "stripe_signatures.json"

# A realistic (but fake) payment_intent.succeeded event, formatted the way
# Stripe sends it (pretty-printed, 2-space indent, no trailing newline).
EVENT_BODY = """{
  "id": "evt_3PqTestFakeEvent0001",
  "object": "event",
  "api_version": "2024-06-20",
  "created": 1789999990,
  "data": {
    "object": {
      "id": "pi_3PqTestFakeIntent0001",
      "object": "payment_intent",
      "amount": 2000,
      "amount_received": 2000,
      "currency": "eur",
      "customer": "cus_TestFakeCustomer01",
      "description": "Order #1042",
      "latest_charge": "ch_3PqTestFakeCharge0001",
      "livemode": false,
      "metadata": {
        "order_id": "1042"
      },
      "payment_method": "pm_1PqTestFakeMethod0001",
      "payment_method_types": [
        "card"
      ],
      "receipt_email": "jane.doe@example.com",
      "status": "succeeded",
      "billing_details": {
        "email": "jane.doe@example.com",
        "name": "Jane Doe"
      }
    }
  },
  "livemode": false,
  "pending_webhooks": 1,
  "request": {
    "id": "req_TestFakeRequest01",
    "idempotency_key": "3f1c9a2e-5b7d-4c1e-9f3a-0d2b6e8c4a10"
  },
  "type": "payment_intent.succeeded"
}"""

# Same event shape with non-ASCII content: accented name (NFC form), an
# internationalised e-mail address, a CJK description and a 4-byte emoji.
UNICODE_BODY = """{
  "id": "evt_3PqTestFakeEvent0002",
  "object": "event",
  "api_version": "2024-06-20",
  "created": 1789999991,
  "data": {
    "object": {
      "id": "pi_3PqTestFakeIntent0002",
      "object": "payment_intent",
      "amount": 4250,
      "currency": "eur",
      "description": "Café crème ×2 — 注文 🚀",
      "livemode": false,
      "receipt_email": "renée.müller@exämple.de",
      "status": "succeeded",
      "billing_details": {
        "email": "renée.müller@exämple.de",
        "name": "Renée Øster-Müller"
      }
    }
  },
  "livemode": false,
  "type": "payment_intent.succeeded"
}"""

assert unicodedata.is_normalized("NFC", UNICODE_BODY)


@contextmanager
def frozen_clock(now):
    """Pin the clock exactly as stripe._webhook reads it (``time.time()``)."""
    original = stripe_webhook.time
    stripe_webhook.time = types.SimpleNamespace(time=lambda: float(now))
    try:
        yield
    finally:
        stripe_webhook.time = original


def check_clock_patch_target():
    """Fail loudly if the installed library no longer reads the clock the way we patch it."""
    src = inspect.getsource(WebhookSignature.verify_header)
    if "time.time()" not in src:
        sys.exit("stripe WebhookSignature.verify_header no longer calls time.time(); update frozen_clock()")
    if stripe_webhook.time is not time:
        sys.exit("stripe._webhook.time is not the stdlib time module; update frozen_clock()")


def sig(payload, secret, t):
    """v1 signature hex, computed by the library exactly as verify_header does."""
    return WebhookSignature._compute_signature("%d.%s" % (t, payload), secret)


def header(payload, secret, t):
    """Full 't=...,v1=...' header, built by the library."""
    return WebhookSignature.generate_signature_header(payload, secret, timestamp=t)


def bogus(label):
    """A fixed, well-formed (64 lowercase hex) signature that matches nothing."""
    return hashlib.sha256(("bogus:" + label).encode()).hexdigest()


def judge(payload, hdr, secrets, tolerance):
    """Return (valid, stripeError) as decided by the library."""
    first_error = None
    for secret in secrets:
        try:
            with frozen_clock(NOW):
                WebhookSignature.verify_header(payload.encode("utf-8"), hdr, secret, tolerance)
            return True, None
        except SignatureVerificationError as e:
            msg = e.user_message
        except Exception as e:  # library leaking a non-Stripe exception
            msg = "%s: %s" % (type(e).__name__, e)
        if first_error is None:
            first_error = msg
    return False, first_error


def build_cases():
    P = EVENT_BODY
    good = sig(P, PRIMARY, NOW)
    good_hdr = header(P, PRIMARY, NOW)
    old_sig = sig(P, ROTATED, NOW)
    c = []

    def add(name, payload, hdr, secrets=(PRIMARY,), tolerance=TOLERANCE):
        c.append((name, payload, hdr, list(secrets), tolerance))

    # --- basics -----------------------------------------------------------
    add("valid_single_v1", P, good_hdr)
    add("several_v1_one_valid", P, "t=%d,v1=%s,v1=%s,v1=%s" % (NOW, bogus("a"), bogus("b"), good))
    add("several_v1_one_valid_first", P, "t=%d,v1=%s,v1=%s,v1=%s" % (NOW, good, bogus("a"), bogus("b")))
    add("several_v1_one_valid_middle", P, "t=%d,v1=%s,v1=%s,v1=%s" % (NOW, bogus("a"), good, bogus("b")))
    add("several_v1_none_valid", P, "t=%d,v1=%s,v1=%s" % (NOW, bogus("a"), bogus("b")))
    add("items_in_reverse_order_v1_before_t", P, "v1=%s,t=%d" % (good, NOW))

    # --- schemes ----------------------------------------------------------
    add("v0_scheme_ignored", P, "t=%d,v1=%s,v0=%s" % (NOW, good, bogus("v0")))
    add("only_v0", P, "t=%d,v0=%s" % (NOW, bogus("v0")))
    add("only_v0_carrying_correct_v1_hmac", P, "t=%d,v0=%s" % (NOW, good))
    add("unknown_v2_scheme_with_correct_hmac_only", P, "t=%d,v2=%s" % (NOW, good))
    add("uppercase_scheme_key_V1", P, "t=%d,V1=%s" % (NOW, good))
    add("uppercase_timestamp_key_T", P, "T=%d,v1=%s" % (NOW, good))

    # --- secret rotation --------------------------------------------------
    add("rotated_secret_old_signature_both_configured", P, header(P, ROTATED, NOW), (PRIMARY, ROTATED))
    add("rotated_secret_old_signature_both_configured_rotated_first", P, header(P, ROTATED, NOW), (ROTATED, PRIMARY))
    add("rotated_secret_not_configured", P, header(P, ROTATED, NOW), (PRIMARY,))
    two = "t=%d,v1=%s,v1=%s" % (NOW, good, old_sig)
    add("header_with_two_signatures_one_per_secret", P, two, (PRIMARY, ROTATED))
    add("header_with_two_signatures_only_primary_configured", P, two, (PRIMARY,))
    add("header_with_two_signatures_only_rotated_configured", P, two, (ROTATED,))
    add("header_with_two_signatures_neither_configured", P, two, (UNRELATED,))
    add("wrong_secret", P, good_hdr, (UNRELATED,))
    add("wrong_secret_among_several", P, header(P, UNRELATED, NOW), (PRIMARY, ROTATED))
    # The secret is used verbatim as the HMAC key, "whsec_" prefix included
    # (it is NOT base64-decoded, unlike e.g. Svix).
    add("signed_with_secret_without_whsec_prefix", P,
        "t=%d,v1=%s" % (NOW, sig(P, PRIMARY[len("whsec_"):], NOW)))
    add("empty_secret_configured", P, good_hdr, ("",))
    add("whitespace_only_secret_configured", P, good_hdr, ("   ",))
    # The library refuses a blank secret outright, even when the header really
    # was signed with that (empty) key.
    add("empty_secret_configured_header_signed_with_empty_secret", P, header(P, "", NOW), ("",))
    add("empty_secret_then_primary_configured", P, good_hdr, ("", PRIMARY))

    # --- timestamps -------------------------------------------------------
    add("stale_timestamp", P, header(P, PRIMARY, NOW - 301))
    add("timestamp_at_tolerance_edge", P, header(P, PRIMARY, NOW - 300))
    add("timestamp_one_second_inside_tolerance", P, header(P, PRIMARY, NOW - 299))
    add("future_timestamp", P, header(P, PRIMARY, NOW + 600))
    add("far_future_timestamp_ten_years", P, header(P, PRIMARY, NOW + 10 * 365 * 86400))
    add("stale_timestamp_with_bad_signature_reports_signature_error", P,
        "t=%d,v1=%s" % (NOW - 10000, bogus("stale")))
    add("stale_timestamp_tolerance_zero_disables_check", P, header(P, PRIMARY, NOW - 100000), tolerance=0)
    add("negative_timestamp", P, header(P, PRIMARY, -1))
    add("timestamp_zero", P, header(P, PRIMARY, 0))
    add("signature_for_other_timestamp", P, "t=%d,v1=%s" % (NOW, sig(P, PRIMARY, NOW - 1)))
    add("duplicate_t_first_one_used", P, "t=%d,t=%d,v1=%s" % (NOW, NOW - 1000, good))
    add("duplicate_t_first_one_used_mismatch", P, "t=%d,t=%d,v1=%s" % (NOW - 1000, NOW, good))

    # --- header syntax ----------------------------------------------------
    add("missing_t", P, "v1=%s" % good)
    add("missing_header_value", P, "")
    add("non_integer_t", P, "t=abc,v1=%s" % good)
    add("decimal_t", P, "t=%d.0,v1=%s" % (NOW, good))
    add("empty_t_value", P, "t=,v1=%s" % good)
    add("bare_t_without_equals", P, "t,v1=%s" % good)
    add("spaces_after_commas", P, "t=%d, v1=%s" % (NOW, good))
    add("space_before_first_item", P, " t=%d,v1=%s" % (NOW, good))
    add("spaces_around_equals", P, "t = %d,v1 = %s" % (NOW, good))
    add("trailing_space_after_v1_value", P, "t=%d,v1=%s " % (NOW, good))
    add("empty_items_and_trailing_comma", P, ",t=%d,,v1=%s," % (NOW, good))
    add("unknown_bare_item_ignored", P, "t=%d,v1=%s,garbage" % (NOW, good))
    # Any item that is exactly "t" or "v1" (no "=") makes the parser raise,
    # wherever it appears, even next to a perfectly good t= / v1= pair.
    add("bare_v1_key_without_value", P, "t=%d,v1=%s,v1" % (NOW, good))
    add("bare_v1_key_before_valid_v1", P, "t=%d,v1,v1=%s" % (NOW, good))
    add("bare_t_after_valid_t", P, "t=%d,v1=%s,t" % (NOW, good))
    add("bare_v0_key_ignored", P, "t=%d,v1=%s,v0" % (NOW, good))
    add("pyquirk_t_value_with_equals_suffix", P, "t=%d=5,v1=%s" % (NOW, good))
    add("empty_v1_value_only", P, "t=%d,v1=" % NOW)
    add("semicolon_separated", P, "t=%d;v1=%s" % (NOW, good))

    # --- signature value --------------------------------------------------
    add("uppercase_hex_signature", P, "t=%d,v1=%s" % (NOW, good.upper()))
    add("truncated_signature_63_hex", P, "t=%d,v1=%s" % (NOW, good[:-1]))
    add("signature_with_extra_hex_char", P, "t=%d,v1=%s0" % (NOW, good))
    add("base64_signature_instead_of_hex", P,
        "t=%d,v1=%s" % (NOW, base64.b64encode(bytes.fromhex(good)).decode()))

    # --- body -------------------------------------------------------------
    changed = P.replace('"amount": 2000,', '"amount": 2001,', 1)
    assert len(changed.encode()) == len(P.encode()) and changed != P
    add("one_byte_body_change", changed, good_hdr)
    add("body_with_trailing_newline_added", P + "\n", good_hdr)
    add("body_reserialized_compact", json.dumps(json.loads(P), separators=(",", ":")), good_hdr)
    add("empty_body_valid_signature", "", header("", PRIMARY, NOW))
    add("empty_body_signature_for_other_body", "", good_hdr)
    add("unicode_body_valid", UNICODE_BODY, header(UNICODE_BODY, PRIMARY, NOW))
    add("unicode_body_nfd_payload_nfc_signature", unicodedata.normalize("NFD", UNICODE_BODY),
        header(UNICODE_BODY, PRIMARY, NOW))
    escaped = json.dumps(json.loads(UNICODE_BODY), indent=2, ensure_ascii=True)
    add("unicode_body_reescaped_ascii_payload", escaped, header(UNICODE_BODY, PRIMARY, NOW))

    # --- Python-specific behaviour leaking through the library -------------
    # verify_header signs "%d.%s" % (int(t), payload), i.e. the NORMALISED integer,
    # not the raw t text from the header.
    add("pyquirk_t_with_plus_sign", P, "t=+%d,v1=%s" % (NOW, good))
    add("pyquirk_t_with_leading_zeros", P, "t=0%d,v1=%s" % (NOW, good))
    add("t_with_leading_zeros_signed_over_raw_text", P,
        "t=0%d,v1=%s" % (NOW, WebhookSignature._compute_signature("0%d.%s" % (NOW, P), PRIMARY)))
    add("pyquirk_t_with_surrounding_spaces", P, "t= %d ,v1=%s" % (NOW, good))
    add("pyquirk_t_with_digit_underscores", P, "t=1_790_000_000,v1=%s" % good)
    add("pyquirk_t_fullwidth_unicode_digits", P,
        "t=%s,v1=%s" % ("".join(chr(0xFF10 + int(d)) for d in str(NOW)), good))
    big = 2 ** 63  # one past i64::MAX
    add("pyquirk_t_exceeds_i64", P, header(P, PRIMARY, big))
    add("pyquirk_v1_value_with_equals_suffix", P, "t=%d,v1=%s=anything" % (NOW, good))
    add("pyquirk_non_ascii_v1_value", P, "t=%d,v1=%s\u00e9" % (NOW, good[:-1]))
    return c


def main():
    check_clock_patch_target()
    version = importlib.metadata.version("stripe")

    # Sanity: prove the frozen clock is what the library sees.
    assert judge(EVENT_BODY, header(EVENT_BODY, PRIMARY, NOW), [PRIMARY], TOLERANCE) == (True, None)
    ok, err = judge(EVENT_BODY, header(EVENT_BODY, PRIMARY, NOW - 301), [PRIMARY], TOLERANCE)
    assert not ok and err.startswith("Timestamp outside the tolerance zone"), err

    cases = []
    names = set()
    for name, payload, hdr, secrets, tolerance in build_cases():
        assert name not in names, name
        names.add(name)
        valid, error = judge(payload, hdr, secrets, tolerance)
        cases.append({
            "name": name,
            "payload": payload,
            "header": hdr,
            "secrets": secrets,
            "tolerance": tolerance,
            "valid": valid,
            "stripeError": error,
        })

    doc = {"generator": "stripe-python %s" % version, "now": NOW, "cases": cases}
    with open(OUT_PATH, "w", encoding="utf-8", newline="\n") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")

    width = max(len(c["name"]) for c in cases)
    print("generator: %s   now: %d   -> %s" % (doc["generator"], NOW, OUT_PATH))
    for c in cases:
        print("%-*s  %-7s  %s" % (width, c["name"], "VALID" if c["valid"] else "invalid", c["stripeError"] or ""))
    print("%d cases, %d valid, %d invalid" % (
        len(cases), sum(c["valid"] for c in cases), sum(not c["valid"] for c in cases)))


if __name__ == "__main__":
    main()

//! Property tests of the transition table, the fold and the store live in `tests/`.

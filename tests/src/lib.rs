//! Shared helpers for the cross-crate integration and interop tests in `tests/tests/`.

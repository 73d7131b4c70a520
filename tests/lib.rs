//! Integration tests for Faultline live in `it/`; this library is empty.

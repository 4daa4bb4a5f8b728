//! Test-only helpers shared by the integration tests: a tiny JSON parser (so the tests
//! need no dev-dependencies) and the comparison with the corpus ground truth. The
//! capture reader the tests once had here is now the library's `replay::capture`.
#![allow(dead_code)]

pub mod corpus;
pub mod json;

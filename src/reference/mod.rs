//! Plain-Rust CPU forward and backward: the oracle every GPU kernel and the whole
//! model are tested against. Written for clarity, not speed; checked by finite
//! differences in its own tests.

pub mod attention;
pub mod gpt2;
pub mod llama;
pub mod ops;

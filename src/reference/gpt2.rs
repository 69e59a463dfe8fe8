//! Whole-model CPU reference (filled in later).

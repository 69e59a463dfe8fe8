//! GPU forward and backward of GPT-2 (filled in later).

//! Randomized multi-connection runs (placeholder).

//! The tokio shell around [`crate::spop`]. (Filled in by the foundation issue.)

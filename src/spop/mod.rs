//! SPOP wire protocol, sans-IO. (Filled in by the foundation issue.)

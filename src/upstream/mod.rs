//! Databricks upstream credentials: client_credentials, token_exchange, static; cached.
//! (Filled in by the upstream issue.)

//! The `authorize` SPOE message (contract §2) and the variables (contract §3).

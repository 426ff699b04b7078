//! Admin HTTP endpoint: /metrics, /live, /ready. (Filled in by the operations issue.)

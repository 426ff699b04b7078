//! What a verified caller may do: first-match rule evaluation, compiled at load.
//! (Filled in by the policy issue.)

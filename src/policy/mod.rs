//! What a verified caller may do: first-match rule evaluation, compiled at load.
//! (Placeholder API; the policy issue fills it in.)

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Config, Problem};
use crate::decision::Identity;

pub struct Policy {
    rules: Vec<Rule>,
}

pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: Option<&'a str>,
    pub src: Option<IpAddr>,
}

pub enum Outcome<'a> {
    Allow(&'a Rule),
    Deny(&'a Rule),
    NoMatch,
}

pub struct Rule {
    pub name: Arc<str>,
    pub upstream: Option<Arc<str>>,
    pub public: bool,
}

impl Rule {
    pub fn principal_for(&self, id: Option<&Identity>) -> Option<String> {
        id.map(|i| i.email.clone().unwrap_or_else(|| i.sub.clone()))
    }
}

#[derive(Debug)]
pub struct PathError;

pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    Ok(Cow::Borrowed(raw))
}

impl Policy {
    pub fn compile(_cfg: &Config) -> Result<Policy, Vec<Problem>> {
        Ok(Policy { rules: Vec::new() })
    }
    pub fn match_public(&self, _req: &RequestView<'_>) -> Option<&Rule> {
        None
    }
    pub fn evaluate(&self, _req: &RequestView<'_>, _id: &Identity) -> Outcome<'_> {
        Outcome::NoMatch
    }
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

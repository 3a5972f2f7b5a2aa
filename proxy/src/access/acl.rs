//! Access control: `[[acl]]` rules map identity matchers to operations and key-name
//! globs. With no rules every client may do everything; once any rule exists, whatever
//! no rule allows is FORBIDDEN.
//!
//! Rules are resolved against an identity once, when its connection is set up
//! ([`Acl::permissions`]); a request then only checks the few rules that matched.

use std::sync::Arc;

use super::glob::glob_match;
use super::identity::Identity;
use super::ops::{AclOp, OpSet};
use crate::config::AclRule;

#[derive(Debug)]
struct Grant {
    ops: OpSet,
    keys: Vec<String>,
}

impl Grant {
    fn allows(&self, op: AclOp, key: &str) -> bool {
        self.ops.contains(op) && self.keys.iter().any(|glob| glob_match(glob, key))
    }
}

/// The configured rules.
#[derive(Debug, Default)]
pub struct Acl {
    rules: Vec<AclRule>,
}

impl Acl {
    /// The ACL of validated `rules`.
    pub fn new(rules: Vec<AclRule>) -> Self {
        Self { rules }
    }

    /// What `identity` may do: the grants of every rule that matches it.
    pub fn permissions(&self, identity: &Identity) -> Permissions {
        if self.rules.is_empty() {
            return Permissions { grants: None };
        }
        let grants = self
            .rules
            .iter()
            .filter(|rule| matches(rule, identity))
            .map(|rule| Grant { ops: rule.ops, keys: rule.keys.clone() })
            .collect();
        Permissions { grants: Some(Arc::new(grants)) }
    }
}

fn matches(rule: &AclRule, identity: &Identity) -> bool {
    if rule.any {
        return true;
    }
    let any_of = |glob: &Option<String>, values: &[String]| {
        glob.as_ref().is_none_or(|glob| values.iter().any(|value| glob_match(glob, value)))
    };
    any_of(&rule.cn, &identity.common_names)
        && any_of(&rule.ou, &identity.org_units)
        && any_of(&rule.dns, &identity.dns_names)
        && any_of(&rule.uri, &identity.uris)
        && rule.uid.is_none_or(|uid| identity.uid == Some(uid))
        && rule
            .token
            .as_ref()
            .is_none_or(|glob| identity.token.as_ref().is_some_and(|name| glob_match(glob, name)))
}

/// What one connection's identity may do.
#[derive(Debug, Clone)]
pub struct Permissions {
    /// `None`: no ACL is configured and everything is allowed.
    grants: Option<Arc<Vec<Grant>>>,
}

impl Permissions {
    /// Everything allowed (no ACL configured).
    pub fn allow_all() -> Self {
        Self { grants: None }
    }

    /// Whether `op` on `key` is allowed.
    pub fn allows(&self, op: AclOp, key: &str) -> bool {
        match &self.grants {
            None => true,
            Some(grants) => grants.iter().any(|grant| grant.allows(op, key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(cn: Option<&str>, ops: &[&str], keys: &[&str]) -> AclRule {
        AclRule {
            cn: cn.map(str::to_owned),
            ou: None,
            dns: None,
            uri: None,
            uid: None,
            token: None,
            any: cn.is_none(),
            ops: OpSet::parse(ops.iter().copied()).unwrap(),
            keys: keys.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn no_rules_allow_everything_and_any_rule_denies_the_rest() {
        let cn = |name: &str| Identity {
            common_names: vec![name.into()],
            authenticated: true,
            ..Identity::default()
        };
        assert!(Acl::default().permissions(&cn("x")).allows(AclOp::Wrap, "k"));
        let acl = Acl::new(vec![
            rule(Some("svc-*"), &["wrap", "unwrap"], &["pay-*"]),
            rule(None, &["*"], &["public"]),
        ]);
        let svc = acl.permissions(&cn("svc-a"));
        assert!(svc.allows(AclOp::Wrap, "pay-1"));
        assert!(!svc.allows(AclOp::Rewrap, "pay-1"));
        assert!(!svc.allows(AclOp::Wrap, "other"));
        assert!(svc.allows(AclOp::Rewrap, "public"));
        let anonymous = acl.permissions(&Identity::anonymous());
        assert!(!anonymous.allows(AclOp::Wrap, "pay-1"));
        assert!(anonymous.allows(AclOp::GenerateDataKey, "public"));
    }
}

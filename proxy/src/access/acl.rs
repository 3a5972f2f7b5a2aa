//! Access control: `[[acl]]` rules map identity matchers to operations and key-name
//! globs. With no rules every client may do everything; once any rule exists, whatever
//! no rule allows is FORBIDDEN.
//!
//! Rules are resolved against an identity when its connection is set up
//! ([`Acl::permissions`]); a request then only checks the few rules that matched.
//!
//! The rules can be replaced while the proxy serves ([`Acl::replace`], on a config
//! reload): each rule set carries a generation, and a connection's [`Permissions`]
//! re-resolve themselves on the first request that sees a newer one, so a changed rule
//! applies from the next request on, with no lock on the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

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

/// One generation of the rules.
#[derive(Debug, Default)]
struct RuleSet {
    generation: u64,
    rules: Vec<AclRule>,
}

impl RuleSet {
    fn grants(&self, identity: &Identity) -> Option<Arc<Vec<Grant>>> {
        if self.rules.is_empty() {
            return None;
        }
        let grants = self
            .rules
            .iter()
            .filter(|rule| matches(rule, identity))
            .map(|rule| Grant { ops: rule.ops, keys: rule.keys.clone() })
            .collect();
        Some(Arc::new(grants))
    }
}

/// The configured rules, replaceable while serving.
#[derive(Debug, Default)]
pub struct Acl {
    current: Arc<ArcSwap<RuleSet>>,
    generations: AtomicU64,
}

impl Acl {
    /// The ACL of validated `rules`.
    pub fn new(rules: Vec<AclRule>) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(RuleSet { generation: 0, rules })),
            generations: AtomicU64::new(0),
        }
    }

    /// Replaces the rules; every connection's permissions follow from its next request.
    pub fn replace(&self, rules: Vec<AclRule>) {
        let generation = self.generations.fetch_add(1, Ordering::AcqRel) + 1;
        self.current.store(Arc::new(RuleSet { generation, rules }));
    }

    /// What `identity` may do: the grants of every rule that matches it, kept up to
    /// date with [`Acl::replace`].
    pub fn permissions(&self, identity: &Identity) -> Permissions {
        let rules = self.current.load();
        let resolved = Resolved { generation: rules.generation, grants: rules.grants(identity) };
        Permissions {
            grants: resolved.grants.clone(),
            live: Some(Arc::new(LivePermissions {
                acl: Arc::clone(&self.current),
                identity: identity.clone(),
                resolved: ArcSwap::from_pointee(resolved),
            })),
        }
    }
}

/// Grants resolved against one generation of the rules.
#[derive(Debug)]
struct Resolved {
    generation: u64,
    grants: Option<Arc<Vec<Grant>>>,
}

/// What lets [`Permissions`] follow a replaced rule set.
#[derive(Debug)]
struct LivePermissions {
    acl: Arc<ArcSwap<RuleSet>>,
    identity: Identity,
    resolved: ArcSwap<Resolved>,
}

impl LivePermissions {
    fn allows(&self, op: AclOp, key: &str) -> bool {
        let rules = self.acl.load();
        let resolved = self.resolved.load();
        if resolved.generation == rules.generation {
            return allowed(resolved.grants.as_deref(), op, key);
        }
        let fresh = Resolved { generation: rules.generation, grants: rules.grants(&self.identity) };
        let answer = allowed(fresh.grants.as_deref(), op, key);
        self.resolved.store(Arc::new(fresh));
        answer
    }
}

fn allowed(grants: Option<&Vec<Grant>>, op: AclOp, key: &str) -> bool {
    match grants {
        None => true,
        Some(grants) => grants.iter().any(|grant| grant.allows(op, key)),
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
    /// Fixed grants (`None`: everything allowed), used when `live` is absent.
    grants: Option<Arc<Vec<Grant>>>,
    /// The live rules these permissions follow, when they came from an [`Acl`].
    live: Option<Arc<LivePermissions>>,
}

impl Permissions {
    /// Everything allowed, whatever the rules say later.
    pub fn allow_all() -> Self {
        Self { grants: None, live: None }
    }

    /// Whether `op` on `key` is allowed under the current rules.
    pub fn allows(&self, op: AclOp, key: &str) -> bool {
        match &self.live {
            Some(live) => live.allows(op, key),
            None => allowed(self.grants.as_deref(), op, key),
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

    #[test]
    fn replaced_rules_apply_to_permissions_already_resolved() {
        let cn = Identity { common_names: vec!["svc-a".into()], authenticated: true, ..Identity::default() };
        let acl = Acl::new(vec![rule(Some("svc-*"), &["wrap"], &["pay"])]);
        let svc = acl.permissions(&cn);
        assert!(svc.allows(AclOp::Wrap, "pay"));
        acl.replace(vec![rule(Some("svc-*"), &["unwrap"], &["pay"])]);
        assert!(!svc.allows(AclOp::Wrap, "pay"), "the next request sees the new rules");
        assert!(svc.allows(AclOp::Unwrap, "pay"));
        acl.replace(Vec::new());
        assert!(svc.allows(AclOp::Rewrap, "anything"), "no rules: everything allowed");
    }
}

//! Access control: `[[acl]]` rules map identity matchers to operations and key-name
//! globs. With no rules every client may do everything; once any rule exists, whatever
//! no rule allows is FORBIDDEN.
//!
//! Rules are resolved against an identity once, when its connection is set up
//! ([`Acl::permissions`]); a request then only checks the few rules that matched.

use std::sync::Arc;

use crate::auth::Identity;
use crate::config::AclRule;

/// An operation the ACL governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclOp {
    /// WRAP.
    Wrap,
    /// UNWRAP.
    Unwrap,
    /// GENERATE_DATA_KEY.
    GenerateDataKey,
    /// REWRAP.
    Rewrap,
}

impl AclOp {
    const ALL: [AclOp; 4] = [AclOp::Wrap, AclOp::Unwrap, AclOp::GenerateDataKey, AclOp::Rewrap];

    /// The name used in config files and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            AclOp::Wrap => "wrap",
            AclOp::Unwrap => "unwrap",
            AclOp::GenerateDataKey => "generate_data_key",
            AclOp::Rewrap => "rewrap",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn parse(name: &str) -> Option<u8> {
        if name == "*" {
            return Some(AclOp::ALL.iter().fold(0, |bits, op| bits | op.bit()));
        }
        AclOp::ALL.iter().find(|op| op.name() == name).map(|op| op.bit())
    }
}

/// Checks one rule, returning the offending field and why.
pub fn validate_rule(rule: &AclRule) -> Result<(), (&'static str, String)> {
    if rule.any && rule.has_matcher() {
        return Err(("any", "any = true matches everyone; drop the other matchers".into()));
    }
    if !rule.any && !rule.has_matcher() {
        return Err(("cn", "a rule needs a matcher (cn, ou, dns, uri, uid) or any = true".into()));
    }
    for (field, glob) in [("cn", &rule.cn), ("ou", &rule.ou), ("dns", &rule.dns), ("uri", &rule.uri)] {
        if glob.as_ref().is_some_and(String::is_empty) {
            return Err((field, "must not be empty".into()));
        }
    }
    if rule.ops.is_empty() {
        return Err(("ops", "list at least one operation".into()));
    }
    if let Some(bad) = rule.ops.iter().find(|op| AclOp::parse(op).is_none()) {
        return Err((
            "ops",
            format!("unknown operation {bad:?}: wrap, unwrap, generate_data_key, rewrap or *"),
        ));
    }
    if rule.keys.is_empty() || rule.keys.iter().any(String::is_empty) {
        return Err(("keys", "list at least one non-empty key glob".into()));
    }
    Ok(())
}

/// `*` matches any run of characters (none included), `?` exactly one; everything else
/// itself. Iterative with one backtrack point, so linear in practice and never
/// exponential.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Checked on every request: ASCII names (the usual case) match byte by byte with no
    // allocation; others by characters, so `?` is one character, not one byte.
    if pattern.is_ascii() && text.is_ascii() {
        return glob(pattern.as_bytes(), text.as_bytes(), b'*', b'?');
    }
    let (pattern, text): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    glob(&pattern, &text, '*', '?')
}

fn glob<T: Copy + PartialEq>(pattern: &[T], text: &[T], many: T, one: T) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(&c) if c == many => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == one || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == many)
}

#[derive(Debug)]
struct Grant {
    ops: u8,
    keys: Vec<String>,
}

impl Grant {
    fn allows(&self, op: AclOp, key: &str) -> bool {
        self.ops & op.bit() != 0 && self.keys.iter().any(|glob| glob_match(glob, key))
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
            .map(|rule| Grant {
                ops: rule.ops.iter().filter_map(|op| AclOp::parse(op)).fold(0, |a, b| a | b),
                keys: rule.keys.clone(),
            })
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
            any: cn.is_none(),
            ops: ops.iter().map(|s| (*s).to_owned()).collect(),
            keys: keys.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn globs() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "anything", true),
            ("pay-*", "pay-eu", true),
            ("pay-*", "pay", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*-eu-*", "x-eu-y", true),
            ("*a*b", "xaxxb", true),
            ("*a*b", "xaxxbc", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} vs {text}");
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
    fn rules_are_validated() {
        assert_eq!(validate_rule(&rule(Some("a"), &["encrypt"], &["k"])).unwrap_err().0, "ops");
        assert_eq!(validate_rule(&rule(Some("a"), &["wrap"], &[])).unwrap_err().0, "keys");
        let mut nobody = rule(Some("a"), &["wrap"], &["k"]);
        nobody.cn = None;
        assert_eq!(validate_rule(&nobody).unwrap_err().0, "cn");
        validate_rule(&rule(None, &["*"], &["*"])).unwrap();
    }
}

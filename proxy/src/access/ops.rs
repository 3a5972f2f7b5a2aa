//! The operations access control governs, and sets of them as `[[acl]]` rules list
//! them (`ops = ["wrap", "unwrap"]`, or `["*"]`).

use std::fmt;

use serde::Deserialize;

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
    /// SIGN.
    Sign,
    /// VERIFY.
    Verify,
    /// GET_PUBLIC_KEY.
    GetPublicKey,
}

impl AclOp {
    /// Every operation.
    pub const ALL: [AclOp; 7] = [
        AclOp::Wrap,
        AclOp::Unwrap,
        AclOp::GenerateDataKey,
        AclOp::Rewrap,
        AclOp::Sign,
        AclOp::Verify,
        AclOp::GetPublicKey,
    ];

    /// The name used in config files and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            AclOp::Wrap => "wrap",
            AclOp::Unwrap => "unwrap",
            AclOp::GenerateDataKey => "generate_data_key",
            AclOp::Rewrap => "rewrap",
            AclOp::Sign => "sign",
            AclOp::Verify => "verify",
            AclOp::GetPublicKey => "get_public_key",
        }
    }

    /// The operation named `name` in a config file.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of operations, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpSet(u8);

impl OpSet {
    /// Every operation (`"*"`).
    pub fn all() -> Self {
        AclOp::ALL.into_iter().collect()
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: AclOp) -> bool {
        self.0 & op.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `names` as a set; the first unknown name is the error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, UnknownOp> {
        names.into_iter().try_fold(OpSet::default(), |set, name| match name {
            "*" => Ok(OpSet::all()),
            _ => AclOp::from_name(name).map(|op| set | op).ok_or_else(|| UnknownOp(name.to_owned())),
        })
    }
}

impl std::ops::BitOr<AclOp> for OpSet {
    type Output = OpSet;
    fn bitor(self, op: AclOp) -> OpSet {
        OpSet(self.0 | op.bit())
    }
}

impl FromIterator<AclOp> for OpSet {
    fn from_iter<I: IntoIterator<Item = AclOp>>(ops: I) -> Self {
        ops.into_iter().fold(OpSet::default(), |set, op| set | op)
    }
}

/// An operation name no rule may use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown operation {0:?}: wrap, unwrap, generate_data_key, rewrap, sign, verify, get_public_key or *"
)]
pub struct UnknownOp(pub String);

impl<'de> Deserialize<'de> for OpSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        OpSet::parse(names.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for OpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> =
            AclOp::ALL.into_iter().filter(|op| self.contains(*op)).map(AclOp::name).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_parse_from_names() {
        let set = OpSet::parse(["wrap", "rewrap"]).unwrap();
        assert!(set.contains(AclOp::Wrap) && set.contains(AclOp::Rewrap));
        assert!(!set.contains(AclOp::Unwrap));
        assert_eq!(OpSet::parse(["*"]).unwrap(), OpSet::all());
        assert_eq!(OpSet::parse(["encrypt"]), Err(UnknownOp("encrypt".into())));
        let signing = OpSet::parse(["sign", "verify", "get_public_key"]).unwrap();
        assert!(signing.contains(AclOp::Sign) && signing.contains(AclOp::GetPublicKey));
        assert!(!signing.contains(AclOp::Wrap));
        assert!(OpSet::parse([]).unwrap().is_empty());
    }
}

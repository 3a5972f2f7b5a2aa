//! The operations access control governs, and sets of them as `[[acl]]` rules list
//! them (`ops = ["wrap", "unwrap"]`, or `["*"]`).
//!
//! `*` is every operation on data (wrap through get_public_key, encrypt, decrypt). Key management through
//! an API (`manage_keys`: the Vault Transit API's key create, rotate and config) is
//! never implied by `*`: a rule must name it, so no rule written before it existed
//! gained the power to create keys.

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
    /// ENCRYPT (the raw AEAD, as AWS XKS uses it).
    Encrypt,
    /// DECRYPT (the raw AEAD).
    Decrypt,
    /// Creating, rotating and configuring keys through a front end's API (the Vault
    /// Transit API's `keys/:name`, `rotate`, `config`). Not part of `*`.
    ManageKeys,
}

impl AclOp {
    /// Every operation on data: what `*` stands for.
    pub const DATA: [AclOp; 9] = [
        AclOp::Wrap,
        AclOp::Unwrap,
        AclOp::GenerateDataKey,
        AclOp::Rewrap,
        AclOp::Sign,
        AclOp::Verify,
        AclOp::GetPublicKey,
        AclOp::Encrypt,
        AclOp::Decrypt,
    ];

    /// Every operation, `manage_keys` included.
    pub const ALL: [AclOp; 10] = [
        AclOp::Wrap,
        AclOp::Unwrap,
        AclOp::GenerateDataKey,
        AclOp::Rewrap,
        AclOp::Sign,
        AclOp::Verify,
        AclOp::GetPublicKey,
        AclOp::Encrypt,
        AclOp::Decrypt,
        AclOp::ManageKeys,
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
            AclOp::Encrypt => "encrypt",
            AclOp::Decrypt => "decrypt",
            AclOp::ManageKeys => "manage_keys",
        }
    }

    /// The operation named `name` in a config file.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    fn bit(self) -> u16 {
        1 << self as u8
    }
}

/// A set of operations, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpSet(u16);

impl OpSet {
    /// Every operation on data (`"*"`); `manage_keys` is not among them.
    pub fn all() -> Self {
        AclOp::DATA.into_iter().collect()
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: AclOp) -> bool {
        self.0 & op.bit() != 0
    }

    /// The operations in either set.
    pub fn union(self, other: OpSet) -> Self {
        OpSet(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `names` as a set; the first unknown name is the error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, UnknownOp> {
        names.into_iter().try_fold(OpSet::default(), |set, name| match name {
            "*" => Ok(set.union(OpSet::all())),
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
    "unknown operation {0:?}: wrap, unwrap, generate_data_key, rewrap, sign, verify, get_public_key, \
     encrypt, decrypt, manage_keys or *"
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
        assert_eq!(OpSet::parse(["seal"]), Err(UnknownOp("seal".into())));
        let raw = OpSet::parse(["encrypt"]).unwrap();
        assert!(raw.contains(AclOp::Encrypt) && !raw.contains(AclOp::Decrypt));
        assert!(OpSet::all().contains(AclOp::Decrypt), "* covers the raw AEAD");
        let signing = OpSet::parse(["sign", "verify", "get_public_key"]).unwrap();
        assert!(signing.contains(AclOp::Sign) && signing.contains(AclOp::GetPublicKey));
        assert!(!signing.contains(AclOp::Wrap));
        assert!(OpSet::parse([]).unwrap().is_empty());
        assert!(!OpSet::all().contains(AclOp::ManageKeys), "* never implies key management");
        let admin = OpSet::parse(["*", "manage_keys"]).unwrap();
        assert!(admin.contains(AclOp::ManageKeys) && admin.contains(AclOp::Wrap));
        assert_eq!(OpSet::parse(["manage_keys", "*"]).unwrap(), admin, "in any order");
    }
}

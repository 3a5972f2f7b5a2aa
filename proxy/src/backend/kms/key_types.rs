//! How keymux key types live in KMS: the key spec and usage each is created with, the
//! tag that records it, the signing algorithm each signs with, and how a listing reads a
//! KMS key's type back.
//!
//! | keymux type | KeySpec | KeyUsage | SigningAlgorithm |
//! |---|---|---|---|
//! | `aes-256` | `SYMMETRIC_DEFAULT` | `ENCRYPT_DECRYPT` | — |
//! | `ec-p256` | `ECC_NIST_P256` | `SIGN_VERIFY` | `ECDSA_SHA_256` |
//! | `ec-p384` | `ECC_NIST_P384` | `SIGN_VERIFY` | `ECDSA_SHA_384` |
//! | `rsa-3072-pss` | `RSA_3072` | `SIGN_VERIFY` | `RSASSA_PSS_SHA_256` |
//! | `rsa-3072-pkcs1` | `RSA_3072` | `SIGN_VERIFY` | `RSASSA_PKCS1_V1_5_SHA_256` |
//!
//! The key spec is immutable and says the type of every key but an RSA one: PSS and
//! PKCS#1 v1.5 share `RSA_3072`. So every asymmetric key keymux creates carries the tag
//! [`TYPE_TAG`] = its type's name, and a listing reads the tag (ListResourceTags) of
//! `RSA_3072` keys only, once per KMS key per proxy ([`TypeCache`]). `aes-256` keys
//! carry no tag: creating them needs no permission beyond `kms:CreateKey`, and keys
//! created before types existed read as `aes-256` like new ones.
//!
//! `ed25519`, `ml-dsa-65` and `ml-kem-768` are refused. The KMS API keymux uses
//! (aws-sdk-kms 1.77) has no Ed25519 key spec and no ML-KEM; it has `ML_DSA_65` (signing
//! with `ML_DSA_SHAKE_256`), but moto 5.2, which the tests run against, cannot create
//! ML-DSA keys, so keymux does not map a type it cannot test.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_kms::types::{KeySpec, KeyUsageType, SigningAlgorithmSpec, Tag};

use crate::keys::KeyType;

/// The tag recording a KMS key's keymux type: `keymux:key-type` = `rsa-3072-pss`, ...
pub(crate) const TYPE_TAG: &str = "keymux:key-type";

/// What a new KMS key of a keymux type is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewKey {
    pub(crate) spec: KeySpec,
    pub(crate) usage: KeyUsageType,
    /// The [`TYPE_TAG`] value, for asymmetric keys.
    pub(crate) tag: Option<&'static str>,
}

impl NewKey {
    /// How to create a KMS key of `key_type`; `None` for a type KMS cannot hold here.
    pub(crate) fn of(key_type: KeyType) -> Option<Self> {
        let signing = |spec| Self { spec, usage: KeyUsageType::SignVerify, tag: Some(key_type.name()) };
        Some(match key_type {
            KeyType::Aes256 => {
                Self { spec: KeySpec::SymmetricDefault, usage: KeyUsageType::EncryptDecrypt, tag: None }
            }
            KeyType::EcP256 => signing(KeySpec::EccNistP256),
            KeyType::EcP384 => signing(KeySpec::EccNistP384),
            KeyType::Rsa3072Pss | KeyType::Rsa3072Pkcs1 => signing(KeySpec::Rsa3072),
            _ => return None,
        })
    }

    /// The tag to create the key (and each replica: KMS does not share tags between
    /// the keys of a multi-region set) with.
    pub(crate) fn type_tag(&self) -> Option<Tag> {
        let value = self.tag?;
        Tag::builder().tag_key(TYPE_TAG).tag_value(value).build().ok()
    }
}

/// The algorithm keys of `key_type` sign with on KMS.
pub(crate) fn signing_algorithm(key_type: KeyType) -> Option<SigningAlgorithmSpec> {
    Some(match key_type {
        KeyType::EcP256 => SigningAlgorithmSpec::EcdsaSha256,
        KeyType::EcP384 => SigningAlgorithmSpec::EcdsaSha384,
        KeyType::Rsa3072Pss => SigningAlgorithmSpec::RsassaPssSha256,
        KeyType::Rsa3072Pkcs1 => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
        _ => return None,
    })
}

/// A KMS key's type, as far as its key spec and usage say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SpecSays {
    /// The type.
    Type(KeyType),
    /// An RSA-3072 signing key: PSS or PKCS#1 v1.5, which only the tag says.
    Rsa3072,
    /// Not a key keymux can use: why.
    Foreign(String),
}

/// Reads a KMS key's type from its metadata. A key with no spec or usage is a
/// symmetric encryption key (KMS's defaults).
pub(crate) fn from_spec(spec: Option<&KeySpec>, usage: Option<&KeyUsageType>) -> SpecSays {
    let spec = spec.unwrap_or(&KeySpec::SymmetricDefault);
    let usage = usage.unwrap_or(&KeyUsageType::EncryptDecrypt);
    match (spec, usage) {
        (KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt) => SpecSays::Type(KeyType::Aes256),
        (KeySpec::EccNistP256, KeyUsageType::SignVerify) => SpecSays::Type(KeyType::EcP256),
        (KeySpec::EccNistP384, KeyUsageType::SignVerify) => SpecSays::Type(KeyType::EcP384),
        (KeySpec::Rsa3072, KeyUsageType::SignVerify) => SpecSays::Rsa3072,
        (spec, usage) => {
            SpecSays::Foreign(format!("a {} key for {} is no keymux key type", spec.as_str(), usage.as_str()))
        }
    }
}

/// Reads an RSA-3072 signing key's type from its tags.
pub(crate) fn rsa_from_tags(tags: &[Tag]) -> Result<KeyType, String> {
    let Some(tag) = tags.iter().find(|t| t.tag_key() == TYPE_TAG) else {
        return Err(format!(
            "an RSA_3072 key without the {TYPE_TAG} tag (rsa-3072-pss or rsa-3072-pkcs1): tag it to use it"
        ));
    };
    match tag.tag_value().parse() {
        Ok(t @ (KeyType::Rsa3072Pss | KeyType::Rsa3072Pkcs1)) => Ok(t),
        _ => Err(format!("an RSA_3072 key tagged {TYPE_TAG} = {:?}", tag.tag_value())),
    }
}

/// The types of RSA keys already read from their tags, by KMS key id: a key's spec
/// never changes, and keymux never changes its tag, so each is read once per proxy.
#[derive(Default)]
pub(crate) struct TypeCache {
    rsa: Mutex<HashMap<String, KeyType>>,
}

impl TypeCache {
    pub(crate) fn get(&self, key_id: &str) -> Option<KeyType> {
        self.rsa.lock().unwrap_or_else(|p| p.into_inner()).get(key_id).copied()
    }

    pub(crate) fn insert(&self, key_id: &str, key_type: KeyType) {
        self.rsa.lock().unwrap_or_else(|p| p.into_inner()).insert(key_id.to_owned(), key_type);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(value: &str) -> Tag {
        Tag::builder().tag_key(TYPE_TAG).tag_value(value).build().unwrap()
    }

    /// Reads a type back the way a listing does.
    fn read_back(new: &NewKey) -> Result<KeyType, String> {
        match from_spec(Some(&new.spec), Some(&new.usage)) {
            SpecSays::Type(t) => Ok(t),
            SpecSays::Rsa3072 => rsa_from_tags(&new.type_tag().into_iter().collect::<Vec<_>>()),
            SpecSays::Foreign(why) => Err(why),
        }
    }

    #[test]
    fn every_type_kms_holds_reads_back_as_itself() {
        for key_type in KeyType::ALL {
            match NewKey::of(key_type) {
                Some(new) => {
                    assert_eq!(read_back(&new), Ok(key_type), "{key_type}");
                    assert_eq!(new.type_tag().is_some(), key_type.is_asymmetric(), "{key_type}");
                    assert_eq!(signing_algorithm(key_type).is_some(), key_type.is_signing());
                }
                None => assert!(
                    matches!(key_type, KeyType::Ed25519 | KeyType::MlDsa65 | KeyType::MlKem768),
                    "{key_type} is refused"
                ),
            }
        }
    }

    #[test]
    fn keys_without_a_spec_or_tag_and_foreign_keys() {
        // Keys made before types existed: no tag, and KMS's defaults.
        assert_eq!(from_spec(None, None), SpecSays::Type(KeyType::Aes256));
        assert_eq!(from_spec(Some(&KeySpec::SymmetricDefault), None), SpecSays::Type(KeyType::Aes256));
        for (spec, usage) in [
            (KeySpec::Rsa2048, KeyUsageType::SignVerify),
            (KeySpec::Rsa3072, KeyUsageType::EncryptDecrypt),
            (KeySpec::EccNistP256, KeyUsageType::KeyAgreement),
            (KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac),
            (KeySpec::MlDsa65, KeyUsageType::SignVerify),
        ] {
            assert!(matches!(from_spec(Some(&spec), Some(&usage)), SpecSays::Foreign(_)), "{spec:?}");
        }
        assert!(rsa_from_tags(&[]).is_err(), "an untagged RSA key is PSS or PKCS#1: unknown");
        assert!(rsa_from_tags(&[tag("ec-p256")]).is_err());
        assert!(rsa_from_tags(&[tag("RSA-3072-PSS")]).is_err(), "one spelling");
        let other = Tag::builder().tag_key("team").tag_value("payments").build().unwrap();
        assert_eq!(rsa_from_tags(&[other, tag("rsa-3072-pkcs1")]), Ok(KeyType::Rsa3072Pkcs1));
    }

    #[test]
    fn the_cache_remembers_by_key_id() {
        let cache = TypeCache::default();
        assert_eq!(cache.get("k1"), None);
        cache.insert("k1", KeyType::Rsa3072Pss);
        assert_eq!(cache.get("k1"), Some(KeyType::Rsa3072Pss));
        assert_eq!(cache.get("k2"), None);
    }
}

//! Keys on KMS: the [`KeyStore`] listing and writes.
//!
//! Creating a version creates a KMS key of the version's type ([`key_types`]: its key
//! spec, key usage and type tag; a multi-region key when the configured regions
//! differ), replicates it to every other configured region, and names it with the
//! version alias in each. Disabling disables the KMS key in every region, so KMS itself
//! refuses it. Destroying removes the alias and schedules the KMS key's deletion (KMS's
//! minimum waiting period, 7 days, applies). These calls are rare and bypass admission
//! control; listing costs one ListAliases page per 100 aliases and one DescribeKey per
//! version, at every `keys.refresh_interval`, and one ListResourceTags per RSA key
//! version the first time a proxy lists it.
//!
//! [`KeyStore`]: crate::keys::KeyStore
//! [`key_types`]: super::key_types

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::types::KeyState;
use futures_util::future::join_all;

use super::Shared;
use super::client::classify;
use super::failover::Region;
use super::key_types::{self, NewKey, SpecSays};
use super::names::Parsed;
use crate::backend::BackendFault;
use crate::error::OpError;
use crate::keys::{KeyAdminError, KeyInfo, VersionInfo, VersionState};

/// An admin request's failure, with the retry hint of admin calls (they bypass
/// admission control and the failover's backoff).
fn admin<E>(error: SdkError<E, HttpResponse>) -> BackendFault
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match classify(error) {
        BackendFault::Retryable { reason, .. } => {
            BackendFault::Retryable { reason, retry_after: ADMIN_RETRY_AFTER }
        }
        other => other,
    }
}

/// When to retry a failed admin call.
const ADMIN_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

fn has_code<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>, code: &str) -> bool {
    error.code() == Some(code)
}

/// One version alias, as DescribeKey described its KMS key.
struct Listed<'a> {
    key: &'a str,
    info: VersionInfo,
    /// The KMS key id.
    target: &'a str,
    says: SpecSays,
}

impl Shared {
    fn primary(&self) -> Result<&Region, BackendFault> {
        self.regions.all().first().ok_or_else(|| OpError::Internal("no KMS region configured".into()).into())
    }

    /// Every key, read from the first region that answers.
    pub(crate) async fn list(&self) -> Result<Vec<KeyInfo>, BackendFault> {
        let mut last = None;
        for region in self.regions.all() {
            match self.list_in(region).await {
                Ok(keys) => return Ok(keys),
                Err(error) => {
                    tracing::warn!(region = %region.label, %error, "cannot list KMS keys here");
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| OpError::Internal("no KMS region configured".into()).into()))
    }

    /// Every alias of ours in `region`: (alias, target key id).
    async fn aliases(&self, region: &Region) -> Result<Vec<(String, String)>, BackendFault> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = region
                .client
                .list_aliases()
                .limit(100)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(admin)?;
            for alias in page.aliases() {
                if let (Some(name), Some(target)) = (alias.alias_name(), alias.target_key_id())
                    && self.names.parse(name).is_some()
                {
                    out.push((name.to_owned(), target.to_owned()));
                }
            }
            match page.next_marker() {
                Some(next) if page.truncated() => marker = Some(next.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    async fn list_in(&self, region: &Region) -> Result<Vec<KeyInfo>, BackendFault> {
        let aliases = self.aliases(region).await?;
        let mut versions = Vec::new();
        let mut minimums = Vec::new();
        for (alias, target) in &aliases {
            match self.names.parse(alias) {
                Some(Parsed::Version(key, version)) => versions.push((key, version, target.as_str())),
                Some(Parsed::MinVersion(key, version)) => minimums.push((key, version)),
                None => {}
            }
        }
        versions.sort_unstable();
        let described = join_all(
            versions.iter().map(|(_, _, target)| region.client.describe_key().key_id(*target).send()),
        )
        .await;
        let mut listed = Vec::with_capacity(versions.len());
        for ((key, version, target), described) in versions.into_iter().zip(described) {
            let described = described.map_err(admin)?;
            let Some(metadata) = described.key_metadata() else { continue };
            let state = if metadata.key_state() == Some(&KeyState::Enabled) {
                VersionState::Enabled
            } else {
                VersionState::Disabled
            };
            let created_at = metadata.creation_date().map_or(0, |d| u64::try_from(d.secs()).unwrap_or(0));
            let says = key_types::from_spec(metadata.key_spec(), metadata.key_usage());
            listed.push(Listed {
                key,
                info: VersionInfo { version, state, created_at, disabled_at: None },
                target,
                says,
            });
        }
        let untagged = self.read_rsa_types(region, &listed).await?;
        let mut keys: BTreeMap<&str, KeyInfo> = BTreeMap::new();
        for Listed { key, info, target, says } in listed {
            let key_type = match says {
                SpecSays::Type(key_type) => Ok(key_type),
                SpecSays::Rsa3072 => self
                    .key_types
                    .get(target)
                    .ok_or_else(|| untagged.get(target).cloned().unwrap_or_default()),
                SpecSays::Foreign(why) => Err(why),
            };
            let version = info.version;
            let key_type = match key_type {
                Ok(key_type) => key_type,
                Err(why) => {
                    tracing::warn!(key, version, kms_key = target, "KMS key left out of the listing: {why}");
                    continue;
                }
            };
            // The key's type is its lowest version's; rotation keeps it, so a version
            // of another type is a KMS key aliased by hand.
            let entry = keys.entry(key).or_insert_with(|| KeyInfo {
                name: key.to_owned(),
                key_type,
                versions: Vec::new(),
                min_decryption_version: 1,
            });
            if entry.key_type != key_type {
                tracing::warn!(
                    key,
                    version,
                    kms_key = target,
                    "KMS key left out of the listing: it is {key_type}, the key's first version {}",
                    entry.key_type
                );
                continue;
            }
            entry.versions.push(info);
        }
        for (key, version) in minimums {
            if let Some(info) = keys.get_mut(key) {
                info.min_decryption_version = info.min_decryption_version.max(version);
            }
        }
        Ok(keys.into_values().collect())
    }

    /// Reads the type tag of every RSA key in `listed` not read before, remembering the
    /// types found. Returns why each key whose tag says no type is left out.
    async fn read_rsa_types<'a>(
        &self,
        region: &Region,
        listed: &[Listed<'a>],
    ) -> Result<HashMap<&'a str, String>, BackendFault> {
        let mut unread: Vec<&str> = listed
            .iter()
            .filter(|v| v.says == SpecSays::Rsa3072 && self.key_types.get(v.target).is_none())
            .map(|v| v.target)
            .collect();
        unread.sort_unstable();
        unread.dedup();
        let tags = join_all(unread.iter().map(|target| {
            // A KMS key has at most 50 tags: one page.
            region.client.list_resource_tags().key_id(*target).limit(50).send()
        }))
        .await;
        let mut untagged = HashMap::new();
        for (target, tags) in unread.into_iter().zip(tags) {
            match key_types::rsa_from_tags(tags.map_err(admin)?.tags()) {
                Ok(key_type) => self.key_types.insert(target, key_type),
                Err(why) => {
                    untagged.insert(target, why);
                }
            }
        }
        Ok(untagged)
    }

    /// The KMS key id an alias names in `region`, if it exists.
    async fn alias_target(&self, region: &Region, alias: &str) -> Result<Option<String>, BackendFault> {
        match region.client.describe_key().key_id(alias).send().await {
            Ok(described) => Ok(described.key_metadata().map(|m| m.key_id().to_owned())),
            Err(error) if has_code(&error, "NotFoundException") => Ok(None),
            Err(error) => Err(admin(error)),
        }
    }

    /// The KMS key id of `version` of `name` in `region`.
    async fn key_id(&self, region: &Region, name: &str, version: u32) -> Result<String, KeyAdminError> {
        self.alias_target(region, &self.names.version(name, version))
            .await?
            .ok_or_else(|| KeyAdminError::UnknownVersion { key: name.into(), version })
    }

    /// Points `alias` at `key_id` in `region`; an alias that already names that key
    /// (a replica sharing it) is fine. `Ok(false)`: the alias names another key.
    async fn create_alias(&self, region: &Region, alias: &str, key_id: &str) -> Result<bool, BackendFault> {
        match region.client.create_alias().alias_name(alias).target_key_id(key_id).send().await {
            Ok(_) => Ok(true),
            Err(error) if has_code(&error, "AlreadyExistsException") => {
                Ok(self.alias_target(region, alias).await?.as_deref() == Some(key_id))
            }
            Err(error) => Err(admin(error)),
        }
    }

    /// [`Self::create_alias`], where another key under the alias is a refusal.
    async fn alias_or_refuse(&self, region: &Region, alias: &str, key_id: &str) -> Result<(), KeyAdminError> {
        if self.create_alias(region, alias, key_id).await? {
            return Ok(());
        }
        let message = format!("{alias} already names another KMS key in {}", region.label);
        Err(BackendFault::Final(OpError::BadRequest(message)).into())
    }

    /// Creates the KMS key for `version` of `name`, as `new` says, replicated to every
    /// region, and its alias in each. If the alias already names another key, another
    /// admin created this version concurrently.
    pub(crate) async fn create_version(
        &self,
        name: &str,
        version: u32,
        new: &NewKey,
    ) -> Result<(), KeyAdminError> {
        let primary = self.primary()?;
        let multi_region = self.regions.all().iter().any(|r| r.region != primary.region);
        let description = match new.tag {
            Some(key_type) => format!("keymux key {name} version {version}, {key_type}"),
            None => format!("keymux key {name} version {version}"),
        };
        let tags = new.type_tag().map(|tag| vec![tag]);
        let created = primary
            .client
            .create_key()
            .description(&description)
            .key_spec(new.spec.clone())
            .key_usage(new.usage.clone())
            .set_tags(tags.clone())
            .multi_region(multi_region)
            .send()
            .await
            .map_err(admin)?;
        let key_id = created.key_metadata().map(|m| m.key_id().to_owned()).ok_or_else(|| {
            BackendFault::Final(OpError::Internal("KMS created a key without metadata".into()))
        })?;
        let mut replicated = HashSet::from([primary.region.as_str()]);
        for region in self.regions.all() {
            if replicated.insert(region.region.as_str()) {
                primary
                    .client
                    .replicate_key()
                    .key_id(&key_id)
                    .replica_region(&region.region)
                    // Neither is shared between the keys of a multi-region set.
                    .description(&description)
                    .set_tags(tags.clone())
                    .send()
                    .await
                    .map_err(admin)?;
            }
        }
        let alias = self.names.version(name, version);
        for region in self.regions.all() {
            if !self.create_alias(region, &alias, &key_id).await? {
                return Err(KeyAdminError::ConcurrentChange { key: name.into(), version });
            }
        }
        Ok(())
    }

    /// Enables or disables the KMS key in every region.
    pub(crate) async fn set_version_state(
        &self,
        name: &str,
        version: u32,
        state: VersionState,
    ) -> Result<(), KeyAdminError> {
        for region in self.regions.all() {
            let key_id = self.key_id(region, name, version).await?;
            match state {
                VersionState::Enabled => {
                    region.client.enable_key().key_id(key_id).send().await.map(drop).map_err(admin)
                }
                VersionState::Disabled => {
                    region.client.disable_key().key_id(key_id).send().await.map(drop).map_err(admin)
                }
            }?;
        }
        Ok(())
    }

    /// A `min-v<N>` alias in every region, replacing the old one.
    pub(crate) async fn set_min_decryption_version(
        &self,
        name: &str,
        version: u32,
    ) -> Result<(), KeyAdminError> {
        let alias = self.names.min_version(name, version);
        for region in self.regions.all() {
            let key_id = self.key_id(region, name, version).await?;
            self.alias_or_refuse(region, &alias, &key_id).await?;
            for (old, _) in self.aliases(region).await? {
                if old != alias
                    && matches!(self.names.parse(&old), Some(Parsed::MinVersion(k, _)) if k == name)
                {
                    match region.client.delete_alias().alias_name(&old).send().await {
                        Ok(_) => {}
                        Err(error) if has_code(&error, "NotFoundException") => {}
                        Err(error) => return Err(admin(error).into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the alias and schedules the KMS key's deletion in every region, replicas
    /// first.
    pub(crate) async fn destroy_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        let alias = self.names.version(name, version);
        let mut targets = Vec::new();
        for region in self.regions.all() {
            targets.push(self.key_id(region, name, version).await?);
        }
        for (region, key_id) in self.regions.all().iter().zip(&targets).rev() {
            match region.client.delete_alias().alias_name(&alias).send().await {
                Ok(_) => {}
                Err(error) if has_code(&error, "NotFoundException") => {}
                Err(error) => return Err(admin(error).into()),
            }
            match region.client.schedule_key_deletion().key_id(key_id).pending_window_in_days(7).send().await
            {
                Ok(_) => {}
                Err(error) if has_code(&error, "KMSInvalidStateException") => {}
                Err(error) => return Err(admin(error).into()),
            }
        }
        Ok(())
    }
}

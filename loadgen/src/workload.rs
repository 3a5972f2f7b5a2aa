//! What each request does: which operation (fixed or a weighted mix) on which key
//! (one, or many with a Zipf skew), with which blob or signature.
//!
//! Operations come in two kinds, each with its own keys, since no key type does both:
//! the wrapping operations (wrap, unwrap, generate-data-key, rewrap) use the `--key`
//! keys, and sign and verify the `--sign-key` keys. Both spread over `--keys` keys with
//! the same distribution, so a mix of the two kinds loads two key families alike.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail, ensure};
use keymux_client::{CallOptions, Client, Signature};
use keymux_protocol::{Request, SecretBytes};
use rand::RngExt;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

use crate::scenario::Scenario;

/// An operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// WRAP a key of `--dek-size` bytes.
    Wrap,
    /// UNWRAP blobs made beforehand, cycling through them.
    Unwrap,
    /// GENERATE_DATA_KEY of `--dek-size` bytes.
    GenerateDataKey,
    /// REWRAP blobs made beforehand, cycling through them.
    Rewrap,
    /// SIGN a `--message-size` message with a signing key (`--sign-key`).
    Sign,
    /// VERIFY, over and over, the signature each signing key made at set-up.
    Verify,
    /// A weighted mix of the others (`--mix`).
    Mix,
}

impl Op {
    /// Whether this operation needs blobs made beforehand.
    pub fn needs_blobs(self) -> bool {
        matches!(self, Op::Unwrap | Op::Rewrap)
    }

    /// Whether this operation uses the signing keys (`--sign-key`) rather than the
    /// wrapping keys (`--key`).
    pub fn signs(self) -> bool {
        matches!(self, Op::Sign | Op::Verify)
    }
}

/// Why an operation did not succeed.
#[derive(Debug)]
pub enum OpError {
    /// The call failed.
    Call(keymux_client::Error),
    /// VERIFY answered `valid = 0` for a signature made at set-up, which must verify.
    InvalidSignature,
}

impl OpError {
    /// The label the report counts it under.
    pub fn label(&self) -> &'static str {
        match self {
            OpError::Call(error) => crate::stats::error_label(error),
            OpError::InvalidSignature => crate::stats::INVALID_SIGNATURE,
        }
    }

    /// Whether the proxy answered (a status, or a signature that does not verify)
    /// rather than the client giving up (a deadline, a lost connection).
    pub fn answered(&self) -> bool {
        match self {
            OpError::Call(error) => error.status().is_some(),
            OpError::InvalidSignature => true,
        }
    }
}

impl From<keymux_client::Error> for OpError {
    fn from(error: keymux_client::Error) -> Self {
        OpError::Call(error)
    }
}

/// Operation weights for `--op mix`, e.g. `wrap=50,unwrap=40,generate-data-key=10`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mix(pub Vec<(Op, u32)>);

impl Default for Mix {
    fn default() -> Self {
        Mix(vec![(Op::Wrap, 1), (Op::Unwrap, 1)])
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut weights = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) = part.split_once('=').context("mix entries are op=weight")?;
            let op = <Op as clap::ValueEnum>::from_str(name.trim(), true).map_err(|e| anyhow::anyhow!(e))?;
            ensure!(op != Op::Mix, "a mix cannot contain mix");
            let weight: u32 =
                weight.trim().parse().with_context(|| format!("weight of {name} is not a number"))?;
            weights.push((op, weight));
        }
        ensure!(weights.iter().any(|(_, w)| *w > 0), "a mix needs at least one positive weight");
        Ok(Mix(weights))
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(op, w)| {
                format!(
                    "{}={w}",
                    clap::ValueEnum::to_possible_value(op).map_or("?".into(), |v| v.get_name().to_owned())
                )
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Picks key indexes: uniform, or Zipf-skewed (index 0 hottest).
#[derive(Debug, Clone)]
pub struct KeyChooser {
    keys: usize,
    zipf: Option<Zipf<f64>>,
}

impl KeyChooser {
    /// A chooser over `keys` keys with Zipf exponent `skew` (0 = uniform).
    pub fn new(keys: usize, skew: f64) -> anyhow::Result<Self> {
        ensure!(keys > 0, "keys must be at least 1");
        ensure!(skew >= 0.0, "zipf must be 0 or more");
        let zipf = if skew > 0.0 && keys > 1 {
            Some(Zipf::new(keys as f64, skew).map_err(|e| anyhow::anyhow!("zipf: {e}"))?)
        } else {
            None
        };
        Ok(Self { keys, zipf })
    }

    /// The next key index.
    pub fn pick(&self, rng: &mut SmallRng) -> usize {
        match &self.zipf {
            Some(zipf) => (zipf.sample(rng) as usize).clamp(1, self.keys) - 1,
            None if self.keys == 1 => 0,
            None => rng.random_range(0..self.keys),
        }
    }
}

/// Everything a request needs, shared by every request loop.
pub struct Workload {
    /// The mix (a single fixed operation is a mix of one).
    ops: Vec<(Op, u32)>,
    total_weight: u32,
    /// Names of the wrapping operations' keys; requests choose among them with
    /// `chooser`.
    pub keys: Vec<String>,
    /// Names of sign and verify's keys, as many as `keys`, chosen alike.
    pub sign_keys: Vec<String>,
    chooser: KeyChooser,
    dek_size: u16,
    plaintext: Vec<u8>,
    blobs: Vec<Vec<u8>>,
    next_blob: AtomicUsize,
    message: Vec<u8>,
    /// One per signing key, in `sign_keys` order: what VERIFY checks.
    signatures: Vec<Signature>,
    options: CallOptions,
}

impl Workload {
    /// The workload `scenario` describes; blobs and signatures come later
    /// ([`Workload::set_blobs`], [`Workload::set_signatures`]).
    pub fn new(scenario: &Scenario) -> anyhow::Result<Self> {
        let ops = scenario.ops();
        let total_weight = ops.iter().map(|(_, w)| *w).sum();
        if total_weight == 0 {
            bail!("the operation mix has no weight");
        }
        Ok(Self {
            ops,
            total_weight,
            keys: scenario.key_names(),
            sign_keys: scenario.sign_key_names(),
            chooser: KeyChooser::new(scenario.keys, scenario.zipf)?,
            dek_size: scenario.dek_size,
            // Fixed patterns: the proxy's cost does not depend on the bytes.
            plaintext: (0..scenario.dek_size).map(|i| i as u8).collect(),
            blobs: Vec::new(),
            next_blob: AtomicUsize::new(0),
            message: (0..scenario.message_size).map(|i| i as u8).collect(),
            signatures: Vec::new(),
            options: CallOptions::new().with_bypass_cache(scenario.no_cache),
        })
    }

    /// Whether any operation of the mix needs blobs.
    pub fn needs_blobs(&self) -> bool {
        self.ops.iter().any(|(op, w)| *w > 0 && op.needs_blobs())
    }

    /// Installs the blobs UNWRAP and REWRAP cycle through.
    pub fn set_blobs(&mut self, blobs: Vec<Vec<u8>>) {
        self.blobs = blobs;
    }

    /// Whether the mix verifies, and so needs a signature per signing key.
    pub fn needs_signatures(&self) -> bool {
        self.ops.iter().any(|(op, w)| *w > 0 && *op == Op::Verify)
    }

    /// The message SIGN signs, and VERIFY checks the signatures over.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Installs the signatures VERIFY checks: one per signing key, in
    /// [`Workload::sign_keys`] order, over [`Workload::message`].
    pub fn set_signatures(&mut self, signatures: Vec<Signature>) -> anyhow::Result<()> {
        ensure!(
            signatures.len() == self.sign_keys.len()
                && signatures.iter().zip(&self.sign_keys).all(|(s, key)| s.key == *key),
            "one signature per signing key, in order"
        );
        self.signatures = signatures;
        Ok(())
    }

    /// A key for the next blob to make, following the key distribution.
    pub fn pick_key(&self, rng: &mut SmallRng) -> &str {
        &self.keys[self.chooser.pick(rng)]
    }

    fn pick_op(&self, rng: &mut SmallRng) -> Op {
        if self.ops.len() == 1 {
            return self.ops[0].0;
        }
        let mut ticket = rng.random_range(0..self.total_weight);
        for (op, weight) in &self.ops {
            if ticket < *weight {
                return *op;
            }
            ticket -= weight;
        }
        self.ops[0].0
    }

    fn next_blob(&self) -> &[u8] {
        let index = self.next_blob.fetch_add(1, Ordering::Relaxed) % self.blobs.len();
        &self.blobs[index]
    }

    /// Draws the next operation and its key.
    pub fn pick(&self, rng: &mut SmallRng) -> Call {
        Call { op: self.pick_op(rng), key: self.chooser.pick(rng) }
    }

    /// `call` as a wire request, and whether it asks to bypass the cache (for the raw
    /// driver, which encodes frames itself).
    pub fn request(&self, call: Call) -> (Request, bool) {
        let aad = Scenario::AAD.to_vec();
        let key = || self.keys[call.key].clone();
        let sign_key = || self.sign_keys[call.key].clone();
        let request = match call.op {
            Op::Wrap | Op::Mix => {
                Request::Wrap { key: key(), aad, plaintext: SecretBytes::from(self.plaintext.clone()) }
            }
            Op::GenerateDataKey => Request::GenerateDataKey { key: key(), aad, length: self.dek_size },
            Op::Unwrap => Request::Unwrap { aad, blob: self.next_blob().to_vec() },
            Op::Rewrap => Request::Rewrap { aad, blob: self.next_blob().to_vec() },
            Op::Sign => Request::Sign { key: sign_key(), input: self.message.clone(), digest: false },
            Op::Verify => {
                let signature = &self.signatures[call.key];
                Request::Verify {
                    key: sign_key(),
                    version: signature.version,
                    input: self.message.clone(),
                    signature: signature.bytes.clone(),
                    digest: false,
                }
            }
        };
        let bypass = self.options.bypass_cache && matches!(call.op, Op::Unwrap | Op::Rewrap);
        (request, bypass)
    }

    /// Performs `call`.
    pub async fn run(&self, client: &Client, call: Call) -> Result<(), OpError> {
        let aad = Scenario::AAD;
        let (key, options) = (&self.keys[call.key], &self.options);
        match call.op {
            Op::Wrap | Op::Mix => client.wrap_with(key, aad, &self.plaintext, options).await.map(drop)?,
            Op::GenerateDataKey => {
                client.generate_data_key_with(key, aad, self.dek_size, options).await.map(drop)?
            }
            Op::Unwrap => client.unwrap_with(aad, self.next_blob(), options).await.map(drop)?,
            Op::Rewrap => client.rewrap_with(aad, self.next_blob(), options).await.map(drop)?,
            Op::Sign => {
                client.sign_with(&self.sign_keys[call.key], &self.message, options).await.map(drop)?
            }
            Op::Verify => {
                let signature = &self.signatures[call.key];
                let valid = client
                    .verify_with(&signature.key, signature.version, &self.message, &signature.bytes, options)
                    .await?;
                if !valid {
                    return Err(OpError::InvalidSignature);
                }
            }
        }
        Ok(())
    }
}

/// One operation drawn from a [`Workload`], ready to run.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    op: Op,
    key: usize,
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn mix_parses_and_prints() {
        let mix: Mix = "wrap=50, unwrap=40,generate-data-key=10".parse().unwrap();
        assert_eq!(mix.0, vec![(Op::Wrap, 50), (Op::Unwrap, 40), (Op::GenerateDataKey, 10)]);
        assert_eq!(mix.to_string(), "wrap=50,unwrap=40,generate-data-key=10");
        assert!("wrap".parse::<Mix>().is_err());
        assert!("wrap=0".parse::<Mix>().is_err());
        assert!("mix=1".parse::<Mix>().is_err());
        assert!("nope=1".parse::<Mix>().is_err());
        let mix: Mix = "wrap=1,sign=2,verify=3".parse().unwrap();
        assert_eq!(mix.0, vec![(Op::Wrap, 1), (Op::Sign, 2), (Op::Verify, 3)]);
        assert_eq!(mix.to_string(), "wrap=1,sign=2,verify=3");
    }

    #[test]
    fn sign_and_verify_use_the_signing_keys_and_the_set_up_signatures() {
        let mut scenario = Scenario::new("tcp://127.0.0.1:1".parse().unwrap());
        (scenario.op, scenario.message_size) = (Op::Verify, 5);
        let mut workload = Workload::new(&scenario).unwrap();
        assert!(workload.needs_signatures() && !workload.needs_blobs());
        let unsigned = Signature::new("signing", 1, b"not checked here".to_vec());
        assert!(workload.set_signatures(vec![unsigned.clone(), unsigned.clone()]).is_err(), "one per key");
        workload.set_signatures(vec![unsigned.clone()]).unwrap();
        let call = workload.pick(&mut SmallRng::seed_from_u64(1));
        let (request, bypass) = workload.request(call);
        assert!(!bypass);
        assert!(matches!(
            request,
            Request::Verify { key, version: 1, input, signature, digest: false }
                if key == "signing" && input == [0, 1, 2, 3, 4] && signature == unsigned.bytes
        ));

        scenario.op = Op::Sign;
        let workload = Workload::new(&scenario).unwrap();
        assert!(!workload.needs_signatures());
        let (request, _) = workload.request(workload.pick(&mut SmallRng::seed_from_u64(1)));
        assert!(matches!(request, Request::Sign { key, digest: false, .. } if key == "signing"));
    }

    #[test]
    fn zipf_favours_the_first_keys() {
        let chooser = KeyChooser::new(100, 1.2).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = [0usize; 100];
        for _ in 0..20_000 {
            counts[chooser.pick(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[99]);
        let uniform = KeyChooser::new(4, 0.0).unwrap();
        let mut seen = [false; 4];
        for _ in 0..200 {
            seen[uniform.pick(&mut rng)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}

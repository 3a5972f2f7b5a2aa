//! What each request does: which operation (fixed or a weighted mix) on which key
//! (one, or many with a Zipf skew), with which blob.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail, ensure};
use keymux_client::{CallOptions, Client};
use keymux_protocol::{Request, SecretBytes};
use rand::RngExt;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

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
    /// A weighted mix of the others (`--mix`).
    Mix,
}

impl Op {
    /// Whether this operation needs blobs made beforehand.
    pub fn needs_blobs(self) -> bool {
        matches!(self, Op::Unwrap | Op::Rewrap)
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
    /// Key names; requests choose among them with `chooser`.
    pub keys: Vec<String>,
    chooser: KeyChooser,
    dek_size: u16,
    plaintext: Vec<u8>,
    blobs: Vec<Vec<u8>>,
    next_blob: AtomicUsize,
    options: CallOptions,
}

impl Workload {
    /// A workload of `op` (or `mix` when `op` is [`Op::Mix`]) over `keys`.
    pub fn new(
        op: Op,
        mix: &Mix,
        keys: Vec<String>,
        chooser: KeyChooser,
        dek_size: u16,
        options: CallOptions,
    ) -> anyhow::Result<Self> {
        let ops = if op == Op::Mix { mix.0.clone() } else { vec![(op, 1)] };
        let total_weight = ops.iter().map(|(_, w)| *w).sum();
        if total_weight == 0 {
            bail!("the operation mix has no weight");
        }
        Ok(Self {
            ops,
            total_weight,
            keys,
            chooser,
            dek_size,
            // A fixed pattern: the proxy's cost does not depend on the key's value.
            plaintext: (0..dek_size).map(|i| i as u8).collect(),
            blobs: Vec::new(),
            next_blob: AtomicUsize::new(0),
            options,
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
        let aad = crate::scenario::Scenario::AAD.to_vec();
        let key = || self.keys[call.key].clone();
        let request = match call.op {
            Op::Wrap | Op::Mix => {
                Request::Wrap { key: key(), aad, plaintext: SecretBytes::from(self.plaintext.clone()) }
            }
            Op::GenerateDataKey => Request::GenerateDataKey { key: key(), aad, length: self.dek_size },
            Op::Unwrap => Request::Unwrap { aad, blob: self.next_blob().to_vec() },
            Op::Rewrap => Request::Rewrap { aad, blob: self.next_blob().to_vec() },
        };
        let bypass = self.options.bypass_cache && matches!(call.op, Op::Unwrap | Op::Rewrap);
        (request, bypass)
    }

    /// Performs `call`.
    pub async fn run(&self, client: &Client, call: Call) -> keymux_client::Result<()> {
        let aad = crate::scenario::Scenario::AAD;
        let key = &self.keys[call.key];
        match call.op {
            Op::Wrap | Op::Mix => client.wrap_with(key, aad, &self.plaintext, &self.options).await.map(drop),
            Op::GenerateDataKey => {
                client.generate_data_key_with(key, aad, self.dek_size, &self.options).await.map(drop)
            }
            Op::Unwrap => client.unwrap_with(aad, self.next_blob(), &self.options).await.map(drop),
            Op::Rewrap => client.rewrap_with(aad, self.next_blob(), &self.options).await.map(drop),
        }
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

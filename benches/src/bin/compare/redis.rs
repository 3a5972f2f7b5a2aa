//! The Redis anchor: a `redis-server` on loopback, its keys SET first with the DEKs'
//! value size, and `redis-benchmark` GETs of keys that exist (checked from the server's
//! own hit and miss counters).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};

use crate::summary::Sample;
use crate::{Server, wait_for_port};

/// Where the anchor's Redis listens.
const PORT: u16 = 7470;

/// A Redis server holding `keys` keys of `value_size` bytes, named as redis-benchmark's
/// `-r keys` names them (`key:` and 12 digits).
pub(crate) struct Redis {
    _server: Server,
    keys: u32,
}

impl Redis {
    /// Starts a server and SETs its keys.
    pub(crate) fn start(keys: u32, value_size: usize) -> anyhow::Result<Self> {
        let server = Server::spawn(
            Command::new("redis-server")
                .args([
                    "--port",
                    &PORT.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null()),
            "redis-server (apt-get install redis-server)",
        )?;
        wait_for_port(PORT)?;
        let mut connection = Connection::open()?;
        let value = vec![b'x'; value_size];
        let mut pipeline = Vec::new();
        for key in 0..keys {
            encode(&mut pipeline, &[b"SET", key_name(key).as_bytes(), &value]);
        }
        connection.stream.write_all(&pipeline)?;
        for key in 0..keys {
            let reply = connection.line()?;
            ensure!(reply == "+OK", "Redis answered SET {} with {reply:?}", key_name(key));
        }
        let size = connection.call(&[b"DBSIZE"])?;
        ensure!(size == format!(":{keys}"), "Redis holds {size:?} keys after {keys} SETs");
        Ok(Self { _server: server, keys })
    }

    /// GETs at `clients` connections x `pipeline` for about `duration`, after a short
    /// run that sizes the request count (redis-benchmark counts requests, not time) and
    /// warms the server up. Every GET must hit.
    pub(crate) fn get(
        &self,
        clients: u32,
        pipeline: u32,
        duration: Duration,
        row: &str,
    ) -> anyhow::Result<Sample> {
        let warm = self.benchmark(clients, pipeline, 20_000 * u64::from(pipeline.min(8)), row)?;
        let requests = ((warm.ops_per_s * duration.as_secs_f64()) as u64).max(1_000);
        let (hits, misses) = Connection::open()?.keyspace()?;
        let sample = self.benchmark(clients, pipeline, requests, row)?;
        let (hits_after, misses_after) = Connection::open()?.keyspace()?;
        ensure!(misses_after == misses, "{row}: {} GETs missed", misses_after - misses);
        ensure!(hits_after - hits >= requests, "{row}: {} hits for {requests} GETs", hits_after - hits);
        Ok(sample)
    }

    fn benchmark(&self, clients: u32, pipeline: u32, requests: u64, row: &str) -> anyhow::Result<Sample> {
        let output = Command::new("redis-benchmark")
            .args(["-p", &PORT.to_string(), "-t", "get", "--csv", "-d", "32"])
            .args(["-r", &self.keys.to_string()])
            .args(["-c", &clients.to_string(), "-P", &pipeline.to_string(), "-n", &requests.to_string()])
            .output()
            .context("redis-benchmark (apt-get install redis-server)")?;
        ensure!(
            output.status.success(),
            "{row}: redis-benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        parse_csv(&String::from_utf8_lossy(&output.stdout), row)?.checked(row)
    }
}

/// A key as redis-benchmark names it with `-r`: `key:` and the number in 12 digits.
fn key_name(index: u32) -> String {
    format!("key:{index:012}")
}

/// redis-benchmark's CSV: a header naming the columns, then a line per test.
fn parse_csv(text: &str, row: &str) -> anyhow::Result<Sample> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let fields =
        |line: &str| -> Vec<String> { line.split(',').map(|f| f.trim_matches('"').to_owned()).collect() };
    let header = fields(lines.next().with_context(|| format!("{row}: redis-benchmark printed nothing"))?);
    let line = lines
        .find(|line| line.starts_with("\"GET\""))
        .with_context(|| format!("{row}: no GET line from redis-benchmark in {text:?}"))?;
    let values = fields(line);
    let column = |name: &str| -> anyhow::Result<f64> {
        let index = header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{row}: redis-benchmark's CSV has no {name} column"))?;
        let value = values.get(index).with_context(|| format!("{row}: no {name} value"))?;
        value.parse().with_context(|| format!("{row}: {name} is {value:?}"))
    };
    Ok(Sample {
        ops_per_s: column("rps")?,
        p99_us: column("p99_latency_ms")? * 1000.0,
        p999_us: None,
        open_loop: None,
    })
}

/// A RESP connection for the set-up and the counters.
struct Connection {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open() -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", PORT))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self { reader: BufReader::new(stream.try_clone()?), stream })
    }

    /// One reply line, without its CRLF.
    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        ensure!(self.reader.read_line(&mut line)? > 0, "Redis closed the connection");
        Ok(line.trim_end_matches("\r\n").to_owned())
    }

    /// Sends one command and reads its reply: a simple line, or a bulk string's body.
    fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<String> {
        let mut out = Vec::new();
        encode(&mut out, args);
        self.stream.write_all(&out)?;
        let line = self.line()?;
        let Some(len) = line.strip_prefix('$') else { return Ok(line) };
        let len: usize = len.parse().with_context(|| format!("a bulk reply of length {len:?}"))?;
        let mut body = vec![0; len + 2];
        self.reader.read_exact(&mut body)?;
        body.truncate(len);
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The server's `keyspace_hits` and `keyspace_misses`.
    fn keyspace(&mut self) -> anyhow::Result<(u64, u64)> {
        let info = self.call(&[b"INFO", b"stats"])?;
        let counter = |name: &str| -> anyhow::Result<u64> {
            let Some(value) = info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')) else {
                bail!("no {name} in Redis's INFO stats");
            };
            Ok(value.trim().parse()?)
        };
        Ok((counter("keyspace_hits")?, counter("keyspace_misses")?))
    }
}

/// A command as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_as_redis_benchmark_names_them() {
        assert_eq!(key_name(42), "key:000000000042");
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k", b"vv"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n");
    }

    #[test]
    fn the_csv_is_read_by_column_name_and_nothing_missing_passes() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"GET\",\"1459854.00\",\"1.0\",\"0.1\",\"0.9\",\"1.5\",\"1.70\",\"3.0\"\n";
        let sample = parse_csv(csv, "Redis GET").unwrap();
        assert_eq!((sample.ops_per_s, sample.p99_us, sample.p999_us), (1_459_854.0, 1700.0, None));
        let error = parse_csv("", "Redis GET, 50 x 1").unwrap_err();
        assert!(error.to_string().starts_with("Redis GET, 50 x 1: redis-benchmark printed nothing"));
        let error = parse_csv("\"test\",\"rps\"\n\"GET\",\"10\"\n", "row").unwrap_err();
        assert!(error.to_string().contains("no p99_latency_ms column"), "{error}");
        let error =
            parse_csv("\"test\",\"rps\",\"p99_latency_ms\"\n\"GET\",\"\",\"1\"\n", "row").unwrap_err();
        assert!(error.to_string().starts_with("row: rps is"), "{error}");
        let zero = parse_csv("\"test\",\"rps\",\"p99_latency_ms\"\n\"GET\",\"0\",\"1\"\n", "row").unwrap();
        assert!(zero.checked("row").is_err(), "zero requests per second is no anchor");
    }
}

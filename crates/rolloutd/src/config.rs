//! The daemon's configuration, one typed struct, layered: defaults, then the
//! YAML file (`--config`), then environment variables, then flags (clap
//! reads the last two, so a flag beats its variable). A mistake in the file
//! is reported with its line and column, like a spec.

use std::path::{Path, PathBuf};

use rollout_spec::decode::{Ctx, Decode};
use rollout_spec::tree::{parse_stream, Node};
use rollout_spec::Duration;

/// Reconciles at once by default. Slots bound the database and CPU work
/// only (a reconcile waiting for AWS gives its slot back); 12 measured best
/// on 2 cores with 10,000 rollouts (docs/BENCHMARKS.md: 8 queued reconciles
/// past the interval, 16 let the p99 grow past 5 ms).
pub const DEFAULT_CONCURRENCY: usize = 12;

/// Everything `rolloutd serve` needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The HTTP API, `/metrics` and health checks listen here.
    pub listen: String,
    /// A file holding the bearer token every mutating request needs.
    pub api_token_file: Option<PathBuf>,
    /// A file holding a read-only token; when set, reads need a token too.
    pub api_read_token_file: Option<PathBuf>,
    /// With `tls_key_file`: serve HTTPS with this PEM certificate chain.
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Where state lives: `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Apply every `*.yaml`/`*.yml` under this directory, and keep applying it.
    pub specs_dir: Option<PathBuf>,
    /// A rollout leaves the specs directory only after it was absent from
    /// this many complete, successful scans in a row…
    pub specs_removal_scans: u32,
    /// …spanning at least this long.
    pub specs_removal_grace: Duration,
    /// Every rollout is re-examined at least this often.
    pub reconcile_interval: Duration,
    /// How long a replica's lease on a rollout lasts unless renewed.
    pub lease_ttl: Duration,
    /// This replica's name in leases (default: host name and process id).
    pub replica: String,
    /// How many reconciles run at once.
    pub concurrency: usize,
    /// A run that holds its weight reads the load balancer at least this
    /// often to notice drift (more often only when the AWS budget has
    /// tokens to spare).
    pub drift_check_interval: Duration,
    /// The fleet's AWS API budget: ELBv2 reads per second (burst: twice).
    pub aws_elb_reads_per_second: f64,
    /// ELBv2 writes per second (burst: twice).
    pub aws_elb_writes_per_second: f64,
    /// CloudWatch `GetMetricData` calls per second (burst: twice).
    pub aws_get_metric_data_per_second: f64,
    /// A database holding a simulated ALB and CloudWatch instead of AWS.
    pub simulate_world: Option<String>,
    /// `text` or `json` logs.
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

/// The values given in the file, each optional.
#[derive(Debug, Default)]
struct FileConfig {
    listen: Option<String>,
    api_token_file: Option<String>,
    api_read_token_file: Option<String>,
    tls_cert_file: Option<String>,
    tls_key_file: Option<String>,
    database_url: Option<String>,
    specs_dir: Option<String>,
    specs_removal_scans: Option<u32>,
    specs_removal_grace: Option<Duration>,
    reconcile_interval: Option<Duration>,
    lease_ttl: Option<Duration>,
    replica: Option<String>,
    concurrency: Option<u32>,
    drift_check_interval: Option<Duration>,
    aws_elb_reads_per_second: Option<f64>,
    aws_elb_writes_per_second: Option<f64>,
    aws_get_metric_data_per_second: Option<f64>,
    simulate_world: Option<String>,
    log_format: Option<String>,
}

impl Decode for FileConfig {
    fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
        let f = cx.fields(
            node,
            &[
                "listen",
                "apiTokenFile",
                "apiReadTokenFile",
                "tlsCertFile",
                "tlsKeyFile",
                "databaseUrl",
                "specsDir",
                "specsRemovalScans",
                "specsRemovalGrace",
                "reconcileInterval",
                "leaseTtl",
                "replica",
                "concurrency",
                "driftCheckInterval",
                "awsElbReadsPerSecond",
                "awsElbWritesPerSecond",
                "awsGetMetricDataPerSecond",
                "simulateWorld",
                "logFormat",
            ],
        )?;
        Some(FileConfig {
            listen: f.opt(cx, "listen").ok()?,
            api_token_file: f.opt(cx, "apiTokenFile").ok()?,
            api_read_token_file: f.opt(cx, "apiReadTokenFile").ok()?,
            tls_cert_file: f.opt(cx, "tlsCertFile").ok()?,
            tls_key_file: f.opt(cx, "tlsKeyFile").ok()?,
            database_url: f.opt(cx, "databaseUrl").ok()?,
            specs_dir: f.opt(cx, "specsDir").ok()?,
            specs_removal_scans: f.opt(cx, "specsRemovalScans").ok()?,
            specs_removal_grace: f.opt(cx, "specsRemovalGrace").ok()?,
            reconcile_interval: f.opt(cx, "reconcileInterval").ok()?,
            lease_ttl: f.opt(cx, "leaseTtl").ok()?,
            replica: f.opt(cx, "replica").ok()?,
            concurrency: f.opt(cx, "concurrency").ok()?,
            drift_check_interval: f.opt(cx, "driftCheckInterval").ok()?,
            aws_elb_reads_per_second: f.opt(cx, "awsElbReadsPerSecond").ok()?,
            aws_elb_writes_per_second: f.opt(cx, "awsElbWritesPerSecond").ok()?,
            aws_get_metric_data_per_second: f.opt(cx, "awsGetMetricDataPerSecond").ok()?,
            simulate_world: f.opt(cx, "simulateWorld").ok()?,
            log_format: f.opt(cx, "logFormat").ok()?,
        })
    }
}

/// What the command line and environment said (clap fills this).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen` / `ROLLOUTD_LISTEN`.
    pub listen: Option<String>,
    /// `--api-token-file` / `ROLLOUTD_API_TOKEN_FILE`.
    pub api_token_file: Option<PathBuf>,
    /// `--api-read-token-file` / `ROLLOUTD_API_READ_TOKEN_FILE`.
    pub api_read_token_file: Option<PathBuf>,
    /// `--tls-cert-file` / `ROLLOUTD_TLS_CERT_FILE`.
    pub tls_cert_file: Option<PathBuf>,
    /// `--tls-key-file` / `ROLLOUTD_TLS_KEY_FILE`.
    pub tls_key_file: Option<PathBuf>,
    /// `--database-url` / `ROLLOUTD_DATABASE_URL`.
    pub database_url: Option<String>,
    /// `--specs-dir` / `ROLLOUTD_SPECS_DIR`.
    pub specs_dir: Option<PathBuf>,
    /// `--specs-removal-scans` / `ROLLOUTD_SPECS_REMOVAL_SCANS`.
    pub specs_removal_scans: Option<u32>,
    /// `--specs-removal-grace` / `ROLLOUTD_SPECS_REMOVAL_GRACE`.
    pub specs_removal_grace: Option<Duration>,
    /// `--reconcile-interval` / `ROLLOUTD_RECONCILE_INTERVAL`.
    pub reconcile_interval: Option<Duration>,
    /// `--lease-ttl` / `ROLLOUTD_LEASE_TTL`.
    pub lease_ttl: Option<Duration>,
    /// `--replica` / `ROLLOUTD_REPLICA`.
    pub replica: Option<String>,
    /// `--concurrency` / `ROLLOUTD_CONCURRENCY`.
    pub concurrency: Option<usize>,
    /// `--drift-check-interval` / `ROLLOUTD_DRIFT_CHECK_INTERVAL`.
    pub drift_check_interval: Option<Duration>,
    /// `--aws-elb-reads-per-second` / `ROLLOUTD_AWS_ELB_READS_PER_SECOND`.
    pub aws_elb_reads_per_second: Option<f64>,
    /// `--aws-elb-writes-per-second` / `ROLLOUTD_AWS_ELB_WRITES_PER_SECOND`.
    pub aws_elb_writes_per_second: Option<f64>,
    /// `--aws-get-metric-data-per-second` / `ROLLOUTD_AWS_GET_METRIC_DATA_PER_SECOND`.
    pub aws_get_metric_data_per_second: Option<f64>,
    /// `--simulate-world` / `ROLLOUTD_SIMULATE_WORLD`.
    pub simulate_world: Option<String>,
    /// `--log-format` / `ROLLOUTD_LOG_FORMAT`.
    pub log_format: Option<String>,
}

fn log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("log format `{other}`: expected text or json")),
    }
}

fn default_replica() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rolloutd".into());
    format!("{host}-{}", std::process::id())
}

impl Config {
    /// Builds the configuration: defaults, the file (if any), then `over`.
    pub fn load(file: Option<&Path>, over: Overrides) -> Result<Config, Vec<String>> {
        let from_file = match file {
            None => FileConfig::default(),
            Some(path) => read_file(path)?,
        };
        let mut errors = Vec::new();
        let log_format = match over.log_format.or(from_file.log_format) {
            None => LogFormat::Text,
            Some(s) => log_format(&s).unwrap_or_else(|e| {
                errors.push(e);
                LogFormat::Text
            }),
        };
        let config = Config {
            listen: over
                .listen
                .or(from_file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            api_token_file: over
                .api_token_file
                .or(from_file.api_token_file.map(PathBuf::from)),
            api_read_token_file: over
                .api_read_token_file
                .or(from_file.api_read_token_file.map(PathBuf::from)),
            tls_cert_file: over
                .tls_cert_file
                .or(from_file.tls_cert_file.map(PathBuf::from)),
            tls_key_file: over
                .tls_key_file
                .or(from_file.tls_key_file.map(PathBuf::from)),
            database_url: over
                .database_url
                .or(from_file.database_url)
                .unwrap_or_else(|| "sqlite://rolloutd.db".into()),
            specs_dir: over.specs_dir.or(from_file.specs_dir.map(PathBuf::from)),
            specs_removal_scans: over
                .specs_removal_scans
                .or(from_file.specs_removal_scans)
                .unwrap_or(3),
            specs_removal_grace: over
                .specs_removal_grace
                .or(from_file.specs_removal_grace)
                .unwrap_or(Duration::from_secs(60)),
            reconcile_interval: over
                .reconcile_interval
                .or(from_file.reconcile_interval)
                .unwrap_or(Duration::from_secs(10)),
            lease_ttl: over
                .lease_ttl
                .or(from_file.lease_ttl)
                .unwrap_or(Duration::from_secs(15)),
            replica: over
                .replica
                .or(from_file.replica)
                .unwrap_or_else(default_replica),
            concurrency: over
                .concurrency
                .or(from_file.concurrency.map(|c| c as usize))
                .unwrap_or(DEFAULT_CONCURRENCY),
            drift_check_interval: over
                .drift_check_interval
                .or(from_file.drift_check_interval)
                .unwrap_or(Duration::from_secs(60)),
            aws_elb_reads_per_second: over
                .aws_elb_reads_per_second
                .or(from_file.aws_elb_reads_per_second)
                .unwrap_or(4.0),
            aws_elb_writes_per_second: over
                .aws_elb_writes_per_second
                .or(from_file.aws_elb_writes_per_second)
                .unwrap_or(2.0),
            aws_get_metric_data_per_second: over
                .aws_get_metric_data_per_second
                .or(from_file.aws_get_metric_data_per_second)
                .unwrap_or(5.0),
            simulate_world: over.simulate_world.or(from_file.simulate_world),
            log_format,
        };
        if config.tls_cert_file.is_some() != config.tls_key_file.is_some() {
            errors.push(
                "TLS needs both a certificate file and a key file (tlsCertFile and tlsKeyFile)"
                    .to_string(),
            );
        }
        if config.reconcile_interval.as_millis() < 100 {
            errors.push(format!(
                "reconcile interval {} is too short; use at least 100ms",
                config.reconcile_interval
            ));
        }
        if config.lease_ttl.as_millis() < 1_000 {
            errors.push(format!(
                "lease TTL {} is too short; use at least 1s",
                config.lease_ttl
            ));
        }
        for (name, rate) in [
            ("awsElbReadsPerSecond", config.aws_elb_reads_per_second),
            ("awsElbWritesPerSecond", config.aws_elb_writes_per_second),
            (
                "awsGetMetricDataPerSecond",
                config.aws_get_metric_data_per_second,
            ),
        ] {
            if !(rate.is_finite() && rate >= 0.1) {
                errors.push(format!("{name} {rate}: use at least 0.1 calls per second"));
            }
        }
        if config.concurrency == 0 {
            errors.push("concurrency must be at least 1".into());
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig, Vec<String>> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: cannot read: {e}")])?;
    let docs = parse_stream(&text).map_err(|e| vec![format!("{name}:{}: {}", e.pos, e.message)])?;
    let Some(doc) = docs.first() else {
        return Ok(FileConfig::default());
    };
    let mut cx = Ctx::new(&name, doc.pos);
    let value = cx.decode::<FileConfig>(&doc.root);
    let (diags, _) = cx.finish();
    match value {
        Some(v) if diags.is_empty() => Ok(v),
        _ => Err(diags.iter().map(ToString::to_string).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rolloutd-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("rolloutd.yaml");
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn defaults() {
        let c = Config::load(None, Overrides::default()).expect("config");
        assert_eq!(c.database_url, "sqlite://rolloutd.db");
        assert_eq!(c.reconcile_interval, Duration::from_secs(10));
        assert_eq!(c.lease_ttl, Duration::from_secs(15));
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn flags_beat_the_file() {
        let p = write(
            "layers",
            "databaseUrl: postgres://db/rolloutd\nreconcileInterval: 30s\nlogFormat: json\n",
        );
        let c = Config::load(
            Some(&p),
            Overrides {
                reconcile_interval: Some(Duration::from_secs(5)),
                ..Overrides::default()
            },
        )
        .expect("config");
        assert_eq!(c.database_url, "postgres://db/rolloutd");
        assert_eq!(c.reconcile_interval, Duration::from_secs(5));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    /// `config/rolloutd.example.yaml` documents every option with its
    /// default: it must load, and say exactly what the defaults are.
    #[test]
    fn the_example_file_is_the_defaults() {
        let example =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/rolloutd.example.yaml");
        let from_file = Config::load(Some(&example), Overrides::default()).expect("example loads");
        let defaults = Config::load(None, Overrides::default()).expect("defaults");
        assert_eq!(
            Config {
                replica: String::new(),
                ..from_file
            },
            Config {
                replica: String::new(),
                ..defaults
            }
        );
        let text = std::fs::read_to_string(&example).expect("read");
        for key in [
            "listen",
            "apiTokenFile",
            "apiReadTokenFile",
            "tlsCertFile",
            "tlsKeyFile",
            "databaseUrl",
            "specsDir",
            "specsRemovalScans",
            "specsRemovalGrace",
            "reconcileInterval",
            "leaseTtl",
            "replica",
            "concurrency",
            "driftCheckInterval",
            "awsElbReadsPerSecond",
            "awsElbWritesPerSecond",
            "awsGetMetricDataPerSecond",
            "simulateWorld",
            "logFormat",
        ] {
            assert!(
                text.contains(&format!("{key}:")),
                "the example does not mention `{key}`"
            );
        }
    }

    #[test]
    fn file_mistakes_have_positions() {
        let p = write(
            "bad",
            "databaseUrl: x\nreconcileIntervall: 5s\nleaseTtl: soon\n",
        );
        let errs = Config::load(Some(&p), Overrides::default()).expect_err("bad");
        let f = p.display();
        assert_eq!(
            errs,
            vec![
                format!("{f}:2:1: unknown field `reconcileIntervall`, did you mean `reconcileInterval`?"),
                format!("{f}:3:11: leaseTtl: invalid duration `soon`: expected a whole number and a unit ms, s, m or h (e.g. 90s, 5m, 1h)"),
            ]
        );
    }
}

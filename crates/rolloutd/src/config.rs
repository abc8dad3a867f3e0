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
    /// Serve without an API token on an address other than loopback (an
    /// explicit choice; otherwise that refuses to start).
    pub insecure_no_auth: bool,
    /// A request's headers must arrive within this.
    pub http_header_timeout: Duration,
    /// A whole request (body and answer) must be done within this.
    pub http_request_timeout: Duration,
    /// A kept-alive connection with nothing in flight is closed after this.
    pub http_idle_timeout: Duration,
    /// Connections open at once (default: from the process's
    /// file-descriptor limit, see [`crate::http::default_max_connections`]).
    pub http_max_connections: Option<usize>,
    /// On shutdown, how long open connections may take to finish.
    pub http_shutdown_grace: Duration,
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
    /// How many ended runs (with their reports) the store keeps per rollout.
    pub run_history: u32,
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
    /// CloudWatch `DescribeAlarms` calls per second (burst: twice).
    pub aws_describe_alarms_per_second: f64,
    /// The notifiers of the config file (`notifiers`, `defaultNotifiers`).
    pub notifiers: crate::notify::Notifiers,
    /// The API's address as people reach it, for links in notifications.
    pub public_url: Option<String>,
    /// Roles to assume in other AWS accounts (`accounts` in the file).
    pub accounts: Vec<rollout_aws::regional::AccountRole>,
    /// Where the canary's health before a raise comes from.
    pub canary_health_source: HealthSource,
    /// A database holding a simulated ALB and CloudWatch instead of AWS.
    pub simulate_world: Option<String>,
    /// `text` or `json` logs.
    pub log_format: LogFormat,
}

/// Where the canary target group's health is read before a raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthSource {
    /// `DescribeTargetHealth`: live, one ELBv2 read per raise.
    Describe,
    /// CloudWatch's `HealthyHostCount` of the last minute (no ELBv2 read;
    /// up to about two minutes old), `DescribeTargetHealth` when CloudWatch
    /// has no recent datapoint.
    Cloudwatch,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

/// Declares every key of `rolloutd serve` once: its flag (clap, with its
/// `ROLLOUTD_…` variable), its key in the config file, its type there, and
/// its help. Generates [`Overrides`], its file decoder and its layering.
macro_rules! overrides {
    ($( $(#[$attr:meta])* $field:ident : $ty:ty = $key:literal as $file:ty; )*) => {
        /// What the command line, the environment or the config file said:
        /// each key of `rolloutd serve`, optional.
        #[derive(Debug, Default, Clone, clap::Args)]
        pub struct Overrides {
            $( $(#[$attr])* pub $field: Option<$ty>, )*
        }

        /// The config file: the same keys as the flags, in camelCase.
        impl Decode for Overrides {
            fn decode(node: &Node, cx: &mut Ctx) -> Option<Self> {
                let f = cx.fields(node, &[$($key,)* "notifiers", "defaultNotifiers", "accounts"])?;
                Some(Overrides {
                    $( $field: f.opt::<$file>(cx, $key).ok()?.map(Into::into), )*
                })
            }
        }

        impl Overrides {
            /// These values, each falling back to `file`'s.
            pub fn or(self, file: Overrides) -> Overrides {
                Overrides { $( $field: self.$field.or(file.$field), )* }
            }
        }
    };
}

overrides! {
    /// The HTTP API, `/metrics` and health checks (default 127.0.0.1:8080).
    #[arg(long, env = "ROLLOUTD_LISTEN")]
    listen: String = "listen" as String;
    /// A file with the bearer token every mutating request must carry.
    #[arg(long, env = "ROLLOUTD_API_TOKEN_FILE")]
    api_token_file: PathBuf = "apiTokenFile" as String;
    /// A file with a read-only token; when set, reads need a token too.
    #[arg(long, env = "ROLLOUTD_API_READ_TOKEN_FILE")]
    api_read_token_file: PathBuf = "apiReadTokenFile" as String;
    /// Serve HTTPS with this PEM certificate chain (with --tls-key-file).
    #[arg(long, env = "ROLLOUTD_TLS_CERT_FILE")]
    tls_cert_file: PathBuf = "tlsCertFile" as String;
    /// The PEM private key of --tls-cert-file.
    #[arg(long, env = "ROLLOUTD_TLS_KEY_FILE")]
    tls_key_file: PathBuf = "tlsKeyFile" as String;
    /// Serve without an API token on a non-loopback address (anyone who
    /// reaches the port can change rollouts); without a token and
    /// without this, only a loopback address is served.
    #[arg(long, env = "ROLLOUTD_INSECURE_NO_AUTH", action = clap::ArgAction::SetTrue)]
    insecure_no_auth: bool = "insecureNoAuth" as bool;
    /// A request's headers must arrive within this (default 10s).
    #[arg(long, env = "ROLLOUTD_HTTP_HEADER_TIMEOUT")]
    http_header_timeout: Duration = "httpHeaderTimeout" as Duration;
    /// A whole request, body and answer, within this (default 30s).
    #[arg(long, env = "ROLLOUTD_HTTP_REQUEST_TIMEOUT")]
    http_request_timeout: Duration = "httpRequestTimeout" as Duration;
    /// An idle kept-alive connection is closed after this (default 60s).
    #[arg(long, env = "ROLLOUTD_HTTP_IDLE_TIMEOUT")]
    http_idle_timeout: Duration = "httpIdleTimeout" as Duration;
    /// Connections open at once (default: half of what the open-file
    /// limit leaves after 256, at most 4096).
    #[arg(long, env = "ROLLOUTD_HTTP_MAX_CONNECTIONS")]
    http_max_connections: u32 = "httpMaxConnections" as u32;
    /// On shutdown, how long open connections may take (default 10s).
    #[arg(long, env = "ROLLOUTD_HTTP_SHUTDOWN_GRACE")]
    http_shutdown_grace: Duration = "httpShutdownGrace" as Duration;
    /// `--database-url` / `ROLLOUTD_DATABASE_URL` (a global flag of the command line).
    #[arg(skip)]
    database_url: String = "databaseUrl" as String;
    /// Apply every *.yaml/*.yml under DIR at start and whenever it changes.
    #[arg(long, env = "ROLLOUTD_SPECS_DIR")]
    specs_dir: PathBuf = "specsDir" as String;
    /// A rollout leaves the specs directory after this many complete
    /// scans without it in a row (default 3)…
    #[arg(long, env = "ROLLOUTD_SPECS_REMOVAL_SCANS")]
    specs_removal_scans: u32 = "specsRemovalScans" as u32;
    /// …spanning at least this long (default 60s).
    #[arg(long, env = "ROLLOUTD_SPECS_REMOVAL_GRACE")]
    specs_removal_grace: Duration = "specsRemovalGrace" as Duration;
    /// How often every rollout is re-examined, at the latest (default 10s).
    #[arg(long, env = "ROLLOUTD_RECONCILE_INTERVAL")]
    reconcile_interval: Duration = "reconcileInterval" as Duration;
    /// How long a replica's lease on a rollout lasts (default 15s).
    #[arg(long, env = "ROLLOUTD_LEASE_TTL")]
    lease_ttl: Duration = "leaseTtl" as Duration;
    /// This replica's name in leases (default: host name and process id).
    #[arg(long, env = "ROLLOUTD_REPLICA")]
    replica: String = "replica" as String;
    /// How many reconciles run at once (default 12; the database pool matches it).
    #[arg(long, env = "ROLLOUTD_CONCURRENCY")]
    concurrency: u32 = "concurrency" as u32;
    /// How many ended runs, with their reports, the store keeps per
    /// rollout (default 100).
    #[arg(long, env = "ROLLOUTD_RUN_HISTORY")]
    run_history: u32 = "runHistory" as u32;
    /// A holding run reads the load balancer at least this often for
    /// drift; more often only when the AWS budget has tokens to spare
    /// (default 60s).
    #[arg(long, env = "ROLLOUTD_DRIFT_CHECK_INTERVAL")]
    drift_check_interval: Duration = "driftCheckInterval" as Duration;
    /// The fleet's budget of ELBv2 reads per second (default 4; AWS's
    /// shared bucket refills 10 a second).
    #[arg(long, env = "ROLLOUTD_AWS_ELB_READS_PER_SECOND")]
    aws_elb_reads_per_second: f64 = "awsElbReadsPerSecond" as f64;
    /// The fleet's budget of ELBv2 writes per second (default 2).
    #[arg(long, env = "ROLLOUTD_AWS_ELB_WRITES_PER_SECOND")]
    aws_elb_writes_per_second: f64 = "awsElbWritesPerSecond" as f64;
    /// The fleet's budget of CloudWatch GetMetricData calls per second (default 5).
    #[arg(long, env = "ROLLOUTD_AWS_GET_METRIC_DATA_PER_SECOND")]
    aws_get_metric_data_per_second: f64 = "awsGetMetricDataPerSecond" as f64;
    /// The API's address as people reach it (e.g. https://rolloutd.internal:8080),
    /// for links in notifications.
    #[arg(long, env = "ROLLOUTD_PUBLIC_URL")]
    public_url: String = "publicUrl" as String;
    /// The fleet's budget of CloudWatch DescribeAlarms calls per second
    /// (default 2; each reads 100 alarms).
    #[arg(long, env = "ROLLOUTD_AWS_DESCRIBE_ALARMS_PER_SECOND")]
    aws_describe_alarms_per_second: f64 = "awsDescribeAlarmsPerSecond" as f64;
    /// The canary's health before a raise: `describe` (DescribeTargetHealth,
    /// default) or `cloudwatch` (HealthyHostCount, falling back).
    #[arg(long, env = "ROLLOUTD_CANARY_HEALTH_SOURCE")]
    canary_health_source: String = "canaryHealthSource" as String;
    /// Run against a simulated ALB and CloudWatch kept in this database
    /// (simulated: no AWS calls).
    #[arg(long, env = "ROLLOUTD_SIMULATE_WORLD")]
    simulate_world: String = "simulateWorld" as String;
    /// `--log-format` / `ROLLOUTD_LOG_FORMAT` (a global flag of the command line).
    #[arg(skip)]
    log_format: String = "logFormat" as String;
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
    /// The defaults, on `database_url`, listening on a free loopback port:
    /// for tests and benchmarks that drive the daemon as a library (set
    /// what they need on top).
    pub fn for_test(database_url: &str) -> Config {
        let over = Overrides {
            database_url: Some(database_url.to_string()),
            listen: Some("127.0.0.1:0".into()),
            replica: Some("test".into()),
            ..Overrides::default()
        };
        match Config::load(None, over) {
            Ok(c) => c,
            // The defaults are valid (the `defaults` test).
            Err(errors) => unreachable!("the default configuration is invalid: {errors:?}"),
        }
    }

    /// Builds the configuration: defaults, the file (if any), then `over`.
    pub fn load(file: Option<&Path>, over: Overrides) -> Result<Config, Vec<String>> {
        let (from_file, (notifiers, accounts)) = match file {
            None => Default::default(),
            Some(path) => read_file(path)?,
        };
        // The flag can only turn it on (absent, clap says false).
        let over = Overrides {
            insecure_no_auth: over.insecure_no_auth.filter(|on| *on),
            ..over
        };
        let o = over.or(from_file);
        let mut errors = Vec::new();
        let log_format = o
            .log_format
            .map_or(Ok(LogFormat::Text), |s| log_format(&s))
            .unwrap_or_else(|e| {
                errors.push(e);
                LogFormat::Text
            });
        let canary_health_source =
            health_source(o.canary_health_source.as_deref()).unwrap_or_else(|e| {
                errors.push(e);
                HealthSource::Describe
            });
        let secs = Duration::from_secs;
        let config = Config {
            canary_health_source,
            log_format,
            listen: o.listen.unwrap_or_else(|| "127.0.0.1:8080".into()),
            api_token_file: o.api_token_file,
            api_read_token_file: o.api_read_token_file,
            tls_cert_file: o.tls_cert_file,
            tls_key_file: o.tls_key_file,
            insecure_no_auth: o.insecure_no_auth.unwrap_or(false),
            http_header_timeout: o.http_header_timeout.unwrap_or(secs(10)),
            http_request_timeout: o.http_request_timeout.unwrap_or(secs(30)),
            http_idle_timeout: o.http_idle_timeout.unwrap_or(secs(60)),
            http_max_connections: o.http_max_connections.map(|c| c as usize),
            http_shutdown_grace: o.http_shutdown_grace.unwrap_or(secs(10)),
            database_url: o
                .database_url
                .unwrap_or_else(|| "sqlite://rolloutd.db".into()),
            specs_dir: o.specs_dir,
            specs_removal_scans: o.specs_removal_scans.unwrap_or(3),
            specs_removal_grace: o.specs_removal_grace.unwrap_or(secs(60)),
            reconcile_interval: o.reconcile_interval.unwrap_or(secs(10)),
            lease_ttl: o.lease_ttl.unwrap_or(secs(15)),
            replica: o.replica.unwrap_or_else(default_replica),
            concurrency: o.concurrency.map_or(DEFAULT_CONCURRENCY, |c| c as usize),
            run_history: o.run_history.unwrap_or(rollout_store::DEFAULT_RUN_HISTORY),
            drift_check_interval: o.drift_check_interval.unwrap_or(secs(60)),
            aws_elb_reads_per_second: o.aws_elb_reads_per_second.unwrap_or(4.0),
            aws_elb_writes_per_second: o.aws_elb_writes_per_second.unwrap_or(2.0),
            aws_get_metric_data_per_second: o.aws_get_metric_data_per_second.unwrap_or(5.0),
            aws_describe_alarms_per_second: o.aws_describe_alarms_per_second.unwrap_or(2.0),
            notifiers,
            accounts,
            public_url: o.public_url,
            simulate_world: o.simulate_world,
        };
        errors.extend(validate(&config));
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }
}

/// `canaryHealthSource`: `describe` (the default) or `cloudwatch`.
fn health_source(s: Option<&str>) -> Result<HealthSource, String> {
    match s {
        None | Some("describe") => Ok(HealthSource::Describe),
        Some("cloudwatch") => Ok(HealthSource::Cloudwatch),
        Some(other) => Err(format!(
            "canaryHealthSource `{other}`: expected describe or cloudwatch"
        )),
    }
}

/// What is wrong with a configuration as a whole (each key's type was
/// checked when it was read).
fn validate(config: &Config) -> Vec<String> {
    let mut errors = Vec::new();
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
        (
            "awsDescribeAlarmsPerSecond",
            config.aws_describe_alarms_per_second,
        ),
    ] {
        if !(rate.is_finite() && rate >= 0.1) {
            errors.push(format!("{name} {rate}: use at least 0.1 calls per second"));
        }
    }
    for (name, d) in [
        ("httpHeaderTimeout", config.http_header_timeout),
        ("httpRequestTimeout", config.http_request_timeout),
        ("httpIdleTimeout", config.http_idle_timeout),
    ] {
        if d.as_millis() < 100 {
            errors.push(format!("{name} {d} is too short; use at least 100ms"));
        }
    }
    if config.http_max_connections == Some(0) {
        errors.push("httpMaxConnections must be at least 1".into());
    }
    if config.concurrency == 0 {
        errors.push("concurrency must be at least 1".into());
    }
    if config.run_history == 0 {
        errors.push("runHistory must be at least 1".into());
    }
    errors
}

/// What the file holds beyond the flags' keys.
type FileOnly = (
    crate::notify::Notifiers,
    Vec<rollout_aws::regional::AccountRole>,
);

fn read_file(path: &Path) -> Result<(Overrides, FileOnly), Vec<String>> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: cannot read: {e}")])?;
    let docs = parse_stream(&text).map_err(|e| vec![format!("{name}:{}: {}", e.pos, e.message)])?;
    let Some(doc) = docs.first() else {
        return Ok(Default::default());
    };
    let mut cx = Ctx::new(&name, doc.pos);
    let value = cx.decode::<Overrides>(&doc.root);
    let notifiers = crate::notify::decode_notifiers(&doc.root, &mut cx);
    let accounts = decode_accounts(&doc.root, &mut cx);
    let (diags, _) = cx.finish();
    match (value, notifiers, accounts) {
        (Some(v), Some(n), Some(a)) if diags.is_empty() => Ok((v, (n, a))),
        _ => Err(diags.iter().map(ToString::to_string).collect()),
    }
}

/// The value of `key` at the top of the config file, when given (for the
/// keys the flags do not have, read apart from them).
pub(crate) fn top_level<'n>(root: &'n Node, key: &str) -> Option<&'n Node> {
    let rollout_spec::tree::Value::Map(top) = &root.value else {
        return None;
    };
    top.iter().find_map(|(k, v)| match &k.value {
        rollout_spec::tree::Value::Scalar { text, .. } if text == key => Some(v),
        _ => None,
    })
}

/// `accounts: {"ACCOUNT_ID": {roleArn: …, externalId: …}}`: the role to
/// assume for resources in each other account.
fn decode_accounts(root: &Node, cx: &mut Ctx) -> Option<Vec<rollout_aws::regional::AccountRole>> {
    use rollout_spec::tree::Value;
    let Some(node) = top_level(root, "accounts") else {
        return Some(Vec::new());
    };
    let Value::Map(entries) = &node.value else {
        cx.at_key("accounts", |cx| {
            cx.error(node.pos, "`accounts` maps account ids to a role to assume")
        });
        return None;
    };
    let mut out = Vec::new();
    let mut bad = false;
    cx.at_key("accounts", |cx| {
        for (k, v) in entries {
            let Value::Scalar { text: id, .. } = &k.value else {
                cx.error(k.pos, "an account id is a string of 12 digits");
                bad = true;
                continue;
            };
            cx.at_key(id, |cx| {
                if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
                    cx.error(
                        k.pos,
                        format!("`{id}` is not an AWS account id (12 digits)"),
                    );
                    bad = true;
                    return;
                }
                let Some(f) = cx.fields(v, &["roleArn", "externalId"]) else {
                    bad = true;
                    return;
                };
                let role: Option<String> = f.req(cx, "roleArn");
                let external_id: Result<Option<String>, ()> = f.opt(cx, "externalId");
                match (role, external_id) {
                    (Some(role), Ok(external_id)) => {
                        if !role.starts_with(&format!("arn:aws:iam::{id}:role/")) {
                            cx.error(
                                f.pos_of("roleArn"),
                                format!(
                                    "the role must be in account {id}: arn:aws:iam::{id}:role/NAME"
                                ),
                            );
                            bad = true;
                            return;
                        }
                        out.push(rollout_aws::regional::AccountRole {
                            account: id.clone(),
                            role_arn: role,
                            external_id,
                        });
                    }
                    _ => bad = true,
                }
            });
        }
    });
    (!bad).then_some(out)
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
    fn notifiers_come_from_the_file_and_a_mistake_names_its_place() {
        let p = write(
            "notifiers",
            "notifiers:\n  team: {urlFile: /run/secrets/slack, format: slack}\n  audit: {url: 'https://audit.example/x', secretFile: /k}\ndefaultNotifiers: [audit]\n",
        );
        let c = Config::load(Some(&p), Overrides::default()).expect("config");
        assert_eq!(c.notifiers.defaults, ["audit"]);
        assert_eq!(
            c.notifiers.by_name["team"].format,
            crate::notify::Format::Slack
        );
        let p = write(
            "bad-notifiers",
            "notifiers:\n  team: {url: 'https://x.example', format: teams}\ndefaultNotifiers: [nobody]\n",
        );
        let errors = Config::load(Some(&p), Overrides::default()).expect_err("invalid");
        assert!(
            errors
                .iter()
                .any(|e| e.contains(":2:") && e.contains("unknown format `teams`")),
            "{errors:?}"
        );
    }

    #[test]
    fn accounts_map_to_roles_and_a_wrong_one_names_its_place() {
        let p = write(
            "accounts",
            "accounts:\n  \"210987654321\": {roleArn: 'arn:aws:iam::210987654321:role/rolloutd', externalId: x-1}\n",
        );
        let c = Config::load(Some(&p), Overrides::default()).expect("config");
        assert_eq!(c.accounts.len(), 1);
        assert_eq!(c.accounts[0].external_id.as_deref(), Some("x-1"));
        let p = write(
            "bad-accounts",
            "accounts:\n  \"210987654321\": {roleArn: 'arn:aws:iam::999999999999:role/rolloutd'}\n",
        );
        let errors = Config::load(Some(&p), Overrides::default()).expect_err("invalid");
        assert!(
            errors
                .iter()
                .any(|e| e.contains(":2:") && e.contains("must be in account 210987654321")),
            "{errors:?}"
        );
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
            "insecureNoAuth",
            "httpHeaderTimeout",
            "httpRequestTimeout",
            "httpIdleTimeout",
            "httpMaxConnections",
            "httpShutdownGrace",
            "databaseUrl",
            "specsDir",
            "specsRemovalScans",
            "specsRemovalGrace",
            "reconcileInterval",
            "leaseTtl",
            "replica",
            "concurrency",
            "runHistory",
            "driftCheckInterval",
            "awsElbReadsPerSecond",
            "awsElbWritesPerSecond",
            "awsGetMetricDataPerSecond",
            "canaryHealthSource",
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

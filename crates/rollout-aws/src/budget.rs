//! The AWS API budget: client-side token buckets in front of every SDK call,
//! one per class of call (ELBv2 reads, ELBv2 writes, CloudWatch
//! `GetMetricData`), so rolloutd leaves most of the account's shared
//! throttling buckets to everyone else (the console, Terraform, the AWS
//! Load Balancer Controller).
//!
//! - **Rates.** Each class refills at its configured rate (calls per
//!   second) up to its burst. With several replicas the rate is the
//!   fleet's: each replica takes its share (the rate divided by the live
//!   replicas, [`Budget::set_share`]).
//! - **Priorities.** Waiting calls are served most urgent first, first come
//!   first served within an urgency (so nobody starves). A call that returns
//!   traffic to stable ([`Urgency::Rollback`]) never waits: it takes its
//!   token at once, even into debt. An [`Urgency::Optional`] call is made
//!   only when nobody waits and at least half the burst is left; otherwise
//!   it is skipped.
//! - **Adaptive.** A throttling answer halves the class's rate (at most once
//!   a second, never below a quarter of it); it recovers by a twentieth of
//!   the configured rate each second without throttling.
//!
//! Time is the tokio clock, so tests run it paused.

use rollout_core::sync::lock;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use rollout_core::Urgency;
use tokio::time::Instant;

/// Throttling never takes a class below this share of its configured rate
/// (AWS's bucket refills; a floor keeps every run moving meanwhile).
const MIN_FACTOR: f64 = 0.25;

/// A class of AWS calls with its own bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// `DescribeListeners`, `DescribeRules`, `DescribeTargetHealth`.
    ElbRead,
    /// `ModifyListener`, `ModifyRule`.
    ElbWrite,
    /// `GetMetricData`.
    CloudWatch,
    /// `DescribeAlarms` (the rollouts' alarm gates).
    Alarms,
    /// Fault Injection Service: `StartExperiment`, `GetExperiment`,
    /// `StopExperiment`, `ListExperiments` (chaos steps).
    Fis,
}

impl Class {
    /// Every class.
    pub const ALL: [Class; 5] = [
        Class::ElbRead,
        Class::ElbWrite,
        Class::CloudWatch,
        Class::Alarms,
        Class::Fis,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::ElbRead => "elbv2_read",
            Class::ElbWrite => "elbv2_write",
            Class::CloudWatch => "cloudwatch_get_metric_data",
            Class::Alarms => "cloudwatch_describe_alarms",
            Class::Fis => "fis",
        }
    }

    fn index(self) -> usize {
        match self {
            Class::ElbRead => 0,
            Class::ElbWrite => 1,
            Class::CloudWatch => 2,
            Class::Alarms => 3,
            Class::Fis => 4,
        }
    }
}

/// One class's rate and burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Calls per second, for the whole fleet.
    pub per_second: f64,
    /// How many calls may go at once after a quiet spell.
    pub burst: f64,
}

/// The budget's configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// ELBv2 reads. AWS's bucket for `Describe*` is 40 tokens refilled at
    /// 10 per second, shared by the whole account and region: the default
    /// takes 4 per second with a burst of 8, leaving 60% of the refill and
    /// 80% of the bucket to everyone else.
    pub elb_read: Rate,
    /// ELBv2 writes (their AWS bucket is smaller than the reads').
    pub elb_write: Rate,
    /// CloudWatch `GetMetricData` (AWS's default quota is 50 per second per
    /// account and region; one call carries 500 queries).
    pub cloudwatch: Rate,
    /// CloudWatch `DescribeAlarms` (AWS's default quota is 9 per second;
    /// one call reads 100 alarms, and the reads of every rollout are
    /// gathered).
    pub alarms: Rate,
    /// Fault Injection Service calls (a few per reconcile of a rollout at
    /// a chaos step).
    pub fis: Rate,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            elb_read: Rate {
                per_second: 4.0,
                burst: 8.0,
            },
            elb_write: Rate {
                per_second: 2.0,
                burst: 4.0,
            },
            cloudwatch: Rate {
                per_second: 5.0,
                burst: 10.0,
            },
            alarms: Rate {
                per_second: 2.0,
                burst: 4.0,
            },
            fis: FIS_RATE,
        }
    }
}

/// The fleet's FIS calls: a rollout at a chaos step makes one a reconcile,
/// so 2 a second with a burst of 5 serves many at once (not configurable
/// yet).
pub const FIS_RATE: Rate = Rate {
    per_second: 2.0,
    burst: 5.0,
};

impl BudgetConfig {
    fn rate(&self, class: Class) -> Rate {
        match class {
            Class::ElbRead => self.elb_read,
            Class::ElbWrite => self.elb_write,
            Class::CloudWatch => self.cloudwatch,
            Class::Alarms => self.alarms,
            Class::Fis => self.fis,
        }
    }
}

/// What a class's bucket has done so far (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClassStats {
    /// The rate in force now, per second (this replica's share, after any
    /// throttling back-off).
    pub rate: f64,
    /// Tokens taken.
    pub used: u64,
    /// Calls that had to wait for a token.
    pub waits: u64,
    /// Seconds spent waiting, all calls together.
    pub wait_seconds: f64,
    /// Optional calls skipped for want of spare tokens.
    pub skipped: u64,
    /// Throttling answers seen.
    pub throttled: u64,
    /// Calls waiting now.
    pub queued: usize,
}

#[derive(Debug)]
struct Bucket {
    configured: Rate,
    share: f64,
    /// 1.0, or less after throttling.
    factor: f64,
    tokens: f64,
    refilled: Instant,
    last_throttle: Option<Instant>,
    /// Waiting calls: (most urgent first, then oldest).
    queue: BTreeSet<(std::cmp::Reverse<Urgency>, u64)>,
    next: u64,
    stats: ClassStats,
}

impl Bucket {
    fn new(configured: Rate, now: Instant) -> Bucket {
        Bucket {
            configured,
            share: 1.0,
            factor: 1.0,
            tokens: configured.burst.max(1.0),
            refilled: now,
            last_throttle: None,
            queue: BTreeSet::new(),
            next: 0,
            stats: ClassStats::default(),
        }
    }

    fn rate(&self) -> f64 {
        (self.configured.per_second * self.share * self.factor).max(0.01)
    }

    fn burst(&self) -> f64 {
        (self.configured.burst * self.share).max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        if self.factor < 1.0 {
            let quiet = self
                .last_throttle
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
            if quiet {
                self.factor = (self.factor + dt / 20.0).min(1.0);
            }
        }
        self.tokens = (self.tokens + dt * self.rate()).min(self.burst());
    }
}

/// The buckets of every class, for each AWS account and region apart (AWS
/// throttles each account and region on its own): a scope is
/// `ACCOUNT/REGION` ([`scope_of`]), "" for calls that name none.
#[derive(Debug)]
pub struct Budget {
    scopes: Mutex<std::collections::HashMap<String, std::sync::Arc<Buckets>>>,
    /// This replica's share of the fleet's budget.
    share: Mutex<f64>,
    config: BudgetConfig,
}

/// One scope's buckets, by class.
#[derive(Debug)]
struct Buckets([Mutex<Bucket>; 5]);

/// The budget scope of a resource: the account and region its ARN names.
pub fn scope_of(arn: &str) -> String {
    format!(
        "{}/{}",
        crate::regional::account_of(arn),
        crate::regional::region_of(arn)
    )
}

/// Called (held) while a call waits for its token: counts it as queued.
struct Queued<'a> {
    bucket: &'a Mutex<Bucket>,
    key: (std::cmp::Reverse<Urgency>, u64),
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        {
            let mut b = lock(self.bucket);
            b.queue.remove(&self.key);
        }
    }
}

impl Budget {
    /// A budget with `config`'s rates, full buckets (in every scope).
    pub fn new(config: BudgetConfig) -> Budget {
        Budget {
            scopes: Mutex::new(std::collections::HashMap::new()),
            share: Mutex::new(1.0),
            config,
        }
    }

    /// The buckets of `scope`, made full on first use.
    fn scope(&self, scope: &str) -> std::sync::Arc<Buckets> {
        let share = *lock(&self.share);
        let config = self.config;
        std::sync::Arc::clone(
            lock(&self.scopes)
                .entry(scope.to_string())
                .or_insert_with(|| {
                    let now = Instant::now();
                    std::sync::Arc::new(Buckets(Class::ALL.map(|c| {
                        let mut b = Bucket::new(config.rate(c), now);
                        b.share = share;
                        b.tokens = b.tokens.min(b.burst());
                        Mutex::new(b)
                    })))
                }),
        )
    }

    /// The configuration.
    pub fn config(&self) -> BudgetConfig {
        self.config
    }

    /// This replica's share of the fleet's budget: 1 / the live replicas.
    pub fn set_share(&self, replicas: usize) {
        let share = 1.0 / replicas.max(1) as f64;
        *lock(&self.share) = share;
        let scopes: Vec<std::sync::Arc<Buckets>> = lock(&self.scopes).values().cloned().collect();
        for b in scopes.iter().flat_map(|s| s.0.iter()) {
            {
                let mut b = lock(b);
                let now = Instant::now();
                b.refill(now);
                b.share = share;
                b.tokens = b.tokens.min(b.burst());
            }
        }
    }

    /// A throttling answer from AWS for `class` (in the scope ""): halve
    /// its rate (at most once a second).
    pub fn throttled(&self, class: Class) {
        self.throttled_in("", class);
    }

    /// A throttling answer for `class` in `scope`.
    pub fn throttled_in(&self, scope: &str, class: Class) {
        let buckets = self.scope(scope);
        {
            let mut b = lock(&buckets.0[class.index()]);
            let now = Instant::now();
            b.refill(now);
            b.stats.throttled += 1;
            let recent = b
                .last_throttle
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1));
            if !recent {
                b.factor = (b.factor * 0.5).max(MIN_FACTOR);
                b.last_throttle = Some(now);
            }
        }
    }

    /// Takes a token for one call of `class` (in the scope ""), waiting
    /// (most urgent first) as long as it takes; `false` only for an
    /// [`Urgency::Optional`] call that found no tokens to spare (then make
    /// no call).
    pub async fn acquire(&self, class: Class, urgency: Urgency) -> bool {
        self.acquire_in("", class, urgency).await
    }

    /// [`Budget::acquire`] from the buckets of `scope` (an account and
    /// region, see [`scope_of`]).
    pub async fn acquire_in(&self, scope: &str, class: Class, urgency: Urgency) -> bool {
        let buckets = self.scope(scope);
        let bucket = &buckets.0[class.index()];
        let started = Instant::now();
        let key = {
            let mut b = lock(bucket);
            b.refill(started);
            match urgency {
                Urgency::Rollback => {
                    // Never waits: into debt if need be, repaid by the
                    // calls after it.
                    b.tokens -= 1.0;
                    b.stats.used += 1;
                    return true;
                }
                Urgency::Optional => {
                    if b.queue.is_empty() && b.tokens >= (b.burst() / 2.0).max(1.0) {
                        b.tokens -= 1.0;
                        b.stats.used += 1;
                        return true;
                    }
                    b.stats.skipped += 1;
                    return false;
                }
                _ => {}
            }
            if b.queue.is_empty() && b.tokens >= 1.0 {
                b.tokens -= 1.0;
                b.stats.used += 1;
                return true;
            }
            b.next += 1;
            let key = (std::cmp::Reverse(urgency), b.next);
            b.queue.insert(key);
            b.stats.waits += 1;
            key
        };
        let queued = Queued { bucket, key };
        loop {
            let wait = {
                let mut b = lock(bucket);
                let now = Instant::now();
                b.refill(now);
                let first = b.queue.first() == Some(&queued.key);
                if first && b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    b.stats.used += 1;
                    b.stats.wait_seconds += now.saturating_duration_since(started).as_secs_f64();
                    break;
                }
                // Until the next token (or a little while, when others are
                // ahead).
                let missing = (1.0 - b.tokens).max(0.0);
                Duration::from_secs_f64((missing / b.rate()).clamp(0.005, 0.25))
            };
            tokio::time::sleep(wait).await;
        }
        drop(queued);
        true
    }

    /// Each class's figures, summed over the scopes; the rate is the lowest
    /// in force in any scope (a throttled account and region shows), the
    /// configured share when no call was made yet.
    pub fn stats(&self) -> Vec<(Class, ClassStats)> {
        let scopes: Vec<std::sync::Arc<Buckets>> = lock(&self.scopes).values().cloned().collect();
        let share = *lock(&self.share);
        Class::ALL
            .iter()
            .map(|c| {
                let mut sum = ClassStats {
                    rate: self.config.rate(*c).per_second * share,
                    ..ClassStats::default()
                };
                let mut lowest: Option<f64> = None;
                for scope in &scopes {
                    let mut b = lock(&scope.0[c.index()]);
                    b.refill(Instant::now());
                    let s = b.stats;
                    sum.used += s.used;
                    sum.waits += s.waits;
                    sum.wait_seconds += s.wait_seconds;
                    sum.skipped += s.skipped;
                    sum.throttled += s.throttled;
                    sum.queued += b.queue.len();
                    lowest = Some(lowest.map_or(b.rate(), |l: f64| l.min(b.rate())));
                }
                if let Some(l) = lowest {
                    sum.rate = l;
                }
                (*c, sum)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn one(per_second: f64, burst: f64) -> Budget {
        let r = Rate { per_second, burst };
        Budget::new(BudgetConfig {
            elb_read: r,
            elb_write: r,
            cloudwatch: r,
            alarms: r,
            fis: r,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn calls_never_exceed_the_rate_after_the_burst() {
        let b = Arc::new(one(4.0, 8.0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..48 {
            let b = Arc::clone(&b);
            tasks.push(tokio::spawn(async move {
                b.acquire(Class::ElbRead, Urgency::Routine).await;
                Instant::now()
            }));
        }
        let mut at = Vec::new();
        for t in tasks {
            at.push(t.await.expect("join").duration_since(start).as_secs_f64());
        }
        at.sort_by(f64::total_cmp);
        // 8 at once, then 4 a second: the 48th at about 10 s.
        assert!(at[7] < 0.01, "{at:?}");
        assert!((9.9..10.3).contains(&at[47]), "{at:?}");
        // No one-second window holds more than the burst plus the rate.
        for (i, t) in at.iter().enumerate() {
            let within = at[i..].iter().take_while(|u| **u < t + 1.0).count();
            assert!(within <= 12, "{within} calls in the second after {t}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_account_and_region_has_its_own_buckets() {
        let b = Arc::new(one(1.0, 1.0));
        let us = scope_of("arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/a/1/2");
        let eu = scope_of("arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/a/1/2");
        let other =
            scope_of("arn:aws:elasticloadbalancing:us-east-1:210987654321:listener/app/a/1/2");
        assert_eq!(us, "123456789012/us-east-1");
        let t = Instant::now();
        assert!(b.acquire_in(&us, Class::ElbRead, Urgency::Routine).await);
        // us-east-1's only token is gone; the others still have theirs.
        assert!(b.acquire_in(&eu, Class::ElbRead, Urgency::Routine).await);
        assert!(b.acquire_in(&other, Class::ElbRead, Urgency::Routine).await);
        assert_eq!(t.elapsed(), Duration::ZERO);
        assert!(b.acquire_in(&us, Class::ElbRead, Urgency::Routine).await);
        assert!(
            t.elapsed() >= Duration::from_millis(990),
            "{:?}",
            t.elapsed()
        );
        // Throttling in one scope slows that scope only; stats show the
        // lowest rate and sum the calls.
        b.throttled_in(&eu, Class::ElbRead);
        let stats = b.stats();
        let reads = stats
            .iter()
            .find(|(c, _)| *c == Class::ElbRead)
            .map(|(_, s)| *s);
        let reads = reads.expect("reads");
        assert_eq!(reads.used, 4);
        assert!((reads.rate - 0.5).abs() < 1e-9, "{}", reads.rate);
    }

    #[tokio::test(start_paused = true)]
    async fn the_most_urgent_go_first_and_rollbacks_never_wait() {
        let b = Arc::new(one(1.0, 1.0));
        assert!(b.acquire(Class::ElbRead, Urgency::Routine).await);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, u) in [
            Urgency::Routine,
            Urgency::Routine,
            Urgency::BeforeRaise,
            Urgency::ReadBack,
        ]
        .into_iter()
        .enumerate()
        {
            let (b, order) = (Arc::clone(&b), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i as u64)).await;
                b.acquire(Class::ElbRead, u).await;
                order.lock().expect("lock").push(u);
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let t = Instant::now();
        assert!(b.acquire(Class::ElbRead, Urgency::Rollback).await);
        assert_eq!(t.elapsed(), Duration::ZERO, "a rollback never waits");
        for t in tasks {
            t.await.expect("join");
        }
        assert_eq!(
            *order.lock().expect("lock"),
            vec![
                Urgency::ReadBack,
                Urgency::BeforeRaise,
                Urgency::Routine,
                Urgency::Routine
            ]
        );
        // Optional calls are skipped while others wait or tokens are short.
        assert!(!b.acquire(Class::ElbRead, Urgency::Optional).await);
        let s = b.stats()[0].1;
        assert_eq!(s.skipped, 1);
        assert_eq!(s.waits, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_and_it_recovers() {
        let b = one(4.0, 8.0);
        b.throttled(Class::ElbRead);
        b.throttled(Class::ElbRead); // within a second: counted once
        assert!((b.stats()[0].1.rate - 2.0).abs() < 1e-9);
        tokio::time::sleep(Duration::from_secs(2)).await;
        b.throttled(Class::ElbRead);
        let r = b.stats()[0].1.rate;
        assert!(r < 1.3, "{r}");
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            b.throttled(Class::ElbRead);
        }
        let r = b.stats()[0].1.rate;
        assert!((r - 1.0).abs() < 0.1, "never below a quarter: {r}");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!((b.stats()[0].1.rate - 4.0).abs() < 1e-9, "recovered");
        assert_eq!(b.stats()[0].1.throttled, 13);
        // A fleet of four: a quarter each.
        b.set_share(4);
        assert!((b.stats()[0].1.rate - 1.0).abs() < 1e-9);
    }
}

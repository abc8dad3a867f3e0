//! One SDK client per account and region, made on first use and kept:
//! every call goes to the region its resource's ARN names (a listener,
//! rule or target group in eu-west-1 is read and written in eu-west-1
//! whatever region the daemon's AWS configuration names), with the
//! credentials of the account it names (the daemon's own, or a role
//! assumed in that account). The configured region's client serves
//! anything without an ARN.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_elasticloadbalancingv2::config::SharedCredentialsProvider;
use rollout_core::sync::lock;
use rollout_core::ObservationError;

/// The accounts the daemon acts in.
#[derive(Clone, Default)]
pub struct Accounts {
    /// Its own account (STS `GetCallerIdentity`); `None` when unknown,
    /// and then every ARN is reached with its own credentials.
    pub own: Option<String>,
    /// Credentials of other accounts: a role assumed in each (cached and
    /// refreshed before expiry by the clients' identity cache).
    pub roles: HashMap<String, SharedCredentialsProvider>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("own", &self.own)
            .field("roles", &self.roles.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Makes the client of a region (with an account's credentials) from the
/// default client.
type Make<C> = Box<dyn Fn(&C, &str, Option<&SharedCredentialsProvider>) -> C + Send + Sync>;

/// Clients by account and region.
pub struct Regional<C> {
    default: C,
    default_region: String,
    accounts: Accounts,
    make: Make<C>,
    clients: Mutex<HashMap<(String, String), C>>,
}

impl<C: Clone> Regional<C> {
    /// `default` serves `default_region` in the daemon's own account;
    /// `make(default, region, credentials)` makes the others.
    pub fn new(
        default: C,
        default_region: Option<String>,
        accounts: Accounts,
        make: impl Fn(&C, &str, Option<&SharedCredentialsProvider>) -> C + Send + Sync + 'static,
    ) -> Arc<Regional<C>> {
        Arc::new(Regional {
            default,
            default_region: default_region.unwrap_or_default(),
            accounts,
            make: Box::new(make),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The client for the resource `arn`: its region, its account's
    /// credentials. An account that is neither the daemon's nor mapped to
    /// a role is refused, naming the account (fatal: retrying cannot help).
    pub fn for_arn(&self, arn: &str) -> Result<C, ObservationError> {
        self.at(account_of(arn), region_of(arn), arn)
    }

    /// The client for a resource in `account` and `region` (`what` names
    /// it in the message that refuses an account without a role).
    pub fn at(&self, account: &str, region: &str, what: &str) -> Result<C, ObservationError> {
        let arn = what;
        let foreign = !account.is_empty()
            && self
                .accounts
                .own
                .as_deref()
                .is_some_and(|own| own != account);
        let creds = if foreign {
            match self.accounts.roles.get(account) {
                Some(p) => Some(p),
                None => {
                    return Err(ObservationError {
                        fatal: true,
                        message: format!(
                            "{arn} is in AWS account {account}, which this daemon (account {}) has no role for: add `accounts: {{\"{account}\": {{roleArn: arn:aws:iam::{account}:role/NAME}}}}` to its config file",
                            self.accounts.own.as_deref().unwrap_or("?")
                        ),
                    })
                }
            }
        } else {
            None
        };
        if creds.is_none() && (region.is_empty() || region == self.default_region) {
            return Ok(self.default.clone());
        }
        let key = (
            if creds.is_some() { account } else { "" }.to_string(),
            region.to_string(),
        );
        Ok(lock(&self.clients)
            .entry(key)
            .or_insert_with(|| (self.make)(&self.default, region, creds))
            .clone())
    }
}

/// The region an ARN names (`arn:PARTITION:SERVICE:REGION:ACCOUNT:…`); ""
/// when it names none.
pub fn region_of(arn: &str) -> &str {
    arn.split(':').nth(3).unwrap_or("")
}

/// The account an ARN names; "" when it names none.
pub fn account_of(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap_or("")
}

/// A function making the clients of one AWS SDK, each a copy of the
/// default client's configuration in its region and account.
macro_rules! regional_clients {
    ($(#[$doc:meta])* $name:ident, $sdk:ident) => {
        $(#[$doc])*
        pub fn $name(client: $sdk::Client, accounts: Accounts) -> Arc<Regional<$sdk::Client>> {
            let region = client.config().region().map(|r| r.to_string());
            Regional::new(client, region, accounts, |c, r, creds| {
                let mut b = c
                    .config()
                    .to_builder()
                    .region($sdk::config::Region::new(r.to_string()));
                if let Some(p) = creds {
                    b = b.credentials_provider(p.clone());
                }
                $sdk::Client::from_conf(b.build())
            })
        }
    };
}

regional_clients!(
    /// The ELBv2 clients, each a copy of `client`'s configuration in its
    /// region and account.
    elb,
    aws_sdk_elasticloadbalancingv2
);

regional_clients!(
    /// The CloudWatch clients, each a copy of `client`'s configuration in
    /// its region and account.
    cloudwatch,
    aws_sdk_cloudwatch
);

regional_clients!(
    /// The Fault Injection Service clients (chaos steps), each a copy of
    /// `client`'s configuration in its region and account.
    fis,
    aws_sdk_fis
);

#[cfg(test)]
mod tests {
    use super::*;

    const LISTENER: &str = "arn:aws:elasticloadbalancing:eu-west-1:210987654321:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2";

    #[test]
    fn the_region_and_account_come_from_the_arn() {
        assert_eq!(region_of(LISTENER), "eu-west-1");
        assert_eq!(account_of(LISTENER), "210987654321");
        assert_eq!(region_of("not an arn"), "");
    }

    fn regional(own: Option<&str>) -> (Arc<Regional<String>>, Arc<std::sync::atomic::AtomicUsize>) {
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let m = Arc::clone(&made);
        let accounts = Accounts {
            own: own.map(str::to_string),
            roles: HashMap::new(),
        };
        let r = Regional::new(
            "us-east-1".to_string(),
            Some("us-east-1".into()),
            accounts,
            move |_, region, creds| {
                m.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                format!("{region}{}", if creds.is_some() { "+role" } else { "" })
            },
        );
        (r, made)
    }

    #[test]
    fn a_client_per_region_is_made_once() {
        let (r, made) = regional(Some("123456789012"));
        let at = |region: &str| r.at("123456789012", region, "test").expect("own account");
        assert_eq!(at("us-east-1"), "us-east-1");
        assert_eq!(at(""), "us-east-1");
        assert_eq!(at("eu-west-1"), "eu-west-1");
        let own = LISTENER.replace("210987654321", "123456789012");
        assert_eq!(r.for_arn(&own).expect("own account"), "eu-west-1");
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn an_account_without_a_role_is_refused_by_name() {
        let (r, _) = regional(Some("123456789012"));
        let e = r.for_arn(LISTENER).expect_err("no role for it");
        assert!(e.fatal);
        assert!(
            e.message.contains("AWS account 210987654321"),
            "{}",
            e.message
        );
        // Not knowing its own account, the daemon tries with its own
        // credentials (AWS then answers).
        let (r, _) = regional(None);
        assert_eq!(r.for_arn(LISTENER).expect("tried"), "eu-west-1");
    }
}

/// A role to assume in another account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRole {
    /// The account's id.
    pub account: String,
    /// The role to assume there.
    pub role_arn: String,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<String>,
}

/// The daemon's accounts: its own (STS `GetCallerIdentity`, which needs
/// no permission; unknown when it fails, and then every ARN is reached
/// with the daemon's own credentials) and a role provider per mapped
/// account (STS `AssumeRole` with session name `rolloutd`; the clients
/// cache the credentials and refresh them before they expire).
pub async fn accounts(config: &aws_config::SdkConfig, roles: &[AccountRole]) -> Accounts {
    let own = match aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
    {
        Ok(id) => id.account().map(str::to_string),
        Err(e) => {
            tracing::warn!(error = %aws_sdk_sts::error::DisplayErrorContext(&e), "cannot tell this daemon's own AWS account (sts:GetCallerIdentity); every resource is reached with its own credentials");
            None
        }
    };
    let mut providers = HashMap::new();
    for r in roles {
        let mut b = aws_config::sts::AssumeRoleProvider::builder(r.role_arn.clone())
            .session_name("rolloutd")
            .configure(config);
        if let Some(x) = &r.external_id {
            b = b.external_id(x.clone());
        }
        let provider = b.build().await;
        providers.insert(r.account.clone(), SharedCredentialsProvider::new(provider));
    }
    tracing::info!(own = ?own, mapped = ?providers.keys().collect::<Vec<_>>(), "AWS accounts");
    Accounts {
        own,
        roles: providers,
    }
}

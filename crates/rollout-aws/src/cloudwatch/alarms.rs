//! The alarm gates' reads: `DescribeAlarms` of metric and composite alarms.

use aws_sdk_cloudwatch::types::{AlarmType, StateValue};
use rollout_core::{AlarmState, Observed};

use super::{CloudWatchSource, MAX_ALARMS, MAX_PAGES, SERVICE};

impl CloudWatchSource {
    /// The alarms of `place`'s account and region among `names`, 100 a
    /// call, paid from the alarms' budget class.
    pub(super) async fn describe_alarms(
        &self,
        place: &str,
        names: &[String],
    ) -> Observed<Vec<AlarmState>> {
        let client = match self.client.for_arn(place) {
            Ok(c) => c,
            Err(e) => return Observed::Err(e),
        };
        let scope = crate::budget::scope_of(place);
        let mut out = Vec::new();
        for chunk in names.chunks(MAX_ALARMS) {
            let resource = chunk.join(",");
            let mut token: Option<String> = None;
            for _ in 0..MAX_PAGES {
                self.budget
                    .acquire_in(
                        &scope,
                        crate::budget::Class::Alarms,
                        rollout_core::Urgency::ReadBack,
                    )
                    .await;
                let sent = client
                    .describe_alarms()
                    .set_alarm_names(Some(chunk.to_vec()))
                    .alarm_types(AlarmType::MetricAlarm)
                    .alarm_types(AlarmType::CompositeAlarm)
                    .set_next_token(token.take())
                    .send()
                    .await;
                let page = match crate::record(
                    &self.observer,
                    Some((&self.budget, crate::budget::Class::Alarms, &scope)),
                    SERVICE,
                    "DescribeAlarms",
                    &resource,
                    sent,
                ) {
                    Ok(p) => p,
                    Err(e) => return Observed::Err(e),
                };
                let state = |v: Option<&StateValue>| v.map_or("", |s| s.as_str()).to_string();
                out.extend(page.metric_alarms().iter().map(|a| AlarmState {
                    name: a.alarm_name().unwrap_or_default().to_string(),
                    state: state(a.state_value()),
                    reason: a.state_reason().unwrap_or_default().to_string(),
                }));
                out.extend(page.composite_alarms().iter().map(|a| AlarmState {
                    name: a.alarm_name().unwrap_or_default().to_string(),
                    state: state(a.state_value()),
                    reason: a.state_reason().unwrap_or_default().to_string(),
                }));
                token = page.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        Observed::Ok(out)
    }
}

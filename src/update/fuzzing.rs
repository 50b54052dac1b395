//! Entry point for the coverage-guided fuzzer in `fuzz/` (see its README):
//! an UPDATE message's prerequisite and update sections planned against a
//! small fixed registry, as the writer plans them. Hidden from the docs and
//! not part of roster's API; the server never calls it.
//!
//! Owns: nothing the server uses. Must not: change how updates are planned.

use std::{collections::BTreeSet, sync::Arc};

use hickory_proto::{op::Message, rr::Name};

use super::{UpdatePlan, UpdateSettings, engine, zone::MAX_TOUCHED};
use crate::{
    dns::ServiceScope,
    model::InstanceBody,
    registry::{Change, InstanceState, RegistryState, ServiceState},
};

/// The zone the fuzz registry's updates are for.
pub const DOMAIN: &str = "service.local.";

/// The instances of the fuzz registry: an IPv4 service with tags, metadata,
/// a TTL check and a DHCID, and an IPv6 one.
const INSTANCES: &[(&str, &str, &str)] = &[
    (
        "web",
        "web-1",
        r#"{"address":"127.0.0.1","port":80,"tags":["v2"],"meta":{"k":"v","dhcid":"AAEBAg=="},"check":{"ttl":"30s"}}"#,
    ),
    ("web", "Web_2", r#"{"address":"127.0.0.2","port":81}"#),
    ("six", "six-1", r#"{"address":"::1","port":90,"weight":3}"#),
];

/// A registry to plan updates against.
pub struct UpdateTarget {
    state: RegistryState,
    settings: Arc<UpdateSettings>,
}

impl Default for UpdateTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl UpdateTarget {
    pub fn new() -> Self {
        let mut state = RegistryState::default();
        for (service, id, body) in INSTANCES {
            let Ok(body) = serde_json::from_str::<InstanceBody>(body) else {
                continue;
            };
            let Ok(instance) = body.validate(service, id) else {
                continue;
            };
            let label = instance.service.label().clone();
            let entry = state
                .services
                .entry(label.clone())
                .or_insert_with(|| Arc::new(ServiceState::new(instance.service.clone())));
            state.ids.insert(instance.id.shared(), label);
            Arc::make_mut(entry).insert(Arc::new(InstanceState {
                instance: Arc::new(instance),
                checks: Vec::new(),
                maintenance: None,
                create_index: 1,
                modify_index: 1,
            }));
        }
        let settings = UpdateSettings {
            domain: Name::from_ascii(DOMAIN).unwrap_or_else(|_| Name::root()),
            default_port: 80,
            default_check: None,
        };
        Self {
            state,
            settings: Arc::new(settings),
        }
    }

    /// Plans the update in `message` (a whole DNS message; its zone section
    /// is not looked at), checking what every plan must be: each instance
    /// put is valid and has a port and an address, none is changed twice,
    /// at most [`MAX_TOUCHED`] are. Panics if one is not. `None`: the
    /// message does not parse.
    pub fn plan(&self, message: &[u8]) -> Option<Result<usize, String>> {
        let message = Message::from_vec(message).ok()?;
        let plan = UpdatePlan {
            settings: self.settings.clone(),
            scope: ServiceScope::All,
            prerequisites: message.answers,
            updates: message.authorities,
        };
        let changes = match engine::plan(&plan, &self.state) {
            Ok(changes) => changes,
            Err(refusal) => return Some(Err(refusal.reason)),
        };
        let mut seen = BTreeSet::new();
        for change in &changes {
            if let Change::Put(instance) = change {
                if let Err(error) = instance.validate() {
                    panic!("an invalid instance planned: {error}: {instance:?}");
                }
                assert_ne!(instance.port, 0, "no port: {instance:?}");
                assert!(!instance.address.is_unspecified(), "{instance:?}");
            }
            let id = change.id();
            assert!(
                seen.insert(id.to_owned()),
                "{id} changed twice: {changes:?}"
            );
        }
        assert!(
            seen.len() <= MAX_TOUCHED,
            "{} instances changed",
            seen.len()
        );
        Some(Ok(changes.len()))
    }
}

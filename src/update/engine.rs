//! RFC 2136's prerequisite checks (section 3.2) and update processing
//! (sections 3.4.1 and 3.4.2) over the RRsets roster's instances make.

use hickory_proto::op::ResponseCode;

use super::{UpdatePlan, UpdateRefusal};
use crate::registry::{Change, RegistryState};

/// The changes `plan`'s update makes to `state`, or why it makes none.
pub(super) fn plan(plan: &UpdatePlan, state: &RegistryState) -> Result<Vec<Change>, UpdateRefusal> {
    let _ = (plan, state);
    Err(UpdateRefusal::new(
        ResponseCode::NotImp,
        "DNS UPDATE is not implemented yet",
    ))
}

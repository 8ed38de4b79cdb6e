//! Who may see and do what (docs/ROUTE_AUTHZ_MATRIX.md). A resource that
//! exists but is out of the caller's reach is 403, one that does not exist
//! is 404.

use super::ApiError;
use crate::auth::{Caller, Role};
use crate::domain::TripState;
use crate::projection::BookingView;

/// Any authenticated member of the trip's organisation, its driver, an
/// admin of its organisation, a super_admin.
pub fn can_view_trip(c: &Caller, t: &TripState) -> bool {
    c.is_super_admin() || c.user_id == t.driver_id || c.org_id == t.org_id
}

/// The trip's driver, an admin of its organisation, a super_admin.
pub fn can_list_bookings(c: &Caller, t: &TripState) -> bool {
    c.user_id == t.driver_id || c.administers(t.org_id.as_deref())
}

/// The rider, the trip's driver, an admin of its organisation, a super_admin.
pub fn can_view_booking(c: &Caller, t: &TripState, b: &BookingView) -> bool {
    c.user_id == b.user_id || c.user_id == t.driver_id || c.administers(t.org_id.as_deref())
}

pub fn require(allowed: bool, what: &str) -> Result<(), ApiError> {
    if allowed {
        Ok(())
    } else {
        Err(ApiError::authorization(format!("not allowed to {what}")))
    }
}

/// Publishing and booking are for users (people), not administrators.
pub fn require_user(c: &Caller, what: &str) -> Result<(), ApiError> {
    require(c.role == Role::User, what)
}

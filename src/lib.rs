//! faultline
pub mod api;

//! gRPC adapters: validate and convert the request, call the service, convert back.
mod audit;
pub mod convert;
mod events;
pub mod faults;
mod feedback;
mod members;
pub mod middleware;
pub mod observe;
mod offers;
mod points;
mod program;
mod rewards;

pub use audit::AuditApi;
pub use events::EventApi;
pub use feedback::FeedbackApi;
pub use members::MemberApi;
pub use offers::OfferApi;
pub use points::PointsApi;
pub use program::ProgramApi;
pub use rewards::RewardApi;

/// Generated protobuf types, clients and servers.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));
}

/// Descriptors of every proto of the API, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/loyalty_descriptor.bin"));

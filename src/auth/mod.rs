//! Who may call what. No I/O here: the roles, the caller, the one policy table (method ×
//! role) and API keys. The tower layer in `grpc::middleware` enforces it.
use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::domain::ProgramId;

/// What a client is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A till (or a web shop acting as a store): earns, spends and returns, in its stores.
    Pos,
    /// An e-commerce backend: reads members, balances and offers, quotes, pays with holds.
    Ecommerce,
    /// A CRM: manages members and their data, goodwill and corrections.
    Crm,
    /// Everything in its programme, including rules, tiers, offers, rewards and clients.
    Admin,
    /// An administrator of every programme: acts in the one a call names
    /// (`x-loyalty-program`), creates programmes and follows all their events.
    Platform,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Pos,
        Role::Ecommerce,
        Role::Crm,
        Role::Admin,
        Role::Platform,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pos => "pos",
            Self::Ecommerce => "ecommerce",
            Self::Crm => "crm",
            Self::Admin => "admin",
            Self::Platform => "platform",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == raw)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request header in which a platform administrator names the programme a call acts
/// in. Other clients may send their own programme's id or nothing.
pub const PROGRAM_HEADER: &str = "x-loyalty-program";

/// The authenticated client of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub client_id: String,
    pub name: String,
    pub role: Role,
    /// The stores a POS client may act for; other roles are not bound to stores.
    pub stores: Vec<String>,
    /// The programme the client's key belongs to.
    pub home_program: ProgramId,
    /// The programme this call acts in: the home programme, or the one a platform
    /// administrator named.
    pub program: ProgramId,
}

impl Caller {
    /// The caller when authentication is off (loopback only): a platform administrator
    /// of the default programme.
    pub fn anonymous() -> Self {
        Self {
            client_id: "anonymous".into(),
            name: "anonymous".into(),
            role: Role::Platform,
            stores: Vec::new(),
            home_program: ProgramId::default_program(),
            program: ProgramId::default_program(),
        }
    }

    /// The programme a call acts in, given the programme its header names: the key's
    /// own unless the caller is a platform administrator. Err: the caller may not act in
    /// the named programme.
    pub fn acting_in(mut self, named: Option<ProgramId>) -> Result<Self, ProgramId> {
        match named {
            None => {}
            Some(p) if p == self.home_program => {}
            Some(p) if self.role == Role::Platform => self.program = p,
            Some(p) => return Err(p),
        }
        Ok(self)
    }

    /// Who owns the call's idempotency keys: the client, and the programme too when a
    /// platform administrator acts outside its home, so that one request id used in two
    /// programmes names two calls.
    pub fn idempotency_owner(&self) -> String {
        if self.program == self.home_program {
            self.client_id.clone()
        } else {
            format!("{}@{}", self.client_id, self.program)
        }
    }

    /// Whether this caller may act for `store_id`: POS clients only for their own stores.
    pub fn may_act_for_store(&self, store_id: &str) -> bool {
        self.role != Role::Pos || self.stores.iter().any(|s| s == store_id)
    }
}

use Role::{Admin, Crm, Ecommerce, Platform, Pos};

/// The policy: for every method of the API, the roles that may call it. A method missing
/// here is denied to everyone (and the policy test fails).
pub const POLICY: &[(&str, &[Role])] = &[
    (
        "/loyalty.v1.MemberService/EnrollMember",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    (
        "/loyalty.v1.MemberService/GetMember",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    ("/loyalty.v1.MemberService/UpdateMember", &[Crm, Admin]),
    ("/loyalty.v1.MemberService/ListMembers", &[Crm, Admin]),
    ("/loyalty.v1.MemberService/ExportMember", &[Crm, Admin]),
    ("/loyalty.v1.MemberService/EraseMember", &[Crm, Admin]),
    ("/loyalty.v1.PointsService/Accrue", &[Pos, Admin]),
    (
        "/loyalty.v1.PointsService/QuoteAccrual",
        &[Pos, Ecommerce, Admin],
    ),
    (
        "/loyalty.v1.PointsService/GetBalance",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    (
        "/loyalty.v1.PointsService/ListLedgerEntries",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    ("/loyalty.v1.PointsService/Redeem", &[Pos, Admin]),
    (
        "/loyalty.v1.PointsService/CreateHold",
        &[Pos, Ecommerce, Admin],
    ),
    (
        "/loyalty.v1.PointsService/CaptureHold",
        &[Pos, Ecommerce, Admin],
    ),
    (
        "/loyalty.v1.PointsService/VoidHold",
        &[Pos, Ecommerce, Admin],
    ),
    ("/loyalty.v1.PointsService/ReturnItems", &[Pos, Admin]),
    ("/loyalty.v1.PointsService/AdjustPoints", &[Crm, Admin]),
    (
        "/loyalty.v1.PointsService/ConfirmOrder",
        &[Pos, Ecommerce, Admin],
    ),
    // Tills and web shops ask for feedback after a purchase; CRM runs service recovery.
    (
        "/loyalty.v1.FeedbackService/RecordFeedback",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    ("/loyalty.v1.FeedbackService/RecordComplaint", &[Crm, Admin]),
    (
        "/loyalty.v1.FeedbackService/ResolveComplaint",
        &[Crm, Admin],
    ),
    (
        "/loyalty.v1.FeedbackService/GetSatisfactionSummary",
        &[Crm, Admin],
    ),
    (
        "/loyalty.v1.FeedbackService/ListAtRiskMembers",
        &[Crm, Admin],
    ),
    ("/loyalty.v1.EventService/WatchEvents", &[Crm, Admin]),
    ("/loyalty.v1.RewardService/CreateReward", &[Admin]),
    ("/loyalty.v1.RewardService/UpdateReward", &[Admin]),
    (
        "/loyalty.v1.RewardService/GetReward",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    (
        "/loyalty.v1.RewardService/ListRewards",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    (
        "/loyalty.v1.RewardService/RedeemReward",
        &[Pos, Ecommerce, Admin],
    ),
    ("/loyalty.v1.ProgramService/CreateProgram", &[Platform]),
    (
        "/loyalty.v1.ProgramService/ListPrograms",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    (
        "/loyalty.v1.ProgramService/GetProgram",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    ("/loyalty.v1.ProgramService/UpdateProgram", &[Admin]),
    ("/loyalty.v1.ProgramService/UpsertTier", &[Admin]),
    (
        "/loyalty.v1.ProgramService/ListTiers",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    (
        "/loyalty.v1.ProgramService/GetTierStatus",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    ("/loyalty.v1.OfferService/CreateOffer", &[Admin]),
    ("/loyalty.v1.OfferService/UpdateOffer", &[Admin]),
    ("/loyalty.v1.OfferService/ListOffers", &[Crm, Admin]),
    (
        "/loyalty.v1.OfferService/ListMemberOffers",
        &[Pos, Ecommerce, Crm, Admin],
    ),
    ("/loyalty.v1.OfferService/GetOfferReport", &[Crm, Admin]),
    ("/loyalty.v1.AuditService/ListAuditEvents", &[Admin]),
];

/// Calls that need no key: health probes.
pub fn is_open(path: &str) -> bool {
    // Health and the schema reveal nothing private (the protos are public), and probes
    // and `grpcurl list` must work before anyone holds a key.
    path.starts_with("/grpc.health.v1.") || is_reflection(path)
}

/// Reflection: any authenticated client may read the schema.
fn is_reflection(path: &str) -> bool {
    path.starts_with("/grpc.reflection.")
}

/// The audit scope of the platform's own actions: not a programme id, so no programme's
/// ListAuditEvents shows them.
pub const PLATFORM_AUDIT: &str = "-";

/// Whether only platform administrators may call the method at `path` (it acts on the
/// deployment, not in a programme).
pub fn is_platform_only(path: &str) -> bool {
    POLICY
        .iter()
        .any(|(method, roles)| *method == path && *roles == [Role::Platform])
}

/// Whether `role` may call the method at `path`. A platform administrator may call what
/// an administrator may, and the platform's own methods.
pub fn allowed(path: &str, role: Role) -> bool {
    if role == Role::Platform && allowed(path, Role::Admin) {
        return true;
    }
    is_reflection(path)
        || POLICY
            .iter()
            .any(|(method, roles)| *method == path && roles.contains(&role))
}

/// Whether a method changes state (and so is audited when admins or CRM call it).
pub fn is_mutation(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or("");
    !["Get", "List", "Quote"]
        .iter()
        .any(|p| method.starts_with(p))
        && !is_reflection(path)
        && !is_open(path)
}

/// A new API key: `lk_` and 43 base64url characters made of two random UUIDs (244
/// random bits).
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("lk_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored of a key. Keys are long random strings, so a fast hash is enough: there
/// is nothing to guess by brute force.
pub fn key_hash(key: &str) -> String {
    // Every call hashes its key: a string per byte was 3 % of the server's CPU on reads.
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The part of a key shown in listings, to tell keys apart.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(10).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_only_their_hash_identifies_them() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert!(a.starts_with("lk_") && a.len() == 46);
        assert_eq!(key_hash(&a).len(), 64);
        assert_ne!(key_hash(&a), key_hash(&b));
        assert_eq!(key_prefix(&a).len(), 10);
    }

    #[test]
    fn a_key_hash_is_lowercase_hex_sha256_as_stored_keys_have_it() {
        // FIPS 180-2's "abc" vector: stored hashes must keep matching.
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn policy_examples() {
        assert!(allowed("/loyalty.v1.PointsService/Accrue", Role::Pos));
        assert!(!allowed("/loyalty.v1.PointsService/Accrue", Role::Crm));
        assert!(!allowed(
            "/loyalty.v1.ProgramService/UpdateProgram",
            Role::Crm
        ));
        assert!(allowed(
            "/loyalty.v1.ProgramService/UpdateProgram",
            Role::Admin
        ));
        assert!(!allowed("/loyalty.v1.NoSuchService/Anything", Role::Admin));
        assert!(is_mutation("/loyalty.v1.PointsService/AdjustPoints"));
        assert!(!is_mutation("/loyalty.v1.PointsService/GetBalance"));
        assert!(!is_mutation("/loyalty.v1.PointsService/QuoteAccrual"));
        assert!(allowed(
            "/loyalty.v1.ProgramService/CreateProgram",
            Role::Platform
        ));
        assert!(!allowed(
            "/loyalty.v1.ProgramService/CreateProgram",
            Role::Admin
        ));
        assert!(allowed("/loyalty.v1.PointsService/Accrue", Role::Platform));
    }

    #[test]
    fn only_platform_administrators_act_outside_their_programme() {
        let fashion = ProgramId::parse("fashion").expect("id");
        let admin = Caller {
            role: Role::Admin,
            ..Caller::anonymous()
        };
        // Naming nothing, or one's own programme, acts at home.
        let home = admin.clone().acting_in(None).expect("home");
        assert_eq!(home.program, admin.home_program);
        assert_eq!(home.idempotency_owner(), "anonymous");
        assert!(
            admin
                .clone()
                .acting_in(Some(ProgramId::default_program()))
                .is_ok()
        );
        assert_eq!(admin.acting_in(Some(fashion.clone())), Err(fashion.clone()));
        let platform = Caller::anonymous()
            .acting_in(Some(fashion.clone()))
            .expect("platform");
        assert_eq!(platform.program, fashion);
        // Its request ids in another programme are keys of their own.
        assert_eq!(platform.idempotency_owner(), "anonymous@fashion");
    }

    #[test]
    fn pos_clients_act_only_for_their_stores() {
        let pos = Caller {
            client_id: "c".into(),
            name: "till".into(),
            role: Role::Pos,
            stores: vec!["S1".into()],
            home_program: ProgramId::default_program(),
            program: ProgramId::default_program(),
        };
        assert!(pos.may_act_for_store("S1"));
        assert!(!pos.may_act_for_store("S2"));
        assert!(
            Caller {
                role: Role::Ecommerce,
                ..pos
            }
            .may_act_for_store("S2")
        );
    }
}

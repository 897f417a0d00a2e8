//! Sales channels.

/// Where a purchase happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Pos,
    Online,
    MobileApp,
    CallCenter,
}

impl Channel {
    /// Stable name as stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pos => "POS",
            Self::Online => "ONLINE",
            Self::MobileApp => "MOBILE_APP",
            Self::CallCenter => "CALL_CENTER",
        }
    }
}

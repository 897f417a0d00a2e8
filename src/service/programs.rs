//! The programmes of a deployment: creating them, reading them, and the context (settings
//! and rules) every use case of one programme runs on.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    ProgramContext,
    idempotency::{Begun, Mutation, begin, finish, once},
};
use crate::{
    config::{Program, ProgramSettings},
    domain::{ProgramId, Ruleset},
    error::{AppError, FieldViolation},
    store::{
        Store,
        programs::{self, ProgramRow},
    },
};

/// A programme as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramView {
    pub program_id: String,
    pub display_name: String,
    pub settings: ProgramSettings,
    pub created_at: DateTime<Utc>,
}

/// What CreateProgram asks for; `settings` already merged over the configured defaults.
#[derive(Debug, Clone)]
pub struct NewProgram {
    pub program_id: ProgramId,
    pub display_name: String,
    pub settings: ProgramSettings,
}

/// The programmes of the deployment, over the unscoped store.
#[derive(Clone)]
pub struct ProgramCatalog {
    store: Store,
    /// The configuration's `[program]`: the settings of the `default` programme while it
    /// has none stored, and what a new programme starts from.
    defaults: ProgramSettings,
    event_retention: Option<chrono::Duration>,
}

impl ProgramCatalog {
    pub fn new(
        store: Store,
        defaults: ProgramSettings,
        event_retention: Option<chrono::Duration>,
    ) -> Self {
        Self {
            store,
            defaults,
            event_retention,
        }
    }

    /// The configured defaults a new programme starts from.
    pub fn defaults(&self) -> &ProgramSettings {
        &self.defaults
    }

    fn settings_of(&self, row: &ProgramRow) -> Result<ProgramSettings, AppError> {
        match &row.settings {
            None => Ok(self.defaults.clone()),
            Some(json) => serde_json::from_str(json).map_err(|e| AppError::Internal(e.into())),
        }
    }

    fn view(&self, row: ProgramRow) -> Result<ProgramView, AppError> {
        Ok(ProgramView {
            settings: self.settings_of(&row)?,
            program_id: row.id,
            display_name: row.name,
            created_at: row.created_at,
        })
    }

    #[tracing::instrument(name = "programs.create", skip_all)]
    pub async fn create(
        &self,
        mutation: &Mutation,
        new: NewProgram,
    ) -> Result<ProgramView, AppError> {
        let invalid = |e: crate::config::SettingError| {
            AppError::InvalidArgument(vec![FieldViolation::new(settings_field(e.key), e.message)])
        };
        new.settings
            .validate(self.event_retention)
            .map_err(invalid)?;
        let settings =
            serde_json::to_string(&new.settings).map_err(|e| AppError::Internal(e.into()))?;
        let key = mutation.key("CreateProgram");
        once(&self.store, &key, async {
            let txn = match begin::<ProgramView>(&self.store, &key).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            let row = programs::new_row(
                new.program_id.as_str(),
                &new.display_name,
                settings,
                self.store.now(),
            );
            programs::insert(&*txn, row.clone()).await?;
            let view = self.view(row)?;
            finish(txn, &key, &view).await?;
            tracing::info!(program_id = %view.program_id, "programme created");
            Ok(view)
        })
        .await
    }

    pub async fn list(&self) -> Result<Vec<ProgramView>, AppError> {
        programs::list(self.store.conn())
            .await?
            .into_iter()
            .map(|r| self.view(r))
            .collect()
    }

    pub async fn get(&self, id: &ProgramId) -> Result<ProgramView, AppError> {
        let row = programs::find(self.store.conn(), id.as_str())
            .await?
            .ok_or(AppError::ProgramNotFound)?;
        self.view(row)
    }

    /// The programme's rules as configured for it (its settings validated).
    pub async fn program(&self, id: &ProgramId) -> Result<Program, AppError> {
        let view = self.get(id).await?;
        view.settings
            .validate(self.event_retention)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("programme {id}: {}", e.message)))
    }

    /// A context for the programme: the store scoped to it and its settings.
    pub async fn context(&self, id: &ProgramId) -> Result<ProgramContext, AppError> {
        let program = self.program(id).await?;
        Ok(ProgramContext::new(self.store.for_program(id), program))
    }

    /// The rules in force in a programme.
    pub async fn rules(&self, id: &ProgramId) -> Result<Ruleset, AppError> {
        self.context(id).await?.program().await
    }
}

/// The configuration keys of the settings and their names in `ProgramSettings` (proto).
const SETTING_NAMES: &[(&str, &str)] = &[
    ("program.currency", "currency"),
    ("program.time_zone", "time_zone"),
    ("program.earn_points", "base_points"),
    ("program.earn_spend_minor", "base_spend_minor"),
    ("program.pending_days", "pending_days"),
    ("program.expiry_months", "expiry_months"),
    ("program.redeem_value_minor", "redeem_value_minor"),
    ("program.redeem_points", "redeem_points"),
    ("program.goodwill_max_per_grant", "goodwill_max_per_grant"),
    ("program.goodwill_max_per_day", "goodwill_max_per_day"),
    ("program.correction_max_points", "correction_max_points"),
    ("program.migration_max_points", "migration_max_points"),
    ("program.hold_default_ttl_secs", "hold_default_ttl_seconds"),
    ("program.hold_max_ttl_secs", "hold_max_ttl_seconds"),
    ("program.feedback_bonus_points", "feedback_bonus_points"),
    ("program.risk_window_days", "risk_window_days"),
];

/// The request field of the setting a configuration key names (`settings.…`).
fn settings_field(key: &str) -> String {
    SETTING_NAMES
        .iter()
        .find(|(k, _)| *k == key)
        .map_or_else(|| "settings".to_owned(), |(_, f)| format!("settings.{f}"))
}

/// Settings `requested` (what CreateProgram set) over `defaults`.
pub fn merged(defaults: &ProgramSettings, requested: SettingsPatch) -> ProgramSettings {
    let mut s = defaults.clone();
    macro_rules! take {
        ($($field:ident),*) => {
            $(if let Some(v) = requested.$field { s.$field = v; })*
        };
    }
    take!(
        currency,
        time_zone,
        earn_points,
        earn_spend_minor,
        pending_days,
        expiry_policy,
        expiry_months,
        redeem_value_minor,
        redeem_points,
        return_policy,
        goodwill_max_per_grant,
        goodwill_max_per_day,
        correction_max_points,
        migration_max_points,
        hold_default_ttl_secs,
        hold_max_ttl_secs,
        feedback_bonus_points,
        risk_window_days
    );
    s
}

/// The settings a CreateProgram request sets; `None` keeps the default.
#[derive(Debug, Clone, Default)]
pub struct SettingsPatch {
    pub currency: Option<String>,
    pub time_zone: Option<String>,
    pub earn_points: Option<i64>,
    pub earn_spend_minor: Option<i64>,
    pub pending_days: Option<u32>,
    pub expiry_policy: Option<crate::config::ExpiryPolicyKind>,
    pub expiry_months: Option<u32>,
    pub redeem_value_minor: Option<i64>,
    pub redeem_points: Option<i64>,
    pub return_policy: Option<crate::domain::ReturnPolicy>,
    pub goodwill_max_per_grant: Option<i64>,
    pub goodwill_max_per_day: Option<i64>,
    pub correction_max_points: Option<i64>,
    pub migration_max_points: Option<i64>,
    pub hold_default_ttl_secs: Option<u64>,
    pub hold_max_ttl_secs: Option<u64>,
    pub feedback_bonus_points: Option<i64>,
    pub risk_window_days: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_is_named_by_its_request_field() {
        assert_eq!(
            settings_field("program.earn_points"),
            "settings.base_points"
        );
        assert_eq!(
            settings_field("program.hold_default_ttl_secs"),
            "settings.hold_default_ttl_seconds"
        );
        // Every key the validation names has a request field.
        let mut bad = ProgramSettings {
            goodwill_max_per_grant: -1,
            ..ProgramSettings::default()
        };
        let key = bad.validate(None).expect_err("negative cap").key;
        assert_eq!(settings_field(key), "settings.goodwill_max_per_grant");
        bad.goodwill_max_per_grant = 500;
        bad.time_zone = "Mars/Olympus".into();
        let key = bad.validate(None).expect_err("bad zone").key;
        assert_eq!(settings_field(key), "settings.time_zone");
        assert_eq!(settings_field("program.unknown"), "settings");
    }

    #[test]
    fn unset_settings_keep_the_defaults() {
        let defaults = ProgramSettings::default();
        let merged = merged(
            &defaults,
            SettingsPatch {
                currency: Some("GBP".into()),
                pending_days: Some(0),
                ..SettingsPatch::default()
            },
        );
        assert_eq!(merged.currency, "GBP");
        assert_eq!(merged.pending_days, 0);
        assert_eq!(
            ProgramSettings {
                currency: defaults.currency.clone(),
                ..merged
            },
            defaults
        );
    }
}

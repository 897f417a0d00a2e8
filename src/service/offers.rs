//! The offer catalogue and what each member may use.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::RwLock;

use super::{
    Mutation,
    context::{ProgramContext, facts_of, window_start},
    idempotency::{Begun, begin, finish, once},
    paging,
};
use crate::{
    domain::{Channel, MemberKey, Offer, month_in},
    error::{AppError, FieldViolation},
    infra::coalesce::{Coalescer, ReadMany},
    store::{Store, members, offers, rules},
};

/// An offer a member may use now, with the uses left (`None`: unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberOffer {
    pub offer: Offer,
    pub remaining_uses: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct MemberOfferPage {
    pub offers: Vec<MemberOffer>,
    pub next_page_token: String,
}

#[derive(Debug, Clone)]
pub struct OfferPage {
    pub offers: Vec<Offer>,
    pub next_page_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferReport {
    pub eligible_members: i64,
    pub uses: i64,
    pub points_granted: i64,
    pub discount_given_minor: i64,
}

/// Active offers, and the catalogue version they were read at.
type Catalogue = Option<(i64, Arc<Vec<Offer>>)>;

#[derive(Clone)]
pub struct OfferService {
    store: Store,
    points: ProgramContext,
    /// Every replica caches the active offers and checks the catalogue version (one
    /// indexed read) on each call: a change elsewhere is seen on the next call.
    cache: Arc<RwLock<Catalogue>>,
    /// Members' views for ListMemberOffers, sharing statements once `with_read_batching`
    /// gives them workers.
    views: Coalescer<MemberKey, (offers::MemberView, Arc<Basis>)>,
}

/// What a member view was read against: the time of the read and this replica's cached
/// ruleset window and catalogue (the view's versions tell whether they were current).
struct Basis {
    now: DateTime<Utc>,
    since: DateTime<Utc>,
    limited: Vec<String>,
    cached: Catalogue,
}

/// The offers of `offers` with a total limit, whose standing uses the view reads.
fn limited_of(offers: &[Offer]) -> Vec<String> {
    offers
        .iter()
        .filter(|o| o.total_limit.is_some())
        .map(|o| o.offer_id.clone())
        .collect()
}

/// Reads the views of a batch of members, in one statement per kind of key, each with
/// the replica's state it was read against (`cache` and `points`' cached ruleset, now).
fn view_reader(
    store: Store,
    points: ProgramContext,
    cache: Arc<RwLock<Catalogue>>,
) -> ReadMany<MemberKey, (offers::MemberView, Arc<Basis>)> {
    Arc::new(move |keys: Vec<MemberKey>| {
        let (store, points, cache) = (store.clone(), points.clone(), Arc::clone(&cache));
        Box::pin(async move {
            let now = store.now();
            let cached = cache.read().await.clone();
            let basis = Arc::new(Basis {
                now,
                since: window_start(&points.cached_ruleset(), now),
                limited: cached
                    .as_ref()
                    .map(|(_, c)| limited_of(c))
                    .unwrap_or_default(),
                cached,
            });
            let views = offers::member_views(
                store.conn(),
                store.program(),
                &keys,
                basis.since,
                &basis.limited,
            )
            .await?;
            let views: Vec<_> = views.into_iter().map(|v| (v, Arc::clone(&basis))).collect();
            Ok(crate::infra::coalesce::answers(
                &keys,
                &views,
                |key, (view, _)| key.names(&view.member.id, view.member.card_number.as_deref()),
            ))
        })
    })
}

fn invalid(problems: Vec<(String, String)>) -> AppError {
    AppError::InvalidArgument(
        problems
            .into_iter()
            .map(|(f, d)| FieldViolation::new(format!("offer.{f}"), d))
            .collect(),
    )
}

impl OfferService {
    pub fn new(store: Store, points: ProgramContext) -> Self {
        let cache = Arc::new(RwLock::new(None));
        let views = Coalescer::direct(view_reader(
            store.clone(),
            points.clone(),
            Arc::clone(&cache),
        ));
        Self {
            store,
            points,
            cache,
            views,
        }
    }

    /// Concurrent ListMemberOffers calls share statements: `workers` each read up to
    /// `max_batch` queued members at a time (see `coalesce`). Needs a Tokio runtime.
    pub fn with_read_batching(
        mut self,
        workers: usize,
        max_batch: usize,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Self {
        self.views = Coalescer::start(
            "member_offers",
            workers,
            max_batch,
            metrics.map(|m| m.read_batch.clone()),
            self.store.work_deadline(),
            view_reader(
                self.store.clone(),
                self.points.clone(),
                Arc::clone(&self.cache),
            ),
        );
        self
    }

    /// Creates an offer (its reward, if it names one, must be of the programme).
    #[tracing::instrument(name = "offers.create", skip_all)]
    pub async fn create(&self, mutation: &Mutation, mut offer: Offer) -> Result<Offer, AppError> {
        offer.offer_id = uuid::Uuid::now_v7().to_string();
        let problems = offer.validate();
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        let key = mutation.key("CreateOffer");
        once(&self.store, &key, async {
            let txn = match begin::<Offer>(&self.store, &key).await? {
                Begun::Replay(o) => return Ok(o),
                Begun::Fresh(txn) => txn,
            };
            check_reward(&txn, &offer).await?;
            offers::insert(&*txn, txn.program(), &offer, self.store.now()).await?;
            finish(txn, &key, &offer).await?;
            Ok(offer)
        })
        .await
    }

    /// Replaces the fields named in `fields` with those of `new`.
    #[tracing::instrument(name = "offers.update", skip_all)]
    pub async fn update(
        &self,
        mutation: &Mutation,
        new: Offer,
        fields: &[String],
    ) -> Result<Offer, AppError> {
        crate::domain::ShortId::parse(&new.offer_id)
            .map_err(|why| AppError::invalid("offer.offer_id", why))?;
        let key = mutation.key("UpdateOffer");
        once(&self.store, &key, async {
            let txn = match begin::<Offer>(&self.store, &key).await? {
                Begun::Replay(o) => return Ok(o),
                Begun::Fresh(txn) => txn,
            };
            let mut offer = offers::find(&*txn, txn.program(), &new.offer_id).await?;
            for field in fields {
                match field.as_str() {
                    "code" => offer.code = new.code.clone(),
                    "name" => offer.name = new.name.clone(),
                    "description" => offer.description = new.description.clone(),
                    "kind" | "value" | "free_sku" => {
                        offer.kind = new.kind;
                        offer.free_sku = new.free_sku.clone();
                    }
                    "skus" => offer.skus = new.skus.clone(),
                    "categories" => offer.categories = new.categories.clone(),
                    "min_basket_minor" => offer.min_basket_minor = new.min_basket_minor,
                    "channels" => offer.channels = new.channels.clone(),
                    "valid_from" => offer.valid_from = new.valid_from,
                    "valid_until" => offer.valid_until = new.valid_until,
                    "per_member_limit" => offer.per_member_limit = new.per_member_limit,
                    "total_limit" => offer.total_limit = new.total_limit,
                    "priority" => offer.priority = new.priority,
                    "stackable" => offer.stackable = new.stackable,
                    "active" => offer.active = new.active,
                    "targeting" => offer.targeting = new.targeting.clone(),
                    "reward_id" => offer.reward_id = new.reward_id.clone(),
                    other => {
                        return Err(AppError::invalid(
                            "update_mask",
                            format!("cannot update {other:?}"),
                        ));
                    }
                }
            }
            let problems = offer.validate();
            if !problems.is_empty() {
                return Err(invalid(problems));
            }
            check_reward(&txn, &offer).await?;
            offers::update(&*txn, txn.program(), &offer, self.store.now()).await?;
            finish(txn, &key, &offer).await?;
            Ok(offer)
        })
        .await
    }

    pub async fn list(&self, page_size: i32, page_token: &str) -> Result<OfferPage, AppError> {
        let size = paging::page_size(page_size)?;
        let after = paging::decode_token("offers", page_token)?;
        let rows = offers::list(
            self.store.conn(),
            self.store.program(),
            after.as_deref(),
            size + 1,
        )
        .await?;
        let (rows, next_page_token) = paging::split(rows, size, "offers", |o| o.code.clone());
        Ok(OfferPage {
            offers: rows,
            next_page_token,
        })
    }

    /// The active offers, from the cache while the catalogue version has not moved.
    async fn catalogue(&self) -> Result<Arc<Vec<Offer>>, AppError> {
        let version = offers::catalog_version(self.store.conn(), self.store.program()).await?;
        if let Some((v, cached)) = self.cache.read().await.as_ref()
            && *v == version
        {
            return Ok(Arc::clone(cached));
        }
        let fresh = Arc::new(offers::active(self.store.conn(), self.store.program()).await?);
        *self.cache.write().await = Some((version, Arc::clone(&fresh)));
        Ok(fresh)
    }

    /// The offers this member may use now on `channel`, by priority: one statement
    /// whatever the number of offers, plus a reload when the catalogue or the ruleset
    /// has changed since this replica last read it.
    #[tracing::instrument(name = "offers.for_member", skip_all)]
    pub async fn for_member(
        &self,
        key: &MemberKey,
        channel: Channel,
        page_size: i32,
        page_token: &str,
    ) -> Result<MemberOfferPage, AppError> {
        let size = usize::try_from(paging::page_size(page_size)?).unwrap_or(50);
        let skip: usize = match paging::decode_token("member-offers", page_token)? {
            None => 0,
            Some(n) => n.parse().map_err(|_| {
                AppError::invalid("page_token", "is not a token returned by this method")
            })?,
        };
        let db = self.store.conn();
        // One statement in the usual case (shared with concurrent calls): the member's
        // window and the limited offers' totals are read for the ruleset and catalogue
        // this replica has cached, and the versions read with them tell whether those are
        // still current; when one moved, it is reloaded and what depends on it read again.
        let (view, basis) = self
            .views
            .one(key.clone())
            .await?
            .ok_or(AppError::MemberNotFound)?;
        let (now, since) = (basis.now, basis.since);
        let ruleset = self.points.ruleset_at(db, view.ruleset_version).await?;
        let (window_spend_minor, last_purchase_at) = if window_start(&ruleset, now) == since {
            (view.window_spend_minor, view.last_purchase_at)
        } else {
            rules::purchases(db, &view.member.id, window_start(&ruleset, now)).await?
        };
        let catalogue = match &basis.cached {
            Some((version, offers)) if *version == view.catalogue_version => Arc::clone(offers),
            _ => self.catalogue().await?,
        };
        let limited = limited_of(&catalogue);
        let totals = if limited == basis.limited {
            view.totals
        } else if limited.is_empty() {
            Default::default()
        } else {
            offers::total_uses(db, &limited).await?
        };
        let facts = facts_of(&view.member, window_spend_minor, last_purchase_at);
        let month = month_in(ruleset.tz(), now);
        let member_uses = view.uses;
        let usable: Vec<MemberOffer> = catalogue
            .iter()
            .filter(|o| {
                o.is_live(now) && o.on_channel(channel) && o.targeting.matches(&facts, now, month)
            })
            .filter_map(|o| {
                let left = o.remaining_uses(
                    member_uses.get(&o.offer_id).copied().unwrap_or(0),
                    totals.get(&o.offer_id).copied().unwrap_or(0),
                );
                (left != Some(0)).then(|| MemberOffer {
                    offer: o.clone(),
                    remaining_uses: left,
                })
            })
            .collect();
        let next = skip.saturating_add(size);
        Ok(MemberOfferPage {
            next_page_token: if usable.len() > next {
                paging::encode_token("member-offers", &next.to_string())
            } else {
                String::new()
            },
            offers: usable.into_iter().skip(skip).take(size).collect(),
        })
    }

    /// Members targeted now (a scan over all members in pages: an admin report, not a
    /// checkout path), uses, points and discounts.
    #[tracing::instrument(name = "offers.report", skip_all)]
    pub async fn report(&self, offer_id: &str) -> Result<OfferReport, AppError> {
        let db = self.store.conn();
        let offer = offers::find(db, self.store.program(), offer_id).await?;
        let ruleset = self.points.program().await?;
        let now = self.store.now();
        let month = month_in(ruleset.tz(), now);
        let mut eligible = 0;
        let mut after: Option<String> = None;
        loop {
            let page = members::list(db, self.store.program(), after.as_deref(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            // Two queries a page of 500 members, none per member.
            let ids: Vec<String> = page.iter().map(|m| m.id.clone()).collect();
            let bought = rules::purchase_facts(db, &ids, window_start(&ruleset, now)).await?;
            for member in page.iter().filter(|m| m.card_number.is_some()) {
                let (last_purchase_at, window_spend_minor) =
                    bought.get(&member.id).copied().unwrap_or((None, 0));
                let facts = facts_of(member, window_spend_minor, last_purchase_at);
                if offer.targeting.matches(&facts, now, month) {
                    eligible += 1;
                }
            }
        }
        let totals = offers::totals(db, offer_id).await?;
        Ok(OfferReport {
            eligible_members: eligible,
            uses: totals.uses.unwrap_or(0),
            points_granted: totals.points.unwrap_or(0),
            discount_given_minor: totals.discount_minor.unwrap_or(0),
        })
    }
}

/// An offer's reward must be one of its programme's (a reward of another programme, or
/// none, is the caller's mistake).
async fn check_reward(txn: &crate::store::WriteTxn, offer: &Offer) -> Result<(), AppError> {
    let Some(reward_id) = &offer.reward_id else {
        return Ok(());
    };
    match crate::store::rewards::find(&**txn, txn.program(), reward_id).await {
        Ok(_) => Ok(()),
        Err(AppError::RewardNotFound) => Err(AppError::invalid(
            "offer.reward_id",
            "must be a reward of this programme",
        )),
        Err(e) => Err(e),
    }
}

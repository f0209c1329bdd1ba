//! The source types in force: `gw_source_types` as this instance last read
//! it.
//!
//! Every consume and hold names one, so reading the table each time would
//! add a round trip to the hottest path. The list is read at start-up and
//! read again when a name is not in it (at most once a second, so a
//! client sending unknown names cannot turn each request into a query) or
//! when it is older than [`MAX_AGE`], so a type added or relabelled with
//! `points-gateway source-types set` reaches every instance on the database
//! without a restart.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::domain::source::{DurationRule, SourceType};
use crate::store::source_types::SourceTypeRow;
use crate::store::{Store, StoreError};

/// How long a list is trusted for names it holds.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// How often an unknown name may cause a read.
const MISS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown source type {0:?}: `sourceTypes` lists the configured ones")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every configured source type. A row that no longer passes the domain's
/// checks (edited by hand) is an error, not skipped: a type that silently
/// vanished would refuse its jobs.
pub async fn read_all(store: &Store) -> Result<Vec<SourceType>, StoreError> {
    store
        .source_type_rows()
        .await?
        .into_iter()
        .map(|r| {
            let rule = DurationRule::parse(&r.duration).ok_or_else(|| {
                StoreError::custom(format!("source type {}: duration {:?}", r.name, r.duration))
            })?;
            SourceType::new(&r.name, &r.label, rule)
                .map_err(|e| StoreError::custom(format!("source type {:?}: {e}", r.name)))
        })
        .collect()
}

/// Adds a source type or changes it (`points-gateway source-types set`).
pub async fn set(store: &Store, t: &SourceType) -> Result<(), StoreError> {
    store
        .set_source_type_row(&SourceTypeRow {
            name: t.as_str().to_owned(),
            label: t.label().to_owned(),
            duration: t.duration().as_str().to_owned(),
        })
        .await
}

struct Known {
    types: HashMap<String, SourceType>,
    read_at: Instant,
}

pub struct SourceTypeCatalog {
    known: RwLock<Known>,
}

impl SourceTypeCatalog {
    pub async fn load(store: &Store) -> Result<SourceTypeCatalog, StoreError> {
        Ok(SourceTypeCatalog {
            known: RwLock::new(Self::read(store).await?),
        })
    }

    async fn read(store: &Store) -> Result<Known, StoreError> {
        let types = read_all(store).await?;
        Ok(Known {
            types: types
                .into_iter()
                .map(|t| (t.as_str().to_owned(), t))
                .collect(),
            read_at: Instant::now(),
        })
    }

    /// The configured type named `name` (its stored, lower-case spelling).
    pub async fn resolve(&self, store: &Store, name: &str) -> Result<SourceType, CatalogError> {
        let (found, age) = self.lookup(name);
        let stale = match &found {
            Some(_) => age > MAX_AGE,
            None => age > MISS_INTERVAL,
        };
        if !stale {
            return found.ok_or_else(|| CatalogError::Unknown(name.to_owned()));
        }
        let fresh = Self::read(store).await?;
        let found = fresh.types.get(name).cloned();
        if let Ok(mut known) = self.known.write() {
            *known = fresh;
        }
        found.ok_or_else(|| CatalogError::Unknown(name.to_owned()))
    }

    /// Every configured type, read now.
    pub async fn all(&self, store: &Store) -> Result<Vec<SourceType>, StoreError> {
        let fresh = Self::read(store).await?;
        let mut all: Vec<SourceType> = fresh.types.values().cloned().collect();
        all.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        if let Ok(mut known) = self.known.write() {
            *known = fresh;
        }
        Ok(all)
    }

    fn lookup(&self, name: &str) -> (Option<SourceType>, Duration) {
        match self.known.read() {
            Ok(k) => (k.types.get(name).cloned(), k.read_at.elapsed()),
            // A poisoned lock only means a writer panicked mid-swap: read
            // the table again.
            Err(_) => (None, Duration::MAX),
        }
    }
}

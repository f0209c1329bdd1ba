//! Parsed documents, kept by their exact text.
//!
//! Clients send the same few documents over and over (the UsageDetail page,
//! `consume` from a backend), with only the variables changing. Parsing one
//! with async-graphql's parser took about an eighth of the gateway's CPU per
//! consume; a cached document is cloned instead. The operation limits
//! ([`super::limits::check`]) are decided here too, once per text, and the
//! verdict is cached with the document.
//!
//! Bounded: documents longer than [`MAX_CACHED_BYTES`] are parsed every
//! time and never kept, and when [`MAX_ENTRIES`] are held the cache starts
//! over, so a client sending endless distinct documents costs parsing, as it
//! would without the cache, and never memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::ServerError;

use crate::graphql::limits;

/// Longest document text kept.
pub const MAX_CACHED_BYTES: usize = 4 * 1024;
/// Most documents kept at once.
pub const MAX_ENTRIES: usize = 256;

/// A parsed document that passed the operation limits, with what the
/// transports need to know of its operations (measured once per text).
#[derive(Debug)]
pub struct Parsed {
    pub doc: ExecutableDocument,
    pub facts: limits::DocumentFacts,
}

/// A parsed document, or why it is refused.
pub type Checked = Result<Parsed, ServerError>;

#[derive(Default)]
pub struct Documents {
    entries: Mutex<HashMap<Box<str>, Arc<Checked>>>,
}

impl Documents {
    pub fn new() -> Self {
        Self::default()
    }

    /// The document for `query`, parsed and checked (from the cache when
    /// this text was seen before).
    pub fn checked(&self, query: &str) -> Arc<Checked> {
        let cacheable = query.len() <= MAX_CACHED_BYTES;
        if cacheable {
            if let Some(hit) = self.lock().get(query) {
                return hit.clone();
            }
        }
        let checked = Arc::new(parse_and_check(query));
        if cacheable {
            let mut entries = self.lock();
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(query.into(), checked.clone());
        }
        checked
    }

    /// Gives `request` its parsed document, so async-graphql does not parse
    /// it again; the error a client gets for a document that does not
    /// parse or breaks a limit.
    pub fn attach(
        &self,
        mut request: async_graphql::Request,
    ) -> Result<async_graphql::Request, ServerError> {
        match &*self.checked(&request.query) {
            Ok(parsed) => {
                request.set_parsed_query(parsed.doc.clone());
                Ok(request)
            }
            Err(e) => Err(e.clone()),
        }
    }

    /// Documents held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Checked>>> {
        // A panic while holding this lock cannot leave the map half-updated
        // in a way that matters: every entry is a complete value.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn parse_and_check(query: &str) -> Checked {
    let doc = async_graphql::parser::parse_query(query).map_err(ServerError::from)?;
    let facts = limits::check(&doc)?;
    Ok(Parsed { doc, facts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_is_parsed_once() {
        let d = Documents::new();
        let a = d.checked("{ me { id } }");
        let b = d.checked("{ me { id } }");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.is_ok());
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn errors_are_kept_with_their_message() {
        let d = Documents::new();
        let bad = d.checked("{ me { id ");
        assert!(bad.as_ref().as_ref().is_err_and(|e| !e.message.is_empty()));
        let aliases: String = (0..31).map(|i| format!("a{i}: id ")).collect();
        let limit = d.checked(&format!("{{ me {{ {aliases} }} }}"));
        let e = limit.as_ref().as_ref().expect_err("31 aliases");
        assert!(e.message.contains("aliases"), "{}", e.message);
        assert!(Arc::ptr_eq(
            &limit,
            &d.checked(&format!("{{ me {{ {aliases} }} }}"))
        ));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let d = Documents::new();
        for i in 0..(MAX_ENTRIES * 3) {
            d.checked(&format!("{{ a{i}: me {{ id }} }}"));
            assert!(d.len() <= MAX_ENTRIES);
        }
        let long = format!("{{ me {{ id }} }}{}", " ".repeat(MAX_CACHED_BYTES));
        let before = d.len();
        assert!(d.checked(&long).is_ok());
        assert!(!Arc::ptr_eq(&d.checked(&long), &d.checked(&long)));
        assert_eq!(d.len(), before);
    }
}

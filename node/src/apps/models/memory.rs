//! The in-memory backend of the model store, for a node alone (no Redis): the same records,
//! ids and limits as the Redis backend of `super::store`, behind one mutex, so every check and
//! its write happen together as the Lua scripts make them happen in Redis.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard},
};

use serde_json::Value;

use super::record::{Limits, ModelError, Record, checked_json, json_len, matches};

#[derive(Debug, Default)]
struct MemCollection {
    last_id: u64,
    records: BTreeMap<u64, Record>,
    /// Serialised length of every record, as Redis' `:bytes` counter.
    bytes: usize,
}

/// The collections of one node.
#[derive(Debug, Default)]
pub(super) struct Memory(Mutex<HashMap<String, MemCollection>>);

impl Memory {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, MemCollection>> {
        // A panic elsewhere while holding the lock leaves whole records: keep serving.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The records of `collection` matching `filter`, by ascending id.
    pub(super) fn find(&self, collection: &str, filter: &Record) -> Vec<Record> {
        self.lock()
            .get(collection)
            .map(|c| {
                c.records
                    .values()
                    .filter(|r| matches(r, filter))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Record `id` of `collection`.
    pub(super) fn get(&self, collection: &str, id: u64) -> Option<Record> {
        self.lock()
            .get(collection)
            .and_then(|c| c.records.get(&id))
            .cloned()
    }

    /// Stores `data` (without `id`) under the next id of `collection`. `open`: whether
    /// `limits.max_collections` applies (no `--collections` list).
    ///
    /// # Errors
    /// A limit; nothing is stored then, not even an empty new collection.
    pub(super) fn insert(
        &self,
        limits: &Limits,
        open: bool,
        collection: &str,
        data: Record,
    ) -> Result<Record, ModelError> {
        let mut m = self.lock();
        let (last_id, count, bytes) = match m.get(collection) {
            Some(c) => (c.last_id, c.records.len(), c.bytes),
            None if open && m.len() >= limits.max_collections => {
                return Err(ModelError::TooManyCollections(limits.max_collections));
            }
            None => (0, 0, 0),
        };
        if count >= limits.max_records {
            return Err(ModelError::CollectionFull(
                collection.to_owned(),
                limits.max_records,
            ));
        }
        let id = last_id + 1;
        let mut record = Record::new();
        record.insert("id".to_owned(), Value::from(id));
        record.extend(data);
        let size = checked_json(&record, limits)?.len();
        if bytes.saturating_add(size) > limits.max_collection_bytes {
            return Err(ModelError::bytes_full(collection, limits));
        }
        let c = m.entry(collection.to_owned()).or_default();
        c.last_id = id;
        c.bytes += size;
        c.records.insert(id, record.clone());
        Ok(record)
    }

    /// Replaces record `id` by `combine` of it. A record may always shrink, but grow only
    /// within `limits.max_collection_bytes`.
    ///
    /// # Errors
    /// `NotFound` or a limit; the record is unchanged then.
    pub(super) fn update(
        &self,
        limits: &Limits,
        collection: &str,
        id: u64,
        combine: impl Fn(&Record) -> Record,
    ) -> Result<Record, ModelError> {
        let mut m = self.lock();
        let c = m
            .get_mut(collection)
            .ok_or_else(|| ModelError::not_found(collection, id))?;
        let current = c
            .records
            .get_mut(&id)
            .ok_or_else(|| ModelError::not_found(collection, id))?;
        let next = combine(current);
        let size = checked_json(&next, limits)?.len();
        let old = json_len(current);
        let others = c.bytes.saturating_sub(old);
        if size > old && others.saturating_add(size) > limits.max_collection_bytes {
            return Err(ModelError::bytes_full(collection, limits));
        }
        *current = next.clone();
        c.bytes = others + size;
        Ok(next)
    }

    /// Removes record `id` and frees its bytes; what it was, if it was.
    pub(super) fn remove(&self, collection: &str, id: u64) -> Option<Record> {
        let mut m = self.lock();
        let c = m.get_mut(collection)?;
        let old = c.records.remove(&id)?;
        c.bytes = c.bytes.saturating_sub(json_len(&old));
        Some(old)
    }

    /// The byte count of `collection`, and the sum of its records' lengths it must equal.
    #[cfg(test)]
    pub(super) fn bytes(&self, collection: &str) -> (usize, usize) {
        self.lock().get(collection).map_or((0, 0), |c| {
            (c.bytes, c.records.values().map(json_len).sum())
        })
    }
}

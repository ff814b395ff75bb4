//! The model store shared by the CRUD dialects (ko.ninja, Backbone.sync, Sails): named
//! collections of JSON object records with server-assigned integer ids, in Redis for a cluster
//! (every node reads and writes the same records) or in memory for a node alone.
//!
//! Redis layout (the collection name is a hash tag, so both keys of a collection sit in one
//! Redis Cluster slot and the Lua scripts below may touch them together):
//!
//! - `{prefix}:model:{<collection>}`: hash, field = id (decimal), value = the record as JSON
//!   (an object that includes its `id`);
//! - `{prefix}:model:{<collection>}:seq`: the last id handed out (`INCR`: unique cluster-wide,
//!   never reused, so a stale room subscription never points at a new record);
//! - `{prefix}:models`: set of collection names, kept only in open mode to enforce
//!   `--max-collections`.
//!
//! Writes that depend on the stored value are atomic: an update is a compare-and-set Lua script
//! retried on conflict, so two nodes updating one record never lose a write, and an update
//! racing a remove never brings the record back.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use fred::{
    clients::Client,
    interfaces::{HashesInterface, KeysInterface, LuaInterface},
};
use serde_json::Value;

use super::record::{
    Collections, Limits, ModelError, Record, UpdateMode, matches, parse_id_str,
    valid_collection_name,
};

/// Compare-and-set attempts of one update before the client is told to retry.
const UPDATE_ATTEMPTS: usize = 16;

#[derive(Debug, Default)]
struct MemCollection {
    last_id: u64,
    records: BTreeMap<u64, Record>,
}

enum Backend {
    Memory(Mutex<HashMap<String, MemCollection>>),
    Redis { client: Client, prefix: String },
}

/// The store.
pub struct ModelStore {
    backend: Backend,
    collections: Collections,
    limits: Limits,
}

impl std::fmt::Debug for ModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis { .. } => "redis",
        };
        f.debug_struct("ModelStore")
            .field("backend", &backend)
            .field("collections", &self.collections)
            .field("limits", &self.limits)
            .finish()
    }
}

/// `INSERT`: stores ARGV[2] under id ARGV[1] unless the collection holds ARGV[3] records.
const INSERT_LUA: &str = r"
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1";

/// Compare-and-set: replaces the record ARGV[1] by ARGV[3] only if it still is ARGV[2].
/// Returns -1 when the record is gone, 0 when it changed meanwhile, 1 when written.
const UPDATE_LUA: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return -1 end
if cur ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1";

/// Removes record ARGV[1] and returns what it was (nil when absent).
const REMOVE_LUA: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then redis.call('HDEL', KEYS[1], ARGV[1]) end
return cur";

/// Registers collection ARGV[1] unless ARGV[2] collections already exist. Returns 1 when the
/// collection is (now) registered, 0 when the limit is reached.
const REGISTER_LUA: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1";

impl ModelStore {
    /// A store in this process (a node alone).
    pub fn memory(collections: Collections, limits: Limits) -> Self {
        Self {
            backend: Backend::Memory(Mutex::default()),
            collections,
            limits,
        }
    }

    /// A store in Redis, shared by every node given the same Redis and prefix.
    pub fn redis(client: Client, prefix: &str, collections: Collections, limits: Limits) -> Self {
        Self {
            backend: Backend::Redis {
                client,
                prefix: prefix.to_owned(),
            },
            collections,
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Checks that clients may use `collection`.
    ///
    /// # Errors
    /// `BadCollectionName` or `UnknownCollection`.
    pub fn check_collection(&self, collection: &str) -> Result<(), ModelError> {
        if !valid_collection_name(collection) {
            return Err(ModelError::BadCollectionName(truncate(collection)));
        }
        match &self.collections {
            Collections::Listed(names) if !names.contains(collection) => {
                Err(ModelError::UnknownCollection(collection.to_owned()))
            }
            _ => Ok(()),
        }
    }

    fn hash_key(prefix: &str, collection: &str) -> String {
        format!("{prefix}:model:{{{collection}}}")
    }

    fn seq_key(prefix: &str, collection: &str) -> String {
        format!("{prefix}:model:{{{collection}}}:seq")
    }

    fn check_size(&self, record: &Record) -> Result<String, ModelError> {
        let text = serde_json::to_string(record)
            .map_err(|e| ModelError::Invalid(format!("record cannot be serialised: {e}")))?;
        if text.len() > self.limits.max_record_bytes {
            return Err(ModelError::TooLarge {
                size: text.len(),
                max: self.limits.max_record_bytes,
            });
        }
        Ok(text)
    }

    fn decode(collection: &str, id: u64, text: &str) -> Result<Record, ModelError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(mut r)) => {
                // The hash field is the truth; the copy inside the value only saves clients a
                // lookup.
                r.insert("id".to_owned(), Value::from(id));
                Ok(r)
            }
            _ => Err(ModelError::Corrupt {
                collection: collection.to_owned(),
                id,
            }),
        }
    }

    /// Every record of `collection` whose fields equal those of `filter`, by ascending id.
    /// Records that are not JSON objects (never written by a node) are skipped and logged.
    ///
    /// # Errors
    /// A disallowed collection, or Redis failing.
    pub async fn find(&self, collection: &str, filter: &Record) -> Result<Vec<Record>, ModelError> {
        self.check_collection(collection)?;
        match &self.backend {
            Backend::Memory(m) => {
                let m = m.lock().unwrap_or_else(|e| e.into_inner());
                Ok(m.get(collection)
                    .map(|c| {
                        c.records
                            .values()
                            .filter(|r| matches(r, filter))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default())
            }
            Backend::Redis { client, prefix } => {
                let raw: HashMap<String, String> =
                    client.hgetall(Self::hash_key(prefix, collection)).await?;
                let mut out: Vec<(u64, Record)> = Vec::with_capacity(raw.len());
                for (field, text) in raw {
                    let Some(id) = parse_id_str(&field) else {
                        tracing::warn!(
                            collection,
                            field,
                            "skipping a stored field that is not an id"
                        );
                        continue;
                    };
                    match Self::decode(collection, id, &text) {
                        Ok(r) if matches(&r, filter) => out.push((id, r)),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "skipping a stored record"),
                    }
                }
                out.sort_unstable_by_key(|(id, _)| *id);
                Ok(out.into_iter().map(|(_, r)| r).collect())
            }
        }
    }

    /// The record `id` of `collection`.
    ///
    /// # Errors
    /// `NotFound`, a disallowed collection, or Redis failing.
    pub async fn get(&self, collection: &str, id: u64) -> Result<Record, ModelError> {
        self.check_collection(collection)?;
        let not_found = || ModelError::not_found(collection, id);
        match &self.backend {
            Backend::Memory(m) => {
                let m = m.lock().unwrap_or_else(|e| e.into_inner());
                m.get(collection)
                    .and_then(|c| c.records.get(&id))
                    .cloned()
                    .ok_or_else(not_found)
            }
            Backend::Redis { client, prefix } => {
                let text: Option<String> = client
                    .hget(Self::hash_key(prefix, collection), id.to_string())
                    .await?;
                let text = text.ok_or_else(not_found)?;
                Self::decode(collection, id, &text)
            }
        }
    }

    /// Stores `data` as a new record with a fresh id (any `id` in `data` is ignored) and returns
    /// it.
    ///
    /// # Errors
    /// Limits, a disallowed collection, or Redis failing; nothing is stored then.
    pub async fn insert(&self, collection: &str, mut data: Record) -> Result<Record, ModelError> {
        self.check_collection(collection)?;
        data.remove("id");
        // Checked before an id is spent, with a placeholder id as long as any real one.
        let mut probe = data.clone();
        probe.insert("id".to_owned(), Value::from(u64::MAX));
        self.check_size(&probe)?;
        match &self.backend {
            Backend::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                if !m.contains_key(collection)
                    && self.collections == Collections::Open
                    && m.len() >= self.limits.max_collections
                {
                    return Err(ModelError::TooManyCollections(self.limits.max_collections));
                }
                let c = m.entry(collection.to_owned()).or_default();
                if c.records.len() >= self.limits.max_records {
                    return Err(ModelError::CollectionFull(
                        collection.to_owned(),
                        self.limits.max_records,
                    ));
                }
                c.last_id += 1;
                let id = c.last_id;
                let mut record = Record::new();
                record.insert("id".to_owned(), Value::from(id));
                record.extend(data);
                c.records.insert(id, record.clone());
                Ok(record)
            }
            Backend::Redis { client, prefix } => {
                if self.collections == Collections::Open {
                    let ok: i64 = client
                        .eval(
                            REGISTER_LUA,
                            vec![format!("{prefix}:models")],
                            vec![
                                collection.to_owned(),
                                self.limits.max_collections.to_string(),
                            ],
                        )
                        .await?;
                    if ok != 1 {
                        return Err(ModelError::TooManyCollections(self.limits.max_collections));
                    }
                }
                // INCR alone makes the id unique cluster-wide; a failure after it only leaves
                // a gap in the ids.
                let id: u64 = client.incr(Self::seq_key(prefix, collection)).await?;
                let mut record = Record::new();
                record.insert("id".to_owned(), Value::from(id));
                record.extend(data);
                let text = self.check_size(&record)?;
                let stored: i64 = client
                    .eval(
                        INSERT_LUA,
                        vec![Self::hash_key(prefix, collection)],
                        vec![id.to_string(), text, self.limits.max_records.to_string()],
                    )
                    .await?;
                if stored != 1 {
                    return Err(ModelError::CollectionFull(
                        collection.to_owned(),
                        self.limits.max_records,
                    ));
                }
                Ok(record)
            }
        }
    }

    /// Updates record `id` with `data` (`id` in `data` is ignored: ids never change) and
    /// returns the stored result.
    ///
    /// # Errors
    /// `NotFound`, limits, a disallowed collection, `Conflict` after repeated concurrent
    /// changes, or Redis failing; the stored record is unchanged then.
    pub async fn update(
        &self,
        collection: &str,
        id: u64,
        mut data: Record,
        mode: UpdateMode,
    ) -> Result<Record, ModelError> {
        self.check_collection(collection)?;
        data.remove("id");
        let combine = |current: &Record| -> Record {
            let mut next = match mode {
                UpdateMode::Merge => current.clone(),
                UpdateMode::Replace => Record::new(),
            };
            next.insert("id".to_owned(), Value::from(id));
            next.extend(data.clone());
            next
        };
        match &self.backend {
            Backend::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                let current = m
                    .get_mut(collection)
                    .and_then(|c| c.records.get_mut(&id))
                    .ok_or_else(|| ModelError::NotFound {
                        collection: collection.to_owned(),
                        id,
                    })?;
                let next = combine(current);
                self.check_size(&next)?;
                *current = next.clone();
                Ok(next)
            }
            Backend::Redis { client, prefix } => {
                let key = Self::hash_key(prefix, collection);
                for _ in 0..UPDATE_ATTEMPTS {
                    let text: Option<String> = client.hget(key.as_str(), id.to_string()).await?;
                    let text = text.ok_or_else(|| ModelError::NotFound {
                        collection: collection.to_owned(),
                        id,
                    })?;
                    let current = Self::decode(collection, id, &text)?;
                    let next = combine(&current);
                    let next_text = self.check_size(&next)?;
                    let done: i64 = client
                        .eval(
                            UPDATE_LUA,
                            vec![key.clone()],
                            vec![id.to_string(), text, next_text],
                        )
                        .await?;
                    match done {
                        1 => return Ok(next),
                        -1 => {
                            return Err(ModelError::NotFound {
                                collection: collection.to_owned(),
                                id,
                            });
                        }
                        _ => continue,
                    }
                }
                Err(ModelError::Conflict {
                    collection: collection.to_owned(),
                    id,
                })
            }
        }
    }

    /// Removes record `id` and returns what it was.
    ///
    /// # Errors
    /// `NotFound`, a disallowed collection, or Redis failing.
    pub async fn remove(&self, collection: &str, id: u64) -> Result<Record, ModelError> {
        self.check_collection(collection)?;
        let not_found = || ModelError::not_found(collection, id);
        match &self.backend {
            Backend::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                m.get_mut(collection)
                    .and_then(|c| c.records.remove(&id))
                    .ok_or_else(not_found)
            }
            Backend::Redis { client, prefix } => {
                let old: Option<String> = client
                    .eval(
                        REMOVE_LUA,
                        vec![Self::hash_key(prefix, collection)],
                        vec![id.to_string()],
                    )
                    .await?;
                let old = old.ok_or_else(not_found)?;
                // Gone either way; a corrupt old value is still reported as removed.
                Ok(Self::decode(collection, id, &old).unwrap_or_else(|_| {
                    let mut r = Record::new();
                    r.insert("id".to_owned(), Value::from(id));
                    r
                }))
            }
        }
    }
}

/// At most 80 characters of client input, for error messages.
fn truncate(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(80).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::obj;
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits {
            max_record_bytes: 200,
            max_records: 3,
            max_collections: 2,
        }
    }

    #[tokio::test]
    async fn memory_crud_and_limits() {
        let s = ModelStore::memory(Collections::Open, limits());
        let a = s
            .insert("todos", obj(json!({"t": "a", "id": 99})))
            .await
            .unwrap();
        assert_eq!(a, obj(json!({"id": 1, "t": "a"})));
        let b = s.insert("todos", obj(json!({"t": "b"}))).await.unwrap();
        assert_eq!(b["id"], json!(2));
        let u = s
            .update("todos", 1, obj(json!({"x": 1})), UpdateMode::Merge)
            .await
            .unwrap();
        assert_eq!(u, obj(json!({"id": 1, "t": "a", "x": 1})));
        let u = s
            .update(
                "todos",
                1,
                obj(json!({"y": 2, "id": 7})),
                UpdateMode::Replace,
            )
            .await
            .unwrap();
        assert_eq!(u, obj(json!({"id": 1, "y": 2})));
        assert_eq!(s.find("todos", &Record::new()).await.unwrap().len(), 2);
        assert_eq!(
            s.find("todos", &obj(json!({"t": "b"}))).await.unwrap(),
            vec![b]
        );
        assert!(matches!(
            s.insert("todos", obj(json!({"big": "x".repeat(300)})))
                .await,
            Err(ModelError::TooLarge { .. })
        ));
        // A failed update leaves the record as it was.
        assert!(
            s.update(
                "todos",
                1,
                obj(json!({"big": "x".repeat(300)})),
                UpdateMode::Merge
            )
            .await
            .is_err()
        );
        assert_eq!(
            s.get("todos", 1).await.unwrap(),
            obj(json!({"id": 1, "y": 2}))
        );
        s.insert("todos", Record::new()).await.unwrap();
        assert!(matches!(
            s.insert("todos", Record::new()).await,
            Err(ModelError::CollectionFull(..))
        ));
        s.insert("users", Record::new()).await.unwrap();
        assert!(matches!(
            s.insert("third", Record::new()).await,
            Err(ModelError::TooManyCollections(2))
        ));
        assert_eq!(s.remove("todos", 2).await.unwrap()["id"], json!(2));
        assert!(matches!(
            s.remove("todos", 2).await,
            Err(ModelError::NotFound { .. })
        ));
        // Ids are never reused.
        assert_eq!(
            s.insert("todos", Record::new()).await.unwrap()["id"],
            json!(4)
        );
        assert!(matches!(
            s.get("bad name", 1).await,
            Err(ModelError::BadCollectionName(_))
        ));
    }

    #[tokio::test]
    async fn listed_collections() {
        let s = ModelStore::memory(
            Collections::Listed(["todos".to_owned()].into_iter().collect()),
            limits(),
        );
        assert!(s.insert("todos", Record::new()).await.is_ok());
        assert!(matches!(
            s.find("users", &Record::new()).await,
            Err(ModelError::UnknownCollection(_))
        ));
    }
}

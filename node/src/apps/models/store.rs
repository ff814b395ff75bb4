//! The model store shared by the CRUD dialects (ko.ninja, Backbone.sync, Sails): named
//! collections of JSON object records with server-assigned integer ids, in Redis for a cluster
//! (every node reads and writes the same records) or in memory for a node alone.
//!
//! Redis layout (the collection name is a hash tag, so the keys of a collection sit in one
//! Redis Cluster slot and the Lua scripts of `super::lua` may touch them together):
//!
//! - `{prefix}:model:{<collection>}`: hash, field = id (decimal), value = the record as JSON
//!   (an object that includes its `id`);
//! - `{prefix}:model:{<collection>}:seq`: the last id handed out (`INCR`: unique cluster-wide,
//!   never reused, so a stale room subscription never points at a new record);
//! - `{prefix}:model:{<collection>}:bytes`: the sum of the lengths of the hash's values, kept by
//!   the scripts that write records to enforce `--max-collection-bytes` (rebuilt from the hash
//!   when missing);
//! - `{prefix}:models`: set of collection names, kept only in open mode to enforce
//!   `--max-collections`.
//!
//! Writes that depend on the stored value are atomic: an update is a compare-and-set Lua script
//! retried on conflict, so two nodes updating one record never lose a write, and an update
//! racing a remove never brings the record back.

use std::collections::HashMap;

use fred::{
    clients::Client,
    interfaces::{HashesInterface, KeysInterface, LuaInterface},
};
use serde_json::Value;

use super::lua;
use super::memory::Memory;
use super::record::{
    Collections, Limits, ModelError, Record, UpdateMode, checked_json, matches, parse_id_str,
    valid_collection_name,
};

/// Compare-and-set attempts of one update before the client is told to retry.
const UPDATE_ATTEMPTS: usize = 16;

enum Backend {
    Memory(Memory),
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

impl ModelStore {
    /// A store in this process (a node alone).
    pub fn memory(collections: Collections, limits: Limits) -> Self {
        Self {
            backend: Backend::Memory(Memory::default()),
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

    /// The collection's byte counter (see `super::lua`).
    fn bytes_key(prefix: &str, collection: &str) -> String {
        format!("{prefix}:model:{{{collection}}}:bytes")
    }

    fn bytes_full(&self, collection: &str) -> ModelError {
        ModelError::bytes_full(collection, &self.limits)
    }

    fn check_size(&self, record: &Record) -> Result<String, ModelError> {
        checked_json(record, &self.limits)
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
            Backend::Memory(m) => Ok(m.find(collection, filter)),
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
            Backend::Memory(m) => m.get(collection, id).ok_or_else(not_found),
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
            Backend::Memory(m) => m.insert(
                &self.limits,
                self.collections == Collections::Open,
                collection,
                data,
            ),
            Backend::Redis { client, prefix } => {
                self.insert_redis(client, prefix, collection, data).await
            }
        }
    }

    async fn insert_redis(
        &self,
        client: &Client,
        prefix: &str,
        collection: &str,
        data: Record,
    ) -> Result<Record, ModelError> {
        if self.collections == Collections::Open {
            let ok: i64 = client
                .eval(
                    lua::REGISTER,
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
        // INCR alone makes the id unique cluster-wide; a failure after it only leaves a gap
        // in the ids.
        let id: u64 = client.incr(Self::seq_key(prefix, collection)).await?;
        let mut record = Record::new();
        record.insert("id".to_owned(), Value::from(id));
        record.extend(data);
        let text = self.check_size(&record)?;
        let stored: i64 = client
            .eval(
                lua::INSERT,
                vec![
                    Self::hash_key(prefix, collection),
                    Self::bytes_key(prefix, collection),
                ],
                vec![
                    id.to_string(),
                    text,
                    self.limits.max_records.to_string(),
                    self.limits.max_collection_bytes.to_string(),
                ],
            )
            .await?;
        match stored {
            1 => Ok(record),
            -1 => Err(self.bytes_full(collection)),
            _ => Err(ModelError::CollectionFull(
                collection.to_owned(),
                self.limits.max_records,
            )),
        }
    }

    /// Updates record `id` with `data` (`id` in `data` is ignored: ids never change) and
    /// returns the stored result.
    ///
    /// # Errors
    /// `NotFound`, limits (a record may always shrink, but grow only within
    /// `--max-collection-bytes`), a disallowed collection, `Conflict` after repeated concurrent
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
            Backend::Memory(m) => m.update(&self.limits, collection, id, combine),
            Backend::Redis { client, prefix } => {
                self.update_redis(client, prefix, collection, id, combine)
                    .await
            }
        }
    }

    async fn update_redis(
        &self,
        client: &Client,
        prefix: &str,
        collection: &str,
        id: u64,
        combine: impl Fn(&Record) -> Record,
    ) -> Result<Record, ModelError> {
        let key = Self::hash_key(prefix, collection);
        let keys = vec![key.clone(), Self::bytes_key(prefix, collection)];
        for _ in 0..UPDATE_ATTEMPTS {
            let text: Option<String> = client.hget(key.as_str(), id.to_string()).await?;
            let text = text.ok_or_else(|| ModelError::not_found(collection, id))?;
            let current = Self::decode(collection, id, &text)?;
            let next = combine(&current);
            let next_text = self.check_size(&next)?;
            let done: i64 = client
                .eval(
                    lua::UPDATE,
                    keys.clone(),
                    vec![
                        id.to_string(),
                        text,
                        next_text,
                        self.limits.max_collection_bytes.to_string(),
                    ],
                )
                .await?;
            match done {
                1 => return Ok(next),
                -1 => return Err(ModelError::not_found(collection, id)),
                -2 => return Err(self.bytes_full(collection)),
                _ => continue,
            }
        }
        Err(ModelError::Conflict {
            collection: collection.to_owned(),
            id,
        })
    }

    /// Removes record `id`, frees its bytes and returns what it was.
    ///
    /// # Errors
    /// `NotFound`, a disallowed collection, or Redis failing.
    pub async fn remove(&self, collection: &str, id: u64) -> Result<Record, ModelError> {
        self.check_collection(collection)?;
        let not_found = || ModelError::not_found(collection, id);
        match &self.backend {
            Backend::Memory(m) => m.remove(collection, id).ok_or_else(not_found),
            Backend::Redis { client, prefix } => {
                let old: Option<String> = client
                    .eval(
                        lua::REMOVE,
                        vec![
                            Self::hash_key(prefix, collection),
                            Self::bytes_key(prefix, collection),
                        ],
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
            max_collection_bytes: 10_000,
            max_collections: 2,
            max_records_per_client: 100,
        }
    }

    /// The memory backend's byte count of `collection`, and the sum it must equal.
    fn bytes_of(s: &ModelStore, collection: &str) -> (usize, usize) {
        match &s.backend {
            Backend::Memory(m) => m.bytes(collection),
            // Never equal: a test on the wrong backend fails.
            Backend::Redis { .. } => (usize::MAX, 0),
        }
    }

    #[tokio::test]
    async fn memory_collection_bytes() {
        let limits = Limits {
            max_records: 100,
            max_collection_bytes: 110,
            ..limits()
        };
        let s = ModelStore::memory(Collections::Open, limits);
        // `{"id":1,"t":"<20 x>"}` is 35 bytes: three fit in 110, a fourth does not.
        let twenty = || obj(json!({"t": "x".repeat(20)}));
        for id in 1..=3 {
            assert_eq!(s.insert("todos", twenty()).await.unwrap()["id"], json!(id));
        }
        assert_eq!(bytes_of(&s, "todos"), (105, 105));
        let full = s.insert("todos", twenty()).await;
        assert!(
            matches!(&full, Err(ModelError::CollectionBytesFull { collection, max: 110 }) if collection == "todos"),
            "{full:?}"
        );
        // Nothing was stored nor an id spent; the counter is unchanged.
        assert_eq!(s.find("todos", &Record::new()).await.unwrap().len(), 3);
        assert_eq!(bytes_of(&s, "todos"), (105, 105));
        // 5 bytes are free: a growth of 6 is refused, one of 5 fits, a shrink always does.
        let grow = |n: usize| obj(json!({"t": "x".repeat(20 + n)}));
        assert!(matches!(
            s.update("todos", 1, grow(6), UpdateMode::Merge).await,
            Err(ModelError::CollectionBytesFull { .. })
        ));
        assert_eq!(s.get("todos", 1).await.unwrap(), {
            let mut r = twenty();
            r.insert("id".into(), json!(1));
            r
        });
        s.update("todos", 1, grow(5), UpdateMode::Merge)
            .await
            .unwrap();
        assert_eq!(bytes_of(&s, "todos"), (110, 110));
        s.update("todos", 2, Record::new(), UpdateMode::Replace)
            .await
            .unwrap();
        assert_eq!(bytes_of(&s, "todos"), (83, 83));
        // A remove frees its bytes, and the next insert fits again.
        assert_eq!(s.remove("todos", 3).await.unwrap()["id"], json!(3));
        assert_eq!(bytes_of(&s, "todos"), (48, 48));
        assert_eq!(s.insert("todos", twenty()).await.unwrap()["id"], json!(4));
        assert_eq!(bytes_of(&s, "todos"), (83, 83));
        // A record over the collection's bound never creates the collection.
        let big = obj(json!({"t": "x".repeat(120)}));
        assert!(matches!(
            s.insert("other", big).await,
            Err(ModelError::CollectionBytesFull { .. })
        ));
        assert_eq!(bytes_of(&s, "other"), (0, 0));
        s.insert("third", Record::new()).await.unwrap();
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

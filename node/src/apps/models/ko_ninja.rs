//! The ko.ninja dialect (seed "ko.ninja socket.io models"): acknowledged events
//! `<name>-find {query}` → array, `<name>-findOne {id}` → record, `<name>-insert {data}` → new
//! record, `<name>-update {id, data}` → record (fields merged), `<name>-remove {id}` →
//! `{success: true}`. Errors answer `{ok: false, error}` through the ack (or `model-error`
//! without one).
//!
//! Message names may be renamed per collection, as ko.ninja's `messageNames` option allows:
//! `--ko-message-names 'list:update=update-myList,insert=insert-intoMyList'` (repeat the flag,
//! or separate collections with `;` in `IOSCALE_KO_MESSAGE_NAMES`). The default names keep
//! working beside the configured ones.

use std::{collections::HashMap, sync::Arc};

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;

use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{Event, SocketRef, State, TryData},
};

use super::{
    Collections, ModelError, Models, Record, UpdateMode, collection_room, emit_error,
    record::parse_id, record_room,
};
use crate::{app::Adapter, joins, sockets::Reply};

/// Longest configured event name.
pub const MAX_EVENT_CHARS: usize = 128;

/// A ko.ninja operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KoOp {
    /// `find {query}` → array.
    Find,
    /// `findOne {id}` → record.
    FindOne,
    /// `insert {data}` → new record.
    Insert,
    /// `update {id, data}` → record.
    Update,
    /// `remove {id}` → `{success: true}`.
    Remove,
}

impl KoOp {
    /// The name ko.ninja uses (`messageNames` keys and default suffixes).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "find" => KoOp::Find,
            "findOne" => KoOp::FindOne,
            "insert" => KoOp::Insert,
            "update" => KoOp::Update,
            "remove" => KoOp::Remove,
            _ => return None,
        })
    }

    fn metric(self) -> &'static str {
        match self {
            KoOp::Find => "find",
            KoOp::FindOne => "find_one",
            KoOp::Insert => "insert",
            KoOp::Update => "update",
            KoOp::Remove => "remove",
        }
    }
}

/// Configured event names: event → (collection, operation).
#[derive(Debug, Clone, Default)]
pub struct KoNames {
    overrides: HashMap<String, (String, KoOp)>,
}

impl KoNames {
    /// Parses `collection:op=event,op=event` mappings.
    ///
    /// # Errors
    /// A malformed mapping, an unknown op, a collection not allowed, or one event name given
    /// twice.
    pub fn parse(specs: &[String], collections: &Collections) -> Result<Self, String> {
        let mut overrides = HashMap::new();
        for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let (collection, pairs) = spec
                .split_once(':')
                .ok_or_else(|| format!("{spec:?}: expected collection:op=event,…"))?;
            let collection = collection.trim();
            if !super::record::valid_collection_name(collection) {
                return Err(format!("{spec:?}: invalid collection name {collection:?}"));
            }
            if let Collections::Listed(names) = collections
                && !names.contains(collection)
            {
                return Err(format!(
                    "{spec:?}: collection {collection:?} is not in --collections"
                ));
            }
            for pair in pairs.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (op, event) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{pair:?}: expected op=event"))?;
                let op = KoOp::parse(op.trim()).ok_or_else(|| {
                    format!("{pair:?}: op must be find, findOne, insert, update or remove")
                })?;
                let event = event.trim();
                if event.is_empty() || event.len() > MAX_EVENT_CHARS {
                    return Err(format!(
                        "{pair:?}: event name must be 1-{MAX_EVENT_CHARS} bytes"
                    ));
                }
                if overrides
                    .insert(event.to_owned(), (collection.to_owned(), op))
                    .is_some()
                {
                    return Err(format!("event name {event:?} is mapped twice"));
                }
            }
        }
        Ok(Self { overrides })
    }

    /// The collection and operation an event name stands for: a configured name, else the
    /// default `<collection>-<op>`.
    pub fn resolve(&self, event: &str) -> Option<(String, KoOp)> {
        if let Some(hit) = self.overrides.get(event) {
            return Some(hit.clone());
        }
        let (collection, op) = event.rsplit_once('-')?;
        let op = KoOp::parse(op)?;
        (!collection.is_empty()).then(|| (collection.to_owned(), op))
    }
}

/// Fallback handler of `/`: serves ko.ninja events, ignores every other unknown event (as
/// before: a stray event is not an error).
pub async fn fallback(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    Event(event): Event,
    TryData(data): TryData<Value>,
    ack: Reply,
    State(models): State<Arc<Models>>,
) {
    let Some((collection, op)) = models.ko_names.resolve(&event) else {
        return;
    };
    let r = run(&s, &io, &models, &collection, op, data.ok()).await;
    models.count("ko_ninja", op.metric(), &r);
    match r {
        Ok(body) => ack.ack_with(&body),
        Err(e) if ack.has_ack() => ack.ack_with(&e.refused().to_json()),
        Err(e) => emit_error(&s, &event, e.status(), &e.refused()),
    }
}

fn field<'a>(data: &'a Option<Value>, name: &str) -> Option<&'a Value> {
    data.as_ref()
        .and_then(Value::as_object)
        .and_then(|o| o.get(name))
}

fn object_arg(data: &Option<Value>, name: &str, what: &str) -> Result<Record, ModelError> {
    match field(data, name) {
        Some(Value::Object(o)) => Ok(o.clone()),
        _ => Err(ModelError::Invalid(format!(
            "{what} expects {{{name}: object}}"
        ))),
    }
}

fn id_arg(data: &Option<Value>, what: &str) -> Result<u64, ModelError> {
    match field(data, "id") {
        Some(v) => parse_id(v),
        None => Err(ModelError::Invalid(format!("{what} expects {{id}}"))),
    }
}

async fn run(
    s: &SocketRef<Adapter>,
    io: &SocketIo<Adapter>,
    models: &Models,
    collection: &str,
    op: KoOp,
    data: Option<Value>,
) -> Result<Value, ModelError> {
    if !matches!(data, None | Some(Value::Object(_)) | Some(Value::Null)) {
        return Err(ModelError::Invalid(
            "ko.ninja events carry an object payload".into(),
        ));
    }
    match op {
        KoOp::Find => {
            let query = match field(&data, "query") {
                None | Some(Value::Null) => Record::new(),
                Some(Value::Object(q)) => q.clone(),
                Some(_) => return Err(ModelError::Invalid("find expects {query: object}".into())),
            };
            let records = models.store.find(collection, &query).await?;
            // A reader follows the collection's changes from now on.
            joins::join(s, &models.cluster, collection_room(collection)).await;
            Ok(Value::Array(
                records.into_iter().map(Value::Object).collect(),
            ))
        }
        KoOp::FindOne => {
            let id = id_arg(&data, "findOne")?;
            let r = models.store.get(collection, id).await?;
            joins::join(s, &models.cluster, record_room(collection, id)).await;
            Ok(Value::Object(r))
        }
        KoOp::Insert => {
            let d = object_arg(&data, "data", "insert")?;
            Ok(Value::Object(models.insert(io, s, collection, d).await?))
        }
        KoOp::Update => {
            let id = id_arg(&data, "update")?;
            let d = object_arg(&data, "data", "update")?;
            Ok(Value::Object(
                models
                    .update(io, s, collection, id, d, UpdateMode::Merge)
                    .await?,
            ))
        }
        KoOp::Remove => {
            let id = id_arg(&data, "remove")?;
            models.remove(io, s, collection, id).await?;
            Ok(json!({"success": true}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_configured_names() {
        let names = KoNames::parse(
            &["list:update=update-myList, insert=insert-intoMyList,find=find-stuffInMyList,findOne=find-aThing,remove=remove-aThing".to_owned()],
            &Collections::Open,
        )
        .unwrap();
        assert_eq!(
            names.resolve("update-myList"),
            Some(("list".to_owned(), KoOp::Update))
        );
        assert_eq!(
            names.resolve("find-aThing"),
            Some(("list".to_owned(), KoOp::FindOne))
        );
        assert_eq!(
            names.resolve("list-find"),
            Some(("list".to_owned(), KoOp::Find))
        );
        assert_eq!(
            names.resolve("my-list-findOne"),
            Some(("my-list".to_owned(), KoOp::FindOne))
        );
        assert_eq!(names.resolve("add-message"), None);
        assert_eq!(names.resolve("-find"), None);
        assert_eq!(names.resolve("find"), None);
    }

    #[test]
    fn bad_mappings() {
        let open = Collections::Open;
        assert!(KoNames::parse(&["list".to_owned()], &open).is_err());
        assert!(KoNames::parse(&["list:upsert=x".to_owned()], &open).is_err());
        assert!(KoNames::parse(&["list:update=".to_owned()], &open).is_err());
        assert!(KoNames::parse(&["a b:update=x".to_owned()], &open).is_err());
        assert!(KoNames::parse(&["a:update=x".to_owned(), "b:find=x".to_owned()], &open).is_err());
        let listed = Collections::Listed(["todos".to_owned()].into_iter().collect());
        assert!(KoNames::parse(&["list:update=x".to_owned()], &listed).is_err());
        assert!(KoNames::parse(&["todos:update=x".to_owned()], &listed).is_ok());
    }
}

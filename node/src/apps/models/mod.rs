//! CRUD over Socket.IO for the applications of the seed documents: a model store shared by the
//! ko.ninja, Backbone.sync and Sails 0.9 dialects, all on the default namespace `/` (where the
//! seeds' clients connect), and the cluster-wide change events every write publishes.
//!
//! Every write, whatever dialect made it, publishes to every node through the cluster adapter:
//!
//! - `model-change {model, verb, id, data?}` to the collection room `model:<collection>`
//!   (creates, updates, removes) and the record room `model:<collection>:<id>` (updates,
//!   removes). ko.ninja `find` / Backbone `read` of a collection joins the collection room;
//!   `findOne` / `read` of one record joins its record room.
//! - Sails' `message {model, verb, id, data?}` to the class room `sails:<collection>` (creates;
//!   its sockets also join the new record's instance room everywhere, Sails' `introduce`) and
//!   the instance room `sails:<collection>:<id>` (updates, destroys).
//!
//! The requesting socket is left out of both: it already has the answer (Sails' `socketToOmit`).
//!
//! `delete` is both a Backbone and a Sails event: a payload with a `signature` is Backbone's,
//! anything else (a JSON string, `{url, …}`) Sails'.

pub mod backbone;
pub mod ko_ninja;
mod lua;
mod memory;
pub mod record;
pub mod sails;
pub mod store;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use ioscale_adapter::Cluster;
use prometheus::{IntCounterVec, Opts, Registry};
use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{Event, SocketRef, State, TryData},
};

pub use record::{Collections, Limits, ModelError, Record, UpdateMode};
pub use store::ModelStore;

use crate::{
    app::Adapter,
    application::{Application, Setup},
    refusal::Refused,
    session::public_id,
    sockets::Reply,
};

/// The namespace that serves every dialect.
pub const NAMESPACE: &str = "/";
/// Event of the dialect-neutral change feed.
pub const CHANGE_EVENT: &str = "model-change";
/// Event that carries errors to clients that sent no ack callback (and have no reply event).
pub const ERROR_EVENT: &str = "model-error";

/// Room of every change to a collection (ko.ninja, Backbone).
pub fn collection_room(collection: &str) -> String {
    format!("model:{collection}")
}

/// Room of the changes to one record (ko.ninja, Backbone).
pub fn record_room(collection: &str, id: u64) -> String {
    format!("model:{collection}:{id}")
}

/// Sails' class room: told about creates.
pub fn sails_class_room(collection: &str) -> String {
    format!("sails:{collection}")
}

/// Sails' instance room: told about updates and destroys of one record.
pub fn sails_instance_room(collection: &str, id: u64) -> String {
    format!("sails:{collection}:{id}")
}

/// The CRUD dialects' flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelConfig {
    /// Collections the CRUD dialects (ko.ninja, Backbone.sync, Sails) may use, comma-separated.
    /// Absent: any name of 1-64 `[A-Za-z0-9_-]` (starting with a letter or digit), up to
    /// `--max-collections` of them.
    #[arg(long, env = "IOSCALE_COLLECTIONS", value_delimiter = ',')]
    pub collections: Vec<String>,
    /// Most collections clients may create when `--collections` is absent.
    #[arg(long, env = "IOSCALE_MAX_COLLECTIONS", default_value_t = 100)]
    pub max_collections: usize,
    /// Largest model record, serialised as JSON.
    #[arg(long, env = "IOSCALE_MAX_RECORD_BYTES", default_value_t = 65_536)]
    pub max_record_bytes: usize,
    /// Most records per collection.
    #[arg(long, env = "IOSCALE_MAX_RECORDS", default_value_t = 10_000)]
    pub max_records: usize,
    /// Most bytes the records of one collection may hold, serialised as JSON (ids included):
    /// creates and growing updates over it are refused. With `--max-collections` this bounds
    /// the whole store to `max_collections × max_collection_bytes` (100 MiB by default).
    #[arg(
        long,
        env = "IOSCALE_MAX_COLLECTION_BYTES",
        default_value_t = 1_048_576
    )]
    pub max_collection_bytes: usize,
    /// Most records one socket connection may create over its life, in every collection and
    /// dialect: one anonymous client cannot fill the store alone.
    #[arg(long, env = "IOSCALE_MAX_RECORDS_PER_CLIENT", default_value_t = 1_000)]
    pub max_records_per_client: usize,
    /// ko.ninja message names per collection, `collection:op=event,op=event` (ops: find,
    /// findOne, insert, update, remove); repeat the flag, or separate collections with `;`.
    #[arg(long, env = "IOSCALE_KO_MESSAGE_NAMES", value_delimiter = ';')]
    pub ko_message_names: Vec<String>,
}

/// The CRUD dialects as an application of the node, on `/` beside the chat.
#[derive(Debug)]
pub struct Crud {
    settings: Settings,
}

impl Crud {
    /// The dialects with checked flags.
    ///
    /// # Errors
    /// What [`Settings::from_config`] refuses.
    pub fn new(config: &ModelConfig) -> Result<Self, SettingsError> {
        Ok(Self {
            settings: Settings::from_config(config)?,
        })
    }
}

impl Application for Crud {
    fn name(&self) -> &'static str {
        "models"
    }

    fn setup(&self, setup: &mut Setup<'_>) -> anyhow::Result<()> {
        let app = setup.app();
        let models = Models::new(
            self.settings.clone(),
            &app.cluster,
            &app.config.redis_prefix,
            &app.registry,
        )?;
        setup.state(models);
        // The seeds' clients connect to `/`, where the chat is too.
        setup.on_register(NAMESPACE, |s, _io, _app| register(s));
        Ok(())
    }
}

/// A configuration of the model dialects that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

/// The model configuration, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Allowed collections.
    pub collections: Collections,
    /// Store limits.
    pub limits: Limits,
    /// ko.ninja message names.
    pub ko_names: ko_ninja::KoNames,
}

impl Settings {
    /// Reads `--collections`, the limits and `--ko-message-names`.
    ///
    /// # Errors
    /// An invalid collection name, a zero limit or a malformed message-name mapping.
    pub fn from_config(c: &ModelConfig) -> Result<Self, SettingsError> {
        let mut names = std::collections::BTreeSet::new();
        for name in c
            .collections
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
        {
            if !record::valid_collection_name(name) {
                return Err(SettingsError(format!(
                    "--collections: invalid name {name:?} (1-64 letters, digits, '_' or '-', starting with a letter or digit)"
                )));
            }
            names.insert(name.to_owned());
        }
        let collections = if names.is_empty() {
            Collections::Open
        } else {
            Collections::Listed(names)
        };
        let limits = Limits {
            max_record_bytes: c.max_record_bytes,
            max_records: c.max_records,
            max_collection_bytes: c.max_collection_bytes,
            max_collections: c.max_collections,
            max_records_per_client: c.max_records_per_client,
        };
        if [
            limits.max_collections,
            limits.max_record_bytes,
            limits.max_records,
            limits.max_collection_bytes,
            limits.max_records_per_client,
        ]
        .contains(&0)
        {
            return Err(SettingsError(
                "--max-collections, --max-record-bytes, --max-records, --max-collection-bytes and --max-records-per-client must be positive".into(),
            ));
        }
        let ko_names = ko_ninja::KoNames::parse(&c.ko_message_names, &collections)
            .map_err(|e| SettingsError(format!("--ko-message-names: {e}")))?;
        Ok(Self {
            collections,
            limits,
            ko_names,
        })
    }
}

/// The models of a node: the store, the ko.ninja names and the metrics. Handed to handlers as
/// socketioxide state (`State<Arc<Models>>`).
#[derive(Debug)]
pub struct Models {
    /// The store.
    pub store: ModelStore,
    /// ko.ninja event names.
    pub ko_names: ko_ninja::KoNames,
    /// The cluster, told of the collection and record rooms readers join.
    pub cluster: Cluster,
    requests: IntCounterVec,
}

impl Models {
    /// Builds the store (in Redis when the cluster has one, in memory otherwise) and registers
    /// `ioscale_model_requests_total{dialect, op, result}`.
    ///
    /// # Errors
    /// On a duplicate metric registration.
    pub fn new(
        settings: Settings,
        cluster: &Cluster,
        redis_prefix: &str,
        registry: &Registry,
    ) -> prometheus::Result<Arc<Self>> {
        let store = match cluster.redis_client() {
            Some(client) => {
                ModelStore::redis(client, redis_prefix, settings.collections, settings.limits)
            }
            None => ModelStore::memory(settings.collections, settings.limits),
        };
        let requests = IntCounterVec::new(
            Opts::new(
                "ioscale_model_requests_total",
                "Model (CRUD) requests by dialect, operation and result",
            ),
            &["dialect", "op", "result"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        Ok(Arc::new(Self {
            store,
            ko_names: settings.ko_names,
            cluster: cluster.clone(),
            requests,
        }))
    }

    /// Counts one request. `dialect` and `op` come from fixed sets; `result` is `ok`,
    /// `client_error` or `server_error`.
    pub fn count<T>(&self, dialect: &'static str, op: &'static str, r: &Result<T, ModelError>) {
        match r {
            Ok(_) => self.requests.with_label_values(&[dialect, op, "ok"]).inc(),
            Err(e) => self.count_error(dialect, op, e),
        }
    }

    /// Counts one failed request.
    pub fn count_error(&self, dialect: &'static str, op: &'static str, e: &ModelError) {
        // A server error's cause is logged where the client's answer is made
        // (`ModelError::refused`), under the request id the answer carries.
        let result = if e.is_client_error() {
            "client_error"
        } else {
            "server_error"
        };
        self.requests
            .with_label_values(&[dialect, op, result])
            .inc();
    }

    /// Inserts a record created by `origin` and tells the cluster.
    ///
    /// # Errors
    /// `ClientRecordsExhausted` when `origin` already created `--max-records-per-client`
    /// records, else as `ModelStore::insert`.
    pub async fn insert(
        &self,
        io: &SocketIo<Adapter>,
        origin: &SocketRef<Adapter>,
        collection: &str,
        data: Record,
    ) -> Result<Record, ModelError> {
        let created = created_records(origin);
        let max = self.store.limits().max_records_per_client;
        // Reserved before the store is asked, so concurrent inserts of one socket cannot all
        // pass the check; handed back when the insert fails: only stored records count.
        created
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| ModelError::ClientRecordsExhausted(max))?;
        let r = match self.store.insert(collection, data).await {
            Ok(r) => r,
            Err(e) => {
                created.0.fetch_sub(1, Ordering::AcqRel);
                return Err(e);
            }
        };
        let id = record_id(&r);
        publish(io, origin, collection, Verb::Create, id, Some(&r)).await;
        Ok(r)
    }

    /// Updates a record and tells the cluster.
    ///
    /// # Errors
    /// As `ModelStore::update`.
    pub async fn update(
        &self,
        io: &SocketIo<Adapter>,
        origin: &SocketRef<Adapter>,
        collection: &str,
        id: u64,
        data: Record,
        mode: UpdateMode,
    ) -> Result<Record, ModelError> {
        let r = self.store.update(collection, id, data, mode).await?;
        publish(io, origin, collection, Verb::Update, id, Some(&r)).await;
        Ok(r)
    }

    /// Removes a record, tells the cluster and returns what it was.
    ///
    /// # Errors
    /// As `ModelStore::remove`.
    pub async fn remove(
        &self,
        io: &SocketIo<Adapter>,
        origin: &SocketRef<Adapter>,
        collection: &str,
        id: u64,
    ) -> Result<Record, ModelError> {
        let r = self.store.remove(collection, id).await?;
        publish(io, origin, collection, Verb::Destroy, id, None).await;
        Ok(r)
    }
}

/// Records a socket connection created, in its extensions (`--max-records-per-client`).
#[derive(Debug, Default)]
struct CreatedRecords(AtomicUsize);

/// The socket's counter, put there by [`register`].
fn created_records(s: &SocketRef<Adapter>) -> Arc<CreatedRecords> {
    if let Some(c) = s.extensions.get::<Arc<CreatedRecords>>() {
        return c;
    }
    // Only a socket that skipped `register` gets here; its first insert makes the counter.
    let c = Arc::new(CreatedRecords::default());
    s.extensions.insert(c.clone());
    c
}

fn record_id(r: &Record) -> u64 {
    r.get("id").and_then(Value::as_u64).unwrap_or_default()
}

/// What a write did, in Sails' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// A new record.
    Create,
    /// A changed record.
    Update,
    /// A removed record.
    Destroy,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Destroy => "destroy",
        }
    }
}

/// Publishes a write to every node: the change feed and Sails' `message`. Failures are logged:
/// the write itself is done and the requester gets its answer either way.
async fn publish(
    io: &SocketIo<Adapter>,
    origin: &SocketRef<Adapter>,
    collection: &str,
    verb: Verb,
    id: u64,
    data: Option<&Record>,
) {
    let Some(ns) = io.of(NAMESPACE) else { return };
    // The writer's own room, named by its public id.
    let origin = public_id::of(origin);
    let mut msg = json!({"model": collection, "verb": verb.as_str(), "id": id});
    if let Some(d) = data {
        msg["data"] = Value::Object(d.clone());
    }
    let mut feed_rooms = vec![collection_room(collection)];
    if verb != Verb::Create {
        feed_rooms.push(record_room(collection, id));
    }
    if let Err(e) = ns
        .clone()
        .to(feed_rooms)
        .except(origin.clone())
        .emit(CHANGE_EVENT, &msg)
        .await
    {
        tracing::debug!(error = %e, "model-change partially delivered");
    }
    let instance = sails_instance_room(collection, id);
    let sails_target = if verb == Verb::Create {
        // Sails' publishCreate: class-room sockets on every node join the new instance's room
        // (confirmed by every node) before anyone can update it.
        let class = sails_class_room(collection);
        if let Err(e) = ns.clone().to(class.clone()).join(instance.clone()).await {
            tracing::warn!(error = %e, collection, id, "introducing a new record to its class room failed");
        }
        class
    } else {
        instance.clone()
    };
    if let Err(e) = ns
        .clone()
        .to(sails_target)
        .except(origin)
        .emit("message", &msg)
        .await
    {
        tracing::debug!(error = %e, "sails message partially delivered");
    }
    if verb == Verb::Destroy {
        // Ids are never reused, so the rooms of a removed record only hold memory: empty them
        // in the background (a cluster round trip the requester need not wait for).
        let rooms = vec![instance, record_room(collection, id)];
        tokio::spawn(async move {
            if let Err(e) = ns.to(rooms.clone()).leave(rooms).await {
                tracing::debug!(error = %e, "emptying the rooms of a removed record failed");
            }
        });
    }
}

/// Tells a client that sent no ack about an error: `model-error {event, status, ok: false,
/// code, error}`.
pub fn emit_error(s: &SocketRef<Adapter>, event: &str, status: u16, r: &Refused) {
    let body = r.to_json_with([("event", event.into()), ("status", status.into())]);
    let _ = s.emit(ERROR_EVENT, &body);
}

/// The CRUD events with a handler of their own; ko.ninja's go through the fallback.
const CRUD_EVENTS: [&str; 7] = ["create", "read", "update", "delete", "get", "post", "put"];

/// Registers the dialects' events on a socket of `/`. Called from the namespace's connect
/// handler before anything is awaited, so a client's first event finds its handler.
fn register(s: &SocketRef<Adapter>) {
    // Before any handler runs, so concurrent first inserts share one counter.
    s.extensions.insert(Arc::new(CreatedRecords::default()));
    for event in CRUD_EVENTS {
        s.on(event, crud);
    }
    // ko.ninja's event names are `<collection>-<op>` (or configured): only a fallback sees
    // them all. Events with a handler of their own never reach it.
    s.on_fallback(ko_ninja::fallback);
}

/// One handler for every event of [`CRUD_EVENTS`]: the event name says the dialect and the
/// operation (Backbone's `create`/`read`/`update`, Sails' `get`/`post`/`put`); `delete` is
/// Backbone's when the payload has a `signature`, Sails' otherwise.
async fn crud(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    Event(event): Event,
    TryData(data): TryData<Value>,
    ack: Reply,
    State(models): State<Arc<Models>>,
) {
    use backbone::Op;
    use sails::Method;
    let data = data.map_err(|e| e.to_string());
    let backbone = match event.as_str() {
        "create" => Some(Op::Create),
        "read" => Some(Op::Read),
        "update" => Some(Op::Update),
        "delete" if matches!(&data, Ok(Value::Object(o)) if o.contains_key("signature")) => {
            Some(Op::Delete)
        }
        _ => None,
    };
    if let Some(op) = backbone {
        return backbone::handle(op, s, io, data, ack, models).await;
    }
    let method = match event.as_str() {
        "get" => Method::Get,
        "post" => Method::Post,
        "put" => Method::Put,
        _ => Method::Delete,
    };
    sails::handle(method, s, io, data, ack, models).await;
}

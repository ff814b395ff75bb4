//! Recorded broadcasts written to Redis in batches: one script call appends several broadcasts
//! to their namespace's history and publishes each, so a burst costs Redis and the node one
//! command per batch instead of one per message (at 20,000 publishes written at once, the
//! per-command work of both was most of the burst's time). A batch only forms while
//! [`MAX_IN_FLIGHT`] earlier ones are unanswered, so a lone publish still leaves at once.

use bytes::Bytes;
use fred::types::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::Recorded;
use crate::history::Seq;

/// Batches unanswered before the next one waits to grow: enough to keep the connection busy,
/// few enough that a burst gathers into large batches.
pub(crate) const MAX_IN_FLIGHT: usize = 2;
/// Most broadcasts per batch, and most payload bytes: one script runs alone in Redis, so a
/// batch must stay short (256 broadcasts take Redis about a millisecond).
const MAX_ENTRIES: usize = 256;
const MAX_BYTES: usize = 256 * 1024;

/// A broadcast to record: appended to `stream` (trimmed to about `max_len`) and published on
/// its channel.
pub(crate) struct Record {
    pub(crate) stream: String,
    pub(crate) max_len: usize,
    pub(crate) message: Recorded,
}

/// Consecutive broadcasts of one kind in a batch: counted with one metric lookup.
pub(crate) struct Tally {
    pub(crate) kind: &'static str,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
}

/// Broadcasts of one stream, numbered, in the order they go to Redis.
pub(crate) struct Batch {
    stream: String,
    max_len: usize,
    /// The script's arguments: the stream's length bound, then per broadcast its channel,
    /// payload, sequence number and channel number.
    args: Vec<Value>,
    /// Broadcasts in the batch.
    len: usize,
    /// What the answer counts, by runs of one kind.
    pub(crate) tallies: Vec<Tally>,
    bytes: usize,
    /// The in-flight places of the broadcasts that hold one (those from the outbox do not).
    pub(crate) permits: Vec<OwnedSemaphorePermit>,
}

impl Batch {
    pub(crate) fn for_record(record: &Record) -> Self {
        Self {
            stream: record.stream.clone(),
            max_len: record.max_len,
            args: vec![Value::from(record.max_len as i64)],
            len: 0,
            tallies: Vec::new(),
            bytes: 0,
            permits: Vec::new(),
        }
    }

    /// Whether `record` may join: same stream, and room left.
    pub(crate) fn accepts(&self, record: &Record) -> bool {
        self.stream == record.stream
            && self.max_len == record.max_len
            && self.len < MAX_ENTRIES
            && self.bytes + record.message.payload.len() <= MAX_BYTES
    }

    /// Whether the batch should leave now rather than grow.
    pub(crate) fn is_full(&self) -> bool {
        self.len >= MAX_ENTRIES || self.bytes >= MAX_BYTES
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `record` as the `seq`th broadcast this publisher records and the `numbered`th on
    /// its channel.
    pub(crate) fn push(
        &mut self,
        record: Record,
        seq: u64,
        numbered: Seq,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let Recorded {
            channel,
            payload,
            kind,
        } = record.message;
        let size = payload.len();
        self.len += 1;
        self.bytes += size;
        match self.tallies.last_mut() {
            Some(t) if t.kind == kind => {
                t.messages += 1;
                t.bytes += size as u64;
            }
            _ => self.tallies.push(Tally {
                kind,
                messages: 1,
                bytes: size as u64,
            }),
        }
        self.args.extend([
            Value::from(channel),
            Value::Bytes(Bytes::from(payload)),
            Value::from(seq.to_string()),
            Value::from(numbered.to_string()),
        ]);
        self.permits.extend(permit);
    }

    /// The script's keys (the stream, and where this publisher keeps the last sequence number
    /// it recorded there) and arguments; the rest stays for the accounting.
    pub(crate) fn take_command(&mut self, origin: &str) -> (Vec<String>, Vec<Value>) {
        let last_seq = format!("{}#from#{origin}", self.stream);
        let keys = vec![std::mem::take(&mut self.stream), last_seq];
        (keys, std::mem::take(&mut self.args))
    }
}

/// The batch forming and how many are unanswered; kept under the outbox's lock, which orders
/// every publish of the connection.
#[derive(Default)]
pub(crate) struct Batches {
    pub(crate) open: Option<Batch>,
    pub(crate) in_flight: usize,
}

/// Appends each broadcast of a batch to the namespace's history and publishes it stamped with
/// its stream id, atomically: Redis runs scripts one at a time, so subscribers see ids in
/// stream order. `KEYS[2]` keeps the last sequence number this publisher recorded, so a batch
/// the client sends again after a lost connection (it may have run before the connection
/// broke) is not recorded twice. Each broadcast's channel number (`history::Seq`) is kept with
/// its entry (`q`) and sent after the id. The sequence number stays a string: Lua's numbers
/// would print large ones in exponent form.
pub(crate) const RECORD_MANY: &str = "local last = tonumber(redis.call('GET', KEYS[2]) or '-1')\n\
local top = nil\n\
for i = 2, #ARGV, 4 do\n\
  if tonumber(ARGV[i + 2]) > last then\n\
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[i + 1], 'q', ARGV[i + 3])\n\
    redis.call('PUBLISH', ARGV[i], '!' .. id .. ' ' .. ARGV[i + 3] .. '\\n' .. ARGV[i + 1])\n\
    top = ARGV[i + 2]\n\
  end\n\
end\n\
if top then redis.call('SET', KEYS[2], top, 'PX', 3600000) end\n\
return top";

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: &str, bytes: usize) -> Record {
        Record {
            stream: stream.to_owned(),
            max_len: 10,
            message: Recorded {
                channel: "ch".to_owned(),
                payload: vec![0; bytes],
                kind: "broadcast",
            },
        }
    }

    #[test]
    fn a_batch_holds_one_stream_within_its_bounds() {
        let first = record("a", 10);
        let mut batch = Batch::for_record(&first);
        batch.push(first, 0, Seq { epoch: 1, n: 0 }, None);
        assert!(batch.accepts(&record("a", 10)));
        assert!(!batch.accepts(&record("b", 10)), "another stream");
        assert!(!batch.accepts(&record("a", MAX_BYTES)), "too many bytes");
        for i in 1..MAX_ENTRIES as u64 {
            batch.push(record("a", 1), i, Seq { epoch: 1, n: i }, None);
        }
        assert!(batch.is_full());
        assert!(!batch.accepts(&record("a", 1)), "too many broadcasts");
        let (keys, args) = batch.take_command("node~1");
        assert_eq!(keys, ["a", "a#from#node~1"]);
        assert_eq!(args.len(), 1 + 4 * MAX_ENTRIES);
        assert_eq!(batch.len(), MAX_ENTRIES);
        let [t] = &batch.tallies[..] else {
            panic!("one run of one kind")
        };
        assert_eq!((t.messages, t.bytes), (MAX_ENTRIES as u64, 10 + 255));
    }
}

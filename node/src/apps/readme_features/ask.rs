//! The README's acknowledgement recipes: `ferret` answers through the ack, `ask` asks sockets
//! on every node and gathers their answers.

use std::collections::HashMap;

use super::*;

/// `ferret` (name, fn): the README's acknowledgement recipe, `fn('woot')`.
pub(super) async fn ferret(s: SocketRef<Adapter>, reply: Reply) {
    if reply.has_ack() {
        reply.ack(&json!("woot"));
    } else {
        reply_error(
            &s,
            reply,
            "ferret",
            "ferret expects an ack callback".to_owned(),
        );
    }
}

/// `ask` {to, question} (ack): the server emits `question` with an ack to room or socket `to`
/// on every node, and acks the asker with every answer:
/// `{answers: [{socket, node, answer}], unanswered: [{socket, node, error}], complete, missing_nodes}`.
pub(super) async fn ask(
    s: SocketRef<Adapter>,
    a: TryData<Ask>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    if !reply.has_ack() {
        return reply_error(&s, reply, "ask", "ask needs an ack".to_owned());
    }
    let a = match parsed(a) {
        Ok(a) => a,
        Err(e) => {
            return reply_error(
                &s,
                reply,
                "ask",
                format!("ask expects {{to, question}}: {e}"),
            );
        }
    };
    if rooms::check(&a.to).is_err() {
        let e = format!("to must be a socket id or room of 1-{MAX_ROOM_CHARS} characters");
        return reply_error(&s, reply, "ask", e);
    }
    // The README's recipe asks one socket by its (public) id; any other room needs the grant.
    if !public_id::is_shaped(&a.to)
        && let Err(e) = admission::identity(&s).grants.may_publish(&a.to)
    {
        return reply_error(&s, reply, "ask", e);
    }
    let Some(h) = app.cluster.namespace(NAMESPACE) else {
        return reply_error(&s, reply, "ask", not_ready());
    };
    let parser = CommonParser;
    let value = match parser.encode_value(&Args(vec![a.question]), Some("question")) {
        Ok(v) => v,
        Err(e) => {
            let r = Refused::internal(Code::Internal, "cannot encode question", "ask", &e);
            return reply_error(&s, reply, "ask", r);
        }
    };
    let mut opts = ioscale_adapter::all_sockets();
    opts.rooms = std::iter::once(a.to.clone().into()).collect();
    let timeout = Duration::from_millis(app.config.ack_timeout_ms);
    let report = match h
        .broadcast_with_ack_report(Packet::event(NAMESPACE, value), opts, timeout)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let msg = cluster_unavailable("ask", &e);
            return reply_error(&s, reply, "ask", msg);
        }
    };
    // The report names sockets by session id; the asker sees public ids only. A socket that
    // left the room since it answered (or when the cluster cannot say) is named `null`.
    let ids = public_id::by_session(h.as_ref(), [a.to]).await;
    let (answers, unanswered) = sort_answers(report.acks, &ids, &parser);
    reply.ack_with(&AskOut {
        answers,
        unanswered,
        complete: report.complete,
        missing_nodes: report.missing_nodes,
    });
}

#[derive(Serialize)]
pub(super) struct AnswerOut {
    socket: Option<String>,
    node: String,
    answer: ApiValue,
}

#[derive(Serialize)]
pub(super) struct AskOut {
    answers: Vec<AnswerOut>,
    unanswered: Vec<Json>,
    complete: bool,
    missing_nodes: Vec<String>,
}

/// Splits the acks into answers and failures. An answer that does not decode is a failure
/// with its own code, never a silent `null`.
fn sort_answers(
    acks: Vec<ioscale_adapter::AckEntry>,
    ids: &HashMap<String, String>,
    parser: &CommonParser,
) -> (Vec<AnswerOut>, Vec<Json>) {
    let mut answers = Vec::new();
    let mut unanswered = Vec::new();
    for entry in acks {
        let socket = ids.get(&entry.socket).cloned();
        let answer = match entry.response {
            // The answer keeps its binary parts: it goes back as ApiValue, not JSON.
            Ok(mut v) => parser
                .decode_value::<ApiValue>(&mut v, false)
                .map_err(|_| "undecodable_answer"),
            // A stable code (`timeout`, `socket_closed`, ...), never the transport's text.
            Err(e) => Err(e.as_str()),
        };
        match answer {
            Ok(answer) => answers.push(AnswerOut {
                socket,
                node: entry.node,
                answer,
            }),
            Err(code) => {
                unanswered.push(json!({"socket": socket, "node": entry.node, "error": code}))
            }
        }
    }
    (answers, unanswered)
}

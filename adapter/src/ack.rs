//! Why a socket did not answer a broadcast with acks, as a short stable code a caller may be
//! shown: the transport's own error text is internal and never leaves the node.

use serde::Serialize;

/// Why one targeted socket has no answer in an [`crate::AckReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AckFailure {
    /// The socket did not answer within the ack timeout.
    Timeout,
    /// The socket closed before it answered.
    SocketClosed,
    /// The socket's packet buffer was full, so the event never reached it.
    SocketBufferFull,
    /// The socket answered with something that could not be decoded.
    UndecodableAnswer,
    /// Anything else, including an error another node sent that this one cannot read.
    Failed,
}

impl AckFailure {
    /// The code, as it appears in replies (`"timeout"`, `"socket_closed"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AckFailure::Timeout => "timeout",
            AckFailure::SocketClosed => "socket_closed",
            AckFailure::SocketBufferFull => "socket_buffer_full",
            AckFailure::UndecodableAnswer => "undecodable_answer",
            AckFailure::Failed => "failed",
        }
    }

    /// Classifies a socket layer's ack error by its serialized variant names, so the adapter
    /// stays generic over the emitter (socketioxide's `AckError` serializes as `"Timeout"`,
    /// `{"Socket": "Closed"}`, `{"Socket": "InternalChannelFull"}`, `{"Decode": ..}`).
    pub fn classify<T: Serialize>(error: &T) -> Self {
        let Ok(v) = serde_json::to_value(error) else {
            return AckFailure::Failed;
        };
        let (outer, inner) = match &v {
            serde_json::Value::String(s) => (s.as_str(), None),
            serde_json::Value::Object(m) if m.len() == 1 => match m.iter().next() {
                Some((k, inner)) => (k.as_str(), inner.as_str()),
                None => return AckFailure::Failed,
            },
            _ => return AckFailure::Failed,
        };
        match (outer, inner) {
            ("Timeout", _) => AckFailure::Timeout,
            ("Socket", Some("Closed")) => AckFailure::SocketClosed,
            ("Socket", Some("InternalChannelFull")) => AckFailure::SocketBufferFull,
            ("Decode", _) => AckFailure::UndecodableAnswer,
            _ => AckFailure::Failed,
        }
    }
}

impl std::fmt::Display for AckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use socketioxide_core::adapter::errors::SocketError;
    use socketioxide_core::parser::ParserError;

    use super::*;

    /// The same shape as socketioxide's `AckError`, which the adapter cannot name.
    #[derive(Serialize)]
    enum Like {
        Decode(ParserError),
        Timeout,
        Socket(SocketError),
    }

    #[test]
    fn the_socket_layers_errors_map_to_their_codes() {
        assert_eq!(AckFailure::classify(&Like::Timeout), AckFailure::Timeout);
        assert_eq!(
            AckFailure::classify(&Like::Socket(SocketError::Closed)),
            AckFailure::SocketClosed
        );
        assert_eq!(
            AckFailure::classify(&Like::Socket(SocketError::InternalChannelFull)),
            AckFailure::SocketBufferFull
        );
        let decode = Like::Decode(ParserError::new(std::io::Error::other("secret detail")));
        assert_eq!(AckFailure::classify(&decode), AckFailure::UndecodableAnswer);
        assert_eq!(AckFailure::classify(&"something else"), AckFailure::Failed);
        assert_eq!(AckFailure::classify(&42), AckFailure::Failed);
    }

    #[test]
    fn codes_serialize_as_they_display() {
        for f in [
            AckFailure::Timeout,
            AckFailure::SocketClosed,
            AckFailure::SocketBufferFull,
            AckFailure::UndecodableAnswer,
            AckFailure::Failed,
        ] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
        }
    }
}

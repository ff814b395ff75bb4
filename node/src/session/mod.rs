//! Session secrecy: what a client may learn of another client's session, and what a request
//! must prove to act in one.
//!
//! socketioxide gives every socket the Engine.IO session id as its socket id, and that id is
//! all a polling request or a WebSocket upgrade names: whoever knows it can send as the client
//! and read its packets. So the node never shows it to anyone but its own client
//! ([`public_id`]: applications and the server API show a random public id instead), and a
//! request naming a session must come from the address that opened it ([`binding`]).

pub mod binding;
pub mod public_id;
pub mod recovery;
pub mod registry;

//! The scenarios, one file each; `load` is the open-loop send engine that `fanout`, `rooms`,
//! `chat` and `rpc` share.

pub mod chat;
pub mod connect;
pub mod fanout;
pub mod load;
pub mod rooms;
pub mod rpc;
mod storm;

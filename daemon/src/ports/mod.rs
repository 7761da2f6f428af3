//! The ports: the interfaces the passes drive the domain through, and the
//! plain types that cross them. Backends implement them in `adapters`.

pub mod channels;
pub mod store;

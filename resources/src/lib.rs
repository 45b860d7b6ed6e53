//! Resource kinds (`file`, `exec`, `noop`, `print`, `timer`, `test`, ...) and the registry that
//! maps each kind name to its schema and constructor.
//!
//! Kinds implement `tend_engine::Resource`; nothing here drives execution.

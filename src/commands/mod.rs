//! The verbs, one thin file each: they read the parsed flags ([`crate::cli`]), call the stages,
//! and print. `run/` is the whole pipeline for one container.

pub mod containers;
pub mod docker_flags;
pub mod gc;
pub mod inspect;
pub mod man;
pub mod parts;
pub mod run;
pub mod spec;
pub mod unpack;

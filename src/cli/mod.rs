//! Parts of the `berth` command.

pub mod demo;
pub mod output;
pub mod progress;

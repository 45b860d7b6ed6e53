//! Static checks of a parsed program, one module per stage of spec §7.1.

pub mod init;
pub mod interpolate;

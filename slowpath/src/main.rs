//! `tasd`: the TAS daemon (slow path). Work in progress.
fn main() {}

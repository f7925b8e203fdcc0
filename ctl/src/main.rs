//! `tasctl`: talks to tasd's control socket. Work in progress.
fn main() {}

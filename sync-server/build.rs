//! Rebuilds when what the crate embeds at compile time changes: the migrations
//! (`sqlx::migrate!`), and the board app's files (`client-wasm/app/`, `http/webapp/files.rs`),
//! whose `include_bytes!` alone would notice only changes to files that already existed, not
//! a file added or removed. (Cargo scans a directory named here recursively.)
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-changed=../client-wasm/app");
}

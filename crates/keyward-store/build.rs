// `sqlx::migrate!` embeds the migration folders at compile time, but a proc macro cannot ask
// cargo to watch a folder: without this, a new migration file is left out until something
// else makes the crate rebuild (sqlx's documented remedy).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

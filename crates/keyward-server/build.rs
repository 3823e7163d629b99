//! Builds the PostgreSQL half of the integration suite when `KEYWARD_TEST_POSTGRES_URL` is set.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(keyward_postgres_tests)");
    println!("cargo::rerun-if-env-changed=KEYWARD_TEST_POSTGRES_URL");
    if std::env::var_os("KEYWARD_TEST_POSTGRES_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=keyward_postgres_tests");
    }
}

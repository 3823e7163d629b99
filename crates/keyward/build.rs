//! Builds the console's browser tests when `KEYWARD_TEST_CHROMEDRIVER` is set.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(keyward_browser_tests)");
    println!("cargo::rerun-if-env-changed=KEYWARD_TEST_CHROMEDRIVER");
    if std::env::var_os("KEYWARD_TEST_CHROMEDRIVER").is_some_and(|path| !path.is_empty()) {
        println!("cargo::rustc-cfg=keyward_browser_tests");
    }
}

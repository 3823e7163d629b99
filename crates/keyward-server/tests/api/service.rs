//! Errors (SPEC §3) and the service endpoints.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn register_then_use_a_key_end_to_end() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let key = app.create_key(&account, json!({"name": "ci"})).await;
    let secret = key["key"].as_str().unwrap();
    let me = app.get("/v1/auth/me", Auth::Bearer(secret)).await;
    assert_eq!(me.expect(200)["auth"]["method"], "api_key");
    let id = key["id"].as_str().unwrap();
    app.delete(
        &format!("/v1/keys/{id}"),
        Auth::Bearer(&account.access_token),
    )
    .await
    .expect(204);
    app.get("/v1/auth/me", Auth::Bearer(secret))
        .await
        .expect_problem(401, "invalid_api_key");
}

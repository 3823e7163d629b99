//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! wire types' schemas.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{auth, device, keys, service, usage};

#[derive(OpenApi)]
#[openapi(
    info(title = "Keyward", description = "Authentication for API platforms: API keys, sessions, tenants."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::me, auth::change_password, auth::tenant,
        device::device_code, device::device_token, device::approve,
        keys::create, keys::list, keys::get_one, keys::revoke, keys::rotate, keys::verify,
        usage::usage,
        service::healthz, service::readyz, service::metrics, service::openapi, service::jwks,
    ),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "device"), (name = "keys"), (name = "usage"), (name = "service"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

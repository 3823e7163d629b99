//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! wire types' schemas.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{audit, auth, device, keys, leaks, service, usage, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "Keyward", description = "Authentication for API platforms: API keys, sessions, tenants."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::me, auth::change_password, auth::tenant,
        device::device_code, device::device_token, device::approve,
        keys::create, keys::list, keys::get_one, keys::revoke, keys::rotate, keys::verify,
        usage::usage,
        audit::audit,
        webhooks::create, webhooks::list, webhooks::remove, webhooks::deliveries,
        leaks::report, leaks::github,
        service::healthz, service::readyz, service::metrics, service::openapi, service::jwks,
    ),
    modifiers(&BearerAuth, &BodyErrors, &ProblemContentType),
    tags((name = "auth"), (name = "device"), (name = "keys"), (name = "usage"), (name = "audit"), (name = "webhooks"), (name = "leaks"), (name = "service"))
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

/// Every operation that reads a JSON body can refuse it before the handler runs: 400
/// `invalid_request` (not JSON, or not an object) and 422 `validation_failed` (a missing or
/// mistyped field), SPEC §3. Documented here once for all of them, so no operation forgets
/// (schemathesis's `status_code_conformance` found several that did).
struct BodyErrors;

impl Modify for BodyErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::response::ResponseBuilder;
        use utoipa::openapi::{ContentBuilder, Ref};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.put, &mut item.post, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                if operation.request_body.is_none() {
                    continue;
                }
                let responses = &mut operation.responses.responses;
                if !responses.contains_key("400") {
                    responses.insert(
                        "400".to_owned(),
                        problem("invalid_request: the body is not a JSON object").into(),
                    );
                }
                if !responses.contains_key("422") {
                    responses.insert(
                        "422".to_owned(),
                        problem("validation_failed: a field is missing, mistyped or invalid")
                            .into(),
                    );
                }
            }
        }
    }
}

/// Every error is `application/problem+json` (SPEC §3), but utoipa writes `body = Problem` as
/// `application/json`: the document must name the media type the server sends (schemathesis's
/// `content_type_conformance` found the mismatch).
struct ProblemContentType;

impl Modify for ProblemContentType {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_problem = response.content.get("application/json").is_some_and(|content| {
                        matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == "#/components/schemas/Problem")
                    });
                    if is_problem {
                        if let Some(content) = response.content.shift_remove("application/json") {
                            response
                                .content
                                .insert("application/problem+json".to_owned(), content);
                        }
                    }
                }
            }
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

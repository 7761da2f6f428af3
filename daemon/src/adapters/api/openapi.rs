//! The OpenAPI document's frame: title, version, bearer security. Paths
//! come from the handlers' `#[utoipa::path]`, registered with the routes,
//! so the document cannot drift from what is served.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The name of the bearer security scheme.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "relance",
        description = "Lead scores, fatigue-guarded follow-ups, email tracking."
    ),
    modifiers(&Bearer)
)]
struct Doc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(super) fn base() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

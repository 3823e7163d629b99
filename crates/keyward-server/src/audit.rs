//! Where each request came from, for the audit log: the middleware below runs every request
//! inside [`keyward_core::audit::with_origin`], so the events the services record carry the
//! client address (`trusted_proxies` applied, as for the throttles, but the full address, not
//! the /64 the throttles count by) and the user agent.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use keyward_core::audit::{with_origin, Origin, MAX_USER_AGENT_CHARS};

use crate::state::AppState;

pub async fn origin(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let client = peer.map(|peer| {
        crate::throttle::client_ip(peer, request.headers(), &state.config.trusted_proxies)
    });
    // Worked out once per request: the throttles' `ClientIp` reads it from here.
    if let Some(client) = client {
        request
            .extensions_mut()
            .insert(crate::throttle::ClientAddress(client));
    }
    let client_address = client.map(|client| client.to_string());
    let user_agent = crate::extract::user_agent(request.headers())
        .map(|agent| keyward_core::audit::clean_text(agent, MAX_USER_AGENT_CHARS));
    let origin = Origin {
        client_address,
        user_agent,
    };
    with_origin(origin, next.run(request)).await
}
